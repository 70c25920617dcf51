r"""
---
title: DDPM and DDIM, the diffusion process
summary: The forward noising q(x_t | x_0) with the linear beta schedule, the loss L_simple, the DDPM reverse step, and the DDIM step with eta that samples the same model in 20 or 50 steps instead of 1000.
---

# Diffusion: destroying images slowly, and learning to undo it

**The forward process.** Ho et al. (2020), *Denoising Diffusion Probabilistic Models*,
take an image $x_0$ and add a little Gaussian noise $T = 1000$ times,

$$q(x_t \mid x_{t-1}) = \mathcal{N}\big(\sqrt{1 - \beta_t}\, x_{t-1},\ \beta_t I\big),$$

with a fixed schedule of variances $\beta_1 < \dots < \beta_T$. After the last step
nothing of the image is left: $x_T$ is, to a very good approximation, $\mathcal{N}(0, I)$.

**The reverse process.** If each step adds only a little noise, each step can be undone
by a Gaussian too, $p_\theta(x_{t-1} \mid x_t) = \mathcal{N}(\mu_\theta(x_t, t), \sigma_t^2 I)$,
and a network that knows the mean of that Gaussian turns pure noise into an image, one
small step at a time. The paper's central finding is that the best way to parameterise
$\mu_\theta$ is through a network $\epsilon_\theta(x_t, t)$ ([[unet.py]]) that predicts
the noise in $x_t$, and that the best loss is then the plainest one, the squared error of
that prediction, $L_\text{simple}$. With it they report an FID of 3.17 on CIFAR-10, the
best unconditional result of its time.

**DDIM.** Song, Meng and Ermon (2021), *Denoising Diffusion Implicit Models*, observe that
$L_\text{simple}$ only ever looks at the marginals $q(x_t \mid x_0)$, never at the chain
between them. Many processes share those marginals, among them deterministic ones, and
the same trained network samples all of them. A deterministic one can skip steps: with
20 or 50 steps instead of 1,000 the samples are nearly as good, 20 to 50 times faster.

This page holds everything but the network: the schedule, the forward process, the loss,
the DDPM step, the DDIM step and both samplers. Every formula is followed by the line
that computes it. We index time as the official code does: `t = 0, ..., T-1` in the code
stands for the paper's $t = 1, \dots, T$.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm import tqdm

__all__ = ["linear_beta_schedule", "Diffusion"]


# ## The noise schedule
#
# The paper's $\beta_t$ rise linearly from $\beta_1 = 10^{-4}$ to $\beta_T = 0.02$ over
# $T = 1000$ steps: tiny steps near the data, where detail is destroyed, larger ones
# near the end, where there is little left to destroy. We keep the schedule, and every
# number derived from it, in float64: $\bar\alpha_t$ is a product of a thousand factors,
# and $1 - \bar\alpha_t$ near $t = 1$ is a difference of two numbers close to 1.
def linear_beta_schedule(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    r"""$\beta_1, \dots, \beta_T$, equally spaced, as a float64 tensor of length $T$."""
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float64)


# ## Jumping to any step: $q(x_t \mid x_0)$
#
# Adding Gaussian noise $t$ times is adding Gaussian noise once. With
# $\alpha_t = 1 - \beta_t$ and $\bar\alpha_t = \prod_{s \le t} \alpha_s$,
#
# $$q(x_t \mid x_0) = \mathcal{N}\big(\sqrt{\bar\alpha_t}\, x_0,\ (1 - \bar\alpha_t) I\big),
#   \qquad x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon,
#   \quad \epsilon \sim \mathcal{N}(0, I).$$
#
# So training never runs the chain: it picks a $t$, draws one $\epsilon$ and computes
# $x_t$ directly. The signal's share $\sqrt{\bar\alpha_t}$ falls from 0.99995 at $t = 1$
# to 0.006 at $t = T$ (see the figure in the chapter's introduction).
#
# ## Undoing one step when $x_0$ is known: $q(x_{t-1} \mid x_t, x_0)$
#
# Given both ends, the step back is a Gaussian with a closed form (Bayes' rule on two
# Gaussians, the paper's equations 6 and 7):
#
# $$q(x_{t-1} \mid x_t, x_0) = \mathcal{N}\big(\tilde\mu_t(x_t, x_0),\ \tilde\beta_t I\big),$$
#
# $$\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1 - \bar\alpha_t}\, x_0
#   + \frac{\sqrt{\alpha_t}\,(1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t}\, x_t,
#   \qquad \tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t}\, \beta_t,$$
#
# with $\bar\alpha_0 = 1$. The reverse process learns to imitate this, not knowing $x_0$.
class Diffusion:
    r"""The Gaussian diffusion of Ho et al. (2020) with the DDIM sampler of Song et al.
    (2021). `variance` is $\sigma_t^2$ of the DDPM reverse step: `"beta"` ($\beta_t$,
    the official CIFAR-10 setting, `fixedlarge`) or `"beta_tilde"` ($\tilde\beta_t$,
    `fixedsmall`). `clip_denoised` clips the DDPM sampler's estimate of $x_0$ to
    $[-1, 1]$, as the official code does."""

    def __init__(self, betas: Tensor | None = None, variance: str = "beta",
                 clip_denoised: bool = True, prediction: str = "eps"):
        if variance not in ("beta", "beta_tilde"):
            raise ValueError(f"variance must be 'beta' or 'beta_tilde', not {variance!r}")
        if prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', not {prediction!r}")
        betas = linear_beta_schedule() if betas is None else betas.double().cpu()
        self.T = len(betas)
        self.variance, self.clip_denoised = variance, clip_denoised
        self.prediction = prediction
        self.betas = betas
        # $\alpha_t = 1 - \beta_t$
        self.alphas = 1.0 - betas
        # $\bar\alpha_t = \prod_{s \le t} \alpha_s$
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)
        # $\bar\alpha_{t-1}$, with $\bar\alpha_0 = 1$
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        # $\tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t}\,\beta_t$
        self.beta_tilde = (1 - self.alpha_bar_prev) / (1 - self.alpha_bar) * betas
        # the weight of $x_0$ in $\tilde\mu_t$: $\frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1 - \bar\alpha_t}$
        self.coef_x0 = self.alpha_bar_prev.sqrt() * betas / (1 - self.alpha_bar)
        # the weight of $x_t$ in $\tilde\mu_t$: $\frac{\sqrt{\alpha_t}\,(1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t}$
        self.coef_xt = self.alphas.sqrt() * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)

    # `a[t]` for a batch of timesteps, shaped to broadcast against images $(B, C, H, W)$.
    @staticmethod
    def _at(a: Tensor, t: Tensor, x: Tensor) -> Tensor:
        return a[t.cpu()].to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        r"""$x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon$."""
        return self._at(self.alpha_bar.sqrt(), t, x0) * x0 + self._at((1 - self.alpha_bar).sqrt(), t, x0) * eps

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        r"""Mean $\tilde\mu_t(x_t, x_0)$ and variance $\tilde\beta_t$ of $q(x_{t-1} \mid x_t, x_0)$."""
        mean = self._at(self.coef_x0, t, x_t) * x0 + self._at(self.coef_xt, t, x_t) * x_t
        return mean, self._at(self.beta_tilde, t, x_t)

    # ## The loss
    #
    # The variational bound of the paper reduces, term by term, to comparing
    # $\tilde\mu_t$ with $\mu_\theta$. Writing $x_0$ in terms of $x_t$ and the noise,
    # $\tilde\mu_t = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1 - \bar\alpha_t}}\epsilon\big)$,
    # so if the network predicts $\epsilon$ and $\mu_\theta$ is built the same way, the
    # term becomes a weighted squared error between $\epsilon$ and $\epsilon_\theta$.
    # The paper then drops the weights, which it found gives better samples (they
    # down-weight the easy, nearly noise-free steps):
    #
    # $$L_\text{simple} = \mathbb{E}_{t \sim \mathcal{U}\{1..T\},\, x_0,\, \epsilon}
    #   \Big[\big\lVert \epsilon - \epsilon_\theta\big(\sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon,\ t\big)\big\rVert^2\Big].$$
    #
    # Like the official code we take the mean over pixels, not the sum: only the scale
    # of the learning rate notices.
    #
    # **Predicting $v$ instead** (`prediction="v"`, not in the DDPM paper). Salimans and
    # Ho (2022), [Progressive Distillation](https://arxiv.org/abs/2202.00512), let the
    # network predict
    #
    # $$v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1 - \bar\alpha_t}\,x_0,$$
    #
    # the same information arranged differently: $\epsilon = \sqrt{1 - \bar\alpha_t}\,x_t + \sqrt{\bar\alpha_t}\,v$
    # and $\hat x_0 = \sqrt{\bar\alpha_t}\,x_t - \sqrt{1 - \bar\alpha_t}\,v$. Its squared
    # error is the $\epsilon$-error divided by $\bar\alpha_t$ (in terms of the error in
    # $\hat x_0$, a weight of $\mathrm{SNR} + 1$, where $\epsilon$ gives $\mathrm{SNR}$,
    # $\mathrm{SNR} = \bar\alpha_t / (1 - \bar\alpha_t)$). What matters here is the large-$t$ end: with $\epsilon$-prediction, $\hat x_0$ divides the
    # network's error by $\sqrt{\bar\alpha_t}$ (0.006 at $t = T$), so a young network's
    # tiny $\epsilon$-error becomes a huge $\hat x_0$-error where sampling starts; with
    # $v$ the network predicts $\approx -x_0$ there directly and nothing is amplified.
    # The chapter's README measures what this buys on our data. Every sampler asks for
    # $\epsilon$ through [[#guidance]], which converts.
    def loss(self, model: nn.Module, x0: Tensor, y: Tensor | None = None,
             generator: torch.Generator | None = None) -> Tensor:
        r"""$L_\text{simple}$ on a batch: one random $t$ and $\epsilon$ per image
        (or the $v$-error with `prediction="v"`)."""
        B = x0.shape[0]
        t = torch.randint(0, self.T, (B,), generator=generator, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.q_sample(x0, t, eps)
        out = model(x_t, t, y).float()
        target = eps if self.prediction == "eps" else self.v_target(x0, t, eps)
        return (target - out).pow(2).mean()

    def v_target(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        r"""$v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1 - \bar\alpha_t}\,x_0$."""
        return self._at(self.alpha_bar.sqrt(), t, x0) * eps - self._at((1 - self.alpha_bar).sqrt(), t, x0) * x0

    # The network's output as a noise prediction: itself, or $\epsilon$ from $v$.
    def output_to_eps(self, x_t: Tensor, t: Tensor, out: Tensor) -> Tensor:
        if self.prediction == "eps":
            return out
        return self._at((1 - self.alpha_bar).sqrt(), t, x_t) * x_t + self._at(self.alpha_bar.sqrt(), t, x_t) * out

    # The estimate of the clean image that a noise prediction implies, by solving
    # $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon$ for $x_0$:
    #
    # $$\hat x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\, \epsilon_\theta}{\sqrt{\bar\alpha_t}}.$$
    def predict_x0(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        return (x_t - self._at((1 - self.alpha_bar).sqrt(), t, x_t) * eps) / self._at(self.alpha_bar.sqrt(), t, x_t)

    # ## Guidance
    #
    # Every sampler asks the network for $\epsilon$ through this one function. For a
    # class-conditional network (ours, not the paper's) it can apply classifier-free
    # guidance (Ho and Salimans, 2021): run the network with the label $y$ and with the
    # null label $\varnothing$ and extrapolate,
    #
    # $$\hat\epsilon = \epsilon_\theta(x_t, t, \varnothing)
    #   + w\,\big(\epsilon_\theta(x_t, t, y) - \epsilon_\theta(x_t, t, \varnothing)\big).$$
    #
    # $w = 1$ is plain conditional sampling (one network call), $w = 0$ ignores the
    # label, $w > 1$ pushes samples towards what distinguishes the class.
    def eps(self, model: nn.Module, x_t: Tensor, t: Tensor, y: Tensor | None = None,
            guidance: float = 1.0) -> Tensor:
        if y is None or guidance == 1.0:
            return self.output_to_eps(x_t, t, model(x_t, t, y).float())
        null = torch.full_like(y, -1)
        both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null])).float()
        eps_y, eps_null = self.output_to_eps(torch.cat([x_t, x_t]), torch.cat([t, t]), both).chunk(2)
        return eps_null + guidance * (eps_y - eps_null)

    # ## The DDPM step
    #
    # The network's $\hat x_0$ stands in for the unknown $x_0$ in the posterior: the mean
    # of $p_\theta(x_{t-1} \mid x_t)$ is $\tilde\mu_t(x_t, \hat x_0)$, which is the
    # paper's
    #
    # $$\mu_\theta(x_t, t) = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1 - \bar\alpha_t}}\, \epsilon_\theta(x_t, t)\Big)$$
    #
    # as long as $\hat x_0$ is not clipped. The official code computes it through
    # $\hat x_0$ and clips $\hat x_0$ to the data range $[-1, 1]$ first, a cheap guard
    # against the wild guesses of the first, noisiest steps; `clip_denoised` does the same.
    # Then
    #
    # $$x_{t-1} = \mu_\theta(x_t, t) + \sigma_t z, \qquad z \sim \mathcal{N}(0, I),$$
    #
    # with no noise at the very last step ($t = 1$). For $\sigma_t^2$ the paper tried
    # $\beta_t$ (the right choice if $x_0 \sim \mathcal{N}(0, I)$) and $\tilde\beta_t$
    # (right if $x_0$ is one fixed point) and found both equally good; the official
    # CIFAR-10 run uses $\beta_t$, our default.
    def ddpm_step(self, model: nn.Module, x_t: Tensor, t: int, y: Tensor | None = None,
                  guidance: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        tt = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
        x0_hat = self.predict_x0(x_t, tt, self.eps(model, x_t, tt, y, guidance))
        if self.clip_denoised:
            x0_hat = x0_hat.clamp(-1, 1)
        mean, _ = self.q_posterior(x0_hat, x_t, tt)
        if t == 0:
            return mean
        sigma2 = self.betas[t] if self.variance == "beta" else self.beta_tilde[t]
        return mean + float(sigma2) ** 0.5 * noise_like(x_t, generator)

    @torch.no_grad()
    def ddpm_sample(self, model: nn.Module, shape, generator: torch.Generator | None = None,
                    y: Tensor | None = None, guidance: float = 1.0, progress: bool = False,
                    device: torch.device | str | None = None) -> Tensor:
        r"""Ancestral sampling: $x_T \sim \mathcal{N}(0, I)$, then $T$ DDPM steps to $x_0$."""
        device = device if device is not None else model_device(model)
        x = noise(shape, generator, device)
        for t in tqdm(range(self.T - 1, -1, -1), desc="ddpm", disable=not progress, dynamic_ncols=True):
            x = self.ddpm_step(model, x, t, y, guidance, generator)
        return x

    # ## The DDIM step
    #
    # Song et al. build a family of processes with the same marginals $q(x_t \mid x_0)$
    # whose reverse step, from $t$ to an *earlier* $s < t$ (not necessarily $t - 1$), is
    #
    # $$x_s = \sqrt{\bar\alpha_s}\, \hat x_0
    #   + \sqrt{1 - \bar\alpha_s - \sigma_t^2}\ \epsilon_\theta(x_t, t)
    #   + \sigma_t z,$$
    #
    # "the predicted $x_0$, plus the predicted noise pointing back to $x_t$, plus fresh
    # noise", with a free variance
    #
    # $$\sigma_t(\eta) = \eta \sqrt{\frac{1 - \bar\alpha_s}{1 - \bar\alpha_t}}\,
    #   \sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_s}}.$$
    #
    # At $\eta = 0$ there is no fresh noise: the sampler is deterministic, a
    # discretisation of an ODE, and the starting noise $x_T$ alone decides the image. At
    # $\eta = 1$ and $s = t - 1$, $\bar\alpha_t / \bar\alpha_{t-1} = \alpha_t$ and
    # $\sigma_t^2 = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t}\beta_t = \tilde\beta_t$:
    # the DDPM posterior variance, and then the step *is* the DDPM step with
    # $\sigma_t^2 = \tilde\beta_t$ (without clipping). The last step goes to $s = 0$,
    # where $\bar\alpha_0 = 1$ and the step returns $\hat x_0$.
    #
    # Like the official DDIM code we do not clip $\hat x_0$ by default, so that
    # $\eta = 0$ really is the ODE. With `clip=True` the step clips $\hat x_0$ to
    # $[-1, 1]$ as the DDPM sampler does and recomputes the noise that the clipped
    # $\hat x_0$ implies, $\hat\epsilon = (x_t - \sqrt{\bar\alpha_t}\,\hat x_0) / \sqrt{1 - \bar\alpha_t}$,
    # so that at $\eta = 1$ over all steps it is again exactly the (clipping) DDPM step.
    # For a network that is far from converged this matters a great deal, so the
    # chapter's sampling ([[experiment.py#sampling]]) turns `clip` on by default (see the
    # chapter's discussion).
    def ddim_sigma(self, t: int, s: int, eta: float) -> float:
        r"""$\sigma_t(\eta)$ for the step from index `t` to index `s` (`s = -1`: to $x_0$)."""
        ab_t, ab_s = float(self.alpha_bar[t]), (float(self.alpha_bar[s]) if s >= 0 else 1.0)
        return eta * ((1 - ab_s) / (1 - ab_t)) ** 0.5 * (1 - ab_t / ab_s) ** 0.5

    def ddim_step(self, x_t: Tensor, eps: Tensor, t: int, s: int, eta: float = 0.0,
                  generator: torch.Generator | None = None, clip: bool = False) -> Tensor:
        ab_t, ab_s = float(self.alpha_bar[t]), (float(self.alpha_bar[s]) if s >= 0 else 1.0)
        x0_hat = (x_t - (1 - ab_t) ** 0.5 * eps) / ab_t ** 0.5
        if clip:
            x0_hat = x0_hat.clamp(-1, 1)
            eps = (x_t - ab_t ** 0.5 * x0_hat) / (1 - ab_t) ** 0.5
        sigma = self.ddim_sigma(t, s, eta)
        direction = max(1 - ab_s - sigma ** 2, 0.0) ** 0.5 * eps
        x_s = ab_s ** 0.5 * x0_hat + direction
        return x_s + sigma * noise_like(x_t, generator) if sigma > 0 else x_s

    # ## Fewer steps
    #
    # DDIM visits a subsequence $\tau$ of the timesteps. Exactly as the official DDIM
    # code's default ("uniform" skipping, `range(0, T, T // S)`), we take every $k$-th index
    # with $k = \lfloor T / S \rfloor$: for $S = 50$ and $T = 1000$,
    # $\tau = (0, 20, 40, \dots, 980)$, walked backwards. With $S = T$ every step is
    # visited. When $S$ does not divide $T$ the list is longer than $S$: $S = 30$ gives
    # $k = 33$ and 31 steps, $S = 300$ gives $k = 3$ and 334. We keep the official
    # behaviour (an earlier version of this chapter cut the list to $S$ entries, which
    # skips the last stretch of noise levels instead); `len(ddim_timesteps(S))` is the
    # number of network calls.
    def ddim_timesteps(self, steps: int) -> list[int]:
        if not 1 <= steps <= self.T:
            raise ValueError(f"steps must be between 1 and T = {self.T}, not {steps}")
        return list(range(0, self.T, self.T // steps))

    @torch.no_grad()
    def ddim_sample(self, model: nn.Module, shape, steps: int, eta: float = 0.0,
                    generator: torch.Generator | None = None, y: Tensor | None = None,
                    guidance: float = 1.0, progress: bool = False,
                    device: torch.device | str | None = None, clip: bool = False) -> Tensor:
        r"""DDIM sampling over `steps` timesteps with noise level `eta`."""
        device = device if device is not None else model_device(model)
        tau = self.ddim_timesteps(steps)
        x = noise(shape, generator, device)
        pairs = list(zip(reversed(tau), reversed([-1] + tau[:-1])))
        for t, s in tqdm(pairs, desc=f"ddim{steps}", disable=not progress, dynamic_ncols=True):
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            x = self.ddim_step(x, self.eps(model, x, tt, y, guidance), t, s, eta, generator, clip)
        return x


# Noise is drawn on the generator's device and then moved, so that a CPU generator
# gives the same samples whatever device the model runs on.
def noise(shape, generator: torch.Generator | None, device) -> Tensor:
    where = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=where).to(device)


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return noise(x.shape, generator, x.device).to(x.dtype)


def model_device(model) -> torch.device:
    params = getattr(model, "parameters", None)
    p = next(iter(params()), None) if params is not None else None
    return p.device if p is not None else torch.device("cpu")


# ## Try it
#
# `python -m annogen.ddpm.diffusion`: the schedule's landmarks, and two exact
# properties: $\hat x_0$ from the true noise gives back $x_0$, and DDIM with $\eta = 1$
# over all $T$ steps has the DDPM posterior variance $\tilde\beta_t$.
def demo() -> None:
    d = Diffusion()
    ab = d.alpha_bar.sqrt()
    print("sqrt(alpha_bar_t) at t = 1, 200, 700, 1000: "
          + ", ".join(f"{float(ab[t]):.4f}" for t in (0, 199, 699, 999)))
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1, torch.randn(2, 3, 8, 8, generator=g)
    t = torch.tensor([10, 900])
    err = (d.predict_x0(d.q_sample(x0, t, eps), t, eps) - x0).abs().max().item()
    print(f"x0 from x_t and the true noise: max error {err:.2e}")
    gap = max(abs(d.ddim_sigma(s, s - 1, 1.0) ** 2 - float(d.beta_tilde[s])) for s in range(1, d.T))
    print(f"DDIM eta = 1, step t -> t-1: sigma_t^2 - beta_tilde_t at most {gap:.1e}")
    print(f"DDIM-50 visits t = {d.ddim_timesteps(50)[:3]} ... {d.ddim_timesteps(50)[-1]}, "
          f"DDIM-30 takes {len(d.ddim_timesteps(30))} steps")
    assert err < 1e-3 and gap < 1e-12


if __name__ == "__main__":
    demo()
