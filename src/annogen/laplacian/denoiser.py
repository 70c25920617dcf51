r"""
---
title: Laplacian diffusion, denoiser and sampler
summary: One U-Net (the DDPM chapter's) for all three resolutions, EDM-style preconditioning around it, the x_0 loss, and a deterministic sampler that walks from 8x8 pure noise to a 32x32 image, switching resolution on the way and counting what it spends.
---

# One network, three resolutions, and the sampler

## One network or experts?

Edify Image trains a network per resolution range ("experts"), or one network for
all $t$. We take **one network**, the DDPM chapter's U-Net ([[../ddpm/unet.py#UNet]]),
for two reasons. It is fully convolutional (its attention is over whatever pixels
there are), so it runs on $8 \times 8$, $16 \times 16$ and $32 \times 32$ states alike.
And the resolution is a function of $t$ ($l = \#\{i : t \ge t^{(i*)}\}$), so the
timestep input already tells the network which resolution and which attenuations it is
looking at; no extra input is needed. One network also keeps the comparison with the
baselines fair: the same parameters, the same optimizer, the same number of steps.

## Preconditioning, the EDM way

The paper trains in the EDM framework (Karras et al., 2022): the network predicts the
clean image through a fixed skip connection and fixed input and output scales chosen so
that input and training target have unit variance. Translated to our
variance-preserving state $z_t = a_t\,(\dots) + \sigma\,\epsilon$ (with $\sigma$ the noise at
the state's own resolution, $\sigma_t / 2^l$) and data standard deviation
$\sigma_d = 0.5$ (EDM's default), the denoiser is

$$D(z_t, t) = c_\text{skip}\, z_t + c_\text{out}\, F_\theta(c_\text{in}\, z_t,\ t), \qquad
  c_\text{in} = \frac{1}{\sqrt{a_t^2\sigma_d^2 + \sigma^2}}, \quad
  c_\text{skip} = \frac{a_t\,\sigma_d^2}{a_t^2\sigma_d^2 + \sigma^2}, \quad
  c_\text{out} = \frac{\sigma\,\sigma_d}{\sqrt{a_t^2\sigma_d^2 + \sigma^2}},$$

(at $a_t = 1$ these are exactly EDM's). The skip ignores the band attenuations (it
treats the state as if all bands were whole); the network learns the rest. The timestep
enters the U-Net as $1000\,t$, the range its sinusoidal embedding was built for.

This differs from the DDPM chapter, which predicts the noise $\epsilon$: with fading
bands, $x_0$ cannot be recovered from a noise estimate by dividing by one number, and
once a band is gone it cannot be recovered at all, so predicting the clean image at the
state's resolution is the natural target.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from tqdm import tqdm

from annogen.laplacian.process import LaplacianProcess, overall, switch_up

__all__ = ["SIGMA_DATA", "Denoiser", "loss", "time_grid", "sample", "cost_per_image"]

SIGMA_DATA = 0.5


class Denoiser(nn.Module):
    r"""$D(z_t, t, y)$: the preconditioned U-Net; `net` is any $F(x, 1000t, y)$."""

    def __init__(self, net: nn.Module, process: LaplacianProcess, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.net, self.process, self.sigma_data = net, process, sigma_data

    def scales(self, t: Tensor, level: int) -> tuple[Tensor, Tensor, Tensor]:
        a, _ = overall(t)
        s = self.process.sigma(t, level)
        sd = self.sigma_data
        norm = (a ** 2 * sd ** 2 + s ** 2).sqrt()
        return 1.0 / norm, a * sd ** 2 / norm ** 2, s * sd / norm

    def forward(self, z: Tensor, t: Tensor, level: int, y: Tensor | None = None) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64, device=z.device).expand(z.shape[0])
        c_in, c_skip, c_out = (c.to(z.dtype).view(-1, 1, 1, 1) for c in self.scales(t, level))
        F = self.net(c_in * z, (1000.0 * t).to(z.dtype), y).float()
        return c_skip * z + c_out * F


# ## The loss
#
# Each image gets its own $t \sim \mathcal{U}(t_\text{min}, 1)$ with $t_\text{min} = 10^{-3}$.
# Images whose $t$ falls at the same level are noised together at that level
# ([[process.py#the-process-at-any-resolution]]) and go through the network in one
# call, so a batch costs up to three calls of different sizes. The target is the clean
# image at the state's resolution, $\mathrm{down}^l(x_0)$, and EDM's weighting
# $\lambda = 1 / c_\text{out}^2$ makes the loss a plain squared error on the network's own
# output:
#
# $$\mathcal{L} = \mathbb{E}\Big[\frac{1}{c_\text{out}^2}\big\lVert D(z_t, t) - \mathrm{down}^l(x_0)\big\rVert^2\Big]
#   = \mathbb{E}\Big[\Big\lVert F_\theta - \frac{\mathrm{down}^l(x_0) - c_\text{skip}\, z_t}{c_\text{out}}\Big\rVert^2\Big],$$
#
# mean over pixels, then over images. The sampling of $t$ is uniform in time, so the
# share of training spent at each resolution is the length of its time range: with
# switches at 0.5 and 0.75, half the images are seen at $32 \times 32$, a quarter at 16,
# a quarter at 8, and a training step costs about 58% of a single-resolution one
# ($\tfrac12 \cdot 1024 + \tfrac14 \cdot 256 + \tfrac14 \cdot 64 = 592$ pixels per image instead of 1024).
# `loss` also returns the pixels the network saw, for the benchmark's bookkeeping.
def loss(den: Denoiser, x0: Tensor, y: Tensor | None = None, t_min: float = 1e-3,
         generator: torch.Generator | None = None) -> tuple[Tensor, int]:
    r"""$\mathcal{L}$ on a batch, and the number of pixels (per channel) the network processed."""
    B = x0.shape[0]
    t = t_min + (1 - t_min) * torch.rand(B, generator=generator, dtype=torch.float64).to(x0.device)
    levels = torch.tensor([den.process.level(float(v)) for v in t], device=x0.device)
    total, pixels = x0.new_zeros(()), 0
    for l in levels.unique().tolist():
        idx = (levels == l).nonzero().flatten()
        z, target, _ = den.process.q_sample(x0[idx], t[idx], level=l, generator=generator)
        _, _, c_out = den.scales(t[idx], l)
        err = (den(z, t[idx], l, None if y is None else y[idx]) - target) / c_out.float().view(-1, 1, 1, 1)
        total = total + err.pow(2).mean(dim=(1, 2, 3)).sum()
        pixels += len(idx) * z.shape[-1] * z.shape[-2]
    return total / B, pixels


# ## The time grid
#
# The sampler visits $S$ equally spaced times from 1 to 0, plus every switch time that
# is not already among them, so that a switch always happens exactly where the band's
# attenuation is zero. (With switches at 0.5 and 0.75 and $S$ a multiple of 4, no extra
# points are needed.) At a switch time itself the band is already zero, so the call
# there is made at the lower resolution.
def time_grid(steps: int, switch_times: tuple[float, ...] = ()) -> list[float]:
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    grid = {round(1 - k / steps, 12) for k in range(steps + 1)} | {round(s, 12) for s in switch_times}
    return sorted(grid, reverse=True)


# ## The sampler
#
# Deterministic, DDIM-style ($\eta = 0$) for a process with a general linear mean
# (f-DM samples its stages the same way). At time $t$ at level $l$ the network gives
# $\hat x_0 = D(z_t, t)$, clipped to $[-1, 1]$ as the DDPM chapter clips; the noise that
# estimate implies is $\hat\epsilon = (z_t - \mu_t(\hat x_0)) / \sigma$, and the step keeps
# both and moves them to the next time $s$:
#
# $$z_s = \mu_s(\hat x_0) + \sigma_s\,\hat\epsilon,$$
#
# where $\mu$ applies each band's attenuation at that time ([[process.py#LaplacianProcess.mean]]).
# When $s$ is a switch time, the state goes up one level with [[process.py#switch_up]]
# (fresh noise for the discarded subspace, $\sigma$ doubled). The walk starts from pure
# noise at the lowest level, $z_1 = \frac{\sigma_1}{2^L}\epsilon$ with $L$ the number of
# switches, and ends at $s = 0$ with $z_0 = \hat x_0$.
#
# **Cost.** One network call per grid interval, at the state's resolution. `sample`
# counts the pixels those calls processed, per image: this "network evaluations times
# pixels" is the benchmark's compute axis, because a convolutional network's cost is
# proportional to its pixels.
@torch.no_grad()
def sample(den: Denoiser, n: int, steps: int, size: int = 32, channels: int = 3,
           y: Tensor | None = None, generator: torch.Generator | None = None, clip: bool = True,
           device=None, progress: bool = False, trajectory: list | None = None) -> tuple[Tensor, int]:
    r"""`n` images at `size` and the network pixels spent per image."""
    proc = den.process
    device = device if device is not None else next(den.parameters()).device
    grid = time_grid(steps, proc.schedule.switch_times)
    level = proc.level(grid[0])
    side = size // 2 ** level
    where = generator.device if generator is not None else device
    z = torch.randn((n, channels, side, side), generator=generator, device=where).to(device)
    z = z * float(proc.sigma(torch.tensor(grid[0]), level))
    pixels = 0
    pairs = list(zip(grid[:-1], grid[1:]))
    for t, s in tqdm(pairs, desc=f"laplacian{steps}", disable=not progress, dynamic_ncols=True):
        tt = torch.full((n,), t, dtype=torch.float64, device=device)
        x0_hat = den(z, tt, level, y)
        pixels += z.shape[-1] * z.shape[-2]
        if clip:
            x0_hat = x0_hat.clamp(-1, 1)
        sigma_t = float(proc.sigma(torch.tensor(t), level))
        eps_hat = (z - proc.mean(x0_hat, tt, level)) / sigma_t
        ss = torch.full((n,), s, dtype=torch.float64, device=device)
        z = proc.mean(x0_hat, ss, level) + float(proc.sigma(torch.tensor(s), level)) * eps_hat
        while level > 0 and proc.level(s) < level:
            noise = torch.randn((n, channels, 2 * z.shape[-2], 2 * z.shape[-1]), generator=generator,
                                device=where).to(device)
            z, _ = switch_up(z, float(proc.sigma(torch.tensor(s), level)), noise)
            level -= 1
        if trajectory is not None:
            trajectory.append((s, level, z.clone(), x0_hat.clone()))
    return z, pixels


def cost_per_image(process: LaplacianProcess, steps: int, size: int = 32) -> int:
    r"""Network pixels per image of `sample` with `steps`, without running it."""
    grid = time_grid(steps, process.schedule.switch_times)
    return sum((size // 2 ** process.level(t)) ** 2 for t in grid[:-1])


if __name__ == "__main__":
    from annogen.ddpm.unet import build_unet, count_parameters

    torch.manual_seed(0)
    net = build_unet("tiny", image_size=32, num_classes=21)
    for name in ("edify", "fdm", "single"):
        den = Denoiser(net, LaplacianProcess(name))
        x0 = torch.rand(8, 3, 32, 32) * 2 - 1
        value, px = loss(den, x0, torch.arange(8))
        images, cost = sample(den, 2, 8, y=torch.arange(2))
        print(f"{name:7s} loss {float(value):.3f} ({px / 8:.0f} px per image), sample {tuple(images.shape)}, "
              f"{cost} px per image for 8 steps (predicted {cost_per_image(den.process, 8)})")
    print(f"U-Net parameters: {count_parameters(net):,}")
