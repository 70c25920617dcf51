r"""
---
title: R3GAN, the command line
summary: python -m annogen.r3gan - train the tiny class-conditional R3GAN (or the roadmap's baseline, or any loss switch) on a CPU, score its samples, print the CIFAR-10 networks' parameter counts, regenerate the chapter's figures.
---

# R3GAN: the command line

    python -m annogen.r3gan                              # config E, tiny, 32 px shapes (~9.5 min)
    python -m annogen.r3gan --config B --run B           # the stripped baseline: NS loss + R1
    python -m annogen.r3gan --no-r2 --run no-r2          # config E without R2
    python -m annogen.r3gan --loss ns --run ns           # config E's network, the classic loss
    python -m annogen.r3gan --resume --steps 4000        # continue a run to 4000 steps
    python -m annogen.r3gan --preset cifar10             # the paper's networks, counted, not trained
    python -m annogen.r3gan --figures DIR                # the README figures (toy + a run's samples)

A run writes to `runs/r3gan/<run>/` (`--out`, `--run`) what the course's loop writes
([[train.py]]): `checkpoint.pt`, `metrics.jsonl` (losses, $R_1$, $R_2$, $\gamma$, the logit
gap), `loss.png`, `config.json` and `samples.png` (three samples per class, from the
EMA generator). After training it scores `--eval-samples` samples (attribute accuracy;
with `--fid` also the toy FID).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from annogen.data import add_data_args, dataset_from_args, make_dataset, positive_int
from annogen.r3gan.experiment import (CONFIGS, DEFAULTS, TINY_GAMMA, R3GANExperiment, evaluate,
                                      load_generator)
from annogen.r3gan.losses import LOSSES
from annogen.r3gan.model import PRESETS, Discriminator, Generator, count_parameters
from annogen.train import ArgumentParser, add_train_args, config_from_args, save_image_grid, train


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def make_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m annogen.r3gan",
                       description="R3GAN (Huang et al., 2024): RpGAN + R1 + R2 on a modernised "
                                   "ResNet, class-conditional, on a CPU.")
    p.add_argument("--preset", choices=list(PRESETS), default="tiny",
                   help="tiny (trains on a CPU) or cifar10 (the paper's networks: their "
                        "parameter counts are printed; add --train to train them anyway)")
    p.add_argument("--train", action="store_true", help="train even with the cifar10 preset")
    p.add_argument("--figures", metavar="DIR",
                   help="write the README figures into DIR (the 2-D toy, and samples from the "
                        "run OUT/r3gan/RUN if it exists) and exit")
    p.add_argument("--figure-parts", choices=("all", "toy", "samples"), default="all",
                   help="with --figures: which pictures to write (default: all)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (1 is faster on a busy machine)")
    add_data_args(p)
    add_train_args(p, device="cpu", **DEFAULTS["train"])
    g = p.add_argument_group("GAN")
    g.add_argument("--config", choices=list(CONFIGS), default="E",
                   help="roadmap config: B (plain blocks, NS loss, R1) or E (R3GAN; default)")
    g.add_argument("--loss", choices=list(LOSSES), default=None,
                   help="override the config's loss: rpgan (relativistic pairing) or ns")
    g.add_argument("--r1", action=argparse.BooleanOptionalAction, default=None,
                   help="R1 penalty on the reals (default: the config's)")
    g.add_argument("--r2", action=argparse.BooleanOptionalAction, default=None,
                   help="R2 penalty on the fakes (default: the config's)")
    g.add_argument("--gamma", type=non_negative_float, nargs=2, metavar=("BASE", "FINAL"),
                   default=None,
                   help="gamma of R1/R2, cosine from BASE to FINAL (default: "
                        f"{' '.join(map(str, TINY_GAMMA))} for the tiny preset, the paper's "
                        f"{' '.join(map(str, DEFAULTS['schedule']['gamma']))} for cifar10)")
    g.add_argument("--eval-samples", type=int, default=252,
                   help="samples to score after training (0: none)")
    g.add_argument("--fid", action="store_true",
                   help="also compute the toy FID (trains the feature net once, ~1 min)")
    return p


# ## The paper's networks, counted
#
# Built on PyTorch's `meta` device (shapes only, no memory). These are the counts the
# tests check against the official code.
def describe_paper(name: str) -> str:
    with torch.device("meta"):
        G, D = Generator.from_preset(name), Discriminator.from_preset(name)
    c = G.config
    return "\n".join([
        f"R3GAN {name} (Huang et al. 2024, official train.py --preset CIFAR10 --cond):",
        f"  {len(c.widths)} stages {c.widths}, {c.blocks} blocks, cardinality {c.cardinalities}, "
        f"expansion {c.expansion}; L = {c.num_blocks}",
        f"  z {c.z_dim}, {c.num_classes} classes (G embedding {c.g_embed_dim}, "
        f"D projection {c.d_embed_dim}); {c.resolution}x{c.resolution} images",
        f"  generator       {count_parameters(G):>12,}",
        f"  discriminator   {count_parameters(D):>12,}",
        "Not trained here (add --train to try anyway).",
    ])


def experiment_from_args(args) -> R3GANExperiment:
    gamma = args.gamma
    if gamma is None:  # the preset's: ten times the paper's for tiny (TINY_GAMMA), else the paper's
        gamma = TINY_GAMMA if args.preset == "tiny" else DEFAULTS["schedule"]["gamma"]
    return R3GANExperiment(preset=args.preset, config=args.config, loss=args.loss, r1=args.r1,
                           r2=args.r2, gamma=tuple(gamma))


def run(args, dataset) -> None:
    cfg = config_from_args(args)
    exp = experiment_from_args(args)
    start = time.perf_counter()
    run_dir = train(exp, dataset, cfg)
    print(f"trained {cfg.steps} steps in {time.perf_counter() - start:.0f} s (config "
          f"{args.config}, loss {exp.loss}, R1 {exp.r1}, R2 {exp.r2}; G "
          f"{count_parameters(exp.G):,}, D {count_parameters(exp.D):,} parameters): {run_dir}")
    if args.eval_samples <= 0:
        return
    net = real = None
    if args.fid and args.data in ("shapes", "digits"):
        from annogen.metrics import load_feature_net
        net = load_feature_net(args.data, dataset.size)
        fresh = make_dataset(args.data, dataset.size, n=args.eval_samples, seed=1)
        real = torch.stack([fresh[i]["image"] for i in range(len(fresh))])
    scores, _ = evaluate(load_generator(run_dir), n=args.eval_samples, real=real, net=net,
                         seed=args.seed)
    print("samples: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in scores.items()))


# ## The README figures
#
# `toy.png`: the 2-D toy's samples after the non-saturating loss with $R_1$, RpGAN with
# $R_1$ only, and RpGAN with $R_1 + R_2$, over the 25 modes, and their logit-gap curves
# ([[toy.py]]). `samples.png`: from the run `--run`, if it exists, 63 samples (three
# per class), enlarged three times. `--figure-parts toy` or `samples` writes only one of them.
def write_figures(args, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out.mkdir(parents=True, exist_ok=True)
    if args.figure_parts in ("all", "toy"):
        write_toy_figure(args, out, plt)
    run_dir = Path(args.out) / "r3gan" / args.run
    if args.figure_parts in ("all", "samples") and (run_dir / "checkpoint.pt").exists():
        G = load_generator(run_dir)
        colours, shapes = 7, 3
        labels = torch.tensor([s * colours + c for c in range(colours) for s in range(shapes)
                               for _ in range(3)])
        exp = R3GANExperiment()
        exp.modules = {"g": G}
        torch.manual_seed(args.seed)
        x = exp.sample(len(labels), labels)
        x = x.repeat_interleave(3, dim=2).repeat_interleave(3, dim=3)
        save_image_grid(x, out / "samples.png", nrow=9)
        print(f"wrote {out / 'samples.png'}")


def write_toy_figure(args, out: Path, plt) -> None:
    from annogen.r3gan.toy import ToyConfig, grid_modes, train_toy
    runs = [("non-saturating + R1", ToyConfig(loss="ns", r2=False, seed=args.seed)),
            ("RpGAN + R1", ToyConfig(loss="rpgan", r2=False, seed=args.seed)),
            ("RpGAN + R1 + R2", ToyConfig(loss="rpgan", r2=True, seed=args.seed))]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    modes = grid_modes()
    for ax, (title, cfg) in zip(axes, runs):
        res = train_toy(cfg)
        ax.scatter(*res.samples.T, s=2, alpha=0.4)
        ax.scatter(*modes.T, s=20, c="red", marker="x")
        ax.set(xlim=(-3, 3), ylim=(-3, 3), aspect="equal",
               title=f"{title}\n{res.modes_covered}/25 modes, {res.high_quality:.0%} high quality")
        steps = [cfg.log_every * (i + 1) for i in range(len(res.logit_gap))]
        axes[3].plot(steps, res.logit_gap, label=title, lw=1)
    axes[3].set(title="logit gap  mean D(x) - mean D(G(z))", xlabel="step")
    axes[3].axhline(0, color="grey", lw=0.5)
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "toy.png", dpi=80)
    plt.close(fig)
    print(f"wrote {out / 'toy.png'}")


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.figures:
        write_figures(args, Path(args.figures))
        return 0
    if args.preset != "tiny" and not args.train:
        print(describe_paper(args.preset))
        return 0
    if args.steps < 0:
        parser.error("--steps must not be negative")
    try:
        dataset = dataset_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    try:
        run(args, dataset)
    except ValueError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
