r"""
---
title: R3GAN, the losses
summary: The relativistic pairing loss (RpGAN), the non-saturating loss it replaces, the zero-centred gradient penalties R1 and R2, and the cosine schedules of gamma, learning rate, Adam beta2 and EMA half-life.
---

# The losses of R3GAN

A GAN has two networks and two losses. The discriminator $D$ maps an image to one
number, a *logit*: high means "looks real". The generator $G$ maps noise $z$ to an
image and is trained to make $D$'s logit on its images high. Everything on this page
is a function of logits; none of it knows about images, which is why the same code
drives the 2-D toy ([[toy.py]]) and the image GAN ([[experiment.py]]).

We write $f(t) = \operatorname{softplus}(-t) = \log(1 + e^{-t})$: a smooth hinge, large
for negative $t$, near zero for large positive $t$. VQGAN's discriminator used the
piecewise-linear hinge $\max(0, 1 - t)$ instead ([[vqgan/losses.py#the-hinge-loss]]).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


# ## The classic loss, non-saturating
#
# [Goodfellow et al. (2014)](https://arxiv.org/abs/1406.2661)'s discriminator is a logistic classifier: real images are
# class 1, fakes class 0, and $D(x)$ is the logit of "real". Its loss is the binary
# cross-entropy
#
# $$L_D = \mathbb{E}_x\, f(D(x)) + \mathbb{E}_z\, f(-D(G(z))).$$
#
# The generator should maximise what $D$ minimises, but $-\log(1 - \operatorname{sigmoid}(D))$
# has almost no gradient when $D$ confidently rejects a fake (early in training, always).
# The *non-saturating* generator loss flips the label instead:
#
# $$L_G = \mathbb{E}_z\, f(D(G(z))).$$
#
# Each fake is judged **on its own**: $D$ only has to draw a line between "real" and
# "fake" somewhere, and $G$ only has to get its samples across that line. Nothing asks
# $G$ to cover *all* of the data. Pile every sample onto the one region where $D$ is
# most fooled, and $L_G$ is as low as it gets: that is **mode collapse**.
def ns_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    r"""Non-saturating discriminator loss $f(D(x)) + f(-D(G(z)))$, batch mean."""
    return (F.softplus(-real_logits) + F.softplus(fake_logits)).mean()


def ns_g_loss(real_logits: Tensor | None, fake_logits: Tensor) -> Tensor:
    r"""Non-saturating generator loss $f(D(G(z)))$, batch mean (real logits unused)."""
    del real_logits
    return F.softplus(-fake_logits).mean()


# ## The relativistic pairing loss (RpGAN)
#
# [Jolicoeur-Martineau (2018)](https://arxiv.org/abs/1807.00734) pairs every fake with a
# real image and lets $D$ judge the *difference* of their logits, "is the real one more real than the fake one?":
#
# $$L_D = \mathbb{E}_{x, z}\, f\big(D(x) - D(G(z))\big), \qquad
#   L_G = \mathbb{E}_{x, z}\, f\big(D(G(z)) - D(x)\big).$$
#
# Now a fake is only ever judged relative to a real image drawn at random: what counts
# is the margin between the two logits, not a label per image. (The direction in which
# one fake moves is still the local slope of $D$ at it; what changes is the game.)
# [Sun et al. (2020)](https://arxiv.org/abs/2011.04926) show that, seen as a landscape
# over the generated samples, this loss has no bad basins of the mode-dropping kind
# that the classic loss has; [Huang et al. (2024)](https://arxiv.org/abs/2501.05441)
# make it R3GAN's loss. With equal logits both losses are $f(0) = \log 2$, like the
# classic loss at $D = 0$ (tested).
#
# In the official code ([R3GAN/Trainer.py](https://github.com/brownvc/R3GAN)) the pairs
# are simply the $i$-th real and the $i$-th fake of the batch. So it is here.
def rpgan_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    r"""$\operatorname{mean}_i f(D(x_i) - D(G(z_i)))$."""
    return F.softplus(-(real_logits - fake_logits)).mean()


def rpgan_g_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    r"""$\operatorname{mean}_i f(D(G(z_i)) - D(x_i))$."""
    return F.softplus(-(fake_logits - real_logits)).mean()


LOSSES = {"rpgan": (rpgan_d_loss, rpgan_g_loss), "ns": (ns_d_loss, ns_g_loss)}


# ## The gradient penalties R1 and R2
#
# Neither loss says how *steep* $D$ may be. Near the point where $G$ matches the data,
# a discriminator that keeps a large gradient around the real images makes $G$
# overshoot, $D$ flips, $G$ overshoots back: the pair circles the equilibrium instead
# of settling in it. [Mescheder et al. (2018)](https://arxiv.org/abs/1801.04406) proved that penalising the squared
# gradient of $D$ **on the real data**,
#
# $$R_1 = \mathbb{E}_x \lVert \nabla_x D(x) \rVert^2,$$
#
# makes the equilibrium locally convergent (for the classic loss; Huang et al. 2024 show
# the same for RpGAN). $R_2$ is the same penalty **on the fakes**,
# $R_2 = \mathbb{E}_z \lVert \nabla_{\tilde x} D(\tilde x) \rVert^2$ at $\tilde x = G(z)$.
# At the equilibrium fakes and reals coincide and $R_2 = R_1$; away from it, $R_2$ keeps
# $D$ flat where the fakes are, so $D$ cannot build a cliff in front of them.
# R3GAN's discriminator minimises
#
# $$L_D + \frac{\gamma}{2}(R_1 + R_2).$$
#
# `gradient_penalty` returns the per-sample $\lVert \nabla D \rVert^2$, shape $(B,)$. The
# gradient is taken of $\sum_i D(x_i)$: sample $i$'s logit depends only on image $i$, so
# its slice of that gradient is exactly $\nabla_{x_i} D(x_i)$. `create_graph=True` keeps
# the graph of the gradient itself, so that $\partial R / \partial \theta_D$ can be
# backpropagated: the penalty trains $D$'s weights. Penalties are computed on inputs
# that are *detached* leaves (the official code detaches the fakes before R2): $R_2$'s
# gradient can never reach $G$ (tested).
def gradient_penalty(logits: Tensor, inputs: Tensor) -> Tensor:
    r"""$\lVert \nabla_{x_i} D(x_i) \rVert^2$ for each sample $i$, differentiable in $D$."""
    if not inputs.requires_grad:
        raise ValueError("gradient_penalty: inputs must require grad (call "
                         "x.detach().requires_grad_(True) before running D on them)")
    (grad,) = torch.autograd.grad(outputs=logits.sum(), inputs=inputs, create_graph=True)
    return grad.square().flatten(1).sum(1)


# ## The cosine schedules
#
# R3GAN's recipe anneals four numbers over the run, each from a base to a final value
# along half a cosine in the number of images shown, $n \in [0, T]$:
#
# $$v(n) = v_\text{final} + (v_\text{base} - v_\text{final})\,
#   \tfrac12\big(1 + \cos(\pi \min(n/T, 1))\big).$$
#
# For CIFAR-10 ($T$ = 20M images): $\gamma$ 0.05 to 0.005, learning rate $2 \cdot 10^{-4}$
# to $5 \cdot 10^{-5}$, Adam $\beta_2$ 0.9 to 0.99 (with $\beta_1 = 0$), and the EMA
# half-life from 0 to 5M images. A strong penalty and a fast optimizer early, when
# $D$ and $G$ are far from each other; a weak penalty, small steps and a long average
# late, when they are close.
def cosine_schedule(n: float, total: float, base: float, final: float) -> float:
    r"""$v(n)$ above: `base` at $n = 0$, `final` from $n = T$ on."""
    progress = min(max(n / total, 0.0), 1.0) if total > 0 else 1.0
    return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


# The EMA of $G$'s weights is specified by a *half-life* $h$ in images: after $h$ more
# images, the old average weighs one half. With $B$ images per step the per-step decay
# is therefore
#
# $$\beta_\text{ema} = 0.5^{B / h},$$
#
# and a half-life of 0 means no averaging ($\beta_\text{ema} = 0$).
def ema_decay_from_half_life(half_life_images: float, batch_size: int) -> float:
    r"""Per-step EMA decay $0.5^{B/h}$ for half-life $h$ images and batch $B$."""
    if half_life_images <= 0:
        return 0.0
    return 0.5 ** (batch_size / half_life_images)


# ## The demo
#
# `python -m annogen.r3gan.losses`: both losses at equal logits ($\log 2$), and $R_1$ of a
# linear discriminator $D(x) = w \cdot x$, which must be $\lVert w \rVert^2$ for every sample.
if __name__ == "__main__":
    t = torch.randn(4)
    print(f"equal logits: RpGAN D {rpgan_d_loss(t, t):.6f}, G {rpgan_g_loss(t, t):.6f}, "
          f"log 2 = {math.log(2):.6f}")
    w = torch.randn(3 * 8 * 8)
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    r1 = gradient_penalty(x.flatten(1) @ w, x)
    print(f"linear D: R1 per sample {[round(v, 4) for v in r1.tolist()]}, "
          f"||w||^2 = {float(w.square().sum()):.4f}")
