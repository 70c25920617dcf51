r"""
---
title: VQ-VAE, training and evaluation
summary: The two stages of the paper on the course's training loop - the autoencoder (reconstruction plus VQ loss, codebook usage logged), then a class-conditional gated PixelCNN on the frozen codes - and how each stage is measured.
---

# Training a VQ-VAE in two stages

The paper trains its model in two separate stages, and so do we:

1. **The autoencoder.** Encoder, quantiser and decoder of [[model.py]] learn to
   reconstruct images through the discrete bottleneck. During this stage the prior
   over the codes is uniform and plays no part in the loss.
2. **The prior.** The autoencoder is frozen. Every training image is turned into its
   grid of code indices once, and the gated PixelCNN of [[prior.py]] learns the
   distribution of those grids, here conditioned on the class label of the image. New
   images are drawn by sampling a grid from the prior and decoding it.

Each stage is an `Experiment` of the course's one training loop ([[train.py]]), which
brings checkpoints, exact resumption, logs and sample grids for free. This page holds
the two experiments, the step that turns images into code grids between them, the
functions that measure each stage, and the `benchmark` that trains both for a fixed
wall-clock time. The command line that strings them together is [[__main__.py]].
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from annogen.data import COLOUR_NAMES, SHAPES, Shapes, make_dataset, read_shapes
from annogen.metrics import (attribute_accuracy, codebook_perplexity, codebook_usage,
                             load_feature_net, psnr, toy_fid)
from annogen.train import Experiment, TrainConfig, load_checkpoint, save_image_grid, train

from annogen.vqvae.model import VQVAE, VQVAEConfig, build_vqvae
from annogen.vqvae.prior import GatedPixelCNN, PriorConfig, build_prior

__all__ = [
    "VQVAEExperiment", "PriorExperiment", "CodeGrids", "encode_dataset", "load_vqvae",
    "load_prior", "evaluate_vqvae", "evaluate_prior", "first_shape_accuracy", "benchmark",
]


# ## Training for a fixed time
#
# The loop counts steps, but a benchmark asks "how good is it after five minutes on
# this machine?". Both experiments below can be given `budget_seconds`: the clock starts
# at their first training step, and once the budget is spent the experiment lowers
# `loop.cfg.steps` to the step just taken. The loop then treats that step as its last
# one, exactly as if it had been asked for that many steps from the start: it writes the
# checkpoint, the samples and the curves, and returns. The time counted is wall-clock
# time, logging and checkpoints included, and `timing` records how many steps fitted.
class BudgetMixin:
    budget_seconds: float | None = None

    def start_clock(self, step: int) -> None:
        if getattr(self, "_t0", None) is None:
            self._t0, self._first_step = time.perf_counter(), step
        self.timing = {"steps": step - self._first_step + 1,
                       "seconds": time.perf_counter() - self._t0}

    def check_budget(self, step: int, loop) -> None:
        self.timing["seconds"] = time.perf_counter() - self._t0
        if self.budget_seconds is not None and self.timing["seconds"] >= self.budget_seconds:
            loop.cfg.steps = step  # this step is the last one


# ## Stage 1: the autoencoder
#
# One training step is the loss of [[model.py#the-vq-vae]]:
#
# $$\mathcal{L} = \underbrace{\lVert x - \hat x \rVert^2}_{\texttt{recon}}
#   + \underbrace{\lVert \mathrm{sg}[z_e] - e \rVert^2 + \beta \lVert z_e - \mathrm{sg}[e] \rVert^2}_{\texttt{vq}},$$
#
# where the tiny preset's EMA codebook leaves only the $\beta$ term in `vq` and moves
# the codes itself during the forward pass. We call the network through
# `self.modules["vqvae"](x)`, not `model.losses(x)`: when several processes train
# together the loop has wrapped the network for DDP, and only a call through the
# wrapper synchronises the gradients.
#
# Besides the two loss terms we log what tells a healthy quantiser from a dying one,
# computed on the $B \cdot h \cdot w$ codes chosen for this batch: the PSNR of the
# reconstructions ([[metrics.py#psnr]]), the **usage** (the fraction of the $K$ codes
# chosen at least once) and the **perplexity** $\exp(-\sum_k p_k \log p_k)$, the
# effective number of codes in use. A collapsing codebook shows as a perplexity that
# sinks towards a handful while the reconstruction stalls.
class VQVAEExperiment(BudgetMixin, Experiment):
    r"""Train `build_vqvae(preset, **overrides)` on images; outputs under `runs/vqvae/`."""

    name = "vqvae"
    num_samples = 64  # 32 originals and their 32 reconstructions

    def __init__(self, preset: str = "tiny", budget_seconds: float | None = None, **overrides):
        self.preset, self.overrides, self.budget_seconds = preset, overrides, budget_seconds

    def configure(self, device: torch.device) -> None:
        model = build_vqvae(self.preset, in_channels=self.dataset.channels,
                            **self.overrides).to(device)
        self.model = model
        self.modules = {"vqvae": model}
        self.optimizers = {"vqvae": torch.optim.Adam(model.parameters(), lr=self.cfg.lr)}
        # The same images every time samples are drawn, so the pictures of a run can
        # be compared with each other.
        n = min(self.num_samples // 2, len(self.dataset))
        self.fixed = torch.stack([self.dataset[i]["image"] for i in range(n)]).to(device)

    def training_step(self, batch: dict, step: int, loop) -> dict:
        self.start_clock(step)
        x = batch["image"]
        x_hat, vq_loss, indices = self.modules["vqvae"](x)
        recon = F.mse_loss(x_hat.float(), x.float())
        loss = recon + vq_loss
        loop.backward_step(loss, "vqvae")
        K = self.model.cfg.num_codes
        logs = {"loss": loss, "recon": recon, "vq": vq_loss,
                "psnr": psnr(x.detach(), x_hat.detach().clamp(-1, 1)).mean(),
                "usage": codebook_usage(indices, K), "perplexity": codebook_perplexity(indices, K)}
        self.check_budget(step, loop)
        return logs

    # The picture of a run: rows of originals alternating with rows of their
    # reconstructions, eight to a row (the loop lays the grid out eight wide).
    def sample(self, n: int) -> Tensor:
        x = self.fixed[: n // 2]
        x_hat = self.modules["vqvae"](x)[0].clamp(-1, 1)
        return interleave_rows(x, x_hat, 8)

    # The checkpoint stores the weights; the configuration they belong to goes with
    # them, so that [[#load_vqvae]] can rebuild the network from the run folder alone.
    def extra_state(self) -> dict:
        return {"vqvae_config": asdict(self.model.cfg)}

    def load_extra_state(self, state: dict) -> None:
        saved = state.get("vqvae_config")
        if saved is not None and saved != asdict(self.model.cfg):
            raise ValueError("--resume: the checkpoint holds a VQ-VAE built with "
                             f"{saved}, not {asdict(self.model.cfg)}")


def interleave_rows(a: Tensor, b: Tensor, per_row: int) -> Tensor:
    r"""Rows of `per_row` images of `a`, each followed by the same row of `b`."""
    rows = []
    for i in range(0, len(a), per_row):
        rows += [a[i:i + per_row], b[i:i + per_row]]
    return torch.cat(rows)


def load_vqvae(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> VQVAE:
    r"""The VQ-VAE of a stage-1 run folder (`runs/vqvae/<run>`), in eval mode."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"no VQ-VAE checkpoint at {path}; train stage 1 first "
                                "(python -m annogen.vqvae --stage vqvae)")
    ckpt = load_checkpoint(path)
    model = VQVAE(VQVAEConfig(**ckpt["extra"]["vqvae_config"]))
    model.load_state_dict(ckpt["modules"]["vqvae"])
    return model.to(device).eval()


