r"""
---
title: VQGAN, the autoencoder
summary: The first stage of Taming Transformers, written as a change to VQ-VAE - a deep ResNet encoder and decoder with self-attention, a 1x1 projection on each side of the codebook, and the official code's quirk in the quantiser loss.
---

# VQGAN: the autoencoder

[Esser et al. (2021)](https://arxiv.org/abs/2012.09841), *Taming Transformers for
High-Resolution Image Synthesis*, keep the idea of VQ-VAE — encode an image to a grid of vectors, snap each
vector to its nearest codebook entry $e_k$, decode — and change three things around it:

1. **A much deeper autoencoder.** Two strided convolutions become a ResNet with
   $\log_2 f$ downsampling steps ($f = 16$: a $256^2$ image becomes a $16 \times 16$ grid
   of 256 codes), GroupNorm, swish, and single-head self-attention at the lowest
   resolution. This page.
2. **A perceptual and adversarial loss.** The squared pixel error becomes
   $|x - \hat x|$ plus LPIPS plus a PatchGAN critic whose weight adapts itself:
   [[losses.py]].
3. **A transformer prior** over the code grid instead of a PixelCNN:
   [[transformer.py]].

The quantiser is VQ-VAE's; the official code carries a quirk in its loss that we
reproduce on request (see [[#VQGANQuantizer]]).

The paper's claim for this stage: with $f = 16$ and $K = 1024$ codes the ImageNet
reconstructions reach FID 7.94 on the validation set (4.98 with $K = 16384$): 256
integers per $256^2$ image, sharp enough for a transformer to build on.

**How the diff is shown.** Code taken unchanged from the VQ-VAE chapter is imported, not
repeated. Code that VQGAN adds is marked in green with a `+`, code it removes in red with
a `−`, and a line that VQGAN keeps but changes is highlighted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

# What stays the same: nearest-neighbour lookup with the $\|z\|^2 + \|e\|^2 - 2 z \cdot e$
# expansion, the straight-through estimator $z_{st} = z_e + \operatorname{sg}(z_q - z_e)$
# and the two codebook losses all come from the VQ-VAE chapter.
from annogen.vqvae.model import VectorQuantizer


# ## The quantiser: what changes
#
# VQ-VAE's loss for the codebook is
#
# $$\mathcal{L}_{VQ} = \|\operatorname{sg}[z_e] - e\|^2 + \beta\,\|z_e - \operatorname{sg}[e]\|^2:$$
#
# the first (codebook) term moves the code $e$ towards the encoder output, the second
# (commitment) term, weighted by $\beta = 0.25$, keeps the encoder close to its code.
# VQGAN's paper writes exactly this loss. Two things differ in the official code.
#
# **Where the codes start.** The official quantiser draws the codebook uniform in
# $(-1/K, 1/K)$, far closer to zero than the $\pm\sqrt{3/D}$ of our
# [[vqvae/model.py#VectorQuantizer|VQ-VAE quantiser]]. We follow the official code here;
# the VQ-VAE chapter explains why small codes start slowly under Adam, and the dead-code
# restart (`restart_every`) is the remedy both chapters share.
#
# **Where $\beta$ goes.** The official `VQModel` builds its quantiser with
# `legacy=True`, which computes
#
# $$\mathcal{L}_{legacy} = \beta\,\|\operatorname{sg}[z_e] - e\|^2 + \|z_e - \operatorname{sg}[e]\|^2,$$
#
# $\beta$ on the *codebook* term and weight 1 on the commitment term. The repository's
# own comment calls this a bug, kept for backward compatibility. The two terms have the
# same *value* ($z_e$ and $e$ are the same numbers either way), so the logged loss
# cannot tell the two versions apart; only the gradients differ: with $\beta = 0.25$
# the legacy codebook learns 4 times more slowly and the encoder is pulled 4 times
# harder towards its codes.
#
# We implement the paper's form; `legacy=True` reproduces the training of the released
# checkpoints. (VQGAN learns its codebook by gradient; the EMA variant of the VQ-VAE
# chapter is not used.)
class VQGANQuantizer(VectorQuantizer):
    r"""The VQ-VAE quantiser with the optional legacy placement of $\beta$.

    * `num_codes` — $K$, the number of codebook entries.
    * `dim` — $D$, the length of each code $e_k$.
    * `beta` — $\beta$, the commitment weight (the codebook weight if `legacy`).
    * `legacy` — put $\beta$ on the codebook term, as the official code does.
    * other keyword arguments go to `VectorQuantizer` (e.g. `restart_every`).
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, legacy: bool = False,
                 **kwargs):
        super().__init__(num_codes, dim, beta=beta, ema=False, **kwargs)
        # ===ADD===
        # The official initialisation, $e_k \sim \mathcal{U}(-1/K, 1/K)$.
        with torch.no_grad():
            self.embedding.uniform_(-1.0 / num_codes, 1.0 / num_codes)
        self.legacy = legacy

    def forward(self, z_e: torch.Tensor):
        r"""Quantise `z_e` $(B, D, h, w)$; returns $z_q$ (straight-through), the loss, the indices $(B, h, w)$."""
        z_q, loss, indices = super().forward(z_e)
        if self.legacy:  # [!code ++]
            loss = self.legacy_loss(z_e, indices)  # [!code ++]
        return z_q, loss, indices

    # ===ADD===
    # The legacy loss from the two terms of the VQ-VAE quantiser. $e$ is the code each
    # position was assigned to, laid out like $z_e$; both terms are means over all
    # elements there and here, so only the placement of $\beta$ differs.
    def legacy_loss(self, z_e: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if z_e.dtype in (torch.float16, torch.bfloat16):
            z_e = z_e.float()
        z = z_e.permute(0, 2, 3, 1)
        e = self.codebook[indices].to(z.dtype)
        return self.beta * self.codebook_loss(z, e) + self.commitment_loss(z, e)


# ## Building blocks
#
# Everything from here on is new: VQ-VAE's encoder was two strided convolutions and two
# small residual blocks. VQGAN borrows its autoencoder from the U-Net of DDPM
# ([Ho et al. (2020)](https://arxiv.org/abs/2006.11239); the course builds that network
# later, in its DDPM chapter, but nothing here depends on it). That U-Net is a stack of
# residual blocks (GroupNorm, swish, $3 \times 3$ convolutions) that halves the
# resolution level by level, with self-attention at the smallest levels, and then a
# mirror-image stack that doubles it back; skip connections join each level on the way
# down to the level of the same size on the way up, and every block also receives an
# embedding of the diffusion time step. VQGAN keeps the two stacks as its encoder and
# decoder and drops the rest: no skip connections, because everything the decoder knows
# must pass through the codes, and no time embedding, because an autoencoder has no time
# step. The blocks are all defined below. Normalisation is GroupNorm with 32 groups and
# $\epsilon = 10^{-6}$, so every width must be a multiple of 32.
def normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


# The non-linearity is swish, also called SiLU: $\operatorname{swish}(x) = x \operatorname{sigmoid}(x)$.
def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


# A residual block is two rounds of norm, swish and $3 \times 3$ convolution, added to
# its input:
#
# $$h = \operatorname{conv}_2(\operatorname{swish}(\operatorname{GN}_2(\operatorname{conv}_1(\operatorname{swish}(\operatorname{GN}_1(x)))))), \qquad y = s(x) + h$$
#
# where the shortcut $s$ is the identity, or a $1 \times 1$ convolution (`nin_shortcut`,
# "network in network") when the block changes the number of channels.
class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int | None = None, dropout: float = 0.0):
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


