r"""
---
title: DDPM, training and evaluation
summary: Training the noise predictor with L_simple on the course's loop (EMA weights, warmup, label dropout), loading a run, sampling it with DDPM or DDIM, and measuring samples by toy FID and attribute accuracy per sampler and step count.
---

# Training a diffusion model, and measuring its samples

Training a DDPM is the simplest training of the course: one network, one optimizer, one
loss ($L_\text{simple}$ of [[diffusion.py#the-loss]]), no second stage and no adversary.
What makes diffusion expensive is not training but **sampling**: the trained network is
run once per step, a thousand times per image for DDPM. So this page spends most of
its lines on sampling and on measuring what fewer steps cost.

The experiment runs on the course's loop ([[train.py]]), which brings the EMA of the
weights (the paper samples from an EMA with decay 0.9999), checkpoints, exact
resumption, logs and sample grids. The command line is [[__main__.py]].
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from annogen.data import Shapes, make_dataset
from annogen.metrics import load_feature_net, toy_fid
from annogen.train import (Experiment, TrainConfig, load_checkpoint, save_image_grid,
                           torch_threads, train)

from annogen.ddpm.diffusion import Diffusion
from annogen.ddpm.unet import UNet, UNetConfig, build_unet

__all__ = ["DDPMExperiment", "load_model", "load_diffusion", "sample_images", "evaluate", "score_labels",
           "class_labels", "benchmark", "TINY_TRAINING", "TINY_GUIDANCE"]


# ## The tiny recipe
#
# The paper trains its CIFAR-10 model for 800k steps of batch 128 with Adam at
# $2 \cdot 10^{-4}$, 5,000 warmup steps, gradient clipping at 1, a constant learning
# rate after the warmup and an EMA of decay 0.9999. A CPU run has a couple of thousand
# steps, so the tiny recipe turns the knobs that matter at that length: a higher
# learning rate ($2 \cdot 10^{-3}$), a short warmup (100 steps), batch 32 (more, noisier
# steps for the same images per second), an EMA of decay 0.995, which averages the
# last 200 or so steps instead of the last 10,000 (an EMA over 10,000 steps of a
# 2,000-step run would mostly remember the untrained network), and, unlike the paper,
# a learning rate that decays to zero along a cosine by the end of the run (see
# [[#the-training-step]]; measured in the chapter's README). The tiny network also predicts
# $v$ rather than the paper's $\epsilon$ ([[diffusion.py#the-loss]]): on a short run that is
# the largest single lever we measured (DDIM-50 samples 77% valid instead of 16%); the
# paper preset keeps $\epsilon$. Its samples are drawn with classifier-free guidance of
# weight $w = 3$ ([[diffusion.py#guidance]]): a sampler setting, not a
# training one, which raised attribute accuracy from 53% to 74% on the same network
# (and toy FID, the price of guidance, from 316 to 797; the README's table). The
# paper's model is unconditional, so its preset samples without guidance.
TINY_TRAINING = dict(lr=2e-3, batch_size=32, ema_decay=0.995, grad_clip=1.0)
TINY_STEPS = 2000
TINY_PREDICTION = "v"
TINY_GUIDANCE = 3.0
WARMUP = {"tiny": 100, "paper": 5000}
DECAY = {"tiny": True, "paper": False}


# ## The training step
#
# Per batch: the learning rate ramps up linearly over the first `warmup` steps $w$;
# with `decay` it then falls along a half cosine to zero at step $H$ (the run's
# planned length, `decay_steps`),
#
# $$\eta(s) = \eta_0 \min\Big(1, \frac{s}{w}\Big)\ \frac{1 + \cos(\pi p)}{2},
#   \qquad p = \mathrm{clip}\Big(\frac{s - w}{H - w}, 0, 1\Big).$$
#
# Without decay ($p = 0$, the paper) the rate stays at $\eta_0$. Why decay: the
# network's error at large $t$, where the right answer is almost "$\epsilon = x_t$",
# sits on a floor set by the jitter of the weights at a high learning rate, and the
# samplers start there (the README's diagnostic). The rate is a function of the step
# alone and $H$ is saved in the checkpoint, so a resumed run gets the same rates. With
# a wall-clock budget ([[#a-wall-clock-budget]]) $p$ is the fraction of the budget spent.
#
# Then a random 10% of the labels are replaced by the null label, so that one
# network learns $\epsilon_\theta(x_t, t, y)$ and $\epsilon_\theta(x_t, t, \varnothing)$
# (classifier-free guidance needs both); then $L_\text{simple}$, one optimizer step.
# `ema_modules` asks the loop to keep an EMA of the U-Net, which is what `sample` and
# every evaluation use.
class DDPMExperiment(Experiment):
    r"""Train `build_unet(preset, **overrides)` with $L_\text{simple}$; outputs under `runs/ddpm/`."""

    name = "ddpm"
    ema_modules = ("unet",)
    num_samples = 64

    def __init__(self, preset: str = "tiny", label_dropout: float = 0.1,
                 warmup: int | None = None, sample_steps: int = 50,
                 budget_seconds: float | None = None, diffusion: Diffusion | None = None,
                 clip: bool = True, decay: bool | None = None, decay_steps: int | None = None,
                 **overrides):
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
        if decay_steps is not None and decay_steps < 1:
            raise ValueError(f"decay_steps must be >= 1, got {decay_steps}")
        self.preset, self.label_dropout, self.overrides = preset, label_dropout, overrides
        self.warmup = WARMUP.get(preset, 100) if warmup is None else warmup
        self.decay = DECAY.get(preset, True) if decay is None else decay
        self.decay_steps, self._decay_steps_given = decay_steps, decay_steps is not None
        self.sample_steps, self.budget_seconds, self.clip = sample_steps, budget_seconds, clip
        self.diffusion = diffusion or Diffusion(prediction=TINY_PREDICTION if preset == "tiny" else "eps")

    def configure(self, device: torch.device) -> None:
        data = self.dataset
        overrides = {"in_channels": data.channels, "image_size": data.size,
                     "num_classes": getattr(data, "num_classes", 0), **self.overrides}
        model = build_unet(self.preset, **overrides).to(device)
        self.model = model
        self.modules = {"unet": model}
        self.optimizers = {"unet": torch.optim.Adam(model.parameters(), lr=self.cfg.lr)}
        if self.decay_steps is None:
            self.decay_steps = self.cfg.steps

    def learning_rate(self, step: int) -> float:
        r"""$\eta(s)$ above."""
        w = max(self.warmup, 1)
        p = 0.0
        if self.decay:
            if self.budget_seconds is not None:
                p = self.timing["seconds"] / self.budget_seconds if self.budget_seconds > 0 else 1.0
            else:
                p = (step - w) / max(self.decay_steps - w, 1)
            p = min(max(p, 0.0), 1.0)
        return self.cfg.lr * min(1.0, step / w) * 0.5 * (1.0 + math.cos(math.pi * p))

    def training_step(self, batch: dict, step: int, loop) -> dict:
        self.start_clock(step)
        lr = self.learning_rate(step)
        for group in self.optimizers["unet"].param_groups:
            group["lr"] = lr
        x0, y = batch["image"], None
        if self.model.num_classes > 0:
            y = batch["label"]
            if self.label_dropout > 0:
                drop = torch.rand(y.shape, device=y.device) < self.label_dropout
                y = torch.where(drop, torch.full_like(y, -1), y)
        loss = self.diffusion.loss(self.modules["unet"], x0, y)
        loop.backward_step(loss, "unet")
        self.check_budget(step, loop)
        return {"loss": loss, "lr": lr}

    # The picture of a run: DDIM with `sample_steps` steps and $\eta = 0$ (cheap enough
    # to redraw during training), eight images to a row, each row one class.
    def sample(self, n: int) -> Tensor:
        labels = class_labels(n, self.model.num_classes, per_row=8)
        device = next(self.model.parameters()).device
        return sample_images(self.modules["unet"], self.diffusion, n, "ddim", self.sample_steps,
                             labels=labels, seed=self.cfg.seed, device=device, clip=self.clip)[0]

    # ### A wall-clock budget
    #
    # For the benchmark: the clock starts at the first step, and once
    # `budget_seconds` are spent the experiment lowers `loop.cfg.steps` to the step just
    # taken, which the loop then treats as the last one (checkpoint, samples, curves),
    # as the other chapters do.
    def start_clock(self, step: int) -> None:
        if getattr(self, "_t0", None) is None:
            self._t0, self._first_step = time.perf_counter(), step
        self.timing = {"steps": step - self._first_step + 1,
                       "seconds": time.perf_counter() - self._t0}

    def check_budget(self, step: int, loop) -> None:
        self.timing["seconds"] = time.perf_counter() - self._t0
        if self.budget_seconds is not None and self.timing["seconds"] >= self.budget_seconds:
            loop.cfg.steps = step

    # The checkpoint carries the U-Net's configuration, so that [[#load_model]] can
    # rebuild the network from the run folder alone.
    def extra_state(self) -> dict:
        return {"unet_config": asdict(self.model.cfg), "label_dropout": self.label_dropout,
                "warmup": self.warmup, "decay": self.decay, "decay_steps": self.decay_steps,
                "prediction": self.diffusion.prediction}

    def load_extra_state(self, state: dict) -> None:
        saved = state.get("unet_config")
        if saved is not None and UNetConfig(**saved) != self.model.cfg:
            raise ValueError(f"--resume: the checkpoint holds a U-Net built with {saved}, "
                             f"not {asdict(self.model.cfg)}")
        # the learning-rate schedule's length is the one the run started with
        if state.get("decay_steps") is not None and not self._decay_steps_given:
            self.decay_steps = state["decay_steps"]


def class_labels(n: int, num_classes: int, per_row: int = 1) -> Tensor | None:
    r"""Labels $0, 1, 2, \dots$ cycling through the classes, each repeated `per_row` times."""
    if num_classes <= 0:
        return None
    return (torch.arange(n) // per_row) % num_classes


# ## Loading a run
#
# A run folder's checkpoint holds the live weights and their EMA; we sample from the
# EMA, as the paper does, and fall back to the live weights of a run trained without
# one.
def load_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu",
               ema: bool = True) -> UNet:
    r"""The U-Net of a run folder (`runs/ddpm/<run>`), EMA weights by default, in eval mode."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"no DDPM checkpoint at {path}; train first (python -m annogen.ddpm)")
    ckpt = load_checkpoint(path)
    cfg = ckpt["extra"]["unet_config"]
    model = UNet(UNetConfig(**cfg))
    weights = ckpt["ema"].get("unet") if ema and "unet" in ckpt.get("ema", {}) else ckpt["modules"]["unet"]
    model.load_state_dict(weights)
    return model.to(device).eval()


