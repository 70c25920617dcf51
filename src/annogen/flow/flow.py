r"""
---
title: Flow matching, the equations and the samplers
summary: Rectified flow in a page - the straight path from data to noise, the velocity target, logit-normal sigmas and the timestep shift - and the samplers that integrate it - Euler, Flow-DPM-Solver (DPM-Solver++ multistep with alpha = 1 - sigma) - with classifier-free guidance.
---

# Flow matching: the equations and the samplers

A diffusion model learns to undo a path that leads from an image to pure noise. DDPM's
path (the DDPM chapter) is a curve, $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\,\epsilon$;
*flow matching* with the *rectified flow* path
([Lipman et al. (2023)](https://arxiv.org/abs/2210.02747);
[Liu et al. (2023)](https://arxiv.org/abs/2209.03003)) takes the straight line

$$x_\sigma = (1 - \sigma)\, x_0 + \sigma\, \epsilon, \qquad \sigma \in [0, 1],\ \epsilon \sim \mathcal{N}(0, I),$$

and trains a network $v_\theta(x_\sigma, \sigma)$ to predict the velocity of a point along
it. Sampling starts from noise at $\sigma = 1$ and integrates the ordinary differential
equation $\mathrm{d}x / \mathrm{d}\sigma = v_\theta$ down to $\sigma = 0$. Stable Diffusion 3,
FLUX and Sana are trained this way; the DiT chapter ([[dit/model.py]])
trains a DiT with it on the course's shapes.

This page has the whole method and nothing else: the path and its target, how training
picks $\sigma$, two time grids, and two samplers: Euler, and Sana's Flow-DPM-Solver,
which Sana reports converges in 14 to 20 steps where Euler needs 28 to 50. All
functions work on any tensor shape; the 2-D demonstration in [[toy.py]] runs them on a
mixture of Gaussians whose exact velocity is known, so we can see each sampler's error
without training anything.

Run it: `python src/annogen/flow/flow.py` (or `python -m annogen.flow.flow`) carries
Gaussian noise onto a 1-D Gaussian with its exact velocity and prints both grids and
both samplers' errors, in a second.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

# A velocity function: `velocity(x, sigma)` with `x` of shape (N, ...) and `sigma` a
# tensor of shape (N,) returns $v(x, \sigma)$ with the shape of `x`.
Velocity = Callable[[Tensor, Tensor], Tensor]


# ## The path and its velocity
#
# Along the straight line from a data point $x_0$ to a noise sample $\epsilon$, the
# velocity is the same everywhere:
#
# $$x_\sigma = (1 - \sigma)\, x_0 + \sigma\, \epsilon, \qquad v = \frac{\mathrm{d} x_\sigma}{\mathrm{d}\sigma} = \epsilon - x_0.$$
#
# The network sees only $x_\sigma$ and $\sigma$, not the pair $(x_0, \epsilon)$ it came
# from, and many pairs pass through the same point. Minimising the squared error
# $\mathbb{E}\, \lVert v_\theta(x_\sigma, \sigma) - (\epsilon - x_0) \rVert^2$ makes it
# predict their *average*, $v^*(x, \sigma) = \mathbb{E}[\epsilon - x_0 \mid x_\sigma = x]$,
# and the ODE with that averaged velocity carries the noise distribution exactly onto the
# data distribution ([Lipman et al. (2023)](https://arxiv.org/abs/2210.02747), Theorem 1). The straight line is what "rectified"
# refers to: if the averaged paths were straight too, one Euler step would do.
def interpolate(x_0: Tensor, eps: Tensor, sigma: Tensor) -> Tensor:
    r"""$x_\sigma = (1 - \sigma) x_0 + \sigma \epsilon$, with `sigma` of shape (N,) or a number."""
    sigma = _per_sample(sigma, x_0)
    return (1 - sigma) * x_0 + sigma * eps


def velocity_target(x_0: Tensor, eps: Tensor) -> Tensor:
    r"""$v = \epsilon - x_0$."""
    return eps - x_0


# A predicted velocity also gives a prediction of the clean image: the line through
# $x_\sigma$ with slope $v$ reaches $\sigma = 0$ at
#
# $$\hat x_0 = x_\sigma - \sigma\, v,$$
#
# exactly, since $x_\sigma - \sigma (\epsilon - x_0) = x_0$. The DPM-Solver below works
# with this $\hat x_0$; with the true $v$ it is the data point itself.
def predict_x0(x_sigma: Tensor, v: Tensor, sigma: Tensor) -> Tensor:
    return x_sigma - _per_sample(sigma, x_sigma) * v


# ... and of the noise, $\hat\epsilon = x_\sigma + (1 - \sigma)\, v$, which is what
# Sana's code hands to its DPM-Solver (its model type `flow`).
def predict_eps(x_sigma: Tensor, v: Tensor, sigma: Tensor) -> Tensor:
    return x_sigma + (1 - _per_sample(sigma, x_sigma)) * v


# `sigma` of shape (N,) (or a number) against `x` of shape (N, ...): one value per sample.
def _per_sample(sigma, x: Tensor) -> Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.reshape(-1, *([1] * (x.dim() - 1))) if sigma.dim() > 0 else sigma


# ## Which sigma to train on
#
# Every $\sigma$ matters for sampling, but not equally for training. Near $\sigma = 0$
# the target $\epsilon - x_0$ is easy (the image is visible, the noise is small and
# readable); near $\sigma = 1$ it is easy too (the best guess is $x_\sigma$ minus the
# mean image). The hard, informative part is in the middle. Stable Diffusion 3
# ([Esser et al. (2024)](https://arxiv.org/abs/2403.03206)) compared many choices and kept the **logit-normal** distribution: draw
# $u \sim \mathcal{N}(m, s^2)$ and squash it,
#
# $$\sigma = \frac{1}{1 + e^{-u}},$$
#
# which puts most samples near $\sigma = 1/2$ and few at the ends, with the defaults
# $m = 0$, $s = 1$. Sana draws the same $\sigma$ but rounds it to one of 1000 values
# (`discrete=True` here): index $\lfloor 1000 \sigma \rfloor$ into
# $\mathrm{linspace}(0, 0.999, 1000)$.
def logit_normal_sigma(n: int, m: float = 0.0, s: float = 1.0,
                       generator: torch.Generator | None = None, device=None,
                       discrete: bool = False) -> Tensor:
    u = torch.randn(n, generator=generator, device=device) * s + m
    sigma = torch.sigmoid(u)
    if discrete:
        table = torch.linspace(0, 0.999, 1000, device=sigma.device)
        sigma = table[(sigma * 1000).long().clamp(max=999)]
    return sigma


# ## The timestep shift
#
# A bigger image holds the same picture in more pixels, and at a given $\sigma$ its
# noise destroys less of it: averaging over neighbouring pixels removes noise but not
# the image. So a large image needs more noise to look as destroyed as a small one.
# SD3 moves every $\sigma$ up with a shift $s \ge 1$:
#
# $$\sigma' = \frac{s\, \sigma}{1 + (s - 1)\, \sigma},$$
#
# which keeps $0$ and $1$ in place and maps $1/2$ to $s / (1 + s)$: with Sana's $s = 3$ at
# $1024^2$, $\sigma = 0.5$ becomes $0.75$. The shift changes the signal-to-noise ratio
# $\left(\frac{1 - \sigma}{\sigma}\right)^2$ by the factor $1/s^2$ exactly. It is applied to
# the training $\sigma$s and, the same $s$, to the sampling schedule below.
def shift_sigma(sigma, s: float):
    r"""$\sigma' = s\sigma / (1 + (s - 1)\sigma)$, for a float or a tensor."""
    return s * sigma / (1 + (s - 1) * sigma)


