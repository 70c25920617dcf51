r"""
---
title: Sana, the command line
summary: python -m annogen.sana - train the DC-AE, the text encoder and the linear DiT on shapes captions on a CPU, score them with the toy GenEval, print the paper models' parameter counts, regenerate the chapter's figures.
---

# Sana: the command line

    python -m annogen.sana --threads 1                  # all three stages on 32 px shapes
    python -m annogen.sana --stage sana --steps 6000 --resume   # continue the DiT only
    python -m annogen.sana --stage sana --steps 0 --resume --sampler euler --sampling-steps 50
                                                        # re-score a finished run
    python -m annogen.sana --preset 0.6B                # Sana-0.6B / 1.6B: sizes, no training
    python -m annogen.sana --ae-preset f32c32           # Sana's DC-AE: size, no training
    python -m annogen.sana --figures DIR                # the README figures, from a run

A run writes three folders under `runs/sana/<run>/`: `ae/` (the DC-AE), `text/` (the
language model) and `dit/` (the linear DiT), each with what the course's loop writes
([[train.py]]): `checkpoint.pt`, `metrics.jsonl`, `loss.png`, `config.json`,
`samples.png`. A stage whose folder already has a finished checkpoint is not trained
again (unless `--resume` asks to continue it). After training, `--eval-samples`
held-out captions are generated and scored ([[experiment.py#a-toy-geneval]]).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from annogen.data import add_data_args, dataset_from_args, positive_int
from annogen.train import ArgumentParser as Parser
from annogen.train import add_train_args, config_from_args, save_image_grid, train

from annogen.sana.dcae import DCAE, count_parameters
from annogen.sana.dcae import PRESETS as AE_PRESETS
from annogen.sana.experiment import (DEFAULTS, AEExperiment, LatentCaptions, SanaExperiment,
                                     ceilings, geneval, load_module, load_run)
from annogen.sana.model import PRESETS, Sana
from annogen.sana.text import TextExperiment


def make_parser() -> Parser:
    p = Parser(prog="python -m annogen.sana",
               description="Sana (Xie et al., 2024): a linear-attention DiT on a deep-compression "
                           "autoencoder, conditioned on text, trained on shapes captions.")
    p.add_argument("--preset", choices=list(PRESETS), default="tiny",
                   help="tiny (trains on a CPU) or 0.6B / 1.6B, whose size is printed")
    p.add_argument("--ae-preset", choices=list(AE_PRESETS), default="tiny",
                   help="tiny (trains on a CPU) or f32c32, whose size is printed")
    p.add_argument("--stage", choices=("all", "ae", "text", "sana"), default="all")
    p.add_argument("--ae-steps", type=int, default=DEFAULTS["ae"]["steps"])
    p.add_argument("--text-steps", type=int, default=DEFAULTS["text"]["steps"])
    p.add_argument("--plain", action="store_true",
                   help="train the autoencoder without the residual shortcuts (the baseline)")
    p.add_argument("--plain-run", default="plain",
                   help="--figures: the run whose autoencoder was trained with --plain")
    p.add_argument("--figures", metavar="DIR",
                   help="write the README figures from the run OUT/sana/RUN into DIR and exit")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (1 is faster on a busy machine)")
    add_data_args(p)
    add_train_args(p, device="cpu", **DEFAULTS["sana"])
    g = p.add_argument_group("model and sampling")
    g.add_argument("--shift", type=float, default=DEFAULTS["sampling"]["shift"])
    g.add_argument("--sampler", choices=("dpm", "euler"), default=DEFAULTS["sampling"]["sampler"])
    g.add_argument("--sampling-steps", type=positive_int, default=DEFAULTS["sampling"]["steps"])
    g.add_argument("--cfg-scale", type=float, default=DEFAULTS["sampling"]["cfg_scale"],
                   help="classifier-free guidance w (1: none; default: %(default)s)")
    g.add_argument("--eval-samples", type=int, default=256,
                   help="held-out captions to generate and score (0: none)")
    return p


# ## The paper's models, counted
#
# Built on the `meta` device (shapes only), so that 1.6 billion parameters cost nothing.
def describe_paper(args) -> str:
    lines = []
    with torch.device("meta"):
        if args.preset != "tiny":
            m = Sana.from_preset(args.preset)
            c = m.config
            lines += [
                f"Sana-{args.preset} (NVlabs/Sana, 1024px): {c.input_size}x{c.input_size}x"
                f"{c.in_channels} DC-AE latent, patch {c.patch_size}: "
                f"{(c.input_size // c.patch_size) ** 2} tokens of width {c.hidden_size}",
                f"  {c.depth} blocks, {c.hidden_size // c.linear_head_dim} linear heads of dim "
                f"{c.linear_head_dim}, {c.num_heads} cross-attention heads, Mix-FFN "
                f"{int(c.hidden_size * c.mlp_ratio)}",
                f"  one block              {count_parameters(m.blocks[0]):>14,}",
                f"  caption MLP            {count_parameters(m.y_embedder):>14,}",
                f"  all parameters         {count_parameters(m):>14,}"]
        if args.ae_preset != "tiny":
            ae = DCAE.from_preset(args.ae_preset)
            lines += [
                f"DC-AE {args.ae_preset} (dc-ae-f32c32-sana-1.0): f{ae.config.f}, "
                f"{ae.config.latent_channels} latent channels",
                f"  encoder                {count_parameters(ae.encoder):>14,}",
                f"  decoder                {count_parameters(ae.decoder):>14,}",
                f"  all parameters         {count_parameters(ae):>14,}"]
    lines.append("Not trained here: these are GPU-sized models.")
    return "\n".join(lines)


def stage_config(args, stage: str, root: Path):
    cfg = config_from_args(args)
    run = f"{args.run}/{stage}"
    if stage == "sana":
        return replace(cfg, run=f"{args.run}/dit")
    d = DEFAULTS[stage]
    steps = args.ae_steps if stage == "ae" else args.text_steps
    return replace(cfg, run=run, steps=steps, batch_size=d["batch_size"], lr=d["lr"],
                   ema_decay=None, ckpt_every=d["ckpt_every"], sample_every=d["sample_every"])


def finished(run_dir: Path, args) -> bool:
    return (run_dir / "checkpoint.pt").exists() and not args.resume


# ## Train the three stages, then score
def run(args, dataset) -> None:
    root = Path(args.out) / "sana" / args.run
    if args.stage in ("all", "ae") and not finished(root / "ae", args):
        start = time.perf_counter()
        exp = AEExperiment(shortcut=not args.plain)
        run_dir = train(exp, dataset, stage_config(args, "ae", root))
        print(f"DC-AE: {count_parameters(exp.model):,} parameters, "
              f"{time.perf_counter() - start:.0f} s: {run_dir}")
    if args.stage in ("all", "text") and not finished(root / "text", args):
        start = time.perf_counter()
        exp = TextExperiment()
        run_dir = train(exp, dataset, stage_config(args, "text", root))
        print(f"text encoder: {count_parameters(exp.model):,} parameters, "
              f"{time.perf_counter() - start:.0f} s: {run_dir}")
    if args.stage not in ("all", "sana"):
        return
    for stage in ("ae", "text"):
        if not (root / stage / "checkpoint.pt").exists():
            raise SystemExit(f"error: no trained {stage} in {root / stage}; run --stage {stage} first")
    ae, text = load_module(root / "ae", "ae"), load_module(root / "text", "text")
    latents = LatentCaptions(dataset, ae, text)
    exp = make_sana_experiment(args, ae, text)
    start = time.perf_counter()
    run_dir = train(exp, latents, stage_config(args, "sana", root))
    print(f"Sana: {count_parameters(exp.model):,} parameters, {time.perf_counter() - start:.0f} s "
          f"(latent scale {ae.scaling_factor:.4f}): {run_dir}")
    if args.eval_samples > 0 and dataset.size == 32 and dataset.channels == 3:
        row, _ = geneval(exp, n=args.eval_samples, model=load_module(run_dir, "sana"),
                         seed=args.seed)
        print("toy GenEval: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in row.items()))
        ceiling = ceilings(ae, n=args.eval_samples)
        print(f"  ceilings: real all {ceiling['real']['geneval_all']:.3f}, reconstruction all "
              f"{ceiling['reconstruction']['geneval_all']:.3f} "
              f"(PSNR {ceiling['reconstruction']['psnr']:.1f} dB)")


def make_sana_experiment(args, ae, text) -> SanaExperiment:
    return SanaExperiment(ae, text, preset=args.preset, shift=args.shift, sampler=args.sampler,
                          sampling_steps=args.sampling_steps, cfg_scale=args.cfg_scale)


# ## The README figures
#
# From a finished run: `samples.png` (held-out captions, two rows per caption group:
# generated, then the real image of the same caption, pixels enlarged three times) and
# `resolution.png` (the same captions sampled on the trained $4 \times 4$ latent and on an
# $8 \times 8$ one, which a model with no positional embedding accepts), and
# `autoencoders.png` (held-out images, their reconstructions by the residual DC-AE, and
# by the plain autoencoder of run `--plain-run`).
def enlarge(images: torch.Tensor, factor: int = 3) -> torch.Tensor:
    return images.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


def write_figures(args, out: Path) -> None:
    from annogen.data import Shapes
    root = Path(args.out) / "sana" / args.run
    ae, text, model = load_run(root)
    exp = make_sana_experiment(args, ae, text)
    held_out = Shapes(n=16, size=32, seed=1)
    captions = [held_out[i]["caption"] for i in range(16)]
    real = torch.stack([held_out[i]["image"] for i in range(16)])
    torch.manual_seed(args.seed)
    fake = exp.generate(captions, model=model)
    grid = torch.cat([fake[:8], real[:8], fake[8:], real[8:]])
    out.mkdir(parents=True, exist_ok=True)
    save_image_grid(enlarge(grid), out / "samples.png", nrow=8)
    (out / "samples.txt").write_text("\n".join(f"{i}: {c}" for i, c in enumerate(captions)) + "\n")
    torch.manual_seed(args.seed)
    big = exp.generate(captions[:8], model=model, size=2 * model.config.input_size)
    torch.manual_seed(args.seed)
    small = exp.generate(captions[:8], model=model)
    save_image_grid(torch.cat([enlarge(small, 6), enlarge(big, 3)]), out / "resolution.png", nrow=8)
    plain_dir = Path(args.out) / "sana" / args.plain_run / "ae"
    if (plain_dir / "checkpoint.pt").exists():
        plain = load_module(plain_dir, "ae")
        x = real[:8]
        with torch.no_grad():
            rows = [x, ae(x).clamp(-1, 1), plain(x).clamp(-1, 1)]
        save_image_grid(enlarge(torch.cat(rows)), out / "autoencoders.png", nrow=8)
    print(f"wrote {out / 'samples.png'}, {out / 'resolution.png'} and {out / 'autoencoders.png'}")


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.preset != "tiny" or args.ae_preset != "tiny":
        print(describe_paper(args))
        return 0
    if args.figures:
        write_figures(args, Path(args.figures))
        return 0
    if min(args.steps, args.ae_steps, args.text_steps) < 0:
        parser.error("step counts must not be negative")
    try:
        dataset = dataset_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    if args.data != "shapes" and args.stage in ("all", "text", "sana"):
        parser.error("the text encoder knows only the shapes captions: use --data shapes")
    run(args, dataset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
