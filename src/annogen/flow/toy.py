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

from annogen.flow.flow import dpm_solver_sample, euler_sample, flow_match_sigmas, sigma_schedule


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
# The ODE then moves every point along
#
# $$x_\sigma = (1 - \sigma)\,\mu + \sqrt{(1 - \sigma)^2 s^2 + \sigma^2}\; z$$
#
# with a fixed $z$: the noise sample $z = x_1$ ends at $\mu + s z$. In the plane of
# $\mu$ and $z$ the point has coordinates $\big(1 - \sigma,\ g(\sigma)\big)$ with
# $g = \sqrt{(1 - \sigma)^2 s^2 + \sigma^2}$, so the path is a straight line exactly
# when $g$ is affine in $\sigma$. $g^2$ is a quadratic whose square root is affine only
# if it is a perfect square, $(s(1 - \sigma) + \sigma)^2 = g^2 + 2 s \sigma (1 - \sigma)$:
# only for $s = 0$, data that is a single point. (Unless $z$ happens to be parallel to
# $\mu$, or $\mu = 0$: then the path is a straight segment, travelled at a varying speed,
# which Euler does not follow exactly either.) For every $s > 0$ the Gaussian's paths
# bend, gently: $g$ is convex, with its minimum at $\sigma = s^2 / (1 + s^2)$.
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
# paths bend, and where a sampler with few steps goes wrong (measured in
# [[#where-the-paths-bend]]).
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


# ## Where the paths bend
#
# "Bend" made measurable: along each exact path, the angle by which the direction of
# motion (the velocity) turns per unit of $\sigma$, $|\mathrm{d}\theta / \mathrm{d}\sigma|$,
# the curvature of the path times its speed. A straight path, however fast or slow, turns
# by 0. We follow `n` paths of the exact ODE on a fine grid (`fine` steps), sum the
# turning angles in ten bins of $\sigma$, and report each bin's share of all the turning,
# the mean total turn of a path in degrees, and the median $\sigma$ of the turning
# (half of it happens above, half below).
@torch.no_grad()
def bending(mix: "Mixture", n: int = 1000, seed: int = 0, fine: int = 2000,
            bins: int = 10) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, mix.mu.shape[1], generator=g, dtype=torch.float64)
    sigmas = torch.linspace(1 - 1e-4, 1e-4, fine + 1, dtype=torch.float64)
    path = [x]
    euler_sample(mix.velocity, x, sigmas, trajectory=path)
    v = torch.stack([mix.velocity(p, torch.full((n,), float(s), dtype=torch.float64))
                     for p, s in zip(path, sigmas)])                   # (fine + 1, n, d)
    u = torch.nn.functional.normalize(v, dim=-1)
    cos = (u[1:] * u[:-1]).sum(-1).clamp(-1.0, 1.0)
    turn = torch.arccos(cos).mean(1)                                    # (fine,) radians
    at = 0.5 * (sigmas[1:] + sigmas[:-1])
    total = turn.sum()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    share = [float(turn[(at >= lo) & (at < hi)].sum() / total) for lo, hi in zip(edges[:-1], edges[1:])]
    below = torch.cumsum(turn.flip(0), 0) / total                       # from sigma = 0 up
    median = float(at.flip(0)[int((below >= 0.5).nonzero()[0])])
    return {"edges": edges.tolist(), "share": share, "median_sigma": median,
            "total_degrees": math.degrees(float(total))}


