r"""
---
title: Flow matching on a 2-D mixture, without training
summary: The exact flow-matching velocity of a mixture of Gaussians, in closed form, and what Euler and Flow-DPM-Solver do with it at few steps - the demonstration and the figure of the flow chapter.
---

# Flow matching on a 2-D mixture, without training

To see what a sampler does we need a velocity field we can trust, and a trained network
is not one: its errors and the sampler's mix. For a mixture of Gaussians the *optimal*
velocity $v^*(x, \sigma) = \mathbb{E}[\epsilon - x_0 \mid x_\sigma = x]$, the one a
perfect network would learn ([[flow.py#the-path-and-its-velocity]]), has a closed form.
We put it into the samplers of [[flow.py]] and compare each with the exact solution of
the ODE: every error we see is the sampler's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .flow import dpm_solver_sample, euler_sample, sigma_schedule


# ## One Gaussian
#
# For data $x_0 \sim \mathcal{N}(\mu, s^2 I)$ the point on the path,
# $x_\sigma = a\, x_0 + \sigma \epsilon$ with $a = 1 - \sigma$, is Gaussian too:
# $x_\sigma \sim \mathcal{N}(a\mu, v_\sigma I)$ with $v_\sigma = a^2 s^2 + \sigma^2$.
# The conditional means of $x_0$ and $\epsilon$ given $x_\sigma$ are linear in it
# (Gaussian conditioning), and their difference is the optimal velocity:
#
# $$v^*(x, \sigma) = \frac{\sigma - a s^2}{v_\sigma}\,(x - a\mu) - \mu.$$
#
# The ODE then moves every point along $x_\sigma = a\mu + \sqrt{v_\sigma}\, z$ with a
# fixed $z$: the noise sample $z = x_1$ ends at $\mu + s z$. The paths are straight
# only when $s = 1$; the further $s$ is from 1 the more they bend.
def gaussian_velocity(x: Tensor, sigma: Tensor, mu: Tensor, s: float) -> Tensor:
    sigma = sigma.reshape(-1, *([1] * (x.dim() - 1)))
    a = 1 - sigma
    var = a ** 2 * s ** 2 + sigma ** 2
    return (sigma - a * s ** 2) / var * (x - a * mu) - mu


# ## A mixture
#
# For a mixture $\sum_k \pi_k \mathcal{N}(\mu_k, s_k^2 I)$ in $d$ dimensions, the
# optimal velocity is the average of the components' velocities, weighted by how likely
# each component is to have produced $x$ at this $\sigma$:
#
# $$v^*(x, \sigma) = \sum_k w_k(x, \sigma)\, v_k^*(x, \sigma), \qquad w_k \propto \pi_k\, \mathcal{N}(x;\, a\mu_k,\, v_{k,\sigma} I).$$
#
# At $\sigma = 1$ every component looks the same ($x_1$ is pure noise) and the weights
# are the $\pi_k$; as $\sigma$ falls one component takes over. The switch is where the
# paths bend, and where a sampler with few steps goes wrong.
@dataclass
class Mixture:
    mu: Tensor       # (K, d) component means
    s: Tensor        # (K,) component standard deviations
    pi: Tensor       # (K,) weights, summing to 1

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        k = torch.multinomial(self.pi, n, replacement=True, generator=generator)
        z = torch.randn(n, self.mu.shape[1], generator=generator, dtype=self.mu.dtype)
        return self.mu[k] + self.s[k, None] * z

    def velocity(self, x: Tensor, sigma: Tensor) -> Tensor:
        d = x.shape[1]
        a = (1 - sigma)[:, None]                                  # (N, 1)
        var = a ** 2 * self.s[None] ** 2 + sigma[:, None] ** 2    # (N, K)
        diff = x[:, None, :] - a[..., None] * self.mu[None]       # (N, K, d)
        log_w = (self.pi.log()[None] - 0.5 * d * var.log()
                 - diff.pow(2).sum(-1) / (2 * var))
        w = log_w.softmax(dim=1)                                  # (N, K)
        v_k = ((sigma[:, None] - a * self.s[None] ** 2) / var)[..., None] * diff \
            - self.mu[None]                                       # (N, K, d)
        return (w[..., None] * v_k).sum(1)


# Eight Gaussians on a circle of radius 2, standard deviation 0.1: well separated modes,
# so the averaged paths must bend to reach them.
def eight_gaussians(radius: float = 2.0, s: float = 0.1) -> Mixture:
    angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    mu = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    return Mixture(mu, torch.full((8,), s, dtype=torch.float64),
                   torch.full((8,), 1 / 8, dtype=torch.float64))


# ## How far each sampler lands from the exact solution
#
# The reference is the same ODE solved with 2000 Euler steps (its own error is far below
# what we measure). For each sampler and number of steps we report the mean distance
# between where a noise sample lands and where it should land, in units of the modes'
# standard deviation $s$, and the fraction of samples that end within $3s$ of a mode.
@torch.no_grad()
def sampler_errors(mix: Mixture, steps=(2, 4, 8, 16, 32), n: int = 2000, shift: float = 1.0,
                   seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, mix.mu.shape[1], generator=g, dtype=torch.float64)
    exact = euler_sample(mix.velocity, x_T, sigma_schedule(2000, shift))
    rows = []
    for N in steps:
        sigmas = sigma_schedule(N, shift)
        for name, x_0 in (("euler", euler_sample(mix.velocity, x_T, sigmas)),
                          ("dpm", dpm_solver_sample(mix.velocity, x_T, sigmas))):
            error = (x_0 - exact).norm(dim=1).mean().item() / mix.s[0].item()
            near = (torch.cdist(x_0, mix.mu).min(dim=1).values < 3 * mix.s[0]).double().mean()
            rows.append({"sampler": name, "steps": N, "error_in_s": error,
                         "on_a_mode": near.item()})
    return rows


# ## The figure
#
# Three panels: (1) the training pairs, data points joined to their noise by the straight
# lines of the path; (2) the paths of the exact ODE, which are not straight, since each
# point follows the *average* of all lines through it; (3) where 6 steps of Euler and of
# Flow-DPM-Solver land, over the exact endpoints.
def draw_figure(path: Path, n: int = 600, seed: int = 0, steps: int = 6) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mix = eight_gaussians()
    g = torch.Generator().manual_seed(seed)
    x_0 = mix.sample(n, g)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3), layout="constrained")
    ax = axes[0]
    for i in range(60):
        ax.plot([x_0[i, 0], eps[i, 0]], [x_0[i, 1], eps[i, 1]], color="0.6", lw=0.6)
    ax.scatter(eps[:, 0], eps[:, 1], s=3, color="tab:blue", label=r"noise $\epsilon$ ($\sigma=1$)")
    ax.scatter(x_0[:, 0], x_0[:, 1], s=3, color="tab:red", label=r"data $x_0$ ($\sigma=0$)")
    ax.set_title("training pairs: straight lines")
    ax.legend(loc="lower left", fontsize=7, markerscale=3)

    ax = axes[1]
    traj = []
    euler_sample(mix.velocity, eps[:60], sigma_schedule(200), trajectory=traj)
    paths = torch.stack([eps[:60]] + traj)  # (steps + 1, 60, 2)
    for i in range(60):
        ax.plot(paths[:, i, 0], paths[:, i, 1], color="tab:purple", lw=0.7)
    ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=6, color="tab:red", zorder=3)
    ax.set_title("the exact ODE: paths bend")

    ax = axes[2]
    exact = euler_sample(mix.velocity, eps, sigma_schedule(2000))
    sig = sigma_schedule(steps)
    ax.scatter(exact[:, 0], exact[:, 1], s=14, color="0.8", label="exact")
    e = euler_sample(mix.velocity, eps, sig)
    d = dpm_solver_sample(mix.velocity, eps, sig)
    ax.scatter(e[:, 0], e[:, 1], s=3, color="tab:orange", label=f"Euler, {steps} steps")
    ax.scatter(d[:, 0], d[:, 1], s=3, color="tab:green", label=f"DPM-Solver, {steps} steps")
    ax.set_title(f"{steps} steps with the exact velocity")
    ax.legend(loc="lower left", fontsize=7, markerscale=3)
    for ax in axes:
        ax.set_xlim(-3.2, 3.2)
        ax.set_ylim(-3.2, 3.2)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