# ## The sampling schedule
#
# Sampling visits $\sigma_0 > \sigma_1 > \dots > \sigma_N = 0$, one network evaluation
# at each of the first $N$. Two grids are in use, and they differ enough to matter at
# few steps (the toy's table, [[toy.py#how-far-each-sampler-lands-from-the-exact-solution]]).
#
# **The uniform grid** (`grid="uniform"`, the default of every function here) is Sana's
# `time_uniform_flow` schedule for its DPM-Solver: $N + 1$ evenly spaced values from
# $1 - t_0$ down to $0$, then shifted,
#
# $$\sigma_i = \mathrm{shift}\Big((1 - t_0)\big(1 - \tfrac{i}{N}\big),\ s\Big), \qquad i = 0, \dots, N.$$
#
# Sana's $t_0 = 1/1000$ keeps the first $\sigma$ just below 1: there the log
# signal-to-noise ratio $\lambda = \log\frac{1 - \sigma}{\sigma}$ that DPM-Solver steps
# in is finite, which its second-order steps need (see below). With $t_0 = 0$ the
# schedule starts at exactly $\sigma = 1$. A shift $s > 1$ spends more of the steps at
# high noise.
def sigma_schedule(steps: int, shift: float = 1.0, t_0: float = 1e-3) -> Tensor:
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    sigma = torch.linspace(1.0 - t_0, 0.0, steps + 1, dtype=torch.float64)
    return shift_sigma(sigma, shift)