# Self-attention over the $N = h \cdot w$ positions of a feature map, with one head.
# Queries, keys and values are $1 \times 1$ convolutions of the normalised input,
# $Q, K, V \in \mathbb{R}^{N \times C}$; every position takes a softmax-weighted average
# of all values,
#
# $$\operatorname{Attn}(x) = x + W_o \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{C}}\right) V.$$
#
# Convolutions only see a small neighbourhood; one attention layer lets every code see
# the whole image, which is why VQGAN places it where the grid is smallest and
# $N^2$ is cheap.
class AttnBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        # $(B, C, H, W) \to (B, N, C)$
        q = self.q(h).flatten(2).transpose(1, 2)
        k = self.k(h).flatten(2).transpose(1, 2)
        v = self.v(h).flatten(2).transpose(1, 2)
        # $A = \operatorname{softmax}(Q K^\top / \sqrt{C})$, one row per query position
        A = torch.softmax(q @ k.transpose(1, 2) * C ** -0.5, dim=-1)
        out = (A @ v).transpose(1, 2).reshape(B, C, H, W)
        return x + self.proj_out(out)


# Downsampling by 2 is a $3 \times 3$ convolution with stride 2. The architecture comes
# from the TensorFlow code of DDPM, whose "SAME" padding for this convolution adds one
# row and one column of zeros on the bottom and right only; PyTorch's `padding` is
# symmetric, so the official port pads by hand and convolves without padding:
# $H \to (H + 1 - 3)/2 + 1 = H/2$, and output row $i$ reads input rows $2i$ to $2i + 2$
# (with symmetric padding it would read $2i - 1$ to $2i + 1$).
class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # `F.pad` lists (left, right, top, bottom) for the last two dimensions
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