# ## Between the stages: images become grids of codes
#
# The prior never sees an image. It learns from the code grids $k(x)$ of the training
# images, and since the autoencoder is frozen those grids never change: we compute
# them once, in eval mode (no EMA updates, no restarts), and keep them in memory. For
# the 50,000 images of $32 \times 32$ the chapter uses, that is 50,000 grids of
# $8 \times 8$ integers, 26 megabytes, encoded in about fifteen seconds on one core.
# `CodeGrids` serves them in the same form as the image datasets, a dict per item, so
# the training loop takes it as it is.
class CodeGrids(Dataset):
    r"""Code grids `codes` $(N, h, w)$ with their `labels` $(N,)$, as dataset items."""

    def __init__(self, codes: Tensor, labels: Tensor, num_codes: int, num_classes: int,
                 source: Dataset | None = None):
        self.codes, self.labels = codes.long().cpu(), labels.long().cpu()
        self.num_codes, self.num_classes, self.source = num_codes, num_classes, source
        self.grid = tuple(self.codes.shape[1:])

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> dict:
        return {"codes": self.codes[i], "label": self.labels[i]}


@torch.no_grad()
def encode_dataset(model: VQVAE, dataset: Dataset, batch_size: int = 256,
                   progress: bool = True) -> CodeGrids:
    r"""Every image of `dataset` $\to$ its grid of code indices, with its label."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    codes, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="encoding", disable=not progress, dynamic_ncols=True):
        codes.append(model.encode(batch["image"].to(device)).cpu())
        labels.append(batch["label"])
    model.train(was_training)
    return CodeGrids(torch.cat(codes), torch.cat(labels), model.cfg.num_codes,
                     getattr(dataset, "num_classes", 0), source=dataset)


# ## Stage 2: the prior
#
# The gated PixelCNN learns $p(k \mid y)$ for a grid $k$ and the image's label $y$ by
# minimising the negative log-likelihood of the training grids, in nats per code:
#
# $$\mathcal{L}_{prior} = -\frac{1}{hw} \sum_{i,j} \log p\big(k_{ij} \mid k_{<ij}, y\big).$$
#
# The VQ-VAE is needed only to turn sampled grids back into pictures. It is kept
# outside `self.modules`, so the loop neither trains it nor writes it into the prior's
# checkpoint; the run folder of stage 1 stays its only copy.
#
# For the `shapes` data the label $y$ names the kind and colour of the first shape
# (one of 21 classes, see [[data.py#the-dataset]]). With probability
# `label_dropout` (10%) a training grid is shown without its label ($y = -1$, which
# [[prior.py]] treats as "no label"), so the same network also learns the
# unconditional $p(k)$. That costs the conditional model little and gives us a
# baseline for free: samples drawn without a label show how often the first shape
# comes out right by chance.
class PriorExperiment(BudgetMixin, Experiment):
    r"""Train a gated PixelCNN on the code grids of a frozen `vqvae`; outputs under `runs/vqvae-prior/`."""

    name = "vqvae-prior"
    num_samples = 64

    def __init__(self, vqvae: VQVAE, preset: str = "tiny", label_dropout: float = 0.1,
                 budget_seconds: float | None = None, vqvae_run: str = "", **overrides):
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
        self.vqvae = vqvae.eval().requires_grad_(False)
        self.preset, self.label_dropout, self.overrides = preset, label_dropout, overrides
        self.budget_seconds, self.vqvae_run = budget_seconds, str(vqvae_run)

    def configure(self, device: torch.device) -> None:
        data = self.dataset  # a CodeGrids
        if not isinstance(data, CodeGrids):
            raise TypeError("PriorExperiment trains on code grids: pass encode_dataset(vqvae, images)")
        self.vqvae.to(device)
        prior = build_prior(self.preset, num_codes=data.num_codes, num_classes=data.num_classes,
                            **self.overrides).to(device)
        self.prior, self.grid = prior, data.grid
        self.modules = {"prior": prior}
        self.optimizers = {"prior": torch.optim.Adam(prior.parameters(), lr=self.cfg.lr)}

    def training_step(self, batch: dict, step: int, loop) -> dict:
        self.start_clock(step)
        k, y = batch["codes"], batch["label"]
        if self.prior.num_classes > 0 and self.label_dropout > 0:
            drop = torch.rand(y.shape, device=y.device) < self.label_dropout
            y = torch.where(drop, torch.full_like(y, -1), y)
        logits = self.modules["prior"](k, y if self.prior.num_classes > 0 else None)
        nll = F.cross_entropy(logits.float(), k)  # nats per code
        loop.backward_step(nll, "prior")
        self.check_budget(step, loop)
        return {"loss": nll, "bits_per_code": nll / math.log(2)}

    # Samples for the picture: each row of eight shares one label, so a glance tells
    # whether the label is obeyed (row $r$ gets class $r$).
    def sample(self, n: int) -> Tensor:
        C = self.prior.num_classes
        labels = (torch.arange(n) // 8) % C if C > 0 else None
        k = self.modules["prior"].sample(n, self.grid, label=labels)
        return self.vqvae.decode_indices(k).clamp(-1, 1)

    def extra_state(self) -> dict:
        return {"prior_config": asdict(self.prior.cfg), "vqvae_run": self.vqvae_run,
                "label_dropout": self.label_dropout}


def load_prior(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> GatedPixelCNN:
    r"""The prior of a stage-2 run folder (`runs/vqvae-prior/<run>`), in eval mode."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"no prior checkpoint at {path}; train stage 2 first "
                                "(python -m annogen.vqvae --stage prior)")
    ckpt = load_checkpoint(path)
    prior = GatedPixelCNN(PriorConfig(**ckpt["extra"]["prior_config"]))
    prior.load_state_dict(ckpt["modules"]["prior"])
    return prior.to(device).eval()


