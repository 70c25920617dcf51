r"""
---
title: R3GAN, the 2-D mode-coverage toy
summary: A grid of 25 Gaussians, an MLP generator and discriminator, and the losses of this chapter: count the modes each loss covers, and watch the discriminator's logit gap with and without R2.
---

# Mode coverage in two dimensions

Images hide what a GAN does wrong. In two dimensions nothing is hidden: the data is a
$5 \times 5$ grid of small Gaussians (25 *modes*), $G$ and $D$ are small MLPs, and after
training we can simply count how many modes the generator's samples land on. The
experiment is the classic one of Metz et al. (2017) and Srivastava et al. (2017); the
R3GAN paper runs the same kind of test at scale on StackedMNIST (1000 modes).

Two numbers score a run ([[#score]]):

- **modes covered**: modes that receive at least a fifth of their fair share of the
  samples within $3\sigma$ (a mode visited by two stray samples does not count);
- **high quality**: the fraction of samples within $3\sigma$ of some mode. A generator
  that spreads a blur over the whole square covers nothing and scores low here.

The training step is the image GAN's ([[experiment.py#R3GANExperiment.training_step]])
with the same losses ([[losses.py]]): one $D$ step with the penalties, one $G$ step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from annogen.r3gan.losses import LOSSES, gradient_penalty


# ## The data
#
# Modes at $\{-2, -1, 0, 1, 2\}^2$, each a Gaussian with standard deviation $\sigma$,
# all equally likely.
def grid_modes(per_side: int = 5, spacing: float = 1.0) -> Tensor:
    r"""The $K$ mode centres, shape (per_side², 2), centred on the origin."""
    axis = (torch.arange(per_side, dtype=torch.float32) - (per_side - 1) / 2) * spacing
    return torch.cartesian_prod(axis, axis)


def sample_grid(n: int, modes: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    which = torch.randint(len(modes), (n,), generator=generator)
    return modes[which] + sigma * torch.randn(n, 2, generator=generator)


# ## The networks
#
# Plain MLPs with leaky ReLUs (slope 0.2, as in R3GAN). $G$ maps $z \in \mathbb{R}^{d_z}$
# to a point; $D$ maps a point to one logit.
def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


@dataclass
class ToyConfig:
    loss: str = "rpgan"  # "rpgan" or "ns"
    r1: bool = True
    r2: bool = True
    gamma: float = 0.01
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    betas: tuple[float, float] = (0.0, 0.99)  # R3GAN's beta1 = 0
    z_dim: int = 8
    width: int = 64
    sigma: float = 0.05
    spacing: float = 1.0
    seed: int = 0
    log_every: int = 10


@dataclass
class ToyResult:
    config: ToyConfig
    samples: Tensor
    modes_covered: int
    high_quality: float
    logit_gap: list[float] = field(default_factory=list)  # mean D(x) - D(G(z)), every log_every steps
    seconds: float = 0.0


# ## Training
#
# One $D$ step, then one $G$ step, on fresh batches of data and noise every step. The
# penalties are computed on detached copies of the reals ($R_1$) and fakes ($R_2$), as in
# the image GAN. The logged **logit gap** $\overline{D(x)} - \overline{D(G(z))}$ is how
# sure $D$ is that it can tell the two apart: it oscillates when the pair circles the
# equilibrium and settles near zero when they converge.
def train_toy(cfg: ToyConfig) -> ToyResult:
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    modes = grid_modes(spacing=cfg.spacing)
    G = mlp([cfg.z_dim, cfg.width, cfg.width, 2])
    D = mlp([2, cfg.width, cfg.width, 1])
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=cfg.betas)
    d_loss_fn, g_loss_fn = LOSSES[cfg.loss]
    gaps, start = [], time.perf_counter()
    for step in range(1, cfg.steps + 1):
        # the discriminator
        x = sample_grid(cfg.batch_size, modes, cfg.sigma, gen).requires_grad_(cfg.r1)
        z = torch.randn(cfg.batch_size, cfg.z_dim, generator=gen)
        x_fake = G(z).detach().requires_grad_(cfg.r2)
        real_logits, fake_logits = D(x).squeeze(1), D(x_fake).squeeze(1)
        loss_d = d_loss_fn(real_logits, fake_logits)
        if cfg.r1:
            loss_d = loss_d + cfg.gamma / 2 * gradient_penalty(real_logits, x).mean()
        if cfg.r2:
            loss_d = loss_d + cfg.gamma / 2 * gradient_penalty(fake_logits, x_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # the generator
        x = sample_grid(cfg.batch_size, modes, cfg.sigma, gen)
        z = torch.randn(cfg.batch_size, cfg.z_dim, generator=gen)
        real_logits, fake_logits = D(x).squeeze(1), D(G(z)).squeeze(1)
        loss_g = g_loss_fn(real_logits, fake_logits)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if step % cfg.log_every == 0:
            gaps.append(float((real_logits - fake_logits).mean().detach()))
    with torch.no_grad():
        samples = G(torch.randn(2500, cfg.z_dim, generator=gen))
    covered, quality = score(samples, modes, cfg.sigma)
    return ToyResult(cfg, samples, covered, quality, gaps, time.perf_counter() - start)


# ## Score
#
# Each sample is assigned to its nearest mode; it counts if it lies within $3\sigma$. A
# mode is covered when it holds at least a fifth of the $n/K$ samples a perfect
# generator would put there.
def score(samples: Tensor, modes: Tensor, sigma: float) -> tuple[int, float]:
    r"""(modes covered, fraction of high-quality samples)."""
    dist = torch.cdist(samples, modes)
    nearest, which = dist.min(dim=1)
    good = nearest < 3 * sigma
    counts = torch.bincount(which[good], minlength=len(modes))
    fair_share = len(samples) / len(modes)
    return int((counts >= fair_share / 5).sum()), float(good.float().mean())


# ## The demo
#
# `python -m annogen.r3gan.toy`: the non-saturating loss with $R_1$ against RpGAN with
# $R_1 + R_2$, one seed each (the sweep over seeds is in `benchmarks/r3gan.py`).
if __name__ == "__main__":
    torch.set_num_threads(1)
    for loss, r2 in (("ns", False), ("rpgan", True)):
        res = train_toy(ToyConfig(loss=loss, r2=r2))
        print(f"{loss:5s} R1{' + R2' if r2 else '     '}: {res.modes_covered}/25 modes, "
              f"{res.high_quality:.2f} high quality, final logit gap {res.logit_gap[-1]:+.3f} "
              f"({res.seconds:.1f} s)")