# **The flow-matching Euler grid** (`grid="diffusers"`) is the one of diffusers'
# `FlowMatchEulerDiscreteScheduler`, which Sana's and SD3's Euler samplers use. The
# scheduler's training table is $\mathrm{shift}(j/1000, s)$ for $j = 1000, \dots, 1$;
# sampling takes $N$ values evenly spaced from its largest entry, $1$, to its smallest,
# $\sigma_{min} = \mathrm{shift}(1/1000, s)$, shifts them **again**, and appends $0$:
#
# $$\sigma_i = \mathrm{shift}\Big(1 - \tfrac{i}{N - 1}\,(1 - \sigma_{min}),\ s\Big), \quad i = 0, \dots, N - 1, \qquad \sigma_N = 0.$$
#
# It starts at exactly $\sigma = 1$, and its last evaluation is at a *small* $\sigma$
# ($0.001$ for $s = 1$, about $s^2/1000$ otherwise, the second shift acting on the
# already shifted end) rather than at $\sigma_{N-1} = 1/N$: the last of the $N$ steps
# is nearly free of effect, so $N$ steps on this grid do about the work of $N - 1$ on
# the uniform one, and the step sizes are spread over $[\sigma_{min}, 1]$ instead.
# The double shift of the end point is what the diffusers code does; we copy it.
def flow_match_sigmas(steps: int, shift: float = 1.0, num_train_timesteps: int = 1000) -> Tensor:
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    sigma_min = shift_sigma(1.0 / num_train_timesteps, shift)
    sigma = shift_sigma(torch.linspace(1.0, sigma_min, steps, dtype=torch.float64), shift)
    return torch.cat([sigma, sigma.new_zeros(1)])


GRIDS = {"uniform": sigma_schedule, "diffusers": flow_match_sigmas}


# ## The Euler sampler
#
# The simplest solver of $\mathrm{d}x/\mathrm{d}\sigma = v(x, \sigma)$: follow the
# velocity of the current point in a straight line to the next $\sigma$,
#
# $$x_{\sigma_{i+1}} = x_{\sigma_i} + (\sigma_{i+1} - \sigma_i)\, v(x_{\sigma_i}, \sigma_i).$$
#
# One network evaluation per step. It is exact when the paths are straight; the more they
# bend the more steps it needs. The averaged paths do bend wherever the data has several
# modes; on the toy of [[toy.py#where-the-paths-bend]] most of the bending happens
# between $\sigma = 0.8$ and $0.6$, early in sampling.
@torch.no_grad()
def euler_sample(velocity: Velocity, x_T: Tensor, sigmas: Tensor,
                 trajectory: list | None = None) -> Tensor:
    r"""Integrate from `x_T` at `sigmas[0]` to `sigmas[-1]`; returns $x_0$. When a
    list is given as `trajectory`, every intermediate $x$ is appended to it."""
    x = x_T
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        v = velocity(x, torch.full((len(x),), sigma, dtype=x.dtype, device=x.device))
        x = x + (sigma_next - sigma) * v
        if trajectory is not None:
            trajectory.append(x)
    return x


