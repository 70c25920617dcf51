r"""
---
title: DC-AE, the deep-compression autoencoder
summary: Residual autoencoding - every down stage adds a parameter-free space-to-channel shortcut with channel averaging, every up stage its mirror with channel duplication - with ResBlocks early, linear-attention blocks late, RMSNorm and SiLU; the f32c32 preset that Sana uses, checked by parameter count, and a tiny f8 model for 32-pixel shapes.
---

# DC-AE: an autoencoder that shrinks each side 32 times

Stable Diffusion's autoencoder ([[ldm/model.py]]) shrinks each side 8 times ($f = 8$).
Sana's ([Chen et al. (2024)](https://arxiv.org/abs/2410.10733), *Deep Compression
Autoencoder for Efficient High-Resolution Diffusion Models*) shrinks it 32 times with 32
channels ($f32c32$): a $1024^2$ image becomes a $32 \times 32 \times 32$ latent, 16 times
fewer positions than SD's $128 \times 128 \times 4$.

Why not just add down-sampling stages to an $f8$ autoencoder? The paper's Figure 2:
at high compression such autoencoders reconstruct much worse, and the gap is an
*optimisation* problem; a deeper stack of convolutions has to learn to move
information from space into channels and fails to. DC-AE's fix is **residual
autoencoding**: give every down stage a shortcut that does the space-to-channel move
*without parameters*, so the convolutions only learn a residual on top of it
([[#the-shortcuts]]). The mirror image on the way up. The rest: ResBlocks in the
high-resolution stages, EfficientViT blocks with linear attention in the low-resolution
ones ([[#the-blocks]]), RMSNorm and SiLU.

The code follows the official `dc_ae.py` (mit-han-lab/efficientvit) and its port
`AutoencoderDC` in diffusers, with the configuration of `dc-ae-f32c32-sana-1.0`, whose
parameter count it matches exactly ([[#the-presets]]). The paper also describes a
third training phase ("high-resolution latent adaptation" with a GAN loss); we train
with a reconstruction loss only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# ## The shortcuts
#
# **Down.** Space-to-channel (`pixel_unshuffle`) turns a $C \times H \times W$ map into a
# $4C \times \frac H2 \times \frac W2$ one with no loss: each $2 \times 2$ block of pixels
# becomes four channels. The stage's output has $C'$ channels (often $2C$), so average
# consecutive groups of $g = 4C / C'$ channels:
#
# $$\mathrm{down}(x)_{c'} = \frac{1}{g} \sum_{k=0}^{g-1} \mathrm{unshuffle}(x)_{g c' + k}.$$
#
# **Up.** The mirror: repeat each channel $r = 4C'/C$ times (`repeat_interleave`), then
# channel-to-space (`pixel_shuffle`), each group of 4 channels becoming a $2 \times 2$
# block. Both are fixed linear maps. A stage's output is its convolution plus its
# shortcut; the same pair (with factor 1, no reshaping) joins the encoder's last layer to
# the latent and the latent to the decoder's first layer.
def space_to_channel_average(x: Tensor, out_channels: int, factor: int = 2) -> Tensor:
    if factor > 1:
        x = F.pixel_unshuffle(x, factor)
    group = x.shape[1] // out_channels
    return x.unflatten(1, (out_channels, group)).mean(dim=2)


def channel_to_space_duplicate(x: Tensor, out_channels: int, factor: int = 2) -> Tensor:
    repeats = out_channels * factor * factor // x.shape[1]
    x = x.repeat_interleave(repeats, dim=1)
    return F.pixel_shuffle(x, factor) if factor > 1 else x


# The down stage: a $3 \times 3$ convolution with stride 2 (Sana's DC-AE; the ImageNet
# models use a convolution followed by `pixel_unshuffle`), plus the shortcut. With
# `shortcut=False` it is the plain down-sampling layer of an ordinary autoencoder, which
# is the baseline of the paper's Table/Figure 2 and of our benchmark.
class DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, shortcut: bool = True):
        super().__init__()
        self.out_channels, self.shortcut = out_channels, shortcut
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y + space_to_channel_average(x, self.out_channels) if self.shortcut else y


# The up stage: nearest-neighbour up-sampling and a $3 \times 3$ convolution (Sana's
# `InterpolateConv`), plus the shortcut.
class UpBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, shortcut: bool = True):
        super().__init__()
        self.out_channels, self.shortcut = out_channels, shortcut
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        return y + channel_to_space_duplicate(x, self.out_channels) if self.shortcut else y


# ## The blocks
#
# **RMSNorm over channels**, with a weight and a bias per channel (efficientvit's
# `TritonRMSNorm2d`, $\epsilon = 10^{-5}$): $y = w \odot x / \sqrt{\overline{x^2} + \epsilon} + b$.
class RMSNorm2d(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


# **ResBlock** (stages 1 to 3): $x + \mathrm{Norm}(\mathrm{Conv}(\operatorname{SiLU}(\mathrm{Conv}(x))))$,
# the first convolution with bias, the second without.
class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = RMSNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.norm(self.conv2(F.silu(self.conv1(x))))


# **EfficientViT block** (stages 4 to 6): multi-scale linear attention, then a
# convolutional GLU feed-forward, each with an RMSNorm at its end and a residual.
# The attention is the ReLU linear attention of the Sana model ([[model.py#linear-attention]]),
# with one addition: besides the plain $q, k, v$ (a $1 \times 1$ convolution $C \to 3C$,
# no bias), a second set is made by aggregating each of them over a $5 \times 5$
# neighbourhood (a depthwise $5 \times 5$ convolution, then a $1 \times 1$ convolution
# grouped per head). Both sets attend, as separate heads; their outputs are
# concatenated and projected back to $C$. The official code divides by the
# denominator plus $\epsilon = 10^{-15}$.
class LiteMLA(nn.Module):
    def __init__(self, channels: int, head_dim: int = 32, scales: tuple[int, ...] = (5,),
                 eps: float = 1e-15):
        super().__init__()
        self.head_dim, self.eps = head_dim, eps
        heads = channels // head_dim
        inner = heads * head_dim
        self.qkv = nn.Conv2d(channels, 3 * inner, 1, bias=False)
        self.aggreg = nn.ModuleList([nn.Sequential(
            nn.Conv2d(3 * inner, 3 * inner, s, padding=s // 2, groups=3 * inner, bias=False),
            nn.Conv2d(3 * inner, 3 * inner, 1, groups=3 * heads, bias=False)) for s in scales])
        self.proj = nn.Conv2d(inner * (1 + len(scales)), channels, 1, bias=False)
        self.norm = RMSNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        from annogen.sana.model import linear_attention
        B, _, H, W = x.shape
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        # (B, heads, 3d, N): each head's q, k, v are consecutive groups of d channels
        qkv = qkv.reshape(B, -1, 3 * self.head_dim, H * W).transpose(-1, -2)
        q, k, v = qkv.chunk(3, dim=-1)
        out = linear_attention(q, k, v, self.eps)                     # (B, heads, N, d)
        out = out.transpose(-1, -2).reshape(B, -1, H, W)
        return x + self.norm(self.proj(out))


class GLUMBConv(nn.Module):
    def __init__(self, channels: int, expand_ratio: float = 4):
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.inverted_conv = nn.Conv2d(channels, 2 * hidden, 1)
        self.depth_conv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.point_conv = nn.Conv2d(hidden, channels, 1, bias=False)
        self.norm = RMSNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        a, g = self.depth_conv(F.silu(self.inverted_conv(x))).chunk(2, dim=1)
        return x + self.norm(self.point_conv(a * F.silu(g)))


class EfficientViTBlock(nn.Module):
    def __init__(self, channels: int, head_dim: int = 32):
        super().__init__()
        self.context_module = LiteMLA(channels, head_dim)
        self.local_module = GLUMBConv(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.local_module(self.context_module(x))


def make_block(kind: str, channels: int, head_dim: int) -> nn.Module:
    return ResBlock(channels) if kind == "res" else EfficientViTBlock(channels, head_dim)


# ## The configuration
#
# Stage $i$ has width $C_i$ and depth $n_i$, and every stage but the last ends (encoder)
# or begins (decoder) with a down/up block, so 6 stages give $f = 2^5 = 32$. The defaults
# are `dc-ae-f32c32-sana-1.0`.
@dataclass
class DCAEConfig:
    in_channels: int = 3
    latent_channels: int = 32
    widths: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    encoder_depths: tuple[int, ...] = (2, 2, 2, 3, 3, 3)
    decoder_depths: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    blocks: tuple[str, ...] = ("res", "res", "res", "vit", "vit", "vit")
    head_dim: int = 32
    shortcut: bool = True           # False: the plain autoencoder of the same shape
    scaling_factor: float = 0.41407

    @property
    def f(self) -> int:
        return 2 ** (len(self.widths) - 1)


# ## The encoder and the decoder
#
# Encoder: a $3 \times 3$ convolution to $C_1$; each stage's blocks, then its down block;
# a $3 \times 3$ convolution to the $c$ latent channels, plus the averaging shortcut.
# Decoder, the mirror: a convolution from $c$ to $C_6$ plus the duplicating shortcut; each
# stage's up block, then its blocks; RMSNorm, ReLU and a convolution to RGB.
class Encoder(nn.Module):
    def __init__(self, c: DCAEConfig):
        super().__init__()
        w = c.widths
        self.latent_channels, self.shortcut = c.latent_channels, c.shortcut
        self.conv_in = nn.Conv2d(c.in_channels, w[0], 3, padding=1)
        self.stages = nn.ModuleList()
        for i, (width, depth) in enumerate(zip(w, c.encoder_depths)):
            stage = [make_block(c.blocks[i], width, c.head_dim) for _ in range(depth)]
            if i < len(w) - 1:
                stage.append(DownBlock(width, w[i + 1], c.shortcut))
            self.stages.append(nn.Sequential(*stage))
        self.conv_out = nn.Conv2d(w[-1], c.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for stage in self.stages:
            x = stage(x)
        z = self.conv_out(x)
        return z + space_to_channel_average(x, self.latent_channels, 1) if self.shortcut else z


class Decoder(nn.Module):
    def __init__(self, c: DCAEConfig):
        super().__init__()
        w = c.widths
        self.shortcut, self.top = c.shortcut, w[-1]
        self.conv_in = nn.Conv2d(c.latent_channels, w[-1], 3, padding=1)
        self.stages = nn.ModuleList()
        for i, (width, depth) in enumerate(zip(w, c.decoder_depths)):
            stage = [UpBlock(w[i + 1], width, c.shortcut)] if i < len(w) - 1 else []
            stage += [make_block(c.blocks[i], width, c.head_dim) for _ in range(depth)]
            self.stages.append(nn.Sequential(*stage))
        self.norm_out = RMSNorm2d(w[0])
        self.conv_out = nn.Conv2d(w[0], c.in_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.conv_in(z)
        if self.shortcut:
            x = x + channel_to_space_duplicate(z, self.top, 1)
        for stage in reversed(self.stages):
            x = stage(x)
        return self.conv_out(F.relu(self.norm_out(x)))


# ## The autoencoder
#
# No posterior, no KL term, no codebook: the latent is the encoder's output. The
# diffusion model sees $z \cdot \lambda$ with the scaling factor $\lambda$ (0.41407 for
# Sana's DC-AE; for ours, $1/\operatorname{std}(z)$ over training latents, as in the
# latent-diffusion chapter), stored as a buffer so it travels with the weights.
class DCAE(nn.Module):
    def __init__(self, config: DCAEConfig | None = None, **overrides):
        super().__init__()
        c = self.config = DCAEConfig(**{**asdict(config or DCAEConfig()), **overrides})
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.register_buffer("scale", torch.tensor(float(c.scaling_factor)))

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    @property
    def scaling_factor(self) -> float:
        return float(self.scale)

    @torch.no_grad()
    def compute_scaling_factor(self, x: Tensor) -> float:
        self.scale.fill_(1.0 / self.encode(x).flatten().std().item())
        return self.scaling_factor

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "DCAE":
        r"""`DCAE.from_preset("f32c32")` (Sana's) or `("tiny")`; `shortcut=False` gives the
        plain autoencoder of the same shape."""
        if name not in PRESETS:
            raise ValueError(f"unknown DC-AE preset {name!r}; choose from {', '.join(PRESETS)}")
        return cls(DCAEConfig(**{**asdict(DCAEConfig()), **PRESETS[name], **overrides}))


# ## The presets
#
# `f32c32`, as Sana uses it (`dc-ae-f32c32-sana-1.0`): encoder 153,027,104 parameters,
# decoder 159,223,171, total 312,250,275 (the tests check all three).
#
# `tiny`, for the course's $32 \times 32$ shapes: 4 stages, so $f = 8$, a
# $4 \times 4 \times 16$ latent (12 times fewer numbers than the image, where Sana's is 48
# times fewer), widths 16 to 128, one block per stage, ResBlocks in the two
# high-resolution stages and EfficientViT blocks in the two low ones. We chose $f8$ so
# that one latent position covers what one token of the pixel DiT covers at patch 4
# ($8 \times 8$ pixels against $4 \times 4$), and 16 channels as a middle ground between
# SD's 4 and Sana's 32 (we did not tune it). The widths are small because the first stage
# runs at full resolution and dominates the cost on a CPU.
PRESETS = {
    "f32c32": {},
    "tiny": dict(latent_channels=16, widths=(16, 32, 64, 128), encoder_depths=(1, 1, 1, 1),
                 decoder_depths=(1, 1, 1, 1), blocks=("res", "res", "vit", "vit"),
                 scaling_factor=1.0),
}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def demo() -> None:
    torch.manual_seed(0)
    ae = DCAE.from_preset("tiny")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = ae.encode(x)
    print(f"tiny DC-AE (f{ae.config.f}c{ae.config.latent_channels}): {count_parameters(ae):,} "
          f"parameters; x {tuple(x.shape)} -> z {tuple(z.shape)} -> {tuple(ae.decode(z).shape)}")
    c = torch.randn(1, 8, 1, 1).expand(1, 8, 6, 6)
    back = channel_to_space_duplicate(space_to_channel_average(c, 16), 8)
    print(f"shortcuts down then up on a constant image: max change {(back - c).abs().max():.1e}")
    with torch.device("meta"):
        big = DCAE.from_preset("f32c32")
    print(f"DC-AE f32c32: encoder {count_parameters(big.encoder):,}, decoder "
          f"{count_parameters(big.decoder):,}, total {count_parameters(big):,}")


if __name__ == "__main__":
    demo()
