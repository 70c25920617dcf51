r"""
---
title: DiT, the command line
summary: python -m annogen.dit - train a tiny class-conditional DiT with flow matching on a CPU, sample it with Flow-DPM-Solver and guidance, print the paper models' parameter counts, regenerate the chapter's figures.
---

# DiT: the command line

    python -m annogen.dit                             # the tiny DiT on latents of 32 px shapes (~13 min on 2 cores)
    python -m annogen.dit --resume --steps 6000       # continue the run to 6000 steps
    python -m annogen.dit --steps 0 --resume --sampler euler --sampling-steps 50
                                                      # resample a finished run with other settings
    python -m annogen.dit --preset XL/2               # the paper model's size, no training
    python -m annogen.dit --figures DIR               # the README figures, from a run

A run writes to `runs/dit/<run>/` (`--out`, `--run`) what the course's loop writes
([[train.py]]): `checkpoint.pt`, `metrics.jsonl`, `loss.png`, `config.json` and
`samples.png` (class-conditional samples, three per class, with the EMA weights).
After training it scores `--eval-samples` samples (attribute accuracy; with `--fid`
also the toy FID).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from annogen.data import add_data_args, dataset_from_args, make_dataset, positive_int
from annogen.train import add_train_args, config_from_args, save_image_grid, train

from annogen.dit.experiment import DEFAULTS, DiTExperiment, evaluate_samplers, load_dit
from annogen.dit.model import PRESETS, DiT, count_parameters
from annogen.train import ArgumentParser as Parser


def make_parser() -> Parser:
    p = Parser(prog="python -m annogen.dit",
               description="DiT (Peebles & Xie, 2023) trained with flow matching: a "
                           "class-conditional diffusion transformer on a CPU.")
    p.add_argument("--preset", choices=list(PRESETS), default="tiny", metavar="PRESET",
                   help="tiny (trains on a CPU) or a paper size: S/2, B/2, L/2, XL/2 (also /4, "
                        "/8), whose parameter count is printed (add --train to train it anyway)")
    p.add_argument("--train", action="store_true", help="train even with a paper preset")
    p.add_argument("--figures", metavar="DIR",
                   help="write the README figures from the run OUT/dit/RUN into DIR and exit")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (1 is faster on a busy machine)")
    add_data_args(p)
    add_train_args(p, device="cpu", **DEFAULTS["train"])
    g = p.add_argument_group("model and sampling")
    g.add_argument("--width", type=positive_int, default=None, help="hidden size (tiny: 128)")
    g.add_argument("--depth", type=positive_int, default=None, help="DiT blocks (tiny: 4)")
    g.add_argument("--patch-size", type=positive_int, default=None, help="p (tiny: 4)")
    g.add_argument("--shift", type=float, default=DEFAULTS["sampling"]["shift"],
                   help="timestep shift s for training and sampling (default: %(default)s)")
    g.add_argument("--sampler", choices=("dpm", "euler"), default=DEFAULTS["sampling"]["sampler"])
    g.add_argument("--sampling-steps", type=positive_int, default=DEFAULTS["sampling"]["steps"])
    g.add_argument("--cfg-scale", type=float, default=DEFAULTS["sampling"]["cfg_scale"],
                   help="classifier-free guidance w (1: none; default: %(default)s)")
    g.add_argument("--eval-samples", type=int, default=252,
                   help="samples to score after training (0: none)")
    g.add_argument("--fid", action="store_true",
                   help="also compute the toy FID (trains the feature net once, ~1 min)")
    s = p.add_argument_group("latent space")
    s.add_argument("--space", choices=("latent", "pixel"), default="latent",
                   help="latent: denoise the scaled latents of the ldm chapter's KL "
                        "autoencoder, as the paper (default); pixel: denoise pixels")
    s.add_argument("--ae-run", metavar="DIR", default=None,
                   help="run folder of the KL autoencoder (default: OUT/ldm/default; "
                        "trained there first when it has no checkpoint)")
    s.add_argument("--ae-steps", type=positive_int, default=None,
                   help="steps for the autoencoder when it must be trained first "
                        "(default: the ldm chapter's)")
    return p


# ## The paper's model, counted
#
# Built on PyTorch's `meta` device: shapes, no memory, so the 675M parameters of
# XL/2 are counted at once. These are the counts the tests check against the official
# code.
def describe_paper(name: str) -> str:
    with torch.device("meta"):
        model = DiT.from_preset(name)
    c = model.config
    blocks = sum(count_parameters(b) for b in model.blocks)
    return "\n".join([
        f"DiT-{name} (Peebles & Xie 2023, models.py), ImageNet 256x256 via SD-VAE latents:",
        f"  input {c.input_size}x{c.input_size}x{c.in_channels}, patch {c.patch_size}: "
        f"{c.num_patches} tokens of width {c.hidden_size}; {c.depth} blocks, {c.num_heads} heads",
        f"  output {model.out_channels} channels (noise + learned variance), "
        f"{c.num_classes} classes + null",
        f"  DiT blocks             {blocks:>14,}",
        f"  all parameters         {count_parameters(model):>14,}",
        f"  trainable              {count_parameters(model, trainable_only=True):>14,}"
        f"  (the sin-cos position table is frozen)",
        "Not trained here: there is no GPU on this machine (add --train to try anyway).",
    ])


def experiment_from_args(args, autoencoder=None) -> DiTExperiment:
    overrides = {}
    for flag, field in (("width", "hidden_size"), ("depth", "depth"), ("patch_size", "patch_size")):
        if getattr(args, flag) is not None:
            overrides[field] = getattr(args, flag)
    if args.width is not None and args.preset == "tiny":
        overrides["num_heads"] = max(1, args.width // 32)
    return DiTExperiment(preset=args.preset, shift=args.shift, sampler=args.sampler,
                         sampling_steps=args.sampling_steps, cfg_scale=args.cfg_scale,
                         autoencoder=autoencoder,
                         ae_run=str(ae_run_dir(args)) if autoencoder is not None else None,
                         **overrides)


# ## Latents, as in the paper
#
# By default the DiT denoises latents: the frozen KL autoencoder of the ldm chapter
# ([[ldm/experiment.py]]) is loaded from its run folder, or trained there first (with
# that chapter's defaults) when the folder has no checkpoint yet; every training image
# is encoded once into a scaled latent ([[ldm/experiment.py#latents-for-a-diffusion-model]]),
# and the DiT trains on those. `--space pixel` trains on the pixels instead.
def ae_run_dir(args) -> Path:
    return Path(args.ae_run) if args.ae_run else Path(args.out) / "ldm" / "default"


def autoencoder_from_args(args):
    from annogen.ldm.experiment import load_autoencoder
    run_dir = ae_run_dir(args)
    if not (run_dir / "checkpoint.pt").exists():
        from annogen.ldm.__main__ import build_parser as ldm_parser, run as ldm_run
        argv = ["--out", str(run_dir.parent.parent), "--run", run_dir.name, "--data", args.data,
                "--data-seed", str(args.data_seed), "--seed", str(args.seed),
                "--device", args.device, "--eval-samples", "0"]
        for flag, value in (("--image-size", args.image_size), ("--data-size", args.data_size),
                            ("--steps", args.ae_steps)):
            if value is not None:
                argv += [flag, str(value)]
        ae_args = ldm_parser().parse_args(argv)
        print(f"dit: no KL autoencoder at {run_dir}; training it first "
              f"(python -m annogen.ldm {' '.join(argv)})")
        ldm_run(ae_args, dataset_from_args(ae_args))
    return load_autoencoder(run_dir)


def print_scores(rows: list[dict]) -> None:
    for row in rows:
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in row.items() if v is not None)
        print(f"samples: {shown}")


# ## Train, then score
def run(args, dataset) -> None:
    cfg = config_from_args(args)
    start = time.perf_counter()
    autoencoder, train_data = None, dataset
    if args.space == "latent":
        from annogen.ldm.experiment import encode_latents
        autoencoder = autoencoder_from_args(args)
        train_data = encode_latents(autoencoder, dataset, seed=args.data_seed)
        print(f"dit: {len(train_data)} latents of {train_data.channels}x{train_data.size}x"
              f"{train_data.size} (scaling factor {autoencoder.scaling_factor:.4f}) in "
              f"{time.perf_counter() - start:.0f} s")
    exp = experiment_from_args(args, autoencoder)
    start = time.perf_counter()
    run_dir = train(exp, train_data, cfg)
    print(f"trained {cfg.steps} steps in {time.perf_counter() - start:.0f} s "
          f"({count_parameters(exp.model):,} parameters): {run_dir}")
    if args.eval_samples <= 0:
        return
    net = real = None
    if args.fid and args.data in ("shapes", "digits"):
        from annogen.metrics import load_feature_net
        net = load_feature_net(args.data, dataset.size)
        fresh = make_dataset(args.data, dataset.size, n=args.eval_samples, seed=args.data_seed + 1)
        real = torch.stack([fresh[i]["image"] for i in range(len(fresh))])
    exp.modules = {"dit": load_dit(run_dir)}
    rows, _ = evaluate_samplers(exp, ((args.sampler, args.sampling_steps),),
                                n=args.eval_samples, real=real, net=net, seed=args.seed)
    print_scores(rows)


# The autoencoder a finished run was trained on, from the run's checkpoint (`None` for a
# pixel-space run).
def load_run_autoencoder(run_dir: Path):
    from annogen.train import load_checkpoint
    latent = load_checkpoint(run_dir / "checkpoint.pt").get("extra", {}).get("latent")
    if not latent:
        return None
    from annogen.ldm.experiment import load_autoencoder
    return load_autoencoder(latent["ae_run"])


# ## The README figures
#
# From a finished run: `samples.png`, 63 class-conditional samples (one row per colour,
# three each of circle, square and triangle) with the run's sampler, and
# `samplers.png`, the same noise through Euler and Flow-DPM-Solver at 5, 10 and 20
# steps (one row each, the first 9 classes); pixels enlarged three times.
def enlarge(images: torch.Tensor, factor: int = 3) -> torch.Tensor:
    return images.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def write_figures(args, out: Path) -> None:
    run_dir = Path(args.out) / "dit" / args.run
    exp = experiment_from_args(args, load_run_autoencoder(run_dir))
    exp.modules = {"dit": load_dit(run_dir)}
    out.mkdir(parents=True, exist_ok=True)
    colours, shapes = 7, 3
    labels = torch.tensor([s * colours + c for c in range(colours) for s in range(shapes)
                           for _ in range(3)])
    torch.manual_seed(args.seed)
    save_image_grid(enlarge(exp.sample(len(labels), labels)), out / "samples.png", nrow=9)
    rows = []
    for sampler in ("euler", "dpm"):
        for steps in (5, 10, 20):
            torch.manual_seed(args.seed)
            rows.append(exp.sample(9, torch.arange(9) * 2, sampler=sampler, steps=steps))
    save_image_grid(enlarge(torch.cat(rows)), out / "samplers.png", nrow=9)
    print(f"wrote {out / 'samples.png'} and {out / 'samplers.png'}")


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.preset != "tiny" and not args.train and not args.figures:
        print(describe_paper(args.preset))
        return 0
    if args.figures:
        write_figures(args, Path(args.figures))
        return 0
    if args.steps < 0:
        parser.error("--steps must not be negative")
    try:
        dataset = dataset_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    run(args, dataset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