# ## Flow-DPM-Solver
#
# DPM-Solver ([Lu et al. (2022)](https://arxiv.org/abs/2206.00927)) solves the diffusion ODE of any path
# $x_t = \alpha_t x_0 + \sigma_t \epsilon$ in the variable
# $\lambda = \log(\alpha_t / \sigma_t)$, half the log signal-to-noise ratio. Written
# with the data prediction $\hat x_0$ ("DPM-Solver++", [Lu et al. (2022b)](https://arxiv.org/abs/2211.01095)), the ODE has an
# exact solution in which only an integral of $\hat x_0$ is unknown:
#
# $$x_t = \frac{\sigma_t}{\sigma_s}\, x_s + \sigma_t \int_{\lambda_s}^{\lambda_t} e^{\lambda}\, \hat x_0(x_\lambda)\, \mathrm{d}\lambda.$$
#
# The linear part is solved exactly; only $\hat x_0$ is approximated, and $\hat x_0$
# changes much more slowly along the path than $x$ does. Sana's **Flow-DPM-Solver**
# is this solver with the rectified-flow path, $\alpha_\sigma = 1 - \sigma$ and
# $\sigma_\sigma = \sigma$, and $\hat x_0 = x - \sigma v$ from the velocity:
#
# $$\lambda(\sigma) = \log \frac{1 - \sigma}{\sigma}.$$
def flow_lambda(sigma: Tensor) -> Tensor:
    r"""$\lambda = \log(1 - \sigma) - \log\sigma$: $+\infty$ at $\sigma = 0$, $-\infty$ at $\sigma = 1$."""
    return torch.log1p(-sigma) - torch.log(sigma)


# ### First order: DDIM, and here also Euler
#
# With $\hat x_0$ held constant over the step from $s$ to $t$ (let
# $h = \lambda_t - \lambda_s$):
#
# $$x_t = \frac{\sigma_t}{\sigma_s}\, x_s - \alpha_t \left(e^{-h} - 1\right) \hat x_0(x_s).$$
#
# This is DDIM's step (with $\hat\epsilon$ in place of $\hat x_0$ it reads
# $x_t = \alpha_t \hat x_0 + \sigma_t \hat\epsilon$). On the straight path it is also
# exactly Euler's step: put $\alpha = 1 - \sigma$, $\hat x_0 = x_s - s v$ and
# $e^{-h} = \frac{\sigma_t (1 - s)}{(1 - \sigma_t) s}$ in, and it simplifies to
# $x_t = x_s + (\sigma_t - s)\, v$. The test file checks both identities. The step to
# $\sigma_t = 0$ ($h = \infty$) returns $\hat x_0(x_s)$ itself.
def dpm_first_order_step(x: Tensor, x0_s: Tensor, sigma_s: Tensor, sigma_t: Tensor) -> Tensor:
    h = flow_lambda(sigma_t) - flow_lambda(sigma_s)
    alpha_t = 1 - sigma_t
    return float(sigma_t / sigma_s) * x - float(alpha_t * torch.expm1(-h)) * x0_s


# ### Second order, multistep
#
# The multistep solver does better at no extra cost: it keeps $\hat x_0$ from the
# previous step and uses the difference as the slope of $\hat x_0$ in $\lambda$. With
# $h_0 = \lambda_s - \lambda_{s'}$ the previous step's size and $r_0 = h_0 / h$:
#
# $$D_1 = \frac{1}{r_0}\left(\hat x_0(x_s) - \hat x_0(x_{s'})\right), \qquad x_t = \frac{\sigma_t}{\sigma_s}\, x_s - \alpha_t \left(e^{-h} - 1\right) \left(\hat x_0(x_s) + \tfrac{1}{2} D_1\right).$$
#
# (This is the `dpmsolver` variant of the update, the default of DPM-Solver's code and of
# Sana's.) A step from $\sigma = 1$ exactly has $h_0 = \infty$, $D_1 = 0$, and falls
# back to first order; hence the schedule's $t_0$.
def dpm_second_order_step(x: Tensor, x0_s: Tensor, x0_prev: Tensor, sigma_prev: Tensor,
                          sigma_s: Tensor, sigma_t: Tensor) -> Tensor:
    lambda_prev, lambda_s, lambda_t = (flow_lambda(sigma_prev), flow_lambda(sigma_s),
                                       flow_lambda(sigma_t))
    h, h_0 = lambda_t - lambda_s, lambda_s - lambda_prev
    r_0 = h_0 / h
    D_1 = (x0_s - x0_prev) / float(r_0)
    alpha_t = 1 - sigma_t
    phi_1 = float(alpha_t * torch.expm1(-h))
    return float(sigma_t / sigma_s) * x - phi_1 * x0_s - 0.5 * phi_1 * D_1