# ## Measuring stage 1
#
# On images the autoencoder has not trained on, we report:
#
# * **PSNR** in dB, per image, then averaged ([[metrics.py#psnr]]), of the reconstruction
#   clamped to $[-1, 1]$, as it would be shown;
# * **codebook usage** and **perplexity** over all $n \cdot h \cdot w$ codes chosen for
#   those images;
# * for `shapes`, the **attribute accuracy of the reconstructions**
#   ([[metrics.py#attribute_accuracy]]): the checker reads the reconstruction and
#   compares every shape's kind, colour, size and position with what the original
#   holds. Here that comparison is entirely fair, since a reconstruction should keep
#   everything, and it says what PSNR cannot: whether the errors that remain are the
#   harmless kind (soft edges) or the kind that changes what the picture shows.
@torch.no_grad()
def evaluate_vqvae(model: VQVAE, dataset: Dataset, n: int = 1000, batch_size: int = 250) -> dict:
    r"""PSNR, codebook usage and perplexity (and, for shapes, attribute accuracy) on the
    first `n` images of `dataset`."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = min(n, len(dataset))
    x = torch.stack([dataset[i]["image"] for i in range(n)])
    x_hat, indices = [], []
    for i in range(0, n, batch_size):
        out, _, idx = model(x[i:i + batch_size].to(device))
        x_hat.append(out.float().clamp(-1, 1).cpu())
        indices.append(idx.cpu())
    model.train(was_training)
    x_hat, indices = torch.cat(x_hat), torch.cat(indices)
    K = model.cfg.num_codes
    result = {"n": n, "psnr": float(psnr(x, x_hat).mean()),
              "usage": codebook_usage(indices, K), "perplexity": codebook_perplexity(indices, K)}
    if isinstance(dataset, Shapes):
        acc = attribute_accuracy(x_hat, [dataset.attributes(i) for i in range(n)])
        result.update({f"recon_{a}": v for a, v in acc.items()})
    return result


# ## Measuring stage 2: what does a label promise?
#
# The obvious test of a class-conditional model on `shapes` would be to take real
# item $i$, sample an image with its label, and score the sample with
# [[metrics.py#attribute_accuracy]] against `Shapes.attributes(i)`. That would be
# unfair. The label of item $i$ fixes only the **kind and colour of its first shape**
# (first in reading order: top left, top right, bottom left, bottom right, centre). It
# says nothing about that shape's size or position, nor whether a second shape
# follows, nor what it is; a model that draws a large red circle bottom right when
# item $i$ has a small one top left has obeyed its label perfectly, yet would score
# zero on position and size. So we score exactly what the label promises:
#
# $$\mathrm{acc}_a = \frac{1}{n} \sum_{m=1}^{n} \mathbf{1}\big[\hat t^{(m)}_1 \text{ exists and } \hat t^{(m)}_{1,a} = y^{(m)}_a\big], \qquad a \in \{\text{shape}, \text{colour}\},$$
#
# where $\hat t^{(m)}_1$ is the first shape the checker ([[data.py#read_shapes]]) finds
# in sample $m$, in the same reading order as the data uses, and $y^{(m)}_a$ the kind or
# colour named by its label. `both` asks for the two at once (the label is then fully
# obeyed), and `count` is the fraction of samples in which the checker finds one or two
# clean shapes, as every training image has: a rough check that the samples are
# well-formed scenes at all. Chance levels, for a model that ignored its label but
# drew plausible scenes, are $1/3$ for the kind and $1/7$ for the colour.
def first_shape_accuracy(images: Tensor, labels) -> dict:
    r"""Accuracy of the first shape's kind and colour in `images` $(N, 3, H, W)$ against
    the `shapes` class labels $y$ = shape index $\cdot 7$ + colour index."""
    labels = [int(y) for y in labels]
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    right = {"shape": 0, "colour": 0, "both": 0, "count": 0}
    for image, y in zip(images, labels):
        found = read_shapes(image.float().cpu())
        right["count"] += 1 <= len(found) <= 2
        if not found or y < 0:
            continue
        s, c = divmod(y, len(COLOUR_NAMES))
        shape_ok, colour_ok = found[0]["shape"] == SHAPES[s], found[0]["colour"] == COLOUR_NAMES[c]
        right["shape"] += shape_ok
        right["colour"] += colour_ok
        right["both"] += shape_ok and colour_ok
    return {a: v / max(len(labels), 1) for a, v in right.items()}


# Sampling for evaluation uses the labels of the first $n$ real items of a held-out
# set, so that the samples have the class frequencies of the data, and compares them
# with those same $n$ real images in **toy FID** ([[metrics.py#toy-fid]]). Next to it we
# put the toy FID of the VQ-VAE's *reconstructions* of those images: prior samples go
# through the same decoder, so that number is as low as the samples could hope to go,
# and the gap between the two is what the prior loses. We also report the prior's
# negative log-likelihood on the held-out grids (in nats per code; $\log K$ would be
# a uniform guess) and, if asked, the accuracy of unconditional samples against the
# same labels: the chance level, measured. Given a second set of real images
# (`reference`), we add the toy FID between the two real sets, the floor that even a
# perfect model could not go below at this $n$ (see [[metrics.py#what-these-numbers-miss]]).
@torch.no_grad()
def evaluate_prior(prior: GatedPixelCNN, vqvae: VQVAE, dataset: Dataset, n: int = 1000,
                   net=None, temperature: float = 1.0, seed: int = 0, batch_size: int = 500,
                   unconditional: bool = False, reference: Dataset | None = None,
                   progress: bool = False) -> dict:
    r"""Sample `n` images with the labels of the first `n` items of `dataset`; return
    first-shape accuracy (for shapes), toy FID against those items (when a feature
    `net` is given) and the held-out NLL."""
    device = next(prior.parameters()).device
    modes = prior.training, vqvae.training
    prior.eval()
    vqvae.eval()
    n = min(n, len(dataset))
    items = [dataset[i] for i in range(n)]
    real = torch.stack([it["image"] for it in items])
    labels = torch.stack([it["label"] for it in items]).to(device)
    conditional = prior.num_classes > 0 and bool((labels >= 0).all())
    g = torch.Generator(device=device).manual_seed(seed)

    def draw(with_labels: bool, desc: str) -> Tensor:
        out = []
        for i in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, dynamic_ncols=True):
            y = labels[i:i + batch_size] if with_labels else None
            m = len(labels[i:i + batch_size])
            k = prior.sample(m, grid, label=y, temperature=temperature, generator=g)
            out.append(vqvae.decode_indices(k).float().clamp(-1, 1).cpu())
        return torch.cat(out)

    codes = torch.cat([vqvae.encode(real[i:i + batch_size].to(device)) for i in range(0, n, batch_size)])
    grid = tuple(codes.shape[1:])
    recon = torch.cat([vqvae.decode_indices(codes[i:i + batch_size]).float().clamp(-1, 1).cpu()
                       for i in range(0, n, batch_size)])
    y_nll = labels if conditional else None
    nll = torch.cat([-prior.log_prob(codes[i:i + batch_size],
                                     None if y_nll is None else y_nll[i:i + batch_size])
                     for i in range(0, n, batch_size)]).mean() / (grid[0] * grid[1])
    result = {"n": n, "nll": float(nll), "conditional": conditional}
    samples = draw(conditional, "sampling")
    if isinstance(dataset, Shapes) and conditional:
        result.update(first_shape_accuracy(samples, labels.cpu()))
        result.update({f"recon_{a}": v for a, v in first_shape_accuracy(recon, labels.cpu()).items()})
        if unconditional:
            uncond = draw(False, "sampling without labels")
            result.update({f"uncond_{a}": v for a, v in first_shape_accuracy(uncond, labels.cpu()).items()})
    if net is not None:
        result["toy_fid"] = toy_fid(real, samples, net)
        result["toy_fid_recon"] = toy_fid(real, recon, net)
        if reference is not None:
            m = min(n, len(reference))
            other = torch.stack([reference[i]["image"] for i in range(m)])
            result["toy_fid_real"] = toy_fid(real, other, net)
    prior.train(modes[0])
    vqvae.train(modes[1])
    result["samples"] = samples
    return result


# ## The benchmark
#
# `benchmark(budget_seconds, out)` answers the chapter's two questions on whatever
# machine runs it, with the tiny presets on $32 \times 32$ `shapes` (50,000 training
# images, batch 64, Adam at $10^{-3}$; the prior overfits 10,000 grids within minutes,
# see the discussion on the chapter's first page):
#
# 1. How good is the autoencoder after `budget_seconds` of training? PSNR, codebook
#    usage and perplexity on 1,000 held-out images, with the steps taken and the
#    images per second.
# 2. How good is a prior trained for `prior_budget_seconds` (by default the same)?
#    First-shape accuracy with and without labels, toy FID of 1,000 samples against
#    1,000 real images, the toy FID of the reconstructions, and, for scale, the toy FID
#    between 1,000 real images and 1,000 others (the floor at this $n$).
#
# Everything lands in `out/` (the two run folders and `benchmark.json`). The number of
# threads torch uses and the load average of the machine go into the result, since on
# a shared two-core machine they change images per second by a factor of two or more.
def benchmark(budget_seconds: float, out: Path, seed: int = 0,
              prior_budget_seconds: float | None = None, n_eval: int = 1000,
              data_size: int = 50_000) -> dict:
    r"""Train the tiny VQ-VAE, then the tiny prior, each for a wall-clock budget, on
    32px shapes; return (and write to `out/benchmark.json`) the measured numbers."""
    out = Path(out)
    prior_budget = budget_seconds if prior_budget_seconds is None else prior_budget_seconds
    train_data = make_dataset("shapes", 32, n=data_size, seed=seed)
    test_data = make_dataset("shapes", 32, n=n_eval, seed=seed + 1)
    result: dict = {"budget_seconds": budget_seconds, "prior_budget_seconds": prior_budget,
                    "seed": seed, "threads": torch.get_num_threads(),
                    "load_average_before": os.getloadavg()[0]}

    def config(lr: float) -> TrainConfig:
        return TrainConfig(steps=1_000_000, batch_size=64, lr=lr, out=str(out), run=f"bench-{seed}",
                           seed=seed, device="cpu", log_every=50, ckpt_every=1_000_000,
                           sample_every=1_000_000)

    stage1 = VQVAEExperiment("tiny", budget_seconds=budget_seconds)
    run1 = train(stage1, train_data, config(1e-3))
    vqvae = stage1.model.eval()
    ev = evaluate_vqvae(vqvae, test_data, n_eval)
    result.update({
        "vqvae_steps": stage1.timing["steps"], "vqvae_seconds": stage1.timing["seconds"],
        "images_per_s": stage1.timing["steps"] * 64 / stage1.timing["seconds"],
        "psnr": ev["psnr"], "codebook_usage": ev["usage"], "perplexity": ev["perplexity"],
        "recon_attributes_all": ev["recon_all"], "load_average_after_vqvae": os.getloadavg()[0]})

    t_encode = time.perf_counter()
    codes = encode_dataset(vqvae, train_data, progress=False)
    result["encode_seconds"] = time.perf_counter() - t_encode
    stage2 = PriorExperiment(vqvae, "tiny", budget_seconds=prior_budget, vqvae_run=str(run1))
    train(stage2, codes, config(1e-3))
    net = load_feature_net("shapes", 32)
    ev2 = evaluate_prior(stage2.prior, vqvae, test_data, n_eval, net=net, seed=seed,
                         unconditional=True,
                         reference=make_dataset("shapes", 32, n=n_eval, seed=seed + 2))
    save_image_grid(ev2.pop("samples")[:64], out / "prior_samples.png")
    result.update({
        "prior_steps": stage2.timing["steps"], "prior_seconds": stage2.timing["seconds"],
        "grids_per_s": stage2.timing["steps"] * 64 / stage2.timing["seconds"],
        "prior_nll": ev2["nll"], "attr_shape": ev2["shape"], "attr_colour": ev2["colour"],
        "attr_both": ev2["both"], "attr_count": ev2["count"],
        "uncond_shape": ev2["uncond_shape"], "uncond_colour": ev2["uncond_colour"],
        "recon_both": ev2["recon_both"], "toy_fid": ev2["toy_fid"],
        "toy_fid_recon": ev2["toy_fid_recon"], "toy_fid_real": ev2["toy_fid_real"],
        "load_average_after": os.getloadavg()[0]})
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf8")
    return result


# ## Run this file
#
# This file holds the recipes; the command line runs them. `python -m
# annogen.vqvae.experiment` says what to run.
if __name__ == "__main__":
    print("""The VQ-VAE training recipes. To run them:

    python -m annogen.vqvae --threads 1          # both stages, tiny, on shapes (about 10 min)
    python -m annogen.vqvae --stage vqvae        # the autoencoder only
    python -m annogen.vqvae --stage prior --resume
    python -m annogen.vqvae --preset paper       # the paper's sizes, counted, not trained
    python benchmarks/vq.py --only vqvae         # both stages for a fixed wall-clock budget""")
