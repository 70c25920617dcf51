r"""
---
title: DDPM, the U-Net
summary: The noise predictor of Ho et al. (2020) - a U-Net with a sinusoidal timestep embedding, GroupNorm ResBlocks and self-attention at low resolution - with a tiny CPU preset and the paper's 35.7M-parameter CIFAR-10 preset.
---

# The U-Net that predicts the noise

A diffusion model needs one network, $\epsilon_\theta(x_t, t)$: given a noisy image $x_t$
and the step $t$ that says how noisy it is, guess the noise $\epsilon$ that was added
([[diffusion.py]] explains why that is all we need). Its output has the shape of its
input, and every output pixel depends on the whole image, because telling noise from
signal at one pixel needs context. Ho et al. (2020) use the encoder-decoder with skip
connections of PixelCNN++ and U-Net (Ronneberger et al., 2015): the image is
convolved and halved in resolution several times, then doubled back, and at every
resolution the decoder also sees what the encoder had at that resolution.

On top of that skeleton the paper adds three things, all in this file:

1. **the timestep enters every block**: $t$ becomes a sinusoidal vector (as positions
   do in the Transformer), an MLP turns it into an embedding, and each residual block
   adds a projection of it to its feature map;
2. **GroupNorm** instead of weight normalisation, in pre-activation residual blocks;
3. **self-attention** at the $16 \times 16$ resolution (and in the middle), so that
   distant parts of the image can talk to each other.

The layer layout follows the official code (`diffusion_tf/models/unet.py` of
hojonathanho/diffusion), module for module, so that the `paper` preset has exactly the
parameters of the paper's CIFAR-10 model. We add one option the paper does not have:
a class label (see [[#UNet]]).

**Where we differ from the official code** (the same network, other numbers at the
start): its GroupNorm uses $\epsilon = 10^{-6}$, ours PyTorch's default $10^{-5}$;
and it initialises every convolution and linear layer Glorot-uniform
(TensorFlow's `variance_scaling(1, "fan_avg", "uniform")`) with zero biases, where we
keep PyTorch's defaults (Kaiming-uniform with $a = \sqrt 5$, uniform biases): weight
variance $1/(3\,n_{in})$ against Glorot's $2/(n_{in} + n_{out})$, three times smaller for
a layer with as many inputs as outputs. The
layers the official code starts at zero (the last convolution of each residual
block, the attention output, the output layer) start at zero here too, so the untrained
network is the identity in every block either way. A released checkpoint's weights load
and give the same outputs to within the $\epsilon$ difference; training from scratch
starts from a different point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UNetConfig", "PRESETS", "build_unet", "timestep_embedding", "ResnetBlock",
           "AttnBlock", "Downsample", "Upsample", "UNet", "count_parameters"]


# ## The configuration
#
# One flat dataclass. `ch` is the base width $C$; level $i$ of the U-Net has
# $C \cdot$ `ch_mult[i]` channels and every level but the last halves the resolution.
# Each level has `num_res_blocks` residual blocks on the way down and one more on the
# way up; `attn_resolutions` lists the feature-map sizes at which an attention block
# follows each residual block. `num_classes` > 0 makes the network class-conditional.
@dataclass
class UNetConfig:
    in_channels: int = 3
    image_size: int = 32
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    num_groups: int = 32
    num_classes: int = 0

    def __post_init__(self):
        self.ch_mult, self.attn_resolutions = tuple(self.ch_mult), tuple(self.attn_resolutions)
        if self.image_size % 2 ** (len(self.ch_mult) - 1):
            raise ValueError(f"image_size {self.image_size} must be divisible by "
                             f"2^{len(self.ch_mult) - 1} for ch_mult {self.ch_mult}")
        for m in self.ch_mult:
            if (self.ch * m) % self.num_groups:
                raise ValueError(f"{self.ch * m} channels do not split into {self.num_groups} groups")


# ## Two presets
#
# `paper` is the CIFAR-10 model of the paper's appendix B as the official code
# configures it: $C = 128$, `ch_mult` $(1, 2, 2, 2)$ (resolutions 32, 16, 8, 4), two
# residual blocks per level, attention at $16 \times 16$, dropout 0.1, 32 groups. The
# paper rounds its size to 35.7M; counted here it is **35,746,307** parameters (the
# test checks it).
#
# `tiny` is ours, chosen so that sampling with all 1,000 steps of DDPM stays affordable
# on one CPU core: $C = 16$, three levels (32, 16, 8) of 16, 32 and 64 channels, one
# residual block per level, attention only at $8 \times 8$ and in the middle, 2 groups,
# no dropout. With the 21 classes of `shapes` it has 688,755 parameters, 52 times fewer
# than `paper`, and one forward pass costs about 2.6 ms per $32 \times 32$ image on one
# core: 1,000 steps for 256 images are still eleven minutes, which is the whole story
# of DDIM in one number.
#
# **Why only 2 groups.** GroupNorm removes, per image, the mean of each group of
# channels. At large $t$ the right output is almost the input, $\epsilon \approx x_t$,
# including the mean colour of each channel of this one noise image, and that mean is
# what a short run fails to pass through the normalised layers: the estimate
# $\hat x_0$ then gets a whole-image colour cast, divided by $\sqrt{\bar\alpha_t}$, which
# the samplers carry to the end (saturated backgrounds). With 16 channels in 8 groups a
# group holds 2 channels; with 2 groups it holds 8 (the paper's model has 4 to 8), and
# after the same 2,000 steps the error in that mean fell by a third and the backgrounds
# turned dark (measured in the chapter's README). The number of groups changes no
# parameter count.
PRESETS: dict[str, UNetConfig] = {
    "tiny": UNetConfig(ch=16, ch_mult=(1, 2, 4), num_res_blocks=1, attn_resolutions=(8,),
                       dropout=0.0, num_groups=2),
    "paper": UNetConfig(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                        dropout=0.1, num_groups=32),
}


def build_unet(preset: str = "tiny", **overrides) -> "UNet":
    r"""`UNet(PRESETS[preset] with overrides)`, e.g. `build_unet("tiny", num_classes=21)`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    return UNet(replace(PRESETS[preset], **overrides))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ## The timestep as a vector
