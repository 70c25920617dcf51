r"""
---
title: Sana, the model
summary: The Linear DiT of Sana (Xie et al. 2024) as the change from DiT - ReLU linear attention with the padded-V trick, Mix-FFN with a 3x3 depthwise convolution and no positional embedding, adaLN-single, cross-attention to text tokens with a key mask, the caption projection with its RMSNorm at 0.01 - with the 0.6B and 1.6B presets checked by parameter count.
---

# Sana: the model

[Xie et al. (2024)](https://arxiv.org/abs/2410.10629), *Sana: Efficient High-Resolution
Image Synthesis with Linear Diffusion Transformers*, keep DiT's recipe (tokens from a
latent image, transformer blocks steered by the timestep, a final layer back to the
latent) and change four things, each to make large images cheap:

1. **Linear attention** in place of softmax self-attention: $O(N)$ instead of $O(N^2)$
   in the number of tokens $N$ ([[#linear-attention]]).
2. **Mix-FFN**: the MLP gets a $3 \times 3$ depthwise convolution, which also tells each
   token where its neighbours are, so there is **no positional embedding** at all
   ([[#mix-ffn]]).
3. **adaLN-single**: one timestep MLP for the whole network, plus a small learned table
   per block, instead of DiT's adaLN MLP in every block ([[#adaln-single]]).
4. **Text**: cross-attention to the hidden states of a language model, after a caption
   projection and an RMSNorm whose weight starts at 0.01 ([[#the-caption]]).

The latent comes from a deep-compression autoencoder ([[dcae.py]]) that shrinks each side
32 times (not 8), so with patch size 1 a $1024^2$ image is $32 \times 32 = 1024$ tokens.

The page is written as the change from DiT ([[dit/model.py]]): what DiT has and Sana drops
is shown in red, what Sana adds in green, lines it changes highlighted. The pieces Sana
keeps unchanged (the timestep embedding, patchify, unpatchify) are imported from the DiT
chapter. Names, shapes, defaults and initialisation follow the official code
(NVlabs/Sana, `diffusion/model/nets/sana.py` and `sana_blocks.py`); the parameter counts
of Sana-0.6B and Sana-1.6B match it exactly (the tests check them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# What Sana keeps from DiT, as it is: the sinusoidal timestep embedding with its MLP,
# the patch embedding (a convolution with kernel and stride $p$; here $p = 1$, a
# $1 \times 1$ convolution) and its inverse.
from annogen.dit.model import PatchEmbed, TimestepEmbedder, count_parameters, unpatchify


# ## Linear attention
#
# Softmax attention computes, for every query $i$, weights over all $N$ keys:
# $O_i = \sum_j \frac{\exp(q_i \cdot k_j / \sqrt d)}{\sum_{j'} \exp(q_i \cdot k_{j'}/\sqrt d)} v_j$,
# which costs $N^2$ dot products. Replace the similarity $\exp(q \cdot k)$ by a product of
# features, $\phi(q)^\top \phi(k)$ with $\phi = \operatorname{ReLU}$
# ([Katharopoulos et al. (2020)](https://arxiv.org/abs/2006.16236); the EfficientViT
# form of [Cai et al. (2023)](https://arxiv.org/abs/2205.14756)), and the sum over $j$
# can be taken *before* the query enters:
#
# $$O_i = \frac{\sum_j \operatorname{ReLU}(q_i)^\top \operatorname{ReLU}(k_j)\, v_j}{\sum_j \operatorname{ReLU}(q_i)^\top \operatorname{ReLU}(k_j)} = \frac{\operatorname{ReLU}(q_i)^\top \Big(\sum_j \operatorname{ReLU}(k_j)\, v_j^\top\Big)}{\operatorname{ReLU}(q_i)^\top \Big(\sum_j \operatorname{ReLU}(k_j)\Big)}.$$
#
# The $d \times d$ matrix $\sum_j \operatorname{ReLU}(k_j) v_j^\top$ and the $d$-vector
# $\sum_j \operatorname{ReLU}(k_j)$ are computed once, in $O(N d^2)$; each query then costs
# $O(d^2)$. The whole thing is linear in $N$.
#
# **The padded-V trick.** Numerator and denominator are the same product with different
# right-hand sides: append a constant 1 to every value vector, $\tilde v_j = [v_j; 1]$,
# and one matrix product gives both; the last output column is the denominator. Then
# divide, with $\epsilon = 10^{-8}$ (the value Sana's block passes; the `LiteLA` class's
# own default is $10^{-15}$). The division runs in float32 even under mixed precision:
# sums over thousands of tokens overflow half precision, and Sana's configs set
# `use_fp32_attention` for the same reason.
#
# Our tensors are (B, heads, N, d). The official code keeps them as (B, heads, d, N) and
# pads $v$ along $d$; the arithmetic is the same.
def linear_attention(q: Tensor, k: Tensor, v: Tensor, eps: float = 1e-8) -> Tensor:
    r"""ReLU linear attention on (B, heads, N, d) tensors; returns (B, heads, N, d)."""
    dtype = q.dtype
    q, k, v = F.relu(q).float(), F.relu(k).float(), v.float()
    v = F.pad(v, (0, 1), value=1.0)             # [v_j; 1]: (B, h, N, d + 1)
    kv = k.transpose(-1, -2) @ v                # sum_j ReLU(k_j) [v_j; 1]^T: (B, h, d, d + 1)
    out = q @ kv                                # (B, h, N, d + 1)
    return (out[..., :-1] / (out[..., -1:] + eps)).to(dtype)


# The module around it (`LiteLA` in the official code): one $C \to 3C$ projection for
# queries, keys and values **without bias**, heads of dimension $d = 32$ (so $C/32$ heads:
# 36 for Sana-0.6B, 70 for 1.6B), and an output projection with bias. Head $h$ takes
# channels $32h$ to $32h + 31$, as in the official reshape.
class LinearAttention(nn.Module):
    def __init__(self, dim: int, head_dim: int = 32, eps: float = 1e-8):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"width {dim} is not a multiple of the head dim {head_dim}")
        self.heads, self.head_dim, self.eps = dim // head_dim, head_dim, eps
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = linear_attention(q, k, v, self.eps)          # (B, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


# ## Mix-FFN
#
# DiT's MLP treats every token alone. Sana's (`GLUMBConv`, from EfficientViT) works on
# the tokens laid back out as an $H \times W$ image:
#
# $$\mathrm{FFN}(x) = W_3 \Big( a \odot \operatorname{SiLU}(g) \Big), \qquad [a; g] = \mathrm{DWConv}_{3\times3}\big(\operatorname{SiLU}(W_1 x)\big),$$
#
# a $1 \times 1$ convolution $C \to 2H'$ (with bias), SiLU, a $3 \times 3$ depthwise
# convolution on all $2H'$ channels (with bias), a split into a value half $a$ and a gate
# half $g$ (a GLU), and a $1 \times 1$ convolution $H' \to C$ without bias. $H' = 2.5\,C$.
#
# The depthwise convolution mixes each token with its 8 neighbours: that is local
# information, which linear attention is weak at (its ReLU kernel spreads attention
# thinly), and it is **position**: zero padding at the border tells a token where the
# edge is, and the convolution tells it who its neighbours are. Sana drops the positional
# embedding entirely ("NoPE") and finds no loss of quality; the tests check that this
# convolution is the only place where the order of tokens matters.
class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.inverted_conv = nn.Conv2d(dim, 2 * hidden, 1)
        self.depth_conv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.point_conv = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: Tensor, HW: tuple[int, int]) -> Tensor:
        B, N, C = x.shape
        H, W = HW
        x = x.transpose(1, 2).reshape(B, C, H, W)
        x = self.depth_conv(F.silu(self.inverted_conv(x)))
        a, g = x.chunk(2, dim=1)
        x = self.point_conv(a * F.silu(g))
        return x.flatten(2).transpose(1, 2)


# ## Cross-attention to the text
#
# The image tokens (queries) read the text tokens (keys and values): ordinary softmax
# multi-head attention, with bias everywhere (`MultiHeadCrossAttention`, from
# PixArt-$\alpha$). Captions have different lengths; they are padded, and a key mask
# keeps queries off the padding. The text has a few hundred tokens at most, so this
# softmax costs $O(N L)$, linear in the image tokens too. (The official code packs
# the unpadded captions with xFormers, or without it adds $-10^4$ to masked logits; a
# boolean mask, $-\infty$, is the same as long as every caption keeps at least one
# token, which the BOS token guarantees.)
class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
        B, N, C = x.shape
        h = self.num_heads
        q = self.q_linear(x).reshape(B, N, h, C // h).transpose(1, 2)
        k, v = self.kv_linear(y).reshape(B, -1, 2, h, C // h).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask.bool()[:, None, None, :]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


# ## adaLN-single
#
# DiT's block turns the condition $c$ into its six modulation vectors with its own
# linear layer $C \to 6C$: at width 1152 that is 8M parameters per block, a quarter of
# the block. PixArt-$\alpha$'s **adaLN-single**, which Sana keeps, computes $6C$ numbers
# **once** from the timestep embedding, $\bar t = W(\operatorname{SiLU}(\mathrm{emb}(t)))$
# (`t_block`), and gives each block only a learned table $E$ of shape $6 \times C$
# (initialised $\mathcal{N}(0, 1/C)$) that it adds:
#
# $$[\beta_1, \gamma_1, \alpha_1, \beta_2, \gamma_2, \alpha_2] = E + \bar t.$$
#
# Then the block is DiT's, with cross-attention in the middle (not modulated, not gated):
#
# $$x \leftarrow x + \alpha_1 \odot \mathrm{LinAttn}\big((1 + \gamma_1) \odot \mathrm{LN}(x) + \beta_1\big), \quad x \leftarrow x + \mathrm{CrossAttn}(x, y), \quad x \leftarrow x + \alpha_2 \odot \mathrm{MixFFN}\big((1 + \gamma_2) \odot \mathrm{LN}(x) + \beta_2\big).$$
#
# The text goes only through cross-attention; unlike DiT's label, it is not added to the
# timestep. Sana also does not zero the gates at initialisation: the table is random, so
# a block does not start as the identity.
def t2i_modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class SanaBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 2.5,
                 head_dim: int = 32, eps: float = 1e-8):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        # ===ADD===
        # DiT's `Attention`, `Mlp` and per-block `adaLN_modulation` are gone; in their
        # place:
        self.attn = LinearAttention(hidden_size, head_dim, eps)
        self.cross_attn = CrossAttention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = MixFFN(hidden_size, int(hidden_size * mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size ** 0.5)

    # `t` is the shared $\bar t$ of shape (B, 6C); `HW` the token grid.
    def forward(self, x: Tensor, y: Tensor, t: Tensor, mask: Tensor | None,
                HW: tuple[int, int]) -> Tensor:
        B, N, C = x.shape
        beta_1, gamma_1, alpha_1, beta_2, gamma_2, alpha_2 = \
            (self.scale_shift_table[None] + t.reshape(B, 6, C)).chunk(6, dim=1)  # [!code hl]
        x = x + alpha_1 * self.attn(t2i_modulate(self.norm1(x), beta_1, gamma_1))
        x = x + self.cross_attn(x, y, mask)  # [!code ++]
        x = x + alpha_2 * self.mlp(t2i_modulate(self.norm2(x), beta_2, gamma_2), HW)  # [!code hl]
        return x


# ## The caption
#
# Sana's text encoder is a decoder-only LLM, Gemma-2-2B-IT, whose last hidden states
# (2304 numbers per token) are the text tokens; the paper prepends a long "complex human
# instruction" to each prompt and keeps the BOS token plus the last 299 tokens. The
# projection into the transformer's width is PixArt's `CaptionEmbedder`: an MLP
# $2304 \to C \to C$ with tanh-GELU. Sana then adds one thing: an **RMSNorm** of the
# projected tokens,
#
# $$y \leftarrow w \odot \frac{y}{\sqrt{\tfrac{1}{C}\sum_c y_c^2 + \epsilon}}, \qquad w = 0.01 \text{ at initialisation},$$
#
# because the LLM's hidden states have a far larger and more varied scale than T5's,
# which made training unstable; starting the learned scale at 0.01 also makes the text
# a gentle input at first (the tests check the RMS of 0.01).
#
# Caption dropout (10%, for guidance) replaces the caption by a stored "null caption"
# `y_embedding`, registered as a buffer. In this course the text encoder is ours
# ([[text.py]]) and the experiment drops captions itself, to the encoding of the empty
# caption, which sampling then uses as the null condition; the `tiny` preset sets the
# model's own dropout to 0.
class RMSNorm(nn.Module):
    def __init__(self, dim: int, scale_factor: float = 1.0, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim) * scale_factor)

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) \
            * self.weight


class CaptionEmbedder(nn.Module):
    def __init__(self, in_channels: int, hidden_size: int, uncond_prob: float, token_num: int):
        super().__init__()
        self.y_proj = nn.Sequential()
        self.y_proj.fc1 = nn.Linear(in_channels, hidden_size)
        self.y_proj.act = nn.GELU(approximate="tanh")
        self.y_proj.fc2 = nn.Linear(hidden_size, hidden_size)
        self.register_buffer("y_embedding", torch.randn(token_num, in_channels) / in_channels ** 0.5)
        self.uncond_prob = uncond_prob

    def forward(self, y: Tensor, train: bool) -> Tensor:
        if train and self.uncond_prob > 0:
            drop = torch.rand(len(y), device=y.device) < self.uncond_prob
            null = self.y_embedding[: y.shape[1]].to(y.dtype)
            y = torch.where(drop[:, None, None], null[None], y)
        return self.y_proj(y)


# ## The final layer
#
# DiT's final layer with adaLN-single: a learned $2 \times C$ table plus the timestep
# embedding (not $\bar t$) gives the shift and scale; then a linear map to each token's
# $p \times p \times c$ output values.
class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size ** 0.5)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)
        return self.linear(t2i_modulate(self.norm_final(x), shift, scale))


# ## The configuration
#
# The defaults are Sana-0.6B at $1024^2$ (`SanaMS_600M_P1_D28` with
# `Sana_600M_img1024.yaml`): a $32 \times 32 \times 32$ DC-AE latent, patch 1, 28 blocks
# of width 1152, 16 cross-attention heads, Mix-FFN ratio 2.5, Gemma-2's 2304-wide text
# tokens, at most 300 of them. No learned variance: the output is a velocity with the
# latent's 32 channels.
@dataclass
class SanaConfig:
    input_size: int = 32            # latent side h = w
    patch_size: int = 1
    in_channels: int = 32           # latent channels c
    hidden_size: int = 1152         # C
    depth: int = 28
    num_heads: int = 16             # cross-attention heads
    mlp_ratio: float = 2.5
    linear_head_dim: int = 32       # d of the linear attention
    caption_channels: int = 2304    # width of the text encoder's hidden states
    model_max_length: int = 300     # text tokens
    class_dropout_prob: float = 0.1
    y_norm_scale_factor: float = 0.01
    attn_eps: float = 1e-8


# ## The whole model
#
# $$v_\theta(x_t, t, \text{text}) = \mathrm{unpatchify}\Big(\mathrm{Final}\big(\mathrm{Block}_D(\cdots \mathrm{Block}_1(\mathrm{Patch}(x_t),\ y,\ \bar t) \cdots),\ \mathrm{emb}(t)\big)\Big), \quad y = \mathrm{RMSNorm}(\mathrm{MLP}(\text{text})).$$
class Sana(nn.Module):
    def __init__(self, config: SanaConfig | None = None, **overrides):
        super().__init__()
        c = self.config = replace(config or SanaConfig(), **overrides)
        if c.hidden_size % c.num_heads or c.hidden_size % c.linear_head_dim:
            raise ValueError(f"hidden_size {c.hidden_size} must be a multiple of num_heads "
                             f"{c.num_heads} and of linear_head_dim {c.linear_head_dim}")
        self.in_channels = self.out_channels = c.in_channels
        self.patch_size = c.patch_size
        self.x_embedder = PatchEmbed(c.patch_size, c.in_channels, c.hidden_size)
        self.t_embedder = TimestepEmbedder(c.hidden_size)
        # ===ADD===
        # DiT's `LabelEmbedder` and its fixed `pos_embed` are gone (the official code
        # keeps a zero `pos_embed` buffer that `use_pe=False` never reads); in their place
        # the shared `t_block`, the caption projection and its norm:
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(c.hidden_size, 6 * c.hidden_size))
        self.y_embedder = CaptionEmbedder(c.caption_channels, c.hidden_size,
                                          c.class_dropout_prob, c.model_max_length)
        self.attention_y_norm = RMSNorm(c.hidden_size, scale_factor=c.y_norm_scale_factor)
        # The blocks, and DiT's final layer with a table in place of its adaLN MLP.
        self.blocks = nn.ModuleList([SanaBlock(c.hidden_size, c.num_heads, c.mlp_ratio,  # [!code hl]
                                               c.linear_head_dim, c.attn_eps)  # [!code hl]
                                     for _ in range(c.depth)])  # [!code hl]
        self.final_layer = FinalLayer(c.hidden_size, c.patch_size, self.out_channels)
        self.initialize_weights()

    # The official initialisation: Xavier-uniform linear layers with zero bias, the patch
    # projection like a linear layer, $\mathcal{N}(0, 0.02^2)$ for the timestep MLP,
    # `t_block` and the caption MLP. Unlike DiT's, **nothing is zeroed**: the final
    # layer and the gates start random.
    def initialize_weights(self) -> None:
        if self.t_block[1].weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.normal_(self.t_block[1].weight, std=0.02)
        nn.init.normal_(self.y_embedder.y_proj.fc1.weight, std=0.02)
        nn.init.normal_(self.y_embedder.y_proj.fc2.weight, std=0.02)

    # The text tokens after the projection and the norm: (B, L, C).
    def embed_text(self, text: Tensor) -> Tensor:
        return self.attention_y_norm(self.y_embedder(text, self.training))

    def forward(self, x: Tensor, t: Tensor, text: Tensor, text_mask: Tensor | None = None) -> Tensor:
        r"""`x` (B, c, H, W) noisy latent, `t` (B,) timesteps in $[0, 1000]$, `text`
        (B, L, caption_channels) text-encoder states, `text_mask` (B, L) with 1 for real
        tokens; returns the velocity, shaped like `x`. Any $H, W$ works: nothing depends on
        the grid size."""
        B, _, H, W = x.shape
        p = self.patch_size
        HW = (H // p, W // p)
        tokens = self.x_embedder(x)                  # no "+ self.pos_embed"  # [!code hl]
        t_emb = self.t_embedder(t)
        t0 = self.t_block(t_emb)                     # [!code ++]
        y = self.embed_text(text)                    # [!code ++]
        for block in self.blocks:
            tokens = block(tokens, y, t0, text_mask, HW)  # [!code hl]
        out = self.final_layer(tokens, t_emb)
        return unpatchify_hw(out, self.out_channels, p, HW)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "Sana":
        r"""`Sana.from_preset("0.6B")`, `("1.6B")` or `("tiny")`; `overrides` change any field."""
        if name not in PRESETS:
            raise ValueError(f"unknown Sana preset {name!r}; choose from {', '.join(PRESETS)}")
        return cls(SanaConfig(**{**PRESETS[name], **overrides}))


# DiT's `unpatchify` assumes a square grid; with no positional embedding a Sana model
# can run on any $H \times W$, so we pass the grid.
def unpatchify_hw(x: Tensor, c: int, p: int, HW: tuple[int, int]) -> Tensor:
    if HW[0] == HW[1]:
        return unpatchify(x, c, p)
    N = x.shape[0]
    h, w = HW
    x = x.reshape(N, h, w, p, p, c)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(N, c, h * p, w * p)


# ## The presets
#
# The paper's two sizes and the course's CPU model. Their exact parameter counts (the
# official `SanaMS_600M_P1_D28` / `SanaMS_1600M_P1_D20` count the same):
#
# | model | width | depth | FFN | linear heads | cross heads | one block | all |
# |---|---|---|---|---|---|---|---|
# | Sana-0.6B | 1152 | 28 | 2880 | 36 | 16 | 20,646,144 | 591,747,872 |
# | Sana-1.6B | 2240 | 20 | 5600 | 70 | 20 | 77,920,640 | 1,604,462,752 |
#
# One block is $8C^2 + 11C + 3mC + 22m$ with $m = 2.5C$; the caption MLP is 3,983,616
# (0.6B) and 10,183,040 (1.6B) of the total. `tiny` denoises the $4 \times 4 \times 16$
# latent of the course's DC-AE ([[dcae.py#the-presets]]) with 4 blocks of width 128 and
# reads the 128-wide states of the course's text encoder ([[text.py]]), 24 tokens at most.
PRESETS = {
    "0.6B": dict(hidden_size=1152, depth=28, num_heads=16),
    "1.6B": dict(hidden_size=2240, depth=20, num_heads=20),
    "tiny": dict(input_size=4, in_channels=16, hidden_size=128, depth=4, num_heads=4,
                 caption_channels=128, model_max_length=24, class_dropout_prob=0.0),
}


def demo() -> None:
    torch.manual_seed(0)
    model = Sana.from_preset("tiny").eval()
    x = torch.randn(2, 16, 4, 4)
    text, mask = torch.randn(2, 7, 128), torch.tensor([[1] * 7, [1] * 3 + [0] * 4])
    v = model(x, torch.tensor([500.0, 20.0]), text, mask)
    print(f"tiny Sana: {count_parameters(model):,} parameters; x {tuple(x.shape)} -> v {tuple(v.shape)}")
    q, k, vv = torch.randn(3, 1, 2, 50, 32).unbind(0)
    naive = (F.relu(q) @ F.relu(k).transpose(-1, -2))
    naive = (naive @ vv) / (naive.sum(-1, keepdim=True) + 1e-8)
    print(f"linear attention vs the naive O(N^2) formula: max error "
          f"{(linear_attention(q, k, vv) - naive).abs().max():.2e}")
    with torch.device("meta"):
        for name in ("0.6B", "1.6B"):
            print(f"Sana-{name}: {count_parameters(Sana.from_preset(name)):,} parameters")


if __name__ == "__main__":
    demo()
