r"""
---
title: VAR, the command line
summary: python -m annogen.var - train the multi-scale tokenizer, then the next-scale transformer, on a laptop CPU; print the paper models' parameter counts; run the chapter's experiments.
---

# VAR: the command line

    python -m annogen.var --threads 1              # both stages, tiny, on shapes (~25 min)
    python -m annogen.var --stage vae              # stage 1 only
    python -m annogen.var --stage var              # stage 2 on the stage-1 run
    python -m annogen.var --stage var --two-pass   # stage 2, able to sample in two passes
    python -m annogen.var --resume                 # continue an interrupted run
    python -m annogen.var --preset d16             # the paper's d16 (and d20, d24, d30): counts
    python -m annogen.var --figures DIR --fid      # the author's experiments, from a run
    python -m annogen.var --independence DIR --fid # neighbour statistics, one pass vs two
    python -m annogen.var --laplacian DIR          # the tokenizer as a Laplacian pyramid

Stage 1 writes to `runs/var/<run>/`, stage 2 to `runs/var/<run>/transformer/`
(`transformer-two-pass/` with `--two-pass`), each with what the course's loop writes
([[train.py]]). `--steps`, `--lr`, `--batch-size`
set stage 1; `--var-steps`, `--var-lr`, `--var-batch-size` stage 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from annogen.data import add_data_args, dataset_from_args, make_dataset, positive_int
from annogen.train import add_train_args, config_from_args, train
from annogen.train import ArgumentParser as Parser
from annogen.train import top_k_arg, top_p_arg

from annogen.var.experiment import (DEFAULTS, VAEExperiment, VARExperiment, encode_dataset, evaluate_var,
                         evaluate_vae, load_vae)
from annogen.var.model import build_var, count_parameters
from annogen.var.vae import build_vae

PAPER = ("d16", "d20", "d24", "d30")


def patch_nums_arg(text: str) -> tuple[int, ...]:
    try:
        pns = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {text}")
    if not pns or any(a >= b for a, b in zip(pns, pns[1:])) or pns[0] < 1:
        raise argparse.ArgumentTypeError(f"scales must increase from at least 1, not {text}")
    return pns


def make_parser() -> Parser:
    p = Parser(prog="python -m annogen.var",
               description="VAR (Tian et al., 2024): train the multi-scale tokenizer, then "
                           "the next-scale transformer.")
    p.add_argument("--stage", choices=("vae", "var", "all"), default="all",
                   help="vae: the tokenizer, var: the transformer on a trained tokenizer, all: both")
    p.add_argument("--preset", choices=("tiny",) + PAPER, default="tiny",
                   help="tiny: trains on a CPU; d16..d30: the paper's models, whose parameter "
                        "counts are printed")
    p.add_argument("--figures", metavar="DIR",
                   help="write the README figures and run the experiments on OUT/var/RUN")
    p.add_argument("--independence", metavar="DIR",
                   help="neighbour statistics and one pass vs two on OUT/var/RUN (needs a "
                        "--two-pass stage 2); writes DIR/independence.json")
    p.add_argument("--laplacian", metavar="DIR",
                   help="the tokenizer of OUT/var/RUN as a Laplacian pyramid: DIR/laplacian.png")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    add_data_args(p)
    add_train_args(p, device="cpu", **DEFAULTS["vae"])
    g = p.add_argument_group("stage 1: tokenizer")
    g.add_argument("--num-codes", type=int, default=None, help="codebook size K (tiny: 256)")
    g.add_argument("--patch-nums", type=patch_nums_arg, default=None,
                   help="scale schedule, e.g. 1,2,3,4,6,8 (default: the latent's, see quant.py)")
    g.add_argument("--disc-start", type=int, default=DEFAULTS["model"]["disc_start"],
                   help="step at which the PatchGAN critic joins (default: %(default)s)")
    g.add_argument("--restart-every", type=int, default=DEFAULTS["model"]["restart_every"],
                   help="dead-code restart period, 0 = never (official: never)")
    g = p.add_argument_group("stage 2: transformer")
    g.add_argument("--var-steps", type=int, default=DEFAULTS["var"]["steps"],
                   help="optimizer steps of stage 2 (default: %(default)s)")
    g.add_argument("--var-lr", type=float, default=DEFAULTS["var"]["lr"],
                   help="learning rate of stage 2 (default: %(default)s)")
    g.add_argument("--var-batch-size", type=int, default=DEFAULTS["var"]["batch_size"],
                   help="token pyramids per step of stage 2 (default: %(default)s)")
    g.add_argument("--cfg", type=float, default=DEFAULTS["sampling"]["cfg"],
                   help="VAR's guidance argument, w - 1 at the last scale (default: %(default)s)")
    g.add_argument("--top-k", type=top_k_arg, default=DEFAULTS["sampling"]["top_k"],
                   help="keep the k most likely codes per token (default: %(default)s)")
    g.add_argument("--top-p", type=top_p_arg, default=DEFAULTS["sampling"]["top_p"],
                   help="then the nucleus of probability p (default: %(default)s)")
    g.add_argument("--eval-samples", type=int, default=420,
                   help="samples to score after stage 2, and per measurement of --figures (0: none)")
    g.add_argument("--fid", action="store_true", help="also the toy FID (feature net ~1 min once)")
    g.add_argument("--two-pass", action="store_true",
                   help="train a transformer that can also sample each scale in two passes "
                        "(model.py, the two-pass sampler); it goes to RUN/transformer-two-pass")
    return p


# ## The paper's models, counted
#
# Built on the `meta` device (shapes, no memory), so d30's 2B parameters cost nothing.
def describe(preset: str) -> str:
    with torch.device("meta"):
        vae = build_vae("paper")
        var = build_var(preset)
    c = var.config
    return "\n".join([
        f"VAR-{preset}: depth {c.depth}, width {c.width}, {c.num_heads} heads, "
        f"{c.num_classes} classes, K = {c.num_codes} codes",
        f"  scales {c.patch_nums}: {c.L} tokens in {len(c.patch_nums)} steps",
        f"  transformer                 {count_parameters(var):>15,}",
        f"  VQ autoencoder              {count_parameters(vae):>15,}",
        "Not trained here: there is no GPU on this machine.",
    ])


def run_stages(args, dataset) -> None:
    cfg = config_from_args(args)
    run_dir = Path(cfg.out) / "var" / cfg.run
    if args.stage in ("vae", "all"):
        overrides = {"restart_every": args.restart_every}
        if args.num_codes is not None:
            overrides["num_codes"] = args.num_codes
        if args.patch_nums is not None:
            overrides["patch_nums"] = args.patch_nums
        exp = VAEExperiment(disc_start=args.disc_start, **overrides)
        start = time.perf_counter()
        train(exp, dataset, cfg)
        print(f"stage 1 done in {time.perf_counter() - start:.0f} s: {run_dir}")
        fresh = make_dataset(args.data, dataset.size, n=512, seed=args.data_seed + 1) \
            if args.data in ("shapes", "digits") else dataset
        print_scores("tokenizer", evaluate_vae(exp.model, fresh))
    if args.stage in ("var", "all"):
        if not (run_dir / "checkpoint.pt").exists():
            raise SystemExit(f"python -m annogen.var: error: no tokenizer checkpoint at "
                             f"{run_dir}; train stage 1 first (--stage vae)")
        vae = load_vae(run_dir)
        pyramids = encode_dataset(vae, dataset)
        sub = "transformer-two-pass" if args.two_pass else "transformer"
        cfg2 = replace(cfg, steps=args.var_steps, lr=args.var_lr, batch_size=args.var_batch_size,
                       run=f"{cfg.run}/{sub}", grad_clip=DEFAULTS["var"]["grad_clip"],
                       ckpt_every=DEFAULTS["var"]["ckpt_every"],
                       sample_every=DEFAULTS["var"]["sample_every"])
        exp2 = VARExperiment(vae, cfg=args.cfg, top_k=args.top_k, top_p=args.top_p,
                             **({"two_pass": True} if args.two_pass else {}))
        start = time.perf_counter()
        train(exp2, pyramids, cfg2)
        print(f"stage 2 done in {time.perf_counter() - start:.0f} s: {run_dir / sub}")
        if args.eval_samples > 0:
            real = net = None
            if args.fid:
                from annogen.metrics import load_feature_net
                net = load_feature_net(args.data, dataset.size)
                fresh = make_dataset(args.data, dataset.size, n=args.eval_samples, seed=1)
                real = torch.stack([fresh[i]["image"] for i in range(len(fresh))])
            print_scores("samples", evaluate_var(exp2, n=args.eval_samples, real=real,
                                                 net=net)[0])


def print_scores(title: str, scores: dict) -> None:
    print(f"{title}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in scores.items()))


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.preset in PAPER:
        print(describe(args.preset))
        return 0
    if args.laplacian:
        from annogen.var.experiments import laplacian_figure
        laplacian_figure(Path(args.out) / "var" / args.run, Path(args.laplacian))
        return 0
    if args.independence:
        from annogen.var.experiments import write_independence
        write_independence(Path(args.out) / "var" / args.run, Path(args.independence),
                           seed=args.seed, fid=args.fid, n=args.eval_samples or 420)
        return 0
    if args.figures:
        from annogen.var.experiments import write_figures
        write_figures(Path(args.out) / "var" / args.run, Path(args.figures), seed=args.seed,
                      fid=args.fid, n=args.eval_samples or 420)
        return 0
    for name in ("steps", "var_steps"):
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