# Upsampling by 2 repeats every pixel (nearest neighbour) and then smooths with a
# $3 \times 3$ convolution — no transposed convolution, so no checkerboard artefacts.
class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# One resolution level of the encoder or the decoder: a list of residual blocks, one
# attention block after each of them if this resolution is listed in
# `attn_resolutions`, and the resampling step (absent on the last level). The attribute
# names follow the official state dict (`down.0.block.1.conv2.weight`, ...), so that a
# released checkpoint's encoder and decoder weights load without renaming.
class Level(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, attention: bool,
                 dropout: float):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        for i in range(num_blocks):
            self.block.append(ResnetBlock(in_channels if i == 0 else out_channels,
                                          out_channels, dropout))
            if attention:
                self.attn.append(AttnBlock(out_channels))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        return h


# The middle of both networks, at the lowest resolution: block, attention, block.
class Middle(nn.Module):
    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


# ## The encoder
#
# `conv_in` lifts the image to `ch` channels. Level $i$ has width
# $\texttt{ch} \cdot m_i$ for the multipliers $m$ (`ch_mult`), holds `num_res_blocks`
# residual blocks, and halves the resolution except on the last level, so
# $f = 2^{\,\texttt{len(ch\_mult)} - 1}$. Then the middle, a final norm and swish, and
# `conv_out` to `z_channels`. For the ImageNet configuration,
# $m = (1, 1, 2, 2, 4)$ gives widths 128, 128, 256, 256, 512 at resolutions 256, 128,
# 64, 32, 16, and $f = 16$.
class Encoder(nn.Module):
    def __init__(self, *, in_channels: int, ch: int, ch_mult: tuple[int, ...],
                 num_res_blocks: int, attn_resolutions: tuple[int, ...], resolution: int,
                 z_channels: int, dropout: float = 0.0):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        res, c_in = resolution, ch
        for i, m in enumerate(ch_mult):
            c_out = ch * m
            level = Level(c_in, c_out, num_res_blocks, res in attn_resolutions, dropout)
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(c_out)
                res //= 2
            self.down.append(level)
            c_in = c_out
        self.mid = Middle(c_in, dropout)
        self.norm_out = normalize(c_in)
        self.conv_out = nn.Conv2d(c_in, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


# ## The decoder
#
# The mirror image, with one more residual block per level (`num_res_blocks + 1`: 3 in
# the paper's configuration, against the encoder's 2), nearest-neighbour upsampling, and
# no output non-linearity: $\hat x$ is the raw output of `conv_out`, compared with
# $x \in [-1, 1]$ by the losses. Like the official code we keep `up[i]` indexed by the
# same level $i$ as `down[i]` and walk the list backwards.
class Decoder(nn.Module):
    def __init__(self, *, out_channels: int, ch: int, ch_mult: tuple[int, ...],
                 num_res_blocks: int, attn_resolutions: tuple[int, ...], resolution: int,
                 z_channels: int, dropout: float = 0.0):
        super().__init__()
        c_in = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, c_in, 3, padding=1)
        self.mid = Middle(c_in, dropout)
        up = []
        for i in reversed(range(len(ch_mult))):
            c_out = ch * ch_mult[i]
            level = Level(c_in, c_out, num_res_blocks + 1, res in attn_resolutions, dropout)
            if i != 0:
                level.upsample = Upsample(c_out)
                res *= 2
            up.insert(0, level)
            c_in = c_out
        self.up = nn.ModuleList(up)
        self.norm_out = normalize(c_in)
        self.conv_out = nn.Conv2d(c_in, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


# ## Configurations
#
# `paper` is the ImageNet $f = 16$ model of the official `imagenet_vqgan.yaml`
# (encoder 29,298,176 parameters, decoder 42,449,795, codebook and the two $1 \times 1$
# convolutions 393,728). `tiny` is the same architecture shrunk to run on a laptop CPU:
# $32^2$ images, $f = 4$ (an $8 \times 8$ grid of 64 codes), widths 32 and 64,
# one residual block per encoder level (two per decoder level), attention at the
# $8 \times 8$ level, $K = 128$ codes of length 64; 1.09M parameters. (At width 32 each of
# the 32 GroupNorm groups holds a single channel.)
@dataclass
class VQGANConfig:
    resolution: int = 32
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 32
    ch_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = (8,)
    z_channels: int = 64
    embed_dim: int = 64
    num_codes: int = 128
    beta: float = 0.25
    legacy: bool = False
    dropout: float = 0.0
    restart_every: int = 0  # dead-code restarts (not in the official code; 0 = never)

    @property
    def f(self) -> int:
        r"""The downsampling factor $f$."""
        return 2 ** (len(self.ch_mult) - 1)


PRESETS: dict[str, VQGANConfig] = {
    "tiny": VQGANConfig(),
    "paper": VQGANConfig(resolution=256, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
                         attn_resolutions=(16,), z_channels=256, embed_dim=256,
                         num_codes=1024),
}


# ## The model
#
# Between encoder and codebook sits a $1 \times 1$ convolution `quant_conv`
# (`z_channels` $\to$ `embed_dim`), and `post_quant_conv` maps back before the decoder:
#
# $$z_e = W_q\,E(x), \qquad z_q = \operatorname{VQ}(z_e), \qquad \hat x = G(W_p\, z_q).$$
#
# Against VQ-VAE's model class: the encoder and decoder are the new networks above, the
# quantiser is [[#VQGANQuantizer]] (and is called `quantize`, as in the official state
# dict, where VQ-VAE says `vq`), and the two projections are new. `encode` returns what
# the quantiser returns, as in the official code; `encode_indices` gives just the code
# grid, for training the transformer.
#
# `last_layer` is the weight of the decoder's final convolution: the losses measure the
# gradients of the reconstruction and adversarial terms there to balance them
# ([[losses.py#adaptive_weight]]).
class VQGAN(nn.Module):
    r"""Encoder $E$, quantiser, decoder $G$.

    `forward(x)` returns $(\hat x, \mathcal{L}_{VQ}, \text{indices})$ with $x$ of shape
    $(B, 3, H, W)$ in $[-1, 1]$ and indices of shape $(B, H/f, W/f)$.
    """

    def __init__(self, config: VQGANConfig | None = None):
        super().__init__()
        c = self.config = config or VQGANConfig()
        arch = dict(ch=c.ch, ch_mult=tuple(c.ch_mult), num_res_blocks=c.num_res_blocks,
                    attn_resolutions=tuple(c.attn_resolutions), resolution=c.resolution,
                    z_channels=c.z_channels, dropout=c.dropout)
        self.encoder = Encoder(in_channels=c.in_channels, **arch)  # [!code hl]
        self.decoder = Decoder(out_channels=c.out_channels, **arch)  # [!code hl]
        self.quant_conv = nn.Conv2d(c.z_channels, c.embed_dim, 1)  # [!code ++]
        self.post_quant_conv = nn.Conv2d(c.embed_dim, c.z_channels, 1)  # [!code ++]
        self.quantize = VQGANQuantizer(c.num_codes, c.embed_dim, c.beta, c.legacy,  # [!code hl]
                                       restart_every=c.restart_every)

    # $x \mapsto (z_q, \mathcal{L}_{VQ}, \text{indices})$
    def encode(self, x: torch.Tensor):
        z_e = self.quant_conv(self.encoder(x))  # [!code hl]
        return self.quantize(z_e)

    # $z_q \mapsto \hat x$
    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z_q))  # [!code hl]

    # For the transformer: images to a grid of code indices $(B, h, w)$ ...
    @torch.no_grad()
    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[2]

    # ... and a grid of code indices straight to an image.
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        z_q = self.quantize.codebook[indices].permute(0, 3, 1, 2)
        return self.decode(z_q)

    def forward(self, x: torch.Tensor):
        z_q, codebook_loss, indices = self.encode(x)
        return self.decode(z_q), codebook_loss, indices

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight

    @property
    def latent_size(self) -> int:
        r"""$h = w = H / f$, the side of the code grid."""
        return self.config.resolution // self.config.f


