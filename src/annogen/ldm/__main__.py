r"""
---
title: The KL autoencoder, the command line
summary: python -m annogen.ldm - train the tiny KL autoencoder on a CPU, store its scaling factor, score it, print the SD autoencoder's size, redraw the chapter's figure.
---

# The KL autoencoder: the command line

    python -m annogen.ldm --threads 1                  # train the tiny KL autoencoder (f4c4) on shapes
    python -m annogen.ldm --kl-weight 1e-2 --run kl-1e-2   # another KL weight, another run folder
    python -m annogen.ldm --resume --steps 1600        # train further
    python -m annogen.ldm --preset sd-f8c4             # Stable Diffusion's autoencoder, counted
    python -m annogen.ldm --figures DIR                # the README figure, from the run

A run goes to `runs/ldm/<run>/` (`--out`, `--run`) with what the course's loop writes
([[train.py]]). After training, the scaling factor is measured and stored in the
checkpoint ([[experiment.py#the-scaling-factor-after-training]]), and the autoencoder
is scored on 512 held-out images (`eval.json`). `python -m annogen.dit` reuses this
run folder's autoencoder (`runs/ldm/default`) and trains it first when it is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from annogen.data import add_data_args, dataset_from_args, make_dataset, positive_int
from annogen.train import ArgumentParser, add_train_args, config_from_args, save_image_grid, train

from annogen.ldm.experiment import (DEFAULTS, KLExperiment, evaluate_autoencoder, finish,
                                    load_autoencoder)
from annogen.ldm.model import PRESETS, KLAutoencoder, count_parameters


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m annogen.ldm",
                       description="Train the KL autoencoder of latent diffusion (Stable "
                                   "Diffusion's first stage) on a CPU.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny",
                   help="tiny (f4c4, trains here), tiny-f8, or sd-f8c4 (counted, not trained "
                        "unless --train) (default: %(default)s)")
    p.add_argument("--train", action="store_true", help="train even the sd-f8c4 preset")
    p.add_argument("--kl-weight", type=float, default=DEFAULTS["model"]["kl_weight"],
                   help="weight of the KL term against the summed reconstruction error "
                        "(default: %(default)s, as SD)")
    p.add_argument("--disc-start", type=int, default=DEFAULTS["model"]["disc_start"],
                   help="step at which the patch discriminator joins (default: %(default)s)")
    p.add_argument("--eval-samples", type=int, default=512,
                   help="held-out images to score after training, 0 = none (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (1 is faster on a busy machine)")
    p.add_argument("--figures", metavar="DIR", default=None,
                   help="do not train: draw the README figure from the run into DIR")
    add_data_args(p)
    add_train_args(p, device="cpu", **DEFAULTS["train"])
    return p


def describe(preset: str) -> str:
    with torch.device("meta"):
        ae = KLAutoencoder.from_preset(preset)
    c = ae.config
    return (f"KL autoencoder '{preset}': {count_parameters(ae):,} parameters (encoder "
            f"{count_parameters(ae.encoder):,}, decoder {count_parameters(ae.decoder):,}); "
            f"{c.resolution}x{c.resolution}x{c.in_channels} -> "
            f"{ae.latent_size}x{ae.latent_size}x{c.z_channels} (f = {c.f})")


# Train, store the scaling factor, score. Returns the run folder.
def run(args, dataset) -> Path:
    cfg = config_from_args(args)
    exp = KLExperiment(args.preset, kl_weight=args.kl_weight, disc_start=args.disc_start)
    run_dir = train(exp, dataset, cfg)
    lam = finish(run_dir, dataset, seed=args.seed)
    print(f"ldm: run folder {run_dir}; scaling factor {lam:.4f}")
    if args.eval_samples > 0:
        held_out = make_dataset(args.data, size=dataset.size, n=args.eval_samples,
                                seed=args.data_seed + 1) if args.data in ("shapes", "digits") else dataset
        scores = evaluate_autoencoder(load_autoencoder(run_dir), held_out, n=args.eval_samples)
        (run_dir / "eval.json").write_text(json.dumps(scores, indent=2) + "\n")
        print("ldm: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
    return run_dir


# ## The README figure
#
# `reconstructions.png`: 16 held-out images, each row of 8 followed by its
# reconstruction from the posterior's mode, then a row of decoded *random* latents
# $z = \mathcal{N}(0, I) / \lambda_z$: what the decoder makes of latents that no image
# produced (the KL term is too weak to make the latents a standard normal, so these are
# not samples of anything). Pixels enlarged 3 times.
@torch.no_grad()
def draw_figures(args, out: Path) -> Path:
    from annogen.vqgan.experiment import interleave_rows
    ae = load_autoencoder(Path(args.out) / "ldm" / args.run)
    data = make_dataset(args.data, size=args.image_size, n=16, seed=args.data_seed + 1)
    x = torch.stack([data[i]["image"] for i in range(16)])
    x_hat = ae.decode(ae.encode(x).mode()).clamp(-1, 1)
    g = torch.Generator().manual_seed(args.seed)
    z = torch.randn(8, ae.config.z_channels, ae.latent_size, ae.latent_size, generator=g)
    rand = ae.decode(z / ae.scaling_factor).clamp(-1, 1)
    grid = torch.cat([interleave_rows(x, x_hat, 8), rand])
    grid = grid.repeat_interleave(3, dim=2).repeat_interleave(3, dim=3)
    out.mkdir(parents=True, exist_ok=True)
    return save_image_grid(grid, out / "reconstructions.png", nrow=8)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.kl_weight < 0:
        parser.error("--kl-weight must be >= 0")
    try:
        if args.figures:
            print(f"wrote {draw_figures(args, Path(args.figures))}")
            return 0
        if args.preset == "sd-f8c4" and not args.train:
            print(describe(args.preset))
            print("not training the SD preset on this machine; add --train to do it anyway")
            return 0
        run(args, dataset_from_args(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
