r"""
---
title: Flow matching, the command line
summary: python -m annogen.flow - the table of sampler errors on the 2-D mixture, where the exact paths bend, and the chapter's figure, in seconds, no training; written to runs/flow/RUN/.
---

# Flow matching: the command line

    python -m annogen.flow                          # the tables and the figure (seconds)
    python -m annogen.flow --shift 3                # the same with a shifted schedule
    python -m annogen.flow --figure src/annogen/flow/figures/flow.png   # also copy the figure

Nothing is trained: the velocity is the exact one of the 2-D mixture of
[[toy.py]], so the tables measure the samplers alone. Like every chapter's command,
it writes into a run folder, `runs/flow/<run>/` (`--out`, `--run`): the figure
`flow.png` and `metrics.json` (the sampler table, the bending measurement and the
settings).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from annogen.data import positive_int
from annogen.flow.toy import bending, draw_figure, eight_gaussians, sampler_errors
from annogen.train import ARG_HELP, ArgumentParser, torch_threads


def steps_list(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text!r}")
    if not steps or min(steps) < 1:
        raise argparse.ArgumentTypeError("every step count must be at least 1")
    return steps


def make_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m annogen.flow",
                       description="Euler and Flow-DPM-Solver on a 2-D mixture with its exact "
                                   "velocity; writes runs/flow/RUN/flow.png and metrics.json.")
    p.add_argument("--steps", type=steps_list, default=(2, 4, 8, 16, 32),
                   help="comma-separated step counts (default: 2,4,8,16,32)")
    p.add_argument("--shift", type=float, default=1.0,
                   help="timestep shift s of both sampling grids (default: 1, no shift)")
    p.add_argument("--samples", type=int, default=2000,
                   help="noise samples per sampler and step count (default: 2000)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the noise samples and of the figure's data (default: 0)")
    p.add_argument("--out", default="runs", help=ARG_HELP["out"][1] + " (default: runs)")
    p.add_argument("--run", default="default",
                   help=ARG_HELP["run"][1].replace("<chapter>", "flow") + " (default: default)")
    p.add_argument("--figure", metavar="PATH", help="also copy the figure to PATH")
    p.add_argument("--threads", type=positive_int, default=1, help="CPU threads for torch (default: 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = make_parser()
    args = p.parse_args(argv)
    if args.shift <= 0:
        p.error("--shift must be positive")
    if args.samples < 1:
        p.error("--samples must be at least 1")
    run_dir = Path(args.out) / "flow" / args.run
    with torch_threads(args.threads):
        mix = eight_gaussians()
        rows = sampler_errors(mix, args.steps, args.samples, args.shift, args.seed)
        bend = bending(mix, n=min(args.samples, 1000), seed=args.seed)
        print("| sampler | grid | steps | mean distance to the exact endpoint (in s) "
              "| within 3 s of a mode |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['sampler']} | {r['grid']} | {r['steps']} | {r['error_in_s']:.3f} "
                  f"| {r['on_a_mode']:.3f} |")
        print(f"\nwhere the exact paths turn (mean total turn {bend['total_degrees']:.0f} "
              f"degrees, half of it above sigma = {bend['median_sigma']:.2f}):")
        print("| sigma | share of the turning |")
        print("|---|---|")
        for lo, hi, share in zip(bend["edges"][:-1], bend["edges"][1:], bend["share"]):
            print(f"| {lo:.1f} to {hi:.1f} | {share:.3f} |")
        figure = draw_figure(run_dir / "flow.png", seed=args.seed, bend=bend)
    settings = {k: v for k, v in vars(args).items() if k != "figure"}
    (run_dir / "metrics.json").write_text(json.dumps(
        {"settings": settings, "samplers": rows, "bending": bend}, indent=1) + "\n")
    print(f"\nwrote {figure} and {run_dir / 'metrics.json'}")
    if args.figure:
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(figure, args.figure)
        print(f"copied the figure to {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