#
# The network must know $t$. A bare number is a poor input for a network, so $t$ is
# spread over $d$ sinusoids of geometrically spaced frequencies, as the Transformer
# encodes positions. With $h = d/2$ and $\omega_k = 10000^{-k/(h-1)}$ for
# $k = 0, \dots, h-1$,
#
# $$\mathrm{emb}(t) = \big[\sin(t\,\omega_0), \dots, \sin(t\,\omega_{h-1}),
#   \cos(t\,\omega_0), \dots, \cos(t\,\omega_{h-1})\big].$$
#
# Nearby steps get similar vectors, and the slowest frequency still tells $t = 0$ from
# $t = 999$. (The official code divides by $h - 1$, not $h$, and puts all sines before
# all cosines; we do the same.)
def timestep_embedding(t: Tensor, d: int) -> Tensor:
    r"""$(B,)$ timesteps $\to$ $(B, d)$ sinusoidal embeddings."""
    h = d // 2
    omega = torch.exp(-math.log(10000.0) * torch.arange(h, device=t.device, dtype=torch.float32) / (h - 1))
    angles = t.float()[:, None] * omega[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(emb, (0, 1)) if d % 2 else emb


# ## The residual block
#
# Pre-activation, as in the official code: normalise, SiLU ("swish"), convolve; add the
# timestep embedding, projected to this block's width and broadcast over all pixels;
# normalise, SiLU, dropout, convolve again; add the input (through a $1 \times 1$
# convolution when the width changes):
#
# $$h = W_2 * \mathrm{drop}\Big(\operatorname{SiLU}\big(\mathrm{GN}(W_1 * \operatorname{SiLU}(\mathrm{GN}(x)) + P\,\operatorname{SiLU}(e_t))\big)\Big), \qquad
#   \mathrm{out} = \mathrm{skip}(x) + h .$$
#
# The last convolution $W_2$ starts at zero (the official `init_scale=0.`), so every
# block starts as the identity and the untrained network passes its input straight
# through to the output layer.
class ResnetBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


# ## Self-attention over pixels
#
# Every pixel of a $H \times W$ map is a token with $C$ features. After a GroupNorm,
# $1 \times 1$ convolutions give queries, keys and values, and each pixel takes a
# softmax-weighted average of all values, a single head:
#
# $$\mathrm{out} = x + W_o\, V\, \mathrm{softmax}\Big(\frac{Q^\top K}{\sqrt{C}}\Big)^{\!\top}.$$
#
# The cost grows with $(HW)^2$, which is why attention sits at $16 \times 16$ (paper) or
# $8 \times 8$ (tiny) and not at full resolution. $W_o$ starts at zero, so the block
# too starts as the identity.
class AttnBlock(nn.Module):
    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.k = nn.Conv2d(ch, ch, 1)
        self.v = nn.Conv2d(ch, ch, 1)
        self.proj_out = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q = self.q(h).flatten(2)  # (B, C, HW)
        k = self.k(h).flatten(2)
        v = self.v(h).flatten(2)
        w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * C ** -0.5, dim=-1)  # (B, HW, HW)
        h = torch.einsum("bij,bcj->bci", w, v).reshape(B, C, H, W)
        return x + self.proj_out(h)


