r"""
---
title: R3GAN, the networks
summary: The modernised ResNet of R3GAN - 1-3-1 inverted-bottleneck blocks with grouped convolutions, no normalisation, biases in the activations, fix-up initialisation L^(-1/4), [1,3,3,1] resampling - as generator and discriminator, with the CIFAR-10 preset counted exactly.
---

# The generator and the discriminator

R3GAN's networks are what is left of StyleGAN2 after its tricks are removed (no
mapping network, no style modulation, no noise inputs, no minibatch-stddev, no
progressive outputs) and a ResNet with ConvNeXt-era habits is put in: grouped
convolutions, an inverted bottleneck, no normalisation layers, and an initialisation
that makes every residual block start as the identity. $G$ and $D$ are mirror images
built from the same parts; with the loss of [[losses.py]] that stable
recipe needs no other tricks.

The names follow the official code ([brownvc/R3GAN](https://github.com/brownvc/R3GAN),
`R3GAN/Networks.py`), so that a reader can put the two side by side; parameter counts
of the CIFAR-10 preset match it exactly (tested).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# ## Initialisation and the biased activation
#
# Every weight is drawn from $\mathcal{N}(0, (g / \sqrt{\text{fan-in}})^2)$ with a gain $g$
# chosen for what follows the layer ("MSR" or He initialisation): $g = 1$ for a linear
# layer, $g = \sqrt{2 / (1 + 0.2^2)}$ before a leaky ReLU of slope 0.2, which keeps the
# variance of the activations constant through the network. $g = 0$ zero-initialises.
def msr_init(layer: nn.Module, gain: float = 1.0) -> nn.Module:
    weight = layer.weight
    fan_in = weight.shape[1] * weight[0][0].numel()
    with torch.no_grad():
        weight.normal_(0.0, gain / math.sqrt(fan_in))
    return layer


# No layer has a bias of its own; the bias is added by the activation, just before the
# leaky ReLU, where it matters (a bias right before a residual sum or the output does
# little). The official code fuses these two operations into one kernel.
class BiasedActivation(nn.Module):
    gain = math.sqrt(2 / (1 + 0.2 ** 2))

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return F.leaky_relu(x + self.bias.view(shape).to(x.dtype), 0.2)


# A bias-free convolution with "same" padding.
class Convolution(nn.Conv2d):
    def __init__(self, c_in: int, c_out: int, kernel_size: int, groups: int = 1,
                 gain: float = 1.0):
        super().__init__(c_in, c_out, kernel_size, padding=(kernel_size - 1) // 2,
                         groups=groups, bias=False)
        msr_init(self, gain)


# ## The residual block
#
# $$x \leftarrow x + W_3\,\phi\big(W_2\,\phi(W_1 x)\big)$$
#
# where $W_1$ is a $1\times1$ convolution from $C$ to $2C$ channels (the inverted
# bottleneck: the block is wide inside, narrow outside), $W_2$ a $3 \times 3$
# convolution in `cardinality` groups (ResNeXt; each group sees $2C / \text{groups}$
# channels), $W_3$ a $1 \times 1$ back to $C$, and $\phi$ the biased leaky ReLU.
#
# **Fix-up initialisation.** With no normalisation, the sum of $L$ residual branches
# would grow the activations with depth. Two measures stop that. $W_3$ starts at
# **zero**, so every block is the identity at initialisation (tested) and the network
# starts as a plain chain of resampling layers. And the other two layers of each
# branch are scaled down by $L^{-1/(2m-2)}$ for $L$ blocks in the whole network and
# $m = 3$ layers per branch (Zhang et al., 2019): $L^{-1/4}$; the CIFAR-10 network has
# $L = 8$, a factor $8^{-1/4} \approx 0.595$.
class ResidualBlock(nn.Module):
    def __init__(self, channels: int, cardinality: int, expansion: int, kernel_size: int,
                 num_blocks: int):
        super().__init__()
        m = 3  # linear layers in the branch
        expanded = channels * expansion
        gain = BiasedActivation.gain * num_blocks ** (-1 / (2 * m - 2))
        self.conv1 = Convolution(channels, expanded, 1, gain=gain)
        self.conv2 = Convolution(expanded, expanded, kernel_size, groups=cardinality, gain=gain)
        self.conv3 = Convolution(expanded, channels, 1, gain=0.0)
        self.act1 = BiasedActivation(expanded)
        self.act2 = BiasedActivation(expanded)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(x)
        y = self.conv2(self.act1(y))
        y = self.conv3(self.act2(y))
        return x + y


# ### The baseline's block
#
# The roadmap's config B (see [[experiment.py#the-roadmap]]) has no residual
# connections: a block is one $3 \times 3$ convolution and a biased leaky ReLU,
# $x \leftarrow \phi(W x)$, initialised for the activation. Stacked, that is a
# DCGAN-style network with the same widths and resampling as R3GAN's.
class PlainBlock(nn.Module):
    def __init__(self, channels: int, cardinality: int, expansion: int, kernel_size: int,
                 num_blocks: int):
        super().__init__()
        self.conv = Convolution(channels, channels, kernel_size, gain=BiasedActivation.gain)
        self.act = BiasedActivation(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv(x))


BLOCKS = {"resnext": ResidualBlock, "plain": PlainBlock}


# ## Resampling with a [1, 3, 3, 1] filter
#
# Strided convolutions and nearest-neighbour upsampling alias: they fold high
# frequencies into low ones, visible as checkerboards. Like StyleGAN2, R3GAN resamples
# with a small low-pass filter. The official code is given the filter $[1, 2, 1]$ and
# convolves it with $[1, 1]$ to get the 4-tap $[1, 3, 3, 1]$ (its `CreateLowpassKernel`);
# the 2-D kernel is the outer product, normalised to sum 1:
#
# $$k = \frac{a a^\top}{(\textstyle\sum a)^2}, \qquad a = [1, 3, 3, 1].$$
#
# Downsampling convolves each channel with $k$ at stride 2. Upsampling is the
# transposed operation with $4k$: each input pixel spreads into a $4 \times 4$ patch at
# stride 2, and the factor 4 makes up for the three zeros inserted per pixel. A
# constant image stays constant through both (away from the one-pixel border, where
# the zero padding of the official code shows; tested).
def lowpass_kernel(taps=(1, 2, 1)) -> Tensor:
    a = torch.tensor(taps, dtype=torch.float64)
    a = torch.nn.functional.conv1d(a.view(1, 1, -1), torch.ones(1, 1, 2, dtype=torch.float64),
                                   padding=1).view(-1)  # [1, 2, 1] * [1, 1] = [1, 3, 3, 1]
    k = torch.outer(a, a)
    return (k / k.sum()).float()


class Upsample(nn.Module):
    def __init__(self, taps=(1, 2, 1)):
        super().__init__()
        self.register_buffer("kernel", 4 * lowpass_kernel(taps), persistent=False)

    # The transposed convolution (official: `conv_transpose2d`, stride 2, padding 1)
    # written as what it is: put the pixels on the even positions of a twice-as-large
    # zero image, then filter it. On a CPU this depthwise `conv2d` is several times
    # faster than `conv_transpose2d` on one channel at a time; the two agree (tested).
    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        stuffed = x.new_zeros(B, C, 2 * H, 2 * W)
        stuffed[:, :, ::2, ::2] = x
        k = self.kernel.to(x.dtype)[None, None].expand(C, 1, -1, -1)
        return F.conv2d(F.pad(stuffed, (2, 1, 2, 1)), k, groups=C)


class Downsample(nn.Module):
    def __init__(self, taps=(1, 2, 1)):
        super().__init__()
        self.register_buffer("kernel", lowpass_kernel(taps), persistent=False)
        self.radius = len(taps) // 2

    def forward(self, x: Tensor) -> Tensor:
        C = x.shape[1]
        k = self.kernel.to(x.dtype)[None, None].expand(C, 1, -1, -1)
        return F.conv2d(x, k, stride=2, padding=self.radius, groups=C)


# Between stages the width may change: a $1 \times 1$ convolution does that, before
# upsampling in $G$ (cheaper at the low resolution) and after downsampling in $D$.
class UpsampleLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, taps=(1, 2, 1)):
        super().__init__()
        self.linear = Convolution(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.resample = Upsample(taps)

    def forward(self, x: Tensor) -> Tensor:
        return self.resample(self.linear(x))


class DownsampleLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int, taps=(1, 2, 1)):
        super().__init__()
        self.resample = Downsample(taps)
        self.linear = Convolution(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.resample(x))


# ## The 4x4 ends
#
# $G$ starts from a **learned $4 \times 4$ basis**: a parameter $B \in \mathbb{R}^{C \times 4
# \times 4}$, each channel scaled by one entry of a linear map of the input vector,
# $h_c = B_c \cdot (W u)_c$. $D$ ends with the mirror image: a depthwise $4 \times 4$
# convolution (one $4 \times 4$ filter per channel, no padding) collapses the
# $4 \times 4$ map to a vector, and a linear layer maps it to the output.
class GenerativeBasis(nn.Module):
    def __init__(self, dim_in: int, channels: int):
        super().__init__()
        self.basis = nn.Parameter(torch.randn(channels, 4, 4))
        self.linear = msr_init(nn.Linear(dim_in, channels, bias=False))

    def forward(self, u: Tensor) -> Tensor:
        return self.basis[None] * self.linear(u)[:, :, None, None]


class DiscriminativeBasis(nn.Module):
    def __init__(self, channels: int, dim_out: int):
        super().__init__()
        self.basis = msr_init(nn.Conv2d(channels, channels, 4, groups=channels, bias=False))
        self.linear = msr_init(nn.Linear(channels, dim_out, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.basis(x).flatten(1))


# ## Sizes
#
# A stage works at one resolution; stage 1 is $4 \times 4$ and each further stage
# doubles it, so four stages make $32 \times 32$. `widths`, `cardinalities` and
# `blocks` list the stages from low to high resolution for $G$; $D$ uses them in
# reverse (the official `train.py` reverses them for $D$ the same way).
#
# **The CIFAR-10 preset** (official `train.py --preset CIFAR10`): 768 channels, 96
# groups, 2 blocks per stage, expansion 2, $z \in \mathbb{R}^{64}$; class-conditional
# with a 64-d class embedding in $G$ and a 768-d projection in $D$: G 20,781,952 and
# D 21,280,512 parameters. **The tiny preset** halves the width at every doubling of
# the resolution (128, 64, 32, 16 channels from $4^2$ to $32^2$, 16 channels per group,
# one block per stage), so that every stage costs about the same; 21 classes, those of
# the course's shapes.
@dataclass(frozen=True)
class R3GANConfig:
    widths: tuple[int, ...] = (128, 64, 32, 16)
    cardinalities: tuple[int, ...] = (16, 8, 4, 2)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    expansion: int = 2
    kernel_size: int = 3
    z_dim: int = 64
    num_classes: int = 21  # 0: unconditional
    g_embed_dim: int = 64  # G's class embedding (official: = z_dim)
    d_embed_dim: int = 128  # D's projection dimension (official: = widths[0])
    channels: int = 3
    block: str = "resnext"  # "resnext" (R3GAN) or "plain" (the roadmap's config B)
    taps: tuple[int, ...] = (1, 2, 1)

    def __post_init__(self):
        if not (len(self.widths) == len(self.cardinalities) == len(self.blocks)):
            raise ValueError("R3GANConfig: widths, cardinalities and blocks must have one "
                             f"entry per stage; got {len(self.widths)}, "
                             f"{len(self.cardinalities)}, {len(self.blocks)}")
        if self.block not in BLOCKS:
            raise ValueError(f"R3GANConfig.block must be one of {list(BLOCKS)}, not {self.block!r}")
        for w, c in zip(self.widths, self.cardinalities):
            if (w * self.expansion) % c:
                raise ValueError(f"R3GANConfig: {w * self.expansion} expanded channels do "
                                 f"not split into {c} groups")

    @property
    def resolution(self) -> int:
        return 4 * 2 ** (len(self.widths) - 1)

    @property
    def num_blocks(self) -> int:  # L of the fix-up scaling
        return sum(self.blocks)


PRESETS = {
    "tiny": R3GANConfig(),
    "cifar10": R3GANConfig(widths=(768,) * 4, cardinalities=(96,) * 4, blocks=(2,) * 4,
                           z_dim=64, num_classes=10, g_embed_dim=64, d_embed_dim=768),
}


def preset_config(name: str, **overrides) -> R3GANConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown R3GAN preset {name!r}; choose one of {list(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ## The generator
#
# $$u = [z, e_y], \quad h = \text{basis}(u), \quad
#   h \leftarrow \text{stages}(h), \quad x = W_\text{out} h$$
#
# The class $y$ is embedded as a learned vector $e_y$ and concatenated with the noise
# (the official code multiplies a one-hot vector by a bias-free linear layer, which is
# the same table; we initialise it as that layer would be). The output is a $1 \times 1$
# convolution to RGB with **no** final $\tanh$, as in the official code: the images
# come out in the data's range $[-1, 1]$ because the loss puts them there, and the
# sampler clamps ([[experiment.py#R3GANExperiment.sample]]).
class Generator(nn.Module):
    def __init__(self, config: R3GANConfig = PRESETS["tiny"]):
        super().__init__()
        c = self.config = config
        Block = BLOCKS[c.block]
        embed = c.g_embed_dim if c.num_classes else 0
        if c.num_classes:
            self.embedding = nn.Embedding(c.num_classes, c.g_embed_dim)
            nn.init.normal_(self.embedding.weight, 0.0, 1 / math.sqrt(c.num_classes))
        stages = []
        for i, (width, groups, n) in enumerate(zip(c.widths, c.cardinalities, c.blocks)):
            first = (GenerativeBasis(c.z_dim + embed, width) if i == 0
                     else UpsampleLayer(c.widths[i - 1], width, c.taps))
            stages.append(nn.Sequential(first, *[Block(width, groups, c.expansion, c.kernel_size,
                                                       c.num_blocks) for _ in range(n)]))
        self.stages = nn.ModuleList(stages)
        self.to_rgb = Convolution(c.widths[-1], c.channels, 1)

    @classmethod
    def from_preset(cls, name: str = "tiny", **overrides) -> "Generator":
        return cls(preset_config(name, **overrides))

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        c = self.config
        if z.dim() != 2 or z.shape[1] != c.z_dim:
            raise ValueError(f"Generator: z must have shape (B, {c.z_dim}); got {tuple(z.shape)}")
        u = z
        if c.num_classes:
            if labels is None:
                raise ValueError(f"Generator: this generator is class-conditional "
                                 f"({c.num_classes} classes); pass labels of shape (B,)")
            u = torch.cat([z, self.embedding(labels)], dim=1)
        h = u
        for stage in self.stages:
            h = stage(h)
        return self.to_rgb(h)


# ## The discriminator
#
# $$h = W_\text{in} x, \quad h \leftarrow \text{stages}(h), \quad
#   D(x, y) = \langle \text{basis}(h), e_y \rangle$$
#
# A $1 \times 1$ convolution lifts RGB to the first width; each stage runs its blocks,
# then downsamples; the last stage, at $4 \times 4$, ends in the discriminative basis.
# For a class-conditional $D$ the basis outputs a vector, and the logit is its inner
# product with a learned class embedding $e_y$: the **projection discriminator** of
# Miyato & Koyama (2018). The embedding starts small (official gain
# $1/\sqrt{\text{dim}}$). Unconditional, the basis outputs the logit directly.
class Discriminator(nn.Module):
    def __init__(self, config: R3GANConfig = PRESETS["tiny"]):
        super().__init__()
        c = self.config = config
        Block = BLOCKS[c.block]
        widths, groups, blocks = (tuple(reversed(v)) for v in (c.widths, c.cardinalities, c.blocks))
        self.from_rgb = Convolution(c.channels, widths[0], 1)
        stages = []
        for i, (width, g, n) in enumerate(zip(widths, groups, blocks)):
            last = i == len(widths) - 1
            out = c.d_embed_dim if c.num_classes else 1
            end = (DiscriminativeBasis(width, out) if last
                   else DownsampleLayer(width, widths[i + 1], c.taps))
            stages.append(nn.Sequential(*[Block(width, g, c.expansion, c.kernel_size,
                                                c.num_blocks) for _ in range(n)], end))
        self.stages = nn.ModuleList(stages)
        if c.num_classes:
            self.embedding = nn.Embedding(c.num_classes, c.d_embed_dim)
            nn.init.normal_(self.embedding.weight, 0.0,
                            1 / math.sqrt(c.d_embed_dim) / math.sqrt(c.num_classes))

    @classmethod
    def from_preset(cls, name: str = "tiny", **overrides) -> "Discriminator":
        return cls(preset_config(name, **overrides))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        c = self.config
        if x.dim() != 4 or x.shape[1:] != (c.channels, c.resolution, c.resolution):
            raise ValueError(f"Discriminator: images must have shape (B, {c.channels}, "
                             f"{c.resolution}, {c.resolution}); got {tuple(x.shape)}")
        h = self.from_rgb(x)
        for stage in self.stages:
            h = stage(h)
        if c.num_classes:
            if labels is None:
                raise ValueError(f"Discriminator: this discriminator is class-conditional "
                                 f"({c.num_classes} classes); pass labels of shape (B,)")
            return (h * self.embedding(labels)).sum(dim=1)
        return h.view(-1)


# ## The demo
#
# `python -m annogen.r3gan.model`: both presets counted (the CIFAR-10 one built on the
# `meta` device, no memory), the tiny pair run once, and the identity-at-init property
# checked.
if __name__ == "__main__":
    for name in PRESETS:
        with torch.device("meta"):
            G, D = Generator.from_preset(name), Discriminator.from_preset(name)
        print(f"{name:8s} G {count_parameters(G):>12,}  D {count_parameters(D):>12,}  "
              f"({G.config.resolution}px, {G.config.num_classes} classes, L = {G.config.num_blocks})")
    torch.manual_seed(0)
    G, D = Generator(), Discriminator()
    z, y = torch.randn(4, G.config.z_dim), torch.arange(4)
    x = G(z, y)
    print(f"tiny: G(z {tuple(z.shape)}, y {tuple(y.shape)}) -> {tuple(x.shape)}; "
          f"D -> {tuple(D(x, y).shape)}")
    block = G.stages[1][1]
    h = torch.randn(2, G.config.widths[1], 8, 8)
    print(f"residual block is the identity at init: {torch.equal(block(h), h)}")
