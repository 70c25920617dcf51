r"""
---
title: VQGAN, the command line
summary: python -m annogen.vqgan - train the VQGAN, then the transformer over its codes, on a laptop CPU; print the paper model's parameter counts; regenerate the chapter's figures.
---

# VQGAN: the command line

    python -m annogen.vqgan                          # both stages, tiny, on shapes (~6 min on 2 cores)
    python -m annogen.vqgan --stage vqgan            # stage 1 only
    python -m annogen.vqgan --stage transformer      # stage 2 on the stage-1 run
    python -m annogen.vqgan --resume                 # continue an interrupted run
    python -m annogen.vqgan --stage transformer --gpt-steps 0 --resume --top-k 8 --top-p none
                                                     # resample with other settings
    python -m annogen.vqgan --preset paper           # the ImageNet f16 model's sizes
    python -m annogen.vqgan --figures DIR            # the README figures, from a run

Stage 1 writes to `runs/vqgan/<run>/` (`--out`, `--run`), stage 2 to
`runs/vqgan/<run>/transformer/`: a transformer belongs to the VQGAN whose codes it
learned. Each folder holds what the course's loop writes ([[train.py]]):
`checkpoint.pt`, `metrics.jsonl`, `loss.png`, `config.json` and `samples.png`, which
shows reconstructions for stage 1 and class-conditional samples for stage 2.

The training flags `--steps`, `--lr` and `--batch-size` set stage 1; `--gpt-steps`,
`--gpt-lr` and `--gpt-batch-size` set stage 2. The others (`--seed`, `--device`,
`--resume`, ...) apply to both.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from annogen.data import add_data_args, dataset_from_args, make_dataset, positive_int
from annogen.metrics import toy_fid
from annogen.train import ArgumentParser as Parser
from annogen.train import add_train_args, config_from_args, save_image_grid, top_k_arg, top_p_arg, train

from annogen.vqgan.experiment import (DEFAULTS, TransformerExperiment, VQGANExperiment, encode_dataset,
                         evaluate_transformer, evaluate_vqgan, interleave_rows, load_gpt,
                         load_vqgan)
from annogen.vqgan.losses import NLayerDiscriminator
from annogen.vqgan.model import build_vqgan
from annogen.vqgan.transformer import build_gpt


def make_parser() -> Parser:
    p = Parser(prog="python -m annogen.vqgan",
               description="VQGAN (Esser et al., 2021): train the autoencoder, then a "
                           "class-conditional transformer over its codes.")
    p.add_argument("--stage", choices=("vqgan", "transformer", "all"), default="all",
                   help="which stage(s) to train (default: %(default)s)")
    p.add_argument("--preset", choices=("tiny", "paper"), default="tiny",
                   help="tiny: trains on a CPU; paper: the ImageNet f16 model, whose "
                        "parameter counts are printed (add --train to train it anyway)")
    p.add_argument("--train", action="store_true", help="train even with --preset paper")
    p.add_argument("--figures", metavar="DIR",
                   help="write the README figures from the run OUT/vqgan/RUN into DIR and exit")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is faster on a busy machine)")
    add_data_args(p)
    add_train_args(p, device="cpu", **DEFAULTS["vqgan"])
    g = p.add_argument_group("stage 1: VQGAN")
    g.add_argument("--num-codes", type=int, default=None, help="codebook size K (tiny: 128)")
    g.add_argument("--disc-start", type=int, default=None,
                   help="step at which the adversarial loss starts "
                        f"(tiny: {DEFAULTS['model']['disc_start']}, paper: 250001)")
    g.add_argument("--disc-weight", type=float, default=None,
                   help="weight of the adversarial term next to the adaptive lambda "
                        f"(tiny: {DEFAULTS['model']['disc_weight']}, paper: 0.8)")
    g.add_argument("--restart-every", type=int, default=None,
                   help="dead-code restart period in steps, 0 = never "
                        f"(tiny: {DEFAULTS['model']['restart_every']}, paper: 0)")
    g.add_argument("--legacy-beta", action="store_true",
                   help="the official code's beta placement (on the codebook term)")
    g.add_argument("--lpips-vgg", metavar="PATH", help="local VGG16 weights: turns LPIPS on")
    g.add_argument("--lpips-lin", metavar="PATH", help="local LPIPS lin weights (vgg.pth)")
    g = p.add_argument_group("stage 2: transformer")
    g.add_argument("--gpt-steps", type=int, default=DEFAULTS["transformer"]["steps"],
                   help="optimizer steps of the transformer (default: %(default)s; 0 with --resume: only resample)")
    g.add_argument("--gpt-lr", type=float, default=DEFAULTS["transformer"]["lr"],
                   help="learning rate of the transformer (default: %(default)s)")
    g.add_argument("--gpt-batch-size", type=int, default=DEFAULTS["transformer"]["batch_size"],
                   help="code grids per step of the transformer (default: %(default)s)")
    g.add_argument("--gpt-layers", type=int, default=None, help="transformer layers (tiny: 2)")
    g.add_argument("--gpt-width", type=int, default=None, help="transformer width (tiny: 128)")
    g.add_argument("--top-k", type=top_k_arg, default=DEFAULTS["sampling"]["top_k"],
                   help="sample from the k most likely codes ('none': all; default: %(default)s)")
    g.add_argument("--top-p", type=top_p_arg, default=DEFAULTS["sampling"]["top_p"],
                   help="nucleus sampling: the smallest set of codes with mass p ('none': off; "
                        "default: %(default)s)")
    g.add_argument("--temperature", type=float, default=1.0,
                   help="divide the logits by this before sampling (default: %(default)s)")
    g.add_argument("--eval-samples", type=int, default=420,
                   help="samples to score after stage 2 (0: none)")
    g.add_argument("--fid", action="store_true",
                   help="also compute toy FIDs (trains the feature net once, ~1 min)")
    return p


# ## The paper's model, counted
#
# The ImageNet $f = 16$ VQGAN and the class-conditional transformer are built on
# PyTorch's `meta` device: every tensor has a shape and no memory, so even the 1.4B
# parameter transformer is counted in a blink. The counts of the autoencoder are those
# the tests check against the official modules.
def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe_paper() -> str:
    with torch.device("meta"):
        vqgan = build_vqgan("paper")
        disc = NLayerDiscriminator(3, 64, 3)
        gpt = build_gpt("paper")
    c = vqgan.config
    quant = count(vqgan.quantize) + count(vqgan.quant_conv) + count(vqgan.post_quant_conv)
    lines = [
        "VQGAN, ImageNet f16 (configs/imagenet_vqgan.yaml):",
        f"  {c.resolution}x{c.resolution} image -> {vqgan.latent_size}x{vqgan.latent_size} "
        f"grid of {c.embed_dim}-d codes ({vqgan.latent_size ** 2} tokens), K = {c.num_codes}",
        f"  encoder                      {count(vqgan.encoder):>14,}",
        f"  decoder                      {count(vqgan.decoder):>14,}",
        f"  codebook + quant convs       {quant:>14,}",
        f"  autoencoder total            {count(vqgan):>14,}",
        f"  PatchGAN (ndf 64, 3 layers)  {count(disc):>14,}",
        f"transformer (class-conditional, {gpt.config.n_layer} layers x {gpt.config.n_embd}, "
        f"K = {gpt.config.num_codes}):",
        f"  GPT                          {count(gpt):>14,}",
        "Not trained here: there is no GPU on this machine (add --train to try anyway).",
    ]
    return "\n".join(lines)


# ## Settings to experiments
#
# Only the flags that were given override a preset's own settings; the tiny defaults
# live in [[experiment.py#the-tiny-defaults]].
def vqgan_experiment(args) -> VQGANExperiment:
    tiny = args.preset == "tiny"
    overrides = {"legacy": args.legacy_beta}
    if args.num_codes is not None:
        overrides["num_codes"] = args.num_codes
    restart = args.restart_every
    overrides["restart_every"] = (DEFAULTS["model"]["restart_every"] if tiny else 0) \
        if restart is None else restart
    disc_start = args.disc_start
    if disc_start is None:
        disc_start = DEFAULTS["model"]["disc_start"] if tiny else 250_001
    lpips = (args.lpips_vgg, args.lpips_lin) if args.lpips_vgg else None
    disc = {} if tiny else {"disc_ndf": 64, "disc_layers": 3}
    return VQGANExperiment(preset=args.preset, disc_start=disc_start,
                           disc_weight=args.disc_weight, lpips_weights=lpips, **disc, **overrides)


def transformer_experiment(args, vqgan) -> TransformerExperiment:
    overrides = {}
    if args.gpt_layers is not None:
        overrides["n_layer"] = args.gpt_layers
    if args.gpt_width is not None:
        overrides["n_embd"] = args.gpt_width
    return TransformerExperiment(vqgan, preset=args.preset, top_k=args.top_k, top_p=args.top_p,
                                 temperature=args.temperature, **overrides)


def print_scores(title: str, scores: dict) -> None:
    shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in scores.items())
    print(f"{title}: {shown}")


# ## The two stages
#
# Stage 2 reads stage 1 from its checkpoint, whether stage 1 ran in this call or an
# earlier one, so `--stage transformer` works on any finished VQGAN run.
def run_stages(args, dataset) -> None:
    cfg = config_from_args(args)
    run_dir = Path(cfg.out) / "vqgan" / cfg.run
    net = real = None
    if args.fid:
        from annogen.metrics import load_feature_net
        net = load_feature_net(args.data, dataset.size)
        # held-out draws: training uses --data-seed s, the real images s + 1, the floor
        # s + 2 (a folder of images has no second draw: its scores are on training images)
        fresh = make_dataset(args.data, dataset.size, n=max(args.eval_samples, 512),
                             seed=args.data_seed + 1) if args.data in ("shapes", "digits") else dataset
        real = torch.stack([fresh[i]["image"] for i in range(len(fresh))])
    if args.stage in ("vqgan", "all"):
        exp = vqgan_experiment(args)
        start = time.perf_counter()
        train(exp, dataset, cfg)
        print(f"stage 1 done in {time.perf_counter() - start:.0f} s: {run_dir}")
        fresh = make_dataset(args.data, dataset.size, n=512, seed=args.data_seed + 1) \
            if args.data in ("shapes", "digits") else dataset
        print_scores("VQGAN", evaluate_vqgan(exp.model, fresh, net=net))
    if args.stage in ("transformer", "all"):
        if not (run_dir / "checkpoint.pt").exists():
            raise SystemExit(f"python -m annogen.vqgan: error: no VQGAN checkpoint at {run_dir}; "
                             "train stage 1 first (--stage vqgan)")
        vqgan = load_vqgan(run_dir, device=cfg.device if cfg.device != "auto" else "cpu")
        start = time.perf_counter()
        grids = encode_dataset(vqgan, dataset)
        print(f"encoded {len(grids)} images to {tuple(grids.codes.shape[1:])} code grids "
              f"in {time.perf_counter() - start:.0f} s")
        cfg2 = replace(cfg, steps=args.gpt_steps, lr=args.gpt_lr, batch_size=args.gpt_batch_size,
                       run=f"{cfg.run}/transformer",
                       ckpt_every=DEFAULTS["transformer"]["ckpt_every"],
                       sample_every=DEFAULTS["transformer"]["sample_every"])
        exp2 = transformer_experiment(args, vqgan)
        start = time.perf_counter()
        train(exp2, grids, cfg2)
        print(f"stage 2 done in {time.perf_counter() - start:.0f} s: {run_dir / 'transformer'}")
        if args.eval_samples > 0:
            scores, _ = evaluate_transformer(exp2, n=args.eval_samples, real=real, net=net)
            if net is not None and args.data in ("shapes", "digits"):
                # the same distance between two draws of real images: the floor
                other = make_dataset(args.data, dataset.size, n=len(real), seed=args.data_seed + 2)
                real2 = torch.stack([other[i]["image"] for i in range(len(other))])
                scores["toy_fid_floor"] = toy_fid(real[:args.eval_samples],
                                                  real2[:args.eval_samples], net)
            print_scores("samples", scores)


# ## The README figures
#
# From a finished run (both stages): `reconstructions.png`, 16 images of a fresh draw
# of the data and their reconstructions, and `samples.png`, 63 class-conditional
# samples, one row per colour, three each of circle, square and triangle; pixels
# enlarged three times.
def enlarge(images: torch.Tensor, factor: int = 3) -> torch.Tensor:
    r"""Every pixel as a `factor` x `factor` block, so that $32^2$ images are visible on a page."""
    return images.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def write_figures(args, out: Path) -> None:
    run_dir = Path(args.out) / "vqgan" / args.run
    vqgan = load_vqgan(run_dir)
    fresh = make_dataset(args.data, vqgan.config.resolution, n=16, seed=args.data_seed + 1)
    x = torch.stack([fresh[i]["image"] for i in range(16)])
    with torch.no_grad():
        x_hat = vqgan(x)[0]
    out.mkdir(parents=True, exist_ok=True)
    save_image_grid(enlarge(interleave_rows(x, x_hat, 8)), out / "reconstructions.png")
    exp = TransformerExperiment(vqgan, top_k=args.top_k, top_p=args.top_p,
                                temperature=args.temperature)
    exp.modules = {"gpt": load_gpt(run_dir / "transformer")}
    exp.grid = (vqgan.latent_size, vqgan.latent_size)
    colours, shapes = 7, 3
    labels = torch.tensor([s * colours + c for c in range(colours) for s in range(shapes)
                           for _ in range(3)])
    torch.manual_seed(args.seed)
    save_image_grid(enlarge(exp.sample(len(labels), labels)), out / "samples.png", nrow=9)
    print(f"wrote {out / 'reconstructions.png'} and {out / 'samples.png'}")


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.preset == "paper" and not args.train and not args.figures:
        print(describe_paper())
        return 0
    if args.figures:
        write_figures(args, Path(args.figures))
        return 0
    for name in ("steps", "gpt_steps"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative")
    try:
        dataset = dataset_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    run_stages(args, dataset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