# ### The multistep loop
#
# As in Sana (and DPM-Solver's code with `method="multistep"`, `lower_order_final=True`):
#
# 1. the first step is first order (there is no previous $\hat x_0$ yet);
# 2. the middle steps are second order;
# 3. the last step, to $\sigma = 0$, is first order again: it returns the current
#    $\hat x_0$, which is steadier with few steps than extrapolating to $h = \infty$.
#
# One network evaluation per step, like Euler; $N$ steps are $N$ evaluations. We do the
# coefficient arithmetic in float64 (the $\lambda$s run to $\pm$ large values) and apply
# it to $x$ in its own dtype.
@torch.no_grad()
def dpm_solver_sample(velocity: Velocity, x_T: Tensor, sigmas: Tensor, order: int = 2,
                      trajectory: list | None = None) -> Tensor:
    r"""Flow-DPM-Solver (DPM-Solver++ multistep, order 1 or 2) from `sigmas[0]` to
    `sigmas[-1]`; returns $x_0$."""
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, not {order}")
    sigmas = sigmas.to(torch.float64)
    N = len(sigmas) - 1
    x = x_T
    x0_prev = sigma_prev = None
    for i in range(N):
        sigma_s, sigma_t = sigmas[i], sigmas[i + 1]
        v = velocity(x, torch.full((len(x),), float(sigma_s), dtype=x.dtype, device=x.device))
        x0_s = x - float(sigma_s) * v
        last = i == N - 1
        if order == 1 or x0_prev is None or last:
            x = dpm_first_order_step(x, x0_s, sigma_s, sigma_t)
        else:
            x = dpm_second_order_step(x, x0_s, x0_prev, sigma_prev, sigma_s, sigma_t)
        x0_prev, sigma_prev = x0_s, sigma_s
        if trajectory is not None:
            trajectory.append(x)
    return x


# A sampler by name: `"euler"` or `"dpm"`, as the command lines and benchmarks call them,
# on the `"uniform"` grid unless `grid="diffusers"` asks for the flow-matching Euler grid
# above. Sana pairs Euler with the diffusers grid and its DPM-Solver with the uniform
# one. (On the diffusers grid, which starts at $\sigma = 1$, DPM-Solver's first two steps
# are first order: $h_0 = \infty$ gives $D_1 = 0$.)
def sample(velocity: Velocity, x_T: Tensor, steps: int, sampler: str = "dpm",
           shift: float = 1.0, grid: str = "uniform") -> Tensor:
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}: use 'uniform' or 'diffusers'")
    sigmas = GRIDS[grid](steps, shift)
    if sampler == "euler":
        return euler_sample(velocity, x_T, sigmas)
    if sampler == "dpm":
        return dpm_solver_sample(velocity, x_T, sigmas, order=2)
    raise ValueError(f"unknown sampler {sampler!r}: use 'euler' or 'dpm'")