# ## How far each sampler lands from the exact solution
#
# The reference is the same ODE solved with 2000 Euler steps (its own error is far below
# what we measure). For each sampler and number of steps we report the mean distance
# between where a noise sample lands and where it should land, in units of the modes'
# standard deviation $s$, and the fraction of samples that end within $3s$ of a mode.
# Three samplers: `euler` and `dpm` on the uniform grid
# ([[flow.py#the-sampling-schedule]]), as this course's DiT uses them, and
# `euler_diffusers`, Euler on the diffusers grid as Sana's and SD3's Euler samplers run
# it. Every sampler's $N$ steps are $N$ velocity evaluations.
@torch.no_grad()
def sampler_errors(mix: Mixture, steps=(2, 4, 8, 16, 32), n: int = 2000, shift: float = 1.0,
                   seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, mix.mu.shape[1], generator=g, dtype=torch.float64)
    exact = euler_sample(mix.velocity, x_T, sigma_schedule(2000, shift))
    rows = []
    for N in steps:
        sigmas = sigma_schedule(N, shift)
        for name, grid, x_0 in (
                ("euler", "uniform", euler_sample(mix.velocity, x_T, sigmas)),
                ("euler_diffusers", "diffusers",
                 euler_sample(mix.velocity, x_T, flow_match_sigmas(N, shift))),
                ("dpm", "uniform", dpm_solver_sample(mix.velocity, x_T, sigmas))):
            error = (x_0 - exact).norm(dim=1).mean().item() / mix.s[0].item()
            near = (torch.cdist(x_0, mix.mu).min(dim=1).values < 3 * mix.s[0]).double().mean()
            rows.append({"sampler": name, "grid": grid, "steps": N, "error_in_s": error,
                         "on_a_mode": near.item()})
    return rows


# ## The figure
#
# Four panels: (1) the training pairs, data points joined to their noise by the straight
# lines of the path; (2) the paths of the exact ODE, which are not straight, since each
# point follows the *average* of all lines through it; (3) where 6 steps of Euler and of
# Flow-DPM-Solver (both on the uniform grid) land, over the exact endpoints; (4) where
# along $\sigma$ the exact paths turn ([[#where-the-paths-bend]]).
def draw_figure(path: Path, n: int = 600, seed: int = 0, steps: int = 6,
                bend: dict | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mix = eight_gaussians()
    g = torch.Generator().manual_seed(seed)
    x_0 = mix.sample(n, g)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.3), layout="constrained")
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
    for ax in axes[:3]:
        ax.set_xlim(-3.2, 3.2)
        ax.set_ylim(-3.2, 3.2)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])

    ax = axes[3]
    bend = bend or bending(mix, n=300, seed=seed, fine=800)
    lo = bend["edges"][:-1]
    ax.bar([x + 0.05 for x in lo], bend["share"], width=0.09, color="tab:purple")
    ax.set_xlim(1.0, 0.0)  # sampling runs from sigma = 1 (left) to 0
    ax.set_xlabel(r"noise level $\sigma$ (sampling runs left to right)")
    ax.set_ylabel("share of the paths' turning")
    ax.set_title("where the exact paths turn")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ## Demo
#
# `python src/annogen/flow/toy.py`: the mixture, its velocity at a few points, where the
# paths bend, and the checked property that the exact velocity of a one-component
# "mixture" is the single Gaussian's closed form.
if __name__ == "__main__":
    torch.set_num_threads(1)
    mix = eight_gaussians()
    x = mix.sample(5, torch.Generator().manual_seed(0))
    print(f"eight Gaussians: mu {tuple(mix.mu.shape)}, s {mix.s[0].item()}, samples {tuple(x.shape)}")
    print("v*(x, 0.5) of 5 samples:", mix.velocity(x, torch.full((5,), 0.5, dtype=torch.float64)).shape)
    b = bending(mix, n=300, fine=800)
    print(f"paths turn by {b['total_degrees']:.0f} degrees on average; half of it above "
          f"sigma = {b['median_sigma']:.2f}")
    for lo, share in zip(b["edges"], b["share"]):
        print(f"  sigma in [{lo:.1f}, {lo + 0.1:.1f}): {share:.3f} of the turning")
    one = Mixture(mix.mu[:1], mix.s[:1], torch.ones(1, dtype=torch.float64))
    sig = torch.rand(5, dtype=torch.float64)
    assert torch.allclose(one.velocity(x, sig), gaussian_velocity(x, sig, mix.mu[0], 0.1))
    print("check: a one-component mixture's velocity equals the Gaussian closed form")