# The diffusion a run was trained with: what its network predicts ($\epsilon$ or $v$)
# is in the checkpoint; `variance` is a sampling choice.
def load_diffusion(run_dir: str | os.PathLike, variance: str = "beta") -> Diffusion:
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"no DDPM checkpoint at {path}; train first (python -m annogen.ddpm)")
    ckpt = load_checkpoint(path)
    return Diffusion(variance=variance, prediction=ckpt["extra"].get("prediction", "eps"))


# ## Sampling
#
# One entry point for both samplers, batch by batch, from a generator seeded with
# `seed`, so the same call gives the same images. It returns the images clipped to the
# data range and the seconds it took: the cost of a sampler is part of its result.
#
# **Clipping $\hat x_0$.** The official DDPM sampler clips its estimate $\hat x_0$ to
# $[-1, 1]$ at every step; the official DDIM code does not
# ([[diffusion.py#the-ddim-step]]). For a network trained for minutes that choice
# decides the picture: at $t = 999$ the estimate divides the network's noise error by
# $\sqrt{\bar\alpha_t} \approx 0.006$, so an error of $10^{-3}$ (mean squared) becomes one
# of about 5 in $\hat x_0$, and the unclipped deterministic sampler carries the wrong
# colour it implies to the end. So this chapter's sampling clips DDIM's $\hat x_0$ too,
# by default (`clip=True`, `--clip`); `clip=False` (`--no-clip`) samples exactly as the
# official DDIM code, and the discussion in the chapter's README compares the two.
@torch.no_grad()
def sample_images(model, diffusion: Diffusion, n: int, sampler: str = "ddim", steps: int = 50,
                  eta: float = 0.0, labels: Tensor | None = None, guidance: float = 1.0,
                  seed: int = 0, batch_size: int = 256, device=None,
                  progress: bool = False, clip: bool = True) -> tuple[Tensor, float]:
    r"""`n` images in $[-1, 1]$ from `sampler` ("ddpm" or "ddim") and the seconds taken.
    `clip` clips DDIM's $\hat x_0$ (on by default here, see above); DDPM always clips."""
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', not {sampler!r}")
    if sampler == "ddpm" and steps != diffusion.T:
        raise ValueError(f"DDPM samples with all T = {diffusion.T} steps, not {steps}; "
                         "use DDIM for fewer")
    device = device if device is not None else next(model.parameters()).device
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    start, out = time.perf_counter(), []
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        y = labels[i:i + m].to(device) if labels is not None else None
        shape = (m, cfg.in_channels, cfg.image_size, cfg.image_size)
        if sampler == "ddpm":
            x = diffusion.ddpm_sample(model, shape, generator=g, y=y, guidance=guidance,
                                      progress=progress, device=device)
        else:
            x = diffusion.ddim_sample(model, shape, steps, eta=eta, generator=g, y=y,
                                      guidance=guidance, progress=progress, device=device,
                                      clip=clip)
        out.append(x.float().clamp(-1, 1).cpu())
    return torch.cat(out), time.perf_counter() - start