# ## Changing resolution
#
# Down: a $3 \times 3$ convolution with stride 2. TensorFlow's `SAME` padding, which
# the official code uses, pads an even-sized input by one pixel on the right and bottom
# only, so we pad the same way instead of PyTorch's symmetric `padding=1`.
# Up: nearest-neighbour doubling, then a $3 \times 3$ convolution.
class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# ## The U-Net
#
# The timestep embedding: $\mathrm{emb}(t)$ of width $C$, then
# $e_t = W_b\,\operatorname{SiLU}(W_a\,\mathrm{emb}(t))$ of width $4C$.
#
# **Down**: a $3 \times 3$ convolution to $C$ channels, then per level `num_res_blocks`
# residual blocks (each followed by attention at the listed resolutions) and a
# downsampling. Every intermediate map is pushed on a stack `hs`.
# **Middle**: residual block, attention, residual block at the lowest resolution.
# **Up**: per level, from the lowest, `num_res_blocks + 1` residual blocks, each fed
# the current map concatenated with one map popped from `hs`, then an upsampling.
# The stack is empty at the end: every encoder map has been used exactly once.
# **Out**: GroupNorm, SiLU and a zero-initialised $3 \times 3$ convolution back to the
# image's channels, so the untrained network predicts $\epsilon = 0$.
#
# **The label.** With `num_classes` $= K > 0$, a table of $K + 1$ learned vectors of
# width $4C$ is added to $e_t$; row $K$ is the "null" label, used when `y` is `None` or
# $-1$. Training with some labels replaced by the null label gives one network that is
# both conditional and unconditional, which classifier-free guidance
# ([[diffusion.py#guidance]]) needs. The paper's models are unconditional; this table is
# our addition, and the `paper` preset leaves it out.
class UNet(nn.Module):
    r"""$\epsilon_\theta(x_t, t, y)$: `model(x_t, t, y=None)` $\to$ predicted noise, shaped like `x_t`."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        C, G, p = cfg.ch, cfg.num_groups, cfg.dropout
        temb_ch = 4 * C
        self.num_classes = cfg.num_classes
        self.temb = nn.ModuleDict({"dense0": nn.Linear(C, temb_ch), "dense1": nn.Linear(temb_ch, temb_ch)})
        self.label_emb = nn.Embedding(cfg.num_classes + 1, temb_ch) if cfg.num_classes > 0 else None
        self.conv_in = nn.Conv2d(cfg.in_channels, C, 3, padding=1)

        res, widths, ch_in = cfg.image_size, [C], C
        self.down = nn.ModuleList()
        for i, mult in enumerate(cfg.ch_mult):
            level = nn.Module()
            level.blocks, level.attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                level.blocks.append(ResnetBlock(ch_in, C * mult, temb_ch, p, G))
                ch_in = C * mult
                level.attns.append(AttnBlock(ch_in, G) if res in cfg.attn_resolutions else nn.Identity())
                widths.append(ch_in)
            level.downsample = None
            if i != len(cfg.ch_mult) - 1:
                level.downsample = Downsample(ch_in)
                res //= 2
                widths.append(ch_in)
            self.down.append(level)

        self.mid_block1 = ResnetBlock(ch_in, ch_in, temb_ch, p, G)
        self.mid_attn = AttnBlock(ch_in, G)
        self.mid_block2 = ResnetBlock(ch_in, ch_in, temb_ch, p, G)

        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(cfg.ch_mult))):
            level = nn.Module()
            level.blocks, level.attns = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                level.blocks.append(ResnetBlock(ch_in + widths.pop(), C * mult, temb_ch, p, G))
                ch_in = C * mult
                level.attns.append(AttnBlock(ch_in, G) if res in cfg.attn_resolutions else nn.Identity())
            level.upsample = None
            if i != 0:
                level.upsample = Upsample(ch_in)
                res *= 2
            self.up.append(level)
        assert not widths

        self.norm_out = nn.GroupNorm(G, ch_in)
        self.conv_out = nn.Conv2d(ch_in, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        temb = self.temb["dense1"](F.silu(self.temb["dense0"](timestep_embedding(t, self.cfg.ch))))
        if self.label_emb is not None:
            null = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            y = null if y is None else torch.where(y < 0, null, y.long())
            temb = temb + self.label_emb(y)

        hs = [self.conv_in(x)]
        for level in self.down:
            for block, attn in zip(level.blocks, level.attns):
                hs.append(attn(block(hs[-1], temb)))
            if level.downsample is not None:
                hs.append(level.downsample(hs[-1]))

        h = self.mid_block2(self.mid_attn(self.mid_block1(hs[-1], temb)), temb)

        for level in self.up:
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, hs.pop()], dim=1), temb))
            if level.upsample is not None:
                h = level.upsample(h)

        return self.conv_out(F.silu(self.norm_out(h)))


# ## Try it
#
# `python -m annogen.ddpm.unet`: the tiny class-conditional U-Net on a batch of noisy
# $32 \times 32$ images, its size, and the property the zero-initialised output layer
# promises: the untrained network predicts $\epsilon = 0$ exactly.
@torch.no_grad()
def demo() -> None:
    torch.manual_seed(0)
    net = build_unet("tiny", num_classes=21).eval()
    x_t, t, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 250, 500, 999]), torch.tensor([0, 5, 10, -1])
    out = net(x_t, t, y)
    print(f"tiny U-Net: {count_parameters(net):,} parameters (21 classes); "
          f"x_t {tuple(x_t.shape)} -> eps_theta {tuple(out.shape)}")
    print(f"untrained output is exactly zero: {bool((out == 0).all())}")
    with torch.device("meta"):
        paper = build_unet("paper")
    print(f"paper (CIFAR-10) preset: {count_parameters(paper):,} parameters")
    assert (out == 0).all()


if __name__ == "__main__":
    demo()
