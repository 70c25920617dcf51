r"""
---
title: The KL autoencoder
summary: Stable Diffusion's autoencoder written as the change from VQGAN - the same encoder and decoder, a diagonal Gaussian posterior instead of a codebook, a KL term of weight 1e-6, and the scaling factor that gives the latents unit variance.
---

# The KL autoencoder: VQGAN without the codebook

Rombach et al. (2022), *High-Resolution Image Synthesis with Latent Diffusion Models*,
train their diffusion models not on pixels but on the latents of an autoencoder. They
try two bottlenecks: VQGAN's codebook ([[vqgan/model.py]]) and a continuous one, where
the encoder outputs a **mean and a log-variance per latent value** and a small KL term
keeps the latents near a standard normal. The second is the one Stable Diffusion ships
(`AutoencoderKL` of the official code), and the one DiT and Sana denoise.

Everything but the bottleneck is VQGAN's, imported from that chapter: the ResNet encoder
and decoder, the L1 reconstruction, the patch discriminator with its adaptive weight.
The page shows the diff against [[vqgan/model.py#VQGAN]]: green for what the KL
autoencoder adds, red for what it removes, highlighted lines for what it changes.

Three new pieces, in reading order: [[#DiagonalGaussian]] (the posterior, its sample,
its mode and its KL to $\mathcal{N}(0, I)$), [[#KLAutoencoder]] (the model, with the
`tiny` and `sd-f8c4` presets) and [[#the-scaling-factor]].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

# What stays the same: the encoder and decoder of the VQGAN chapter, block for block
# (GroupNorm with $\epsilon = 10^{-6}$, swish, single-head attention in the middle), so
# that the official state dict's names (`encoder.down.0.block.1.conv2.weight`, ...) load
# unchanged.
from annogen.vqgan.model import Decoder, Encoder


# ## The posterior: a diagonal Gaussian
#
# The encoder's last layer outputs $2c$ channels, read as a mean $\mu$ and a
# log-variance $\log s^2$ for each of the $c \times h \times w$ latent values:
#
# $$q(z \mid x) = \mathcal{N}\big(\mu(x),\ \operatorname{diag}(s^2(x))\big).$$
#
# The official `DiagonalGaussianDistribution` clamps $\log s^2$ to $[-30, 20]$ before
# exponentiating: a guard against overflow, which a trained encoder never touches
# (the variances it learns sit near $e^{-10}$ to $e^{-20}$, see the chapter's README).
#
# **Sampling** uses the reparameterisation $z = \mu + s \odot \epsilon$ with
# $\epsilon \sim \mathcal{N}(0, I)$, so that gradients reach $\mu$ and $s$. The **mode**
# is $\mu$: what a diffusion model is trained on after the autoencoder is done is
# usually a sample (the official LDM code) and sometimes the mode; with variances of
# $10^{-5}$ the two differ by less than the scaling factor's rounding.
#
# **The KL divergence** to the prior $\mathcal{N}(0, I)$ has a closed form, summed over
# all $c h w$ latent values of one image:
#
# $$\mathrm{KL}\big(q(z \mid x)\,\|\,\mathcal{N}(0, I)\big) = \frac12 \sum_{i}\big(\mu_i^2 + s_i^2 - 1 - \log s_i^2\big).$$
#
# All of it is new against VQGAN, which had a quantiser here.

# ===ADD===
# The whole class is added.
class DiagonalGaussian:
    r"""$\mathcal{N}(\mu, \operatorname{diag}(s^2))$ from `params` $(B, 2c, h, w)$: the first
    $c$ channels are $\mu$, the last $c$ are $\log s^2$ (clamped to $[-30, 20]$)."""

    def __init__(self, params: Tensor):
        if params.dim() < 2 or params.shape[1] % 2:
            raise ValueError(f"DiagonalGaussian needs (B, 2c, ...) parameters, got shape "
                             f"{tuple(params.shape)}")
        self.params = params
        self.mean, logvar = params.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    # $z = \mu + s \odot \epsilon$
    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device,
                          dtype=self.mean.dtype)
        return self.mean + self.std * eps

    # the most likely $z$: $\mu$
    def mode(self) -> Tensor:
        return self.mean

    # one KL per image, shape $(B,)$
    def kl(self) -> Tensor:
        dims = tuple(range(1, self.mean.dim()))
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).sum(dim=dims)


# ## Configurations
#
# `sd-f8c4` is Stable Diffusion's autoencoder (the official
# `autoencoder_kl_32x32x4.yaml`, also `first_stage_config` of SD v1): $256^2$ images,
# widths $128 \cdot (1, 2, 4, 4)$, so $f = 8$, two residual blocks per level, no
# attention inside the levels (only in the middle blocks), $c = 4$ latent channels.
# A $256^2$ image becomes a $32 \times 32 \times 4$ latent; 83,653,863 parameters
# (encoder 34,163,592, decoder 49,490,179, the two $1 \times 1$ convolutions 92).
#
# `tiny` is ours, for $32^2$ images on a CPU: VQGAN's tiny widths $32 \cdot (1, 2, 2)$,
# so **$f = 4$**, one residual block per encoder level, and $c = 4$: an $8 \times 8
# \times 4$ latent. Why $f = 4$ and not SD's $f = 8$: at $32^2$, $f = 8$ leaves a
# $4 \times 4$ latent, 16 positions, too coarse to place a shape, and a DiT with
# patch 1 on it would see 16 tokens; $f = 4$ gives DiT 64 tokens (patch 1), the same
# number as the pixel-space DiT with patch 4, so the two are compared at equal
# sequence length. The compression, $3 \cdot 32^2 / (4 \cdot 8^2) = 12$, is a quarter of
# SD's 48. `tiny-f8` ($4 \times 4 \times 4$) is there for comparisons.
@dataclass
class KLConfig:
    resolution: int = 32
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 32
    ch_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = ()
    z_channels: int = 4
    embed_dim: int = 4
    dropout: float = 0.0

    @property
    def f(self) -> int:
        r"""The downsampling factor $f$."""
        return 2 ** (len(self.ch_mult) - 1)


PRESETS: dict[str, KLConfig] = {
    "tiny": KLConfig(),
    "tiny-f8": KLConfig(ch_mult=(1, 2, 2, 2)),
    "sd-f8c4": KLConfig(resolution=256, ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2,
                        attn_resolutions=(), z_channels=4, embed_dim=4),
}


# ## The model
#
# Against [[vqgan/model.py#VQGAN]]: the encoder outputs twice the channels
# (`double_z` in the official config), `quant_conv` maps them to $2c$ moments instead of
# $D$-dimensional vectors for the codebook, there is no quantiser, and
# `post_quant_conv` takes $c$ channels back to the decoder's width:
#
# $$(\mu, \log s^2) = W_q\, E(x), \qquad z \sim q(z \mid x), \qquad \hat x = G(W_p\, z).$$
#
# `encode` returns the posterior, `decode` takes a latent (unscaled: the diffusion
# model multiplies by the scaling factor after `encode().sample()` and divides before
# `decode`). `forward` samples the posterior while training, as the official code does,
# and returns $\hat x$ with the posterior, whose KL the loss needs.
#
# ### The scaling factor
#
# The KL weight of $10^{-6}$ barely constrains the scale of the latents: SD's have a
# standard deviation of about 5.5. A diffusion model assumes data of roughly unit
# variance (its noise is $\mathcal{N}(0, I)$, its schedule is tuned for images in
# $[-1, 1]$), so the latent diffusion code multiplies the latents by
#
# $$\lambda_z = \frac{1}{\operatorname{std}(z)}$$
#
# measured on a batch of training latents (`scale_by_std` in the official
# `LatentDiffusion`, which computes it from the first batch). SD's 0.18215 is this
# number for its autoencoder on its data. We compute ours the same way, after training,
# on a batch of posterior samples, and store it in the model as a buffer, so that it
# travels with the checkpoint.
class KLAutoencoder(nn.Module):
    r"""Encoder $E$, diagonal Gaussian posterior, decoder $G$.

    `encode(x)` $\to$ [[#DiagonalGaussian]], `decode(z)` $\to \hat x$, `forward(x)` $\to
    (\hat x, \text{posterior})$, `scaling_factor` (1 until [[#KLAutoencoder.compute_scaling_factor]]).
    """

    def __init__(self, config: KLConfig | None = None):
        super().__init__()
        c = self.config = config or KLConfig()
        arch = dict(ch=c.ch, ch_mult=tuple(c.ch_mult), num_res_blocks=c.num_res_blocks,
                    attn_resolutions=tuple(c.attn_resolutions), resolution=c.resolution,
                    dropout=c.dropout)
        self.encoder = Encoder(in_channels=c.in_channels, z_channels=2 * c.z_channels, **arch)  # [!code hl]
        self.decoder = Decoder(out_channels=c.out_channels, z_channels=c.z_channels, **arch)
        self.quant_conv = nn.Conv2d(2 * c.z_channels, 2 * c.embed_dim, 1)  # [!code hl]
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.z_channels, 1)
        # ===ADD===
        # No `self.quantize`: the codebook is gone. In its place, the scaling factor
        # $\lambda_z$, a buffer, saved and loaded with the weights.
        self.register_buffer("scale", torch.ones(()))

    # $x \mapsto q(z \mid x)$
    def encode(self, x: Tensor) -> DiagonalGaussian:
        moments = self.quant_conv(self.encoder(x))  # [!code hl]
        return DiagonalGaussian(moments)  # [!code hl]

    # $z \mapsto \hat x$
    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: Tensor, sample_posterior: bool = True):
        posterior = self.encode(x)  # [!code hl]
        z = posterior.sample() if sample_posterior else posterior.mode()  # [!code ++]
        return self.decode(z), posterior  # [!code hl]

    @property
    def last_layer(self) -> Tensor:
        return self.decoder.conv_out.weight

    @property
    def latent_size(self) -> int:
        r"""$h = w = H / f$."""
        return self.config.resolution // self.config.f

    # ===ADD===
    # $\lambda_z$ as a float.
    @property
    def scaling_factor(self) -> float:
        return float(self.scale)

    # $\lambda_z = 1 / \operatorname{std}(z)$ over every value of a batch of posterior
    # samples; stored, and returned.
    @torch.no_grad()
    def compute_scaling_factor(self, x: Tensor, generator: torch.Generator | None = None) -> float:
        z = self.encode(x).sample(generator)
        self.scale.fill_(1.0 / z.flatten().std().item())
        return self.scaling_factor

    @classmethod
    def from_preset(cls, name: str, in_channels: int | None = None, **overrides) -> "KLAutoencoder":
        r"""`KLAutoencoder.from_preset("tiny")`, `("sd-f8c4")`, or with overrides
        (`resolution=28`, `z_channels=8`, ...); `in_channels` sets input and output."""
        if name not in PRESETS:
            raise ValueError(f"unknown KL autoencoder preset {name!r}; choose one of {sorted(PRESETS)}")
        if in_channels is not None:
            overrides = {"in_channels": in_channels, "out_channels": in_channels, **overrides}
        if "z_channels" in overrides and "embed_dim" not in overrides:
            overrides["embed_dim"] = overrides["z_channels"]
        return cls(KLConfig(**{**asdict(PRESETS[name]), **overrides}))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ## Try it
#
# `python -m annogen.ldm.model`: builds the tiny autoencoder, encodes a batch, checks
# that the KL equals the closed form written another way (through
# `torch.distributions`), and counts the SD preset on the meta device.
@torch.no_grad()
def demo() -> None:
    torch.manual_seed(0)
    ae = KLAutoencoder.from_preset("tiny")
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    q = ae.encode(x)
    z = q.sample()
    x_hat = ae.decode(z)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(q.mean, q.std), torch.distributions.Normal(0.0, 1.0)
    ).sum(dim=(1, 2, 3))
    print(f"tiny: {count_parameters(ae):,} parameters, f = {ae.config.f}; "
          f"x {tuple(x.shape)} -> z {tuple(z.shape)} -> x_hat {tuple(x_hat.shape)}")
    print(f"KL per image {[round(v, 2) for v in q.kl().tolist()]}; "
          f"max difference to torch.distributions {(q.kl() - ref).abs().max().item():.2e}")
    print(f"scaling factor on this batch: {ae.compute_scaling_factor(x):.4f} "
          f"(latent std {z.std().item():.4f})")
    with torch.device("meta"):
        sd = KLAutoencoder.from_preset("sd-f8c4")
    print(f"sd-f8c4: {count_parameters(sd):,} parameters (official SD autoencoder: 83,653,863), "
          f"256x256x3 -> {sd.latent_size}x{sd.latent_size}x{sd.config.z_channels}")
    assert math.isclose(float((q.kl() - ref).abs().max()), 0.0, abs_tol=1e-3)


if __name__ == "__main__":
    demo()