# `build_vqgan("paper")`, or `build_vqgan(num_codes=256)` for the tiny model with one
# setting changed, or `build_vqgan(in_channels=1)` for greyscale digits.
def build_vqgan(preset: str = "tiny", in_channels: int | None = None, **overrides) -> VQGAN:
    r"""A VQGAN from a named preset; `in_channels` sets the input and output channels."""
    if preset not in PRESETS:
        raise ValueError(f"unknown VQGAN preset {preset!r}; choose one of {sorted(PRESETS)}")
    if in_channels is not None:
        overrides = {"in_channels": in_channels, "out_channels": in_channels, **overrides}
    return VQGAN(VQGANConfig(**{**asdict(PRESETS[preset]), **overrides}))


# ## Run this file
#
# `python -m annogen.vqgan.model` builds the tiny VQGAN, codes four shapes, and checks
# that decoding the code indices gives exactly the reconstruction of the forward pass
# (the indices are all the decoder needs), then counts the paper model on PyTorch's
# `meta` device, where tensors have shapes and no memory.
if __name__ == "__main__":
    from annogen.data import Shapes

    torch.manual_seed(0)
    model = build_vqgan("tiny").eval()
    x = torch.stack([Shapes(n=4)[i]["image"] for i in range(4)])
    with torch.no_grad():
        x_hat, codebook_loss, k = model(x)
        again = model.decode_indices(k)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"tiny VQGAN: {count(model):,} parameters, f = {model.config.f}, "
          f"K = {model.config.num_codes}")
    print(f"x {tuple(x.shape)} -> codes {tuple(k.shape)} -> x_hat {tuple(x_hat.shape)}")
    assert torch.allclose(again, x_hat, atol=1e-5), "decoding the indices differs"
    print("checked: decode_indices(codes) reproduces the forward pass's reconstruction")
    with torch.device("meta"):
        paper = build_vqgan("paper")
    print(f"paper VQGAN (ImageNet, f = {paper.config.f}, K = {paper.config.num_codes}): "
          f"{count(paper):,} parameters")
