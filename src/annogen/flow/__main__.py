r"""
---
title: Flow matching, the command line
summary: python -m annogen.flow - the table of sampler errors on the 2-D mixture and the chapter's figure, in a few seconds, no training.
---

# Flow matching: the command line

    python -m annogen.flow                          # the table of sampler errors (seconds)
    python -m annogen.flow --shift 3                # the same with a shifted schedule
    python -m annogen.flow --figure src/annogen/flow/figures/flow.png

Nothing is trained: the velocity is the exact one of the 2-D mixture of
[[toy.py]], so the table measures the samplers alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .toy import draw_figure, eight_gaussians, sampler_errors
from annogen.train import ArgumentParser as Parser


def steps_list(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}")
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError("every step count must be at least 1")
    return steps


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m annogen.flow",
               description="Euler and Flow-DPM-Solver on a 2-D mixture with its exact velocity.")
    p.add_argument("--steps", type=steps_list, default=(2, 4, 8, 16, 32),
                   help="comma-separated step counts (default: 2,4,8,16,32)")
    p.add_argument("--shift", type=float, default=1.0, help="timestep shift s of the schedule")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--figure", metavar="PATH", help="also draw the chapter's figure to PATH")
    args = p.parse_args(argv)
    if args.shift <= 0:
        p.error("--shift must be positive")
    torch.set_num_threads(1)
    rows = sampler_errors(eight_gaussians(), args.steps, args.samples, args.shift, args.seed)
    print("| sampler | steps | mean distance to the exact endpoint (in s) | within 3 s of a mode |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['sampler']} | {r['steps']} | {r['error_in_s']:.3f} | {r['on_a_mode']:.3f} |")
    if args.figure:
        print(f"wrote {draw_figure(Path(args.figure), seed=args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
