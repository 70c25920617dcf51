r"""
---
title: DDPM, the command line
summary: python -m annogen.ddpm - train the tiny class-conditional DDPM on shapes on a CPU, sample it with DDPM or DDIM, resume, print the paper model's size, and redraw the chapter's figures.
---

# DDPM: the command line

    python -m annogen.ddpm                                  # train the tiny model, then sample with DDIM-50, guidance 3 (~8 min on 2 cores)
    python -m annogen.ddpm --resume --steps 4000            # train further
    python -m annogen.ddpm --resume --sampler ddpm          # no training: sample the run with 1,000 DDPM steps
    python -m annogen.ddpm --resume --sampler ddim --sampling-steps 20 --eta 1
    python -m annogen.ddpm --resume --no-clip               # DDIM-50 without clipping x_0, as the official DDIM code
    python -m annogen.ddpm --resume --guidance 1            # DDIM-50 without classifier-free guidance
    python -m annogen.ddpm --preset paper                   # the CIFAR-10 model's size, no training
    python -m annogen.ddpm --figures DIR                    # the README figures, from a run

A run goes to `runs/ddpm/<run>/` (`--out`, `--run`) with what the course's loop writes
([[train.py]]: `checkpoint.pt`, `metrics.jsonl`, `samples.png`, `loss.png`,
`config.json`). After training, the EMA network samples `--eval-samples` images with
the chosen sampler; they are scored (toy FID against held-out images, attribute
accuracy on `shapes`), written to `eval-<sampler><steps>.json` and shown in
`samples-<sampler><steps>.png`. With `--resume` and a run that already has `--steps`
steps, training is skipped and only the sampling runs, which is how one run is
sampled with several samplers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from annogen.data import add_data_args, dataset_from_args, make_dataset, positive_int
from annogen.train import add_train_args, config_from_args, save_image_grid, train

from annogen.ddpm.diffusion import Diffusion
from annogen.ddpm.experiment import (TINY_GUIDANCE, TINY_PREDICTION, TINY_STEPS, TINY_TRAINING,
                                     DDPMExperiment, class_labels, evaluate, load_diffusion,
                                     load_model, sample_images)
from annogen.ddpm.unet import PRESETS, build_unet, count_parameters
from annogen.train import ArgumentParser as Parser


# A parser whose errors are one line (and exit status 2), not the usage block.
def build_parser() -> Parser:
    p = Parser(prog="python -m annogen.ddpm",
               description="Train a DDPM noise predictor and sample it with DDPM or DDIM.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="U-Net size; 'paper' prints its parameter count and exits unless "
                        "--train is given (default: %(default)s)")
    p.add_argument("--train", action="store_true", help="train even the 'paper' preset")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim",
                   help="sampler for the evaluation after training (default: %(default)s)")
    p.add_argument("--sampling-steps", type=int, default=None,
                   help="DDIM steps, also for the run's samples.png (default: 50; DDPM always uses all T = 1000)")
    p.add_argument("--eta", type=float, default=0.0,
                   help="DDIM noise: 0 deterministic, 1 DDPM-like (default: %(default)s)")
    p.add_argument("--clip", action=argparse.BooleanOptionalAction, default=True,
                   help="DDIM: clip the predicted x_0 to [-1, 1] as the DDPM sampler does; --no-clip "
                        "samples as the official DDIM code, unclipped (default: clip)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance weight w; 1 = plain conditional (default: %g "
                        "for tiny, 1 for paper, which is unconditional)" % TINY_GUIDANCE)
    p.add_argument("--variance", choices=("beta", "beta_tilde"), default="beta",
                   help="sigma_t^2 of the DDPM step (default: %(default)s, as the official CIFAR-10 run)")
    p.add_argument("--prediction", choices=("eps", "v"), default=None,
                   help="what the network predicts: the noise (the paper) or v (Salimans & Ho "
                        "2022) (default: %s for tiny, eps for paper; a resumed run keeps its own)"
                        % TINY_PREDICTION)
    p.add_argument("--label-dropout", type=float, default=0.1,
                   help="fraction of training labels replaced by the null label (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=None,
                   help="learning-rate warmup steps (default: 100 tiny, 5000 paper)")
    p.add_argument("--decay", action=argparse.BooleanOptionalAction, default=None,
                   help="decay the learning rate to zero along a cosine by --decay-steps "
                        "(default: on for tiny, off for paper, as the paper)")
    p.add_argument("--decay-steps", type=int, default=None,
                   help="length of the cosine decay (default: --steps of the run's first start, "
                        "kept by --resume)")
    p.add_argument("--eval-samples", type=int, default=256,
                   help="images to sample and score after training, 0 = none (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)")
    p.add_argument("--figures", metavar="DIR", default=None,
                   help="do not train: draw the README figures from the run named by --out/--run into DIR")
    add_data_args(p)
    p.set_defaults(data_size=50_000)
    add_train_args(p, steps=TINY_STEPS, log_every=50, ckpt_every=500, sample_every=1000, **TINY_TRAINING)
    return p


# ## The paper preset without a GPU
#
# The CIFAR-10 model is built on PyTorch's `meta` device (shapes, no memory), counted
# and described. The count is the one `tests/test_ddpm.py` checks: 35,746,307, the
# paper's "35.7M".
def describe_paper(channels: int, size: int) -> str:
    with torch.device("meta"):
        net = build_unet("paper", in_channels=channels, image_size=size)
    c = net.cfg
    return (f"DDPM U-Net preset 'paper': {count_parameters(net):,} parameters "
            f"(ch {c.ch}, ch_mult {c.ch_mult}, {c.num_res_blocks} res blocks per level, attention at "
            f"{c.attn_resolutions}, dropout {c.dropout}, {size}px, {channels} channels, unconditional)")


def run(args, dataset) -> Path:
    cfg = config_from_args(args)
    prediction = args.prediction or (TINY_PREDICTION if args.preset == "tiny" else "eps")
    ckpt = Path(cfg.out) / DDPMExperiment.name / cfg.run / "checkpoint.pt"
    if cfg.resume and ckpt.exists():
        prediction = load_diffusion(ckpt.parent).prediction
    diffusion = Diffusion(variance=args.variance, prediction=prediction)
    grid_steps = args.sampling_steps if args.sampler == "ddim" else 50
    exp = DDPMExperiment(args.preset, label_dropout=args.label_dropout, warmup=args.warmup,
                         decay=args.decay, decay_steps=args.decay_steps,
                         sample_steps=grid_steps, diffusion=diffusion, clip=args.clip,
                         **({"num_classes": 0} if args.preset == "paper" else {}))
    run_dir = train(exp, dataset, cfg)
    print(f"ddpm: run folder {run_dir}")
    if args.eval_samples > 0:
        steps = diffusion.T if args.sampler == "ddpm" else args.sampling_steps
        model = load_model(run_dir)
        real = net = None
        if args.data in ("shapes", "digits") and dataset.size in (28, 32):
            from annogen.metrics import load_feature_net
            held_out = make_dataset(args.data, size=dataset.size, n=args.eval_samples,
                                    seed=args.data_seed + 1)
            real = torch.stack([it["image"] for it in held_out])
            net = load_feature_net(args.data, dataset.size)
        row, images = evaluate(model, diffusion, args.sampler, steps, args.eval_samples, real, net,
                               eta=args.eta, guidance=args.guidance, seed=args.seed, progress=True,
                               clip=args.clip)
        row["guidance"] = args.guidance
        tag = f"{args.sampler}{steps}" + (f"-eta{args.eta:g}" if args.sampler == "ddim" and args.eta else "")
        tag += "-noclip" if args.sampler == "ddim" and not args.clip else ""
        tag += f"-w{args.guidance:g}" if args.guidance != 1.0 else ""
        save_image_grid(images[:64], run_dir / f"samples-{tag}.png")
        (run_dir / f"eval-{tag}.json").write_text(json.dumps(row, indent=2) + "\n", encoding="utf8")
        line = f"ddpm: {tag}, {row['n']} samples, {row['sec_per_image'] * 1000:.0f} ms per image"
        if "attribute_accuracy" in row:
            line += (f"; attribute accuracy {row['attribute_accuracy']:.1%} (kind "
                     f"{row['shape_accuracy']:.0%}, colour {row['colour_accuracy']:.0%}, valid "
                     f"{row['valid']:.0%})")
        if "toy_fid" in row:
            line += f"; toy FID {row['toy_fid']:.1f}"
        print(line)
    return run_dir


# ## The README's figures
#
# `--figures DIR` trains nothing. It draws, at twice the data's size (`samples.png` at
# three times):
#
# * `forward.png`: the forward process on six training images, $x_t$ from
#   [[diffusion.py#jumping-to-any-step]] at $t = 0, 50, 100, 200, 400, 700, 999$;
# * `samples.png`: DDIM-50 samples of the run with the run's guidance (`--guidance`,
#   3 by default), one row per colour and one block of two columns per kind of shape
#   (the class label asks for both);
# * `samplers.png`: the same starting noise and labels through DDIM with 10, 20 and 50
#   steps ($\eta = 0$, clipped $\hat x_0$), DDIM with 50 steps unclipped (as the official
#   DDIM code samples), and DDPM with 1,000, one row each, all without guidance, so
#   that only the sampler changes;
# * `curves.png`: the training loss against the step.
def upscale(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    return x.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)


@torch.no_grad()
def draw_figures(args, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(args.out) / DDPMExperiment.name / args.run
    diffusion = load_diffusion(run_dir, args.variance)
    model = load_model(run_dir)
    written = []
    data = make_dataset(args.data, size=args.image_size, n=6, seed=args.data_seed)
    x0 = torch.stack([data[i]["image"] for i in range(6)])
    ts = [0, 50, 100, 200, 400, 700, 999]
    g = torch.Generator().manual_seed(args.seed)
    eps = torch.randn(x0.shape, generator=g)
    strip = torch.stack([diffusion.q_sample(x0, torch.full((6,), t), eps) for t in ts], dim=1)
    written.append(save_image_grid(upscale(strip.flatten(0, 1).clamp(-1, 1)), out_dir / "forward.png",
                                   nrow=len(ts)))
    if model.num_classes == 21:  # shapes: rows = colours, blocks of four columns = kinds
        labels = torch.tensor([s * 7 + c for c in range(7) for s in range(3) for _ in range(2)])
        nrow = 6
    else:
        labels, nrow = class_labels(64, model.num_classes, per_row=8), 8
    n = 64 if labels is None else len(labels)
    guidance = args.guidance if model.num_classes else 1.0
    images, _ = sample_images(model, diffusion, n, "ddim", 50, labels=labels, guidance=guidance,
                              seed=args.seed)
    # three times the data's size, so that the page shows it at a readable size
    written.append(save_image_grid(upscale(images, 3), out_dir / "samples.png", nrow=nrow))
    k = 8
    y = class_labels(k, model.num_classes)
    rows = [sample_images(model, diffusion, k, "ddim", s, labels=y, seed=args.seed)[0] for s in (10, 20, 50)]
    rows.append(sample_images(model, diffusion, k, "ddim", 50, labels=y, seed=args.seed, clip=False)[0])
    rows.append(sample_images(model, diffusion, k, "ddpm", diffusion.T, labels=y, seed=args.seed)[0])
    written.append(save_image_grid(upscale(torch.cat(rows)), out_dir / "samplers.png", nrow=k))
    written.append(draw_curves(run_dir, out_dir / "curves.png"))
    return written


def draw_curves(run_dir: Path, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from annogen.train import atomic_write, read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    fig = Figure(figsize=(5.0, 2.6), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    points = [(r["step"], r["loss"]) for r in records if "loss" in r]
    if points:
        ax.plot(*zip(*points), linewidth=1.2)
    ax.set_title(r"$L_{simple}$ (mean over 50 steps)", fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.18, top=0.88)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


# ## Putting it together
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.eval_samples < 0:
        parser.error("--eval-samples must be >= 0")
    if args.sampling_steps is None:
        args.sampling_steps = 1000 if args.sampler == "ddpm" else 50
    if args.sampler == "ddpm" and args.sampling_steps != 1000:
        parser.error("--sampler ddpm always takes all 1000 steps; use --sampler ddim for fewer")
    if not 1 <= args.sampling_steps <= 1000:
        parser.error("--sampling-steps must be between 1 and 1000")
    if args.eta < 0:
        parser.error("--eta must be >= 0")
    if args.decay_steps is not None and args.decay_steps < 1:
        parser.error("--decay-steps must be at least 1")
    if args.guidance is None:
        args.guidance = TINY_GUIDANCE if args.preset == "tiny" else 1.0
    try:
        dataset = dataset_from_args(args)
        if args.figures is not None:
            for path in draw_figures(args, Path(args.figures)):
                print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
            return 0
        if args.preset == "paper" and not args.train:
            print(describe_paper(dataset.channels, dataset.size))
            print("not training the paper preset on this machine; add --train to do it anyway")
            return 0
        run(args, dataset)
    except (ValueError, FileNotFoundError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