# ## Classifier-free guidance
#
# A class-conditional model trained with the label dropped now and then (replaced by a
# "null" label) predicts both the conditional velocity $v(x, \sigma, y)$ and the
# unconditional one $v(x, \sigma, \varnothing)$. Guidance ([Ho and Salimans (2022)](https://arxiv.org/abs/2207.12598))
# extrapolates from the second towards the first:
#
# $$\tilde v = v(x, \sigma, \varnothing) + w \left(v(x, \sigma, y) - v(x, \sigma, \varnothing)\right).$$
#
# $w = 1$ is the plain conditional model; $w > 1$ trades diversity for samples that
# look more like their class. Both predictions come from one forward pass of a doubled
# batch, unconditional half first, as in Sana's code; for $w = 1$ we skip the
# unconditional half. The model is called `model(x, t, y)` with the timestep
# $t = 1000\,\sigma$ (`time_scale`), the convention of DiT and Sana.
def cfg_velocity(model: Callable, y: Tensor, null, scale: float,
                 time_scale: float = 1000.0) -> Velocity:
    r"""The guided velocity function $\tilde v(x, \sigma)$ for labels `y` (shape (N,));
    `null` is the label that means "no class" (an int or a tensor like `y`)."""
    null = torch.as_tensor(null, dtype=y.dtype, device=y.device).expand_as(y)

    def velocity(x: Tensor, sigma: Tensor) -> Tensor:
        t = sigma * time_scale
        if scale == 1.0:
            return model(x, t, y)
        v_null, v_cond = model(torch.cat([x, x]), torch.cat([t, t]),
                               torch.cat([null, y])).chunk(2)
        return v_null + scale * (v_cond - v_null)
    return velocity


# ## The training loss
#
# One batch of flow matching, for any network `model(x, t, y)`: draw $\sigma$
# (logit-normal, shifted), noise $\epsilon$, build $x_\sigma$, and regress the velocity,
#
# $$\mathcal{L} = \mathbb{E}_{x_0, \epsilon, \sigma} \lVert v_\theta(x_\sigma, 1000\,\sigma, y) - (\epsilon - x_0) \rVert^2.$$
def flow_matching_loss(model: Callable, x_0: Tensor, y: Tensor | None = None,
                       shift: float = 1.0, generator: torch.Generator | None = None,
                       time_scale: float = 1000.0) -> Tensor:
    n = len(x_0)
    sigma = shift_sigma(logit_normal_sigma(n, generator=generator, device=x_0.device), shift)
    eps = torch.randn(x_0.shape, generator=generator, device=x_0.device, dtype=x_0.dtype)
    x_sigma = interpolate(x_0, eps, sigma)
    v = model(x_sigma, sigma * time_scale, y)
    return (v - velocity_target(x_0, eps)).pow(2).mean()


# ## Demo
#
# `python src/annogen/flow/flow.py`: data $\mathcal{N}(\mu, s^2)$ in one dimension, whose
# optimal velocity is known in closed form ([[toy.py#one-gaussian]]); every noise sample
# $z$ should land on $\mu + s z$. The checked property: Euler with 1000 steps gets there.
if __name__ == "__main__":
    mu, s = 2.0, 0.5

    def v_star(x: Tensor, sigma: Tensor) -> Tensor:
        sigma = sigma.reshape(-1, *([1] * (x.dim() - 1)))
        a = 1 - sigma
        return (sigma - a * s ** 2) / (a ** 2 * s ** 2 + sigma ** 2) * (x - a * mu) - mu

    z = torch.randn(4096, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    target = mu + s * z
    print("uniform grid,   4 steps:", [round(v, 4) for v in sigma_schedule(4).tolist()])
    print("diffusers grid, 4 steps:", [round(v, 4) for v in flow_match_sigmas(4).tolist()])
    print(f"noise {tuple(z.shape)} -> data N({mu}, {s}^2); mean |x - (mu + s z)|:")
    for steps in (4, 16):
        for sampler in ("euler", "dpm"):
            for grid in ("uniform", "diffusers"):
                err = (sample(v_star, z, steps, sampler, grid=grid) - target).abs().mean()
                print(f"  {sampler:5s} {grid:9s} {steps:2d} steps: {err.item():.5f}")
    err = (sample(v_star, z, 1000, "euler") - target).abs().max().item()
    assert err < 5e-3, err
    print(f"check: Euler with 1000 steps lands every sample within {err:.1e} of mu + s z")