# ## What a label promises, and how we score it
#
# A `shapes` label names the kind and the colour of the *first* shape only (first in
# reading order, see [[data.py#the-dataset]]). So, as in the VQGAN chapter, we sample
# with labels cycling through the 21 classes and let the analytic checker read each
# sample back: the **attribute accuracy** is the mean of the accuracies of the first
# shape's kind and colour ([[metrics.py#score_labels|`score_labels`]], reused
# here so that the two chapters' numbers mean the same), with chance at about 0.24. It
# comes with `class_accuracy` (both right) and `valid`, the fraction of samples in which
# the checker finds one or two clean shapes at all.
def score_labels(images: Tensor, labels: Tensor) -> dict:
    from annogen.metrics import score_labels as vqgan_score_labels
    return vqgan_score_labels(images, labels)


# **Toy FID** ([[metrics.py#toy-fid]]) compares the samples, as a set, with as many real
# held-out images. It is biased by the number of images, so numbers are comparable
# only at the same $n$; [[#benchmark]] therefore also reports every sampler at one
# common $n$ and the distance between two real sets of that size, the floor.
def evaluate(model, diffusion: Diffusion, sampler: str, steps: int, n: int, real: Tensor | None = None,
             net=None, eta: float = 0.0, guidance: float = 1.0, seed: int = 0,
             batch_size: int = 256, progress: bool = False, clip: bool = True) -> tuple[dict, Tensor]:
    r"""Sample `n` class-cycling images with one sampler; return the scores and the images."""
    labels = class_labels(n, model.num_classes)
    images, seconds = sample_images(model, diffusion, n, sampler, steps, eta, labels, guidance,
                                    seed, batch_size, progress=progress, clip=clip)
    row = {"sampler": sampler, "steps": steps, "eta": eta if sampler == "ddim" else None,
           "clip": True if sampler == "ddpm" else clip, "n": n, "sec_per_image": seconds / n}
    if labels is not None and model.num_classes == Shapes.num_classes and images.shape[1] == 3:
        row.update(score_labels(images, labels))
    if real is not None and net is not None:
        row["toy_fid"] = toy_fid(real[:n], images, net)
    return row, images


