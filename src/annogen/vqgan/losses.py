r"""
---
title: VQGAN, the losses
summary: What VQGAN trains its autoencoder with instead of a squared pixel error - L1 plus LPIPS, a PatchGAN critic with the hinge loss, and the adaptive weight that balances the two.
---

# VQGAN: the losses

VQ-VAE trains with $\|x - \hat x\|^2$. Minimising a squared error makes the decoder
predict the *mean* of all images that could have produced a code, and at $f = 16$ many
images share a code: the mean is blurry. VQGAN ([Esser et al. (2021)](https://arxiv.org/abs/2012.09841)) replaces it with
three terms:

$$\mathcal{L} = \underbrace{|x - \hat x| + \mathcal{L}_{LPIPS}(x, \hat x)}_{\mathcal{L}_{rec}}
 + \mathcal{L}_{VQ} + \lambda\, f\, \mathcal{L}_{G},$$

- $\mathcal{L}_{rec}$: an L1 pixel error plus a **perceptual** distance in the feature
  space of a VGG16 network (LPIPS);
- $\mathcal{L}_{VQ}$: the codebook and commitment terms, unchanged from VQ-VAE
  ([[model.py#VQGANQuantizer]]);
- $\mathcal{L}_G$: an **adversarial** term from a patch discriminator $D$, switched on
  by $f$ only after `disc_start` steps and scaled by an **adaptive weight** $\lambda$.

The discriminator is trained at the same time, in alternate steps, with the hinge loss.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


# ## The patch discriminator
#
# A PatchGAN (pix2pix, [Isola et al. (2017)](https://arxiv.org/abs/1611.07004)) does not output one real/fake score per image but
# a grid of them: each logit looks at a $70 \times 70$ receptive field. It judges local
# texture — exactly what a pixel loss cannot teach — and leaves the global structure to
# the reconstruction terms. The layers, for `n_layers` $= 3$ and `ndf` $= 64$:
#
# | layer | kernel, stride | channels | then |
# |---|---|---|---|
# | conv | $4 \times 4$, 2 | 3 → 64 | LeakyReLU(0.2) |
# | conv, no bias | $4 \times 4$, 2 | 64 → 128 | BatchNorm, LeakyReLU |
# | conv, no bias | $4 \times 4$, 2 | 128 → 256 | BatchNorm, LeakyReLU |
# | conv, no bias | $4 \times 4$, 1 | 256 → 512 | BatchNorm, LeakyReLU |
# | conv | $4 \times 4$, 1 | 512 → 1 | — |
#
# With padding 1, a $256^2$ input gives $128, 64, 32, 31, 30$: a $30 \times 30$ grid of
# logits. The convolutions before a BatchNorm have no bias, since BatchNorm's shift
# would cancel it. 2,765,633 parameters.
class NLayerDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            # the last of these keeps the resolution (stride 1)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        # `main` as in the official state dict
        self.main = nn.Sequential(*layers)
        self.apply(init_discriminator_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


# The DCGAN initialisation: convolution weights $\sim \mathcal{N}(0, 0.02)$, BatchNorm
# scales $\sim \mathcal{N}(1, 0.02)$ and shifts 0. (Biases keep PyTorch's default.)
def init_discriminator_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


# ## The hinge loss
#
# The discriminator is trained to push logits of real images above $+1$ and logits of
# reconstructions below $-1$; beyond those margins it gets no more gradient, which keeps
# it from growing overconfident:
#
# $$\mathcal{L}_D = \tfrac12\left(\mathbb{E}\left[\operatorname{ReLU}(1 - D(x))\right]
#   + \mathbb{E}\left[\operatorname{ReLU}(1 + D(\hat x))\right]\right).$$
#
# All-zero logits give $\tfrac12 (1 + 1) = 1$; a perfect critic gives 0.
def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    loss_real = F.relu(1.0 - logits_real).mean()
    loss_fake = F.relu(1.0 + logits_fake).mean()
    return 0.5 * (loss_real + loss_fake)


# The autoencoder, playing the generator, simply raises the critic's logits on its
# reconstructions (no margin on this side):
#
# $$\mathcal{L}_G = -\mathbb{E}\left[D(\hat x)\right].$$
def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


# ## The adaptive weight
#
# How much should the GAN term count? Its gradient scale depends on the critic, changes
# during training, and is unrelated to that of $\mathcal{L}_{rec}$. VQGAN measures both
# where they enter the decoder — at the weight $W$ of its last layer, `conv_out` — and
# sets
#
# $$\lambda = \frac{\|\nabla_{W} \mathcal{L}_{rec}\|}{\|\nabla_{W} \mathcal{L}_{G}\| + \delta}$$
#
# with a small $\delta$ against division by zero ($10^{-4}$ in the official code). The
# adversarial gradient arriving at $W$ then has the same norm as the reconstruction
# gradient (times `disc_weight`). $\lambda$ is clamped to $[0, 10^4]$ and detached: it is a
# number, not something to differentiate through.
#
# This function returns $\lambda$ alone; the official code multiplies it by
# `disc_weight` $= 0.8$ inside the same function. Here [[#VQGANLoss]] does that
# multiplication, so that the quantity tested against autograd is the ratio itself.
# `retain_graph=True` keeps the graph alive for the real backward pass that follows.
def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor,
                    last_layer_weight: torch.Tensor, delta: float = 1e-4,
                    max_weight: float = 1e4) -> torch.Tensor:
    grad_rec, = torch.autograd.grad(rec_loss, last_layer_weight, retain_graph=True)
    grad_g, = torch.autograd.grad(g_loss, last_layer_weight, retain_graph=True)
    lam = grad_rec.norm() / (grad_g.norm() + delta)
    return lam.clamp(0.0, max_weight).detach()


# ## LPIPS, the perceptual distance
#
# LPIPS ([Zhang et al. (2018)](https://arxiv.org/abs/1801.03924)) compares two images through the activations of an image
# classifier. For each of five layers $l$ of VGG16 (`relu1_2`, `relu2_2`, `relu3_3`,
# `relu4_3`, `relu5_3`) with feature maps $y^l \in \mathbb{R}^{C_l \times H_l \times W_l}$:
#
# 1. normalise every position's feature vector to unit length across channels,
#    $\hat y^l_{hw} = y^l_{hw} / (\|y^l_{hw}\| + \epsilon)$;
# 2. take the squared difference between the two images;
# 3. weight the channels with learned non-negative weights $w_l \in \mathbb{R}^{C_l}$
#    (a $1 \times 1$ convolution to one channel, the "lin" layer);
# 4. average over positions and sum over layers:
#
# $$\mathcal{L}_{LPIPS}(x, \hat x) = \sum_l \frac{1}{H_l W_l} \sum_{h, w}
#   \left\| w_l \odot \left(\hat y^l_{hw}(x) - \hat y^l_{hw}(\hat x)\right) \right\|_2^2 .$$
#
# (Strictly the lin layer computes $\sum_c w_{l,c}\, d_c^2$, which is the formula above
# with $w$ replaced by $\sqrt{w}$.)
#
# Before VGG, the input in $[-1, 1]$ is shifted and scaled to the statistics VGG was
# trained with: $(x - m) / s$ with $m = (-0.030, -0.088, -0.188)$ and
# $s = (0.458, 0.448, 0.450)$ per RGB channel.
VGG16_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
# Indices in VGG16's `features` of the five ReLUs LPIPS reads.
LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


# VGG16's convolutional part, built layer by layer so that `features.N` is the same
# module as torchvision's `vgg16().features[N]` (conv, ReLU, ..., max-pool): a torchvision
# state dict loads into it unchanged. We stop after index 29 (`relu5_3`); the last
# max-pool and the classifier are never used.
def vgg16_features() -> nn.Sequential:
    layers, c_in = [], 3
    for v in VGG16_LAYERS:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU(inplace=False)]
            c_in = v
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    r"""The perceptual distance; `forward(x, y)` returns one value per image, shape $(B,)$.

    Without `load_pretrained` the VGG and lin weights are random — the distance is then
    still a valid (non-negative, symmetric, zero on equal inputs) comparison of random
    features, which is what the tests check and what the CPU demo uses. Nothing here
    ever downloads: real weights come from local files.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.features = vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in LPIPS_CHANNELS)
        # The learned lin weights are non-negative (LPIPS clamps them while training);
        # a random start must be too, or the "distance" could be negative.
        for lin, c in zip(self.lins, LPIPS_CHANNELS):
            nn.init.uniform_(lin.weight, 0.0, 2.0 / c)
        # LPIPS is a fixed measuring instrument: no parameter of it is trained.
        self.requires_grad_(False)
        self.eval()

    # Stay in eval mode whatever the parent module does. **Here we differ from the
    # official code.** Taming's LPIPS puts a dropout layer ($p = 0.5$) in front of each
    # lin layer, and since the loss is a child module of the model, the `.train()` of
    # the training loop switches it on: at every step half of the channel differences
    # $(\hat y^l(x) - \hat y^l(\hat x))^2$ are dropped at random and the rest doubled.
    # The lin layer is linear, so that is an unbiased but noisy estimate of the same
    # distance. We leave the dropout out: the expected loss is the same, without the
    # noise. With random weights (our default) nothing changes; with pretrained weights
    # our perceptual gradient is the mean of the official one's.
    def train(self, mode: bool = True):
        return super().train(False)

    # The five tapped feature maps of one batch.
    def vgg(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, taps = (x - self.shift) / self.scale, []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in LPIPS_TAPS:
                taps.append(h)
        return taps

    # A greyscale batch is compared as three identical colour channels.
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        total = 0.0
        for lin, fx, fy in zip(self.lins, self.vgg(x), self.vgg(y)):
            # $\hat y^l$: unit length over channels, $\epsilon = 10^{-10}$
            fx = fx / (fx.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            # weighted squared difference, averaged over $(h, w)$
            total = total + lin((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return total

    # ### Loading real weights
    #
    # Two local files: the ImageNet VGG16 (torchvision's `vgg16-397923af.pth`, keys
    # `features.N.weight`; a saved LPIPS module names the same layers
    # `net.sliceK.N.weight`, with the same `N`) and the LPIPS lin weights (`vgg.pth` of
    # the LPIPS repository or taming's `vgg_lpips`, keys `linL.model.1.weight`). Keys that
    # are not recognised are ignored; a layer left without weights raises, so that a
    # wrong file cannot pass silently.
    def load_pretrained(self, vgg_path: str | Path, lin_path: str | Path | None = None) -> None:
        found = {}
        for path in [vgg_path] + ([lin_path] if lin_path else []):
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
            for key, value in state.items():
                if m := re.search(r"(?:^|features\.|slice\d\.)(\d+)\.(weight|bias)$", key):
                    found[f"features.{m.group(1)}.{m.group(2)}"] = value
                if m := re.search(r"lins?\.?(\d)\.(?:model\.\d+\.)?weight$", key):
                    found[f"lins.{m.group(1)}.weight"] = value
        own = self.state_dict()
        missing = [k for k in own if k not in ("shift", "scale") and k not in found]
        if missing:
            raise KeyError(f"no weights for {missing[:3]}... in {vgg_path}, {lin_path}")
        self.load_state_dict({k: found.get(k, v) for k, v in own.items()})


# ## Putting the loss together
#
# `VQGANLoss` owns the discriminator and LPIPS and computes both objectives.
#
# **The autoencoder step** (`autoencoder_loss`):
#
# $$\mathcal{L}_{AE} = \mathcal{L}_{rec} + \lambda \cdot \texttt{disc\_weight} \cdot f \cdot \mathcal{L}_G
#   + \texttt{codebook\_weight} \cdot \mathcal{L}_{VQ},$$
#
# with $\mathcal{L}_{rec} = \operatorname{mean}\left(|x - \hat x|\right) + \texttt{perceptual\_weight} \cdot \operatorname{mean}\left(\mathcal{L}_{LPIPS}\right)$
# and $f$ equal to `disc_factor` once `step >= disc_start`, 0 before. The official
# ImageNet values:
# `perceptual_weight` 1, `codebook_weight` 1, `disc_weight` 0.8, `disc_start` 250001 on
# ImageNet (30001 on FacesHQ) — the autoencoder first learns to reconstruct at all, and
# only then meets the critic.
#
# Before `disc_start` we skip the discriminator entirely. The official code runs it and
# multiplies its term by $f = 0$, which gives the same loss (exactly: $0 \cdot$ a finite
# number is 0) at the cost of a forward pass and two gradient computations.
#
# **The discriminator step** (`discriminator_loss`): $f \cdot \mathcal{L}_D$ on $x$ and a
# *detached* $\hat x$, so that this step trains $D$ only.
class VQGANLoss(nn.Module):
    def __init__(self, disc_start: int = 0, codebook_weight: float = 1.0,
                 pixel_weight: float = 1.0, perceptual_weight: float = 1.0,
                 disc_weight: float = 0.8, disc_factor: float = 1.0, disc_in_channels: int = 3,
                 disc_ndf: int = 64, disc_layers: int = 3, lpips: LPIPS | None = None,
                 l2_weight: float = 0.0):
        super().__init__()
        self.l2_weight = l2_weight
        self.disc_start = disc_start
        self.codebook_weight = codebook_weight
        self.pixel_weight = pixel_weight
        self.perceptual_weight = perceptual_weight
        self.disc_weight = disc_weight
        self.disc_factor = disc_factor
        self.discriminator = NLayerDiscriminator(disc_in_channels, disc_ndf, disc_layers)
        self.perceptual = (lpips or LPIPS()) if perceptual_weight > 0 else None

    # $f$: 0 before `disc_start`, `disc_factor` from then on.
    def factor(self, step: int) -> float:
        return self.disc_factor if step >= self.disc_start else 0.0

    # $\mathcal{L}_{rec}$: VQ-VAE's squared error gives way to the absolute error plus the
    # perceptual distance. (The removed line is kept, and overwritten, so that the page
    # shows the diff.)
    #
    # `l2_weight` (0 in the paper) adds the squared error back, for training *without*
    # LPIPS: alone, the absolute error gets stuck on grey reconstructions of coloured
    # shapes (see [[experiment.py#stage-1-the-vqgan]]).
    #
    # `pixel_weight` multiplies the absolute error. **The official code differs:** its
    # loss stores `pixelloss_weight` but never uses it, so there the absolute error
    # always has weight 1. With the default of 1 the two agree; a config that sets
    # `pixelloss_weight` changes nothing in taming and does change the loss here.
    def reconstruction_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        rec = F.mse_loss(x_hat, x)  # [!code --]
        rec = self.pixel_weight * (x - x_hat).abs().mean()  # [!code ++]
        if self.l2_weight > 0:
            rec = rec + self.l2_weight * F.mse_loss(x_hat, x)
        if self.perceptual is not None:  # [!code ++]
            rec = rec + self.perceptual_weight * self.perceptual(x, x_hat).mean()  # [!code ++]
        return rec

    # The autoencoder step. `last_layer` is the decoder's final weight
    # ([[model.py#VQGAN.last_layer]]); it is needed once the adversarial term is on. Under
    # `torch.no_grad()` (evaluation) there is no graph to measure gradients on and
    # $\lambda$ is 0, as in the official code.
    def autoencoder_loss(self, x: torch.Tensor, x_hat: torch.Tensor,
                         codebook_loss: torch.Tensor, step: int,
                         last_layer: torch.Tensor | None = None):
        r"""$\mathcal{L}_{AE}$ and a dict of its parts (as floats) for logging."""
        rec = self.reconstruction_loss(x, x_hat)
        f = self.factor(step)
        loss = rec + self.codebook_weight * codebook_loss.mean()
        logs = {"rec": rec.item(), "codebook": codebook_loss.mean().item(), "g": 0.0,
                "lambda": 0.0}
        if f > 0:
            g = generator_loss(self.discriminator(x_hat))
            if rec.requires_grad:
                if last_layer is None:
                    raise ValueError("the adversarial term needs last_layer (VQGAN.last_layer)")
                lam = adaptive_weight(rec, g, last_layer) * self.disc_weight
            else:
                lam = torch.zeros((), device=x.device)
            loss = loss + lam * f * g
            logs.update({"g": g.item(), "lambda": lam.item()})
        logs["loss"] = loss.item()
        return loss, logs

    # The discriminator step.
    def discriminator_loss(self, x: torch.Tensor, x_hat: torch.Tensor, step: int):
        r"""$f \cdot \mathcal{L}_D$ and a dict for logging."""
        logits_real = self.discriminator(x.detach())
        logits_fake = self.discriminator(x_hat.detach())
        d_loss = self.factor(step) * hinge_d_loss(logits_real, logits_fake)
        return d_loss, {"d_loss": d_loss.item(), "logits_real": logits_real.mean().item(),
                        "logits_fake": logits_fake.mean().item()}


# ## Run this file
#
# `python -m annogen.vqgan.losses` builds the tiny discriminator, shows its grid of
# patch logits, and checks the adaptive weight against its definition: $\lambda$ must
# make the two gradients at the last layer equally large, so scaling $\mathcal{L}_G$ by
# 10 must divide $\lambda$ by 10.
if __name__ == "__main__":
    torch.manual_seed(0)
    disc = NLayerDiscriminator(3, ndf=32, n_layers=2)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    logits = disc(x)
    print(f"tiny PatchGAN: {sum(p.numel() for p in disc.parameters()):,} parameters; "
          f"images {tuple(x.shape)} -> logits {tuple(logits.shape)}")
    W = torch.randn(8, 8, requires_grad=True)
    h = torch.randn(16, 8) @ W
    rec, g = h.pow(2).mean(), -h.sin().mean()
    lam = adaptive_weight(rec, g, W, delta=0.0)
    lam10 = adaptive_weight(rec, 10 * g, W, delta=0.0)
    assert torch.allclose(lam, 10 * lam10, rtol=1e-5)
    print(f"checked: lambda = {lam.item():.4f}, and {lam10.item():.5f} with the adversarial loss x 10")
    print(f"hinge loss of the untrained critic: {hinge_d_loss(logits, disc(-x)).item():.3f} "
          "(2 when it cannot tell the two apart and its logits are near 0)")
