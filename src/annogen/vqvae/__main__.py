r"""
---
title: VQ-VAE, the command line
summary: python -m annogen.vqvae - train the autoencoder, then the prior, on CPU in minutes; resume; count the paper model's parameters; redraw the chapter's figures.
---

# `python -m annogen.vqvae`

One command runs the chapter end to end on `shapes` at $32 \times 32$: stage 1 trains
the tiny VQ-VAE and measures it on held-out images, stage 2 encodes the training set
into code grids, trains the tiny class-conditional prior on them and measures its
samples. Everything else is a flag:

    python -m annogen.vqvae                          # both stages, tiny presets
    python -m annogen.vqvae --stage vqvae --steps 3000
    python -m annogen.vqvae --stage prior --prior-steps 4000 --resume
    python -m annogen.vqvae --threads 1              # on a busy two-core machine
    python -m annogen.vqvae --preset paper           # parameter counts only
    python -m annogen.vqvae --figures figs/          # redraw the README's figures

Stage 1 writes to `runs/vqvae/<run>/`, stage 2 to `runs/vqvae-prior/<run>/` (same
`--run` name, `default` unless given), each with the files of [[train.py]] plus
`eval.json`, the numbers printed at the end. `--resume` continues both stages exactly
where they stopped: a stage already at its step count is only evaluated again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from annogen.data import Shapes, add_data_args, dataset_from_args, make_dataset, positive_int
from annogen.train import add_train_args, config_from_args, pick_device, save_image_grid, train

from annogen.vqvae.experiment import (PriorExperiment, VQVAEExperiment, encode_dataset, evaluate_prior,
                         evaluate_vqvae, interleave_rows, load_prior, load_vqvae)
from annogen.vqvae.model import PRESETS, build_vqvae
from annogen.vqvae.prior import PRIOR_PRESETS, build_prior
from annogen.train import ArgumentParser as Parser


# ## The flags
#
# The data flags and the training flags are the course's shared ones ([[data.py]],
# [[train.py]]); the training flags set stage 1, and the `--prior-*` flags change what
# differs for stage 2. A mistyped flag ends with one line and exit status 2, not a
# page of usage.
def build_parser() -> Parser:
    p = Parser(prog="python -m annogen.vqvae",
               description="Train a VQ-VAE (stage 1) and a gated PixelCNN prior over its codes (stage 2).")
    p.add_argument("--stage", choices=("all", "vqvae", "prior"), default="all",
                   help="which stage(s) to run (default: %(default)s)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="model size for both stages; 'paper' prints parameter counts and "
                        "exits unless --train is given (default: %(default)s)")
    p.add_argument("--train", action="store_true", help="train even the 'paper' preset")
    p.add_argument("--num-codes", type=int, default=None, help="K, codebook size (default: the preset's)")
    p.add_argument("--latent-dim", type=int, default=None, help="D, code length (default: the preset's)")
    p.add_argument("--beta", type=float, default=None, help="commitment weight (default: the preset's)")
    p.add_argument("--codebook", choices=("ema", "grad"), default=None,
                   help="learn the codebook by EMA or by gradient (default: the preset's)")
    p.add_argument("--restart-every", type=int, default=None,
                   help="dead-code restart period in steps, 0 = never (default: the preset's)")
    p.add_argument("--prior-steps", type=int, default=3000, help="steps of stage 2 (default: %(default)s)")
    p.add_argument("--prior-lr", type=float, default=1e-3, help="learning rate of stage 2 (default: %(default)s)")
    p.add_argument("--prior-batch-size", type=int, default=64, help="grids per step in stage 2 (default: %(default)s)")
    p.add_argument("--label-dropout", type=float, default=0.1,
                   help="fraction of training grids shown without their label (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: %(default)s)")
    p.add_argument("--eval-samples", type=int, default=1000,
                   help="held-out images / prior samples to measure each stage on, 0 = skip (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is faster on a busy machine)")
    p.add_argument("--figures", metavar="DIR", default=None,
                   help="do not train: draw the README figures from the runs named by --out/--run into DIR")
    add_data_args(p)
    p.set_defaults(data_size=50_000)
    add_train_args(p, steps=3000, lr=None, batch_size=64, log_every=50, ckpt_every=500,
                   sample_every=500)
    for action in p._actions:
        if action.dest == "lr":
            action.help = "learning rate of stage 1 (default: the preset's, 1e-3 tiny, 2e-4 paper)"
        if action.dest == "data_size":
            action.help = ("number of images for both stages (default: 50000; a folder "
                           "gives at most its own number)")
    return p


def vqvae_overrides(args) -> dict:
    chosen = {"num_codes": args.num_codes, "latent_dim": args.latent_dim, "beta": args.beta,
              "restart_every": args.restart_every,
              "ema": None if args.codebook is None else args.codebook == "ema"}
    return {k: v for k, v in chosen.items() if v is not None}


# ## The paper preset without a GPU
#
# Training the paper-size models for 250k steps is not something a laptop does, so
# `--preset paper` builds both networks, prints their sizes and stops. The counts are
# the ones `tests/test_vqvae.py` derives layer by layer from section 4.1 of the paper.
def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe_presets(args, channels: int, num_classes: int) -> str:
    vqvae = build_vqvae(args.preset, in_channels=channels, **vqvae_overrides(args))
    c = vqvae.cfg
    prior = build_prior(args.preset, num_codes=c.num_codes, num_classes=num_classes)
    codebook = "a buffer (EMA)" if c.ema else "a parameter"
    pc = PRIOR_PRESETS[args.preset]
    return (f"VQ-VAE preset {args.preset!r}: {count(vqvae):,} parameters "
            f"(hidden {c.hidden}, residual hidden {c.res_hidden}, {c.num_res_blocks} residual blocks, "
            f"D = {c.latent_dim}, K = {c.num_codes}; the {c.num_codes} x {c.latent_dim} codebook is {codebook})\n"
            f"prior preset {args.preset!r}: {count(prior):,} parameters "
            f"({pc.num_blocks} gated blocks of {pc.dim} channels, K = {c.num_codes}, {num_classes} classes)")


# ## The two stages
def run_vqvae(args, dataset, test) -> Path:
    cfg = config_from_args(args)
    exp = VQVAEExperiment(args.preset, **vqvae_overrides(args))
    run_dir = train(exp, dataset, cfg)
    if args.eval_samples > 0:
        result = evaluate_vqvae(exp.model, test, args.eval_samples)
        write_eval(run_dir, result)
        print(f"vqvae: PSNR {result['psnr']:.2f} dB, codebook usage {result['usage']:.0%}, "
              f"perplexity {result['perplexity']:.1f} of K = {exp.model.cfg.num_codes}"
              + (f", reconstructions with every attribute right {result['recon_all']:.0%}"
                 if "recon_all" in result else "")
              + f" ({result['n']} held-out images)")
    print(f"vqvae: run folder {run_dir}")
    return run_dir


def run_prior(args, dataset, test) -> Path:
    vqvae_run = Path(args.out) / VQVAEExperiment.name / args.run
    vqvae = load_vqvae(vqvae_run, pick_device(args.device))
    codes = encode_dataset(vqvae, dataset)
    cfg = config_from_args(args)
    cfg.steps, cfg.lr, cfg.batch_size = args.prior_steps, args.prior_lr, args.prior_batch_size
    exp = PriorExperiment(vqvae, args.preset, label_dropout=args.label_dropout,
                          vqvae_run=str(vqvae_run))
    run_dir = train(exp, codes, cfg)
    if args.eval_samples > 0:
        net = feature_net_for(test)
        reference = (make_dataset(args.data, size=args.image_size, n=args.eval_samples,
                                  seed=args.data_seed + 2)
                     if args.data in ("shapes", "digits") else None)
        result = evaluate_prior(exp.prior, vqvae, test, args.eval_samples, net=net,
                                temperature=args.temperature, seed=args.seed,
                                unconditional=True, reference=reference, progress=True)
        result.pop("samples")
        write_eval(run_dir, result)
        line = f"prior: held-out NLL {result['nll']:.3f} nats/code"
        if "both" in result:
            line += (f"; first shape right in {result['both']:.0%} of samples (kind "
                     f"{result['shape']:.0%}, colour {result['colour']:.0%}; without labels "
                     f"{result['uncond_shape']:.0%} and {result['uncond_colour']:.0%})")
        if "toy_fid" in result:
            line += (f"; toy FID {result['toy_fid']:.1f} at n = {result['n']} (reconstructions "
                     f"{result['toy_fid_recon']:.1f}"
                     + (f", two real sets {result['toy_fid_real']:.1f}" if "toy_fid_real" in result else "")
                     + ")")
        print(line)
    print(f"prior: run folder {run_dir}")
    return run_dir


def feature_net_for(dataset):
    from annogen.metrics import load_feature_net
    name = "shapes" if isinstance(dataset, Shapes) else None
    if name is None and type(dataset).__name__ == "Digits":
        name = "digits"
    if name is None and hasattr(dataset, "root"):
        name = str(dataset.root)
    return load_feature_net(name, dataset.size) if name else None


def write_eval(run_dir: Path, result: dict) -> None:
    clean = {k: v for k, v in result.items() if isinstance(v, (int, float, bool, str))}
    (run_dir / "eval.json").write_text(json.dumps(clean, indent=2) + "\n", encoding="utf8")


# ## The README's figures
#
# `--figures DIR` trains nothing. It loads the two run folders and draws, at twice the
# size of the data so the pixels are visible:
#
# * `reconstructions.png`: 24 held-out images (rows 1, 3, 5) above their
#   reconstructions (rows 2, 4, 6);
# * `prior_samples.png`: for `shapes`, one row per colour and one block of four columns
#   per kind of shape, every image sampled with that class as its label;
# * `curves.png`: PSNR and codebook perplexity of stage 1 and the prior's loss, against
#   the step, from the runs' `metrics.jsonl`.
def upscale(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    return x.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)


@torch.no_grad()
def draw_figures(args, test, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    vqvae_run = Path(args.out) / VQVAEExperiment.name / args.run
    prior_run = Path(args.out) / PriorExperiment.name / args.run
    vqvae = load_vqvae(vqvae_run)
    written = []
    x = torch.stack([test[i]["image"] for i in range(24)])
    x_hat = vqvae(x)[0].clamp(-1, 1)
    written.append(save_image_grid(upscale(interleave_rows(x, x_hat, 8)),
                                   out_dir / "reconstructions.png", nrow=8))
    if (prior_run / "checkpoint.pt").exists():
        prior = load_prior(prior_run)
        g = torch.Generator().manual_seed(args.seed)
        grid = tuple(vqvae.encode(x[:1]).shape[1:])
        if prior.num_classes == 21:  # shapes: rows = colours, blocks of columns = kinds
            per = 4
            labels = torch.tensor([s * 7 + c for c in range(7) for s in range(3) for _ in range(per)])
            nrow = 3 * per
        else:
            labels = (torch.arange(64) // 8) % prior.num_classes if prior.num_classes else None
            nrow = 8
        n = 64 if labels is None else len(labels)
        k = prior.sample(n, grid, label=labels, temperature=args.temperature, generator=g)
        images = vqvae.decode_indices(k).clamp(-1, 1)
        written.append(save_image_grid(upscale(images), out_dir / "prior_samples.png", nrow=nrow))
    written.append(draw_curves(vqvae_run, prior_run, out_dir / "curves.png"))
    return written


def draw_curves(vqvae_run: Path, prior_run: Path, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from annogen.train import atomic_write, read_metrics

    stage1 = read_metrics(vqvae_run / "metrics.jsonl")
    stage2 = read_metrics(prior_run / "metrics.jsonl")
    panels = [("stage 1: PSNR (dB)", stage1, "psnr"),
              ("stage 1: codebook perplexity", stage1, "perplexity"),
              ("stage 2: prior NLL (nats/code)", stage2, "loss")]
    fig = Figure(figsize=(10.5, 2.6), dpi=90)
    FigureCanvasAgg(fig)
    for i, (title, records, key) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points), linewidth=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.18, top=0.88, wspace=0.28)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


# ## Putting it together
#
# Held-out images for the evaluations come from the same generator with the next
# seed (`--data-seed` + 1), so they are never training images.
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.prior_steps < 0 or args.prior_batch_size < 1 or args.eval_samples < 0:
        parser.error("--prior-steps and --eval-samples must be >= 0, --prior-batch-size >= 1")
    if args.lr is None:
        args.lr = PRESETS[args.preset].lr
    try:
        dataset = dataset_from_args(args)
        test = make_dataset(args.data, size=args.image_size,
                            n=min(max(args.eval_samples, 24), 10_000), seed=args.data_seed + 1) \
            if args.data in ("shapes", "digits") else dataset
        if args.figures is not None:
            for path in draw_figures(args, test, Path(args.figures)):
                print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
            return 0
        if args.preset == "paper" and not args.train:
            print(describe_presets(args, dataset.channels, getattr(dataset, "num_classes", 0)))
            print("not training the paper preset on this machine; add --train to do it anyway")
            return 0
        if args.stage in ("all", "vqvae"):
            run_vqvae(args, dataset, test)
        if args.stage in ("all", "prior"):
            run_prior(args, dataset, test)
    except (ValueError, FileNotFoundError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
