r"""
---
title: Laplacian diffusion, the command line
summary: python -m annogen.laplacian - train the tiny U-Net under the Laplacian schedule or a baseline (f-DM-style, single resolution) on shapes, sample it with any number of steps, score it, and redraw the chapter's figures.
---

# Laplacian diffusion: the command line

    python -m annogen.laplacian --threads 1                          # Laplacian diffusion (schedule 'edify'), then 16-step samples
    python -m annogen.laplacian --schedule single --run single       # the single-resolution baseline
    python -m annogen.laplacian --schedule fdm --run fdm             # the f-DM-style baseline
    python -m annogen.laplacian --schedule edify-early --run early   # the ablation: earlier switches
    python -m annogen.laplacian --resume --sampling-steps 32         # no training: sample the run with 32 steps
    python -m annogen.laplacian --figures DIR                        # the README's figures (pyramid figure needs no run)

A run goes to `runs/laplacian/<run>/` (`--out`, `--run`) with what the course's loop
writes ([[train.py]]). After training, the EMA network samples `--eval-samples` images
with `--sampling-steps` steps; they are scored (toy FID against held-out images,
attribute accuracy on `shapes`) and written to `eval-<steps>.json` and
`samples-<steps>.png`, with the network pixels each image cost.

There is no paper preset: the Edify Image report gives the sizes of its networks
(2.7B parameters at 256 px, 1.6B for the upsampler) but not the layer configuration,
so a preset could not be checked against anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from annogen.data import add_data_args, dataset_from_args, make_dataset, positive_int
from annogen.laplacian.experiment import RECIPE, STEPS, LaplacianExperiment, evaluate, load_run
from annogen.laplacian.process import SCHEDULES
from annogen.train import ArgumentParser, add_train_args, config_from_args, save_image_grid, train


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m annogen.laplacian",
                       description="Train Laplacian diffusion (or a baseline schedule) and sample it.")
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default="edify",
                   help="forward process: edify (ours), edify-early / edify-late (ablations), "
                        "fdm (f-DM-style stages), single (one resolution) (default: %(default)s)")
    p.add_argument("--sampling-steps", type=int, default=16,
                   help="sampler steps for the evaluation (default: %(default)s)")
    p.add_argument("--eval-samples", type=int, default=256,
                   help="images to sample and score after training, 0 = none (default: %(default)s)")
    p.add_argument("--label-dropout", type=float, default=0.1,
                   help="fraction of training labels replaced by the null label (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--figures", metavar="DIR", default=None,
                   help="do not train: draw the README figures into DIR (the sample figures use the runs "
                        "named edify, fdm and single under --out, where they exist)")
    add_data_args(p)
    p.set_defaults(data_size=50_000)
    add_train_args(p, steps=STEPS, log_every=50, ckpt_every=500, sample_every=500, **RECIPE)
    return p


def run(args, dataset) -> Path:
    cfg = config_from_args(args)
    exp = LaplacianExperiment(args.schedule, label_dropout=args.label_dropout)
    run_dir = train(exp, dataset, cfg)
    print(f"laplacian: run folder {run_dir}")
    if args.eval_samples > 0:
        den, _ = load_run(run_dir)
        real = net = None
        if args.data in ("shapes", "digits") and dataset.size in (28, 32):
            from annogen.metrics import load_feature_net
            held_out = make_dataset(args.data, size=dataset.size, n=args.eval_samples, seed=args.data_seed + 1)
            real = torch.stack([it["image"] for it in held_out])
            net = load_feature_net(args.data, dataset.size)
        row, images = evaluate(den, args.sampling_steps, args.eval_samples, real, net, seed=args.seed)
        save_image_grid(images[:63], run_dir / f"samples-{args.sampling_steps}.png", nrow=9)
        (run_dir / f"eval-{args.sampling_steps}.json").write_text(json.dumps(row, indent=2) + "\n", encoding="utf8")
        line = (f"laplacian: {args.schedule}, {row['nfe']} network calls = {row['full_size_evaluations']:.1f} "
                f"full-size evaluations per image, {row['sec_per_image'] * 1000:.0f} ms per image")
        if "attribute_accuracy" in row:
            line += f"; attribute accuracy {row['attribute_accuracy']:.1%}"
        if "toy_fid" in row:
            line += f"; toy FID {row['toy_fid']:.1f}"
        print(line)
    return run_dir


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.sampling_steps < 1:
        parser.error("--sampling-steps must be at least 1")
    if args.eval_samples < 0:
        parser.error("--eval-samples must be >= 0")
    if not 0 <= args.label_dropout < 1:
        parser.error("--label-dropout must be in [0, 1)")
    try:
        if args.figures is not None:
            from annogen.laplacian.figures import draw_figures
            for path in draw_figures(Path(args.figures), Path(args.out), seed=args.seed):
                print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
            return 0
        dataset = dataset_from_args(args)
        run(args, dataset)
    except (ValueError, FileNotFoundError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