# ## The benchmark
#
# `benchmark(budget_seconds, out)` trains the tiny default on $32 \times 32$ `shapes`
# (50,000 training images, the tiny recipe above) for `budget_seconds` of wall-clock
# time on `threads` torch threads, then samples the EMA network with every
# `(sampler, steps)` in `samplers`, $\eta = 0$ for DDIM, with the same seed. Each row
# gets the toy FID of its samples against as many held-out real images, the attribute
# accuracy and the seconds per image.
#
# DDPM's thousand network calls per image make it the expensive row: at about 2.6 ms
# per call and image on one core, 256 images take 11 minutes. So DDPM samples only
# `n_eval_ddpm` images (64 by default), and to keep the rows comparable every row also
# reports `toy_fid_common` and `attribute_accuracy_common` on its first `common_n`
# images (the smallest $n$ of any row). `toy_fid_real` and `toy_fid_real_common` are
# the distances between two real sets of those sizes. A sampler may carry a third
# element, the options of [[#evaluate]]: DDIM rows clip $\hat x_0$ like every sampling
# of this chapter; `("ddim", 50, {"clip": False})` adds DDIM as the official code samples
# it, `{"eta": 1.0}` or `{"guidance": 3.0}` other variants. The learning rate decays
# over the budget's seconds instead of a number of steps ([[#the-training-step]]).
def benchmark(budget_seconds: float, out: Path, seed: int = 0,
              samplers=(("ddpm", 1000), ("ddim", 20), ("ddim", 50)), n_eval: int = 256,
              n_eval_ddpm: int | None = 64, data_size: int = 50_000,
              threads: int | None = 1, prediction: str | None = None,
              training: dict | None = None, **overrides) -> dict:
    r"""Train the tiny DDPM for a wall-clock budget on 32px shapes, then measure each
    sampler; return (and write to `out/benchmark.json`) the numbers."""
    out = Path(out)
    with torch_threads(threads):
        train_data = make_dataset("shapes", 32, n=data_size, seed=seed)
        cfg = TrainConfig(steps=10 ** 9, out=str(out), run=f"bench-{seed}", seed=seed, device="cpu",
                          log_every=50, ckpt_every=10 ** 9, sample_every=10 ** 9,
                          **{**TINY_TRAINING, **(training or {})})
        diffusion = Diffusion(prediction=prediction or TINY_PREDICTION)
        exp = DDPMExperiment("tiny", budget_seconds=budget_seconds, diffusion=diffusion, **overrides)
        load_before = os.getloadavg()[0]
        run_dir = train(exp, train_data, cfg)
        model = load_model(run_dir)
        diffusion = exp.diffusion
        samplers = [tuple(s) + ({},) if len(s) == 2 else tuple(s) for s in samplers]
        sizes = [min(n_eval, n_eval_ddpm) if s[0] == "ddpm" and n_eval_ddpm else n_eval for s in samplers]
        common_n = min(sizes)
        real = torch.stack([it["image"] for it in make_dataset("shapes", 32, n=n_eval, seed=seed + 1)])
        other = torch.stack([it["image"] for it in make_dataset("shapes", 32, n=n_eval, seed=seed + 2)])
        net = load_feature_net("shapes", 32)
        rows = []
        for (sampler, steps, options), n in zip(samplers, sizes):
            row, images = evaluate(model, diffusion, sampler, steps, n, real, net, seed=seed, **options)
            labels = class_labels(common_n, model.num_classes)
            row["common_n"] = common_n
            row["toy_fid_common"] = toy_fid(real[:common_n], images[:common_n], net)
            row["attribute_accuracy_common"] = score_labels(images[:common_n], labels)["attribute_accuracy"]
            tag = "".join(f"_{k}{v}" for k, v in sorted(options.items()))
            save_image_grid(images[:64], out / f"samples_{sampler}{steps}{tag}.png")
            rows.append(row)
        timing = exp.timing
        result = {
            "model": {"preset": "tiny", "parameters": sum(p.numel() for p in model.parameters()),
                      "steps": timing["steps"], "train_seconds": timing["seconds"],
                      "images_per_s": timing["steps"] * cfg.batch_size / timing["seconds"],
                      "batch_size": cfg.batch_size, "lr": cfg.lr, "ema_decay": cfg.ema_decay,
                      "final_loss": _last_loss(run_dir), "threads": torch.get_num_threads(),
                      "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
                      "run_dir": str(run_dir)},
            "rows": rows,
            "toy_fid_real": toy_fid(real, other, net),
            "toy_fid_real_common": toy_fid(real[:common_n], other[:common_n], net),
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf8")
    return result


def _last_loss(run_dir: Path) -> float | None:
    from annogen.train import read_metrics
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    return records[-1]["loss"] if records else None


# `python -m annogen.ddpm.experiment` says what to run.
if __name__ == "__main__":
    print("Train the tiny DDPM and sample it with DDIM-50:  python -m annogen.ddpm\n"
          "The samplers at a fixed training budget:          python benchmarks/diffusion.py --only ddpm\n"
          "The chapter's tests:                              python -m pytest tests/test_ddpm*.py -q")
