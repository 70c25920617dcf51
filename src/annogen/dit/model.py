r"""
---
title: DiT, the model
summary: The Diffusion Transformer of Peebles and Xie (2023) - patchify, fixed 2-D sin-cos positions, timestep and label embeddings, adaLN-Zero blocks, the final layer and the learned variance - with the S, B, L, XL presets checked by parameter count.
---

# DiT: the model

William Peebles and Saining Xie, *Scalable Diffusion Models with Transformers* (ICCV
2023), replace the U-Net of latent diffusion with a plain Vision Transformer. The image
(in the paper a $32 \times 32 \times 4$ latent of Stable Diffusion's autoencoder) is cut
into $p \times p$ patches, each patch becomes a token, a stack of transformer blocks
processes the tokens, and a linear layer turns each token back into a patch of the
prediction. What is specific to diffusion is how the blocks hear the timestep $t$ and
the class $y$: by **adaLN-Zero**, a layer norm whose scale and shift are computed from
$t$ and $y$, plus a gate that starts at zero so that every block starts as the identity.

The file follows the official `models.py` (facebookresearch/DiT) in names, shapes,
defaults and initialisation; the parameter counts of the four sizes match it exactly
(the tests check them). In reading order: [[#patchify]], [[#positions]],
[[#the-timestep]], [[#the-label]], [[#adaln-zero]], [[#the-final-layer]],
[[#the-whole-model]], [[#the-presets]].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# ## The configuration
#
# The defaults are DiT-XL/2 as trained in the paper: $256^2$ ImageNet images encoded to
# $32 \times 32 \times 4$ latents, patch size 2 (so $16^2 = 256$ tokens), 1000 classes,
# and the learned variance, which doubles the output channels.
@dataclass
class DiTConfig:
    input_size: int = 32          # H = W of the input (latent) image
    patch_size: int = 2           # p
    in_channels: int = 4          # C_in
    hidden_size: int = 1152       # width C of every token
    depth: int = 28               # number of DiT blocks
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    num_classes: int = 1000       # plus one "null" class for classifier-free guidance
    learn_sigma: bool = True      # output 2 C_in channels: the noise and the variance

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch_size) ** 2


# ## Patchify
#
# A convolution with kernel size and stride $p$ cuts the $H \times W$ image into
# non-overlapping $p \times p$ patches and maps each (all $C_{in}$ channels of it)
# linearly to a $C$-dimensional token: $T = (H/p)(W/p)$ tokens, in reading order.
# This is timm's `PatchEmbed`, which the official code uses. Halving $p$ quadruples $T$
# and, as the paper shows, the compute (Gflops) and the quality with it, at the same
# number of parameters.
class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, C, h, w) -> (N, T, C)


# The inverse, for the output: token $i$ of the grid $h \times w$ carries a
# $p \times p \times c$ patch; put every patch back in its place.
def unpatchify(x: Tensor, c: int, p: int) -> Tensor:
    r"""(N, T, p * p * c) tokens to (N, c, H, W) images, $H = W = p\sqrt{T}$."""
    N, T, _ = x.shape
    h = w = int(round(math.sqrt(T)))
    x = x.reshape(N, h, w, p, p, c)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(N, c, h * p, w * p)


# And its exact inverse, which the tests use: an image to the token layout that
# `unpatchify` expects.
def patchify(x: Tensor, p: int) -> Tensor:
    N, c, H, W = x.shape
    x = x.reshape(N, c, H // p, p, W // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(N, (H // p) * (W // p), p * p * c)


# ## Positions
#
# The tokens get fixed, not learned, 2-D sine-cosine positions (as in MAE). Half of the
# $C$ channels encode one coordinate of the patch, half the other; each half is the 1-D
# encoding of the Transformer paper with $D = C/2$ channels,
#
# $$\mathrm{PE}(m) = \big[\sin(m\,\omega_0), \dots, \sin(m\,\omega_{D/2-1}),\ \cos(m\,\omega_0), \dots, \cos(m\,\omega_{D/2-1})\big], \qquad \omega_k = 10000^{-2k/D}.$$
#
# A detail of the official code (from MAE): its grid comes from `np.meshgrid(w, h)`,
# so the half it calls `emb_h`, the first, encodes the *column* $j$, and the second
# half the row $i$. We build the same table, column first. It is stored as a parameter
# with `requires_grad=False`, as in the official code, which is why the paper's "all
# parameters" counts include it.
def sincos_1d(D: int, pos: Tensor) -> Tensor:
    omega = 1.0 / 10000 ** (torch.arange(D // 2, dtype=torch.float64) / (D / 2.0))
    out = pos.to(torch.float64)[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(C: int, grid_size: int) -> Tensor:
    r"""The (grid_size$^2$, C) table; token $t = i \cdot$ grid_size $+ j$ is at row $i$, column $j$."""
    i, j = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    emb_col = sincos_1d(C // 2, j.reshape(-1))
    emb_row = sincos_1d(C // 2, i.reshape(-1))
    return torch.cat([emb_col, emb_row], dim=1).float()


# ## The timestep
#
# The timestep $t$ (a number in $[0, 1000)$; fractional values are fine) first becomes a
# 256-dimensional sinusoid, with frequencies from 1 down to $1/10000$,
#
# $$\mathrm{emb}(t) = \big[\cos(t f_0), \dots, \cos(t f_{127}),\ \sin(t f_0), \dots, \sin(t f_{127})\big], \qquad f_k = 10000^{-k/128},$$
#
# (cosines first here, unlike the positions) and then passes through an MLP
# $256 \to C \to C$ with a SiLU between.
class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size))

    @staticmethod
    def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
        half = dim // 2
        f = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                             device=t.device) / half)
        args = t.float()[:, None] * f[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: Tensor) -> Tensor:
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))


# ## The label
#
# One learned $C$-vector per class, and one more, row `num_classes`, for "no class".
# During training each label is replaced by the null class with probability 0.1, so the
# same network also learns the unconditional model that classifier-free guidance needs
# ([[flow/flow.py#classifier-free-guidance]]): 1001 rows for ImageNet.
class LabelEmbedder(nn.Module):
    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + (dropout_prob > 0), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: Tensor, force_drop_ids: Tensor | None = None) -> Tensor:
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def forward(self, labels: Tensor, train: bool, force_drop_ids: Tensor | None = None) -> Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


# ## Attention and MLP
#
# The two sublayers of a ViT block, as timm writes them: multi-head self-attention with
# one $C \to 3C$ projection for queries, keys and values (with bias) and an output
# projection; an MLP $C \to 4C \to C$ with the tanh approximation of GELU.
class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        N, T, C = x.shape
        q, k, v = self.qkv(x).reshape(N, T, 3, self.num_heads, C // self.num_heads) \
            .permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return self.proj(x.transpose(1, 2).reshape(N, T, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


# ## adaLN-Zero
#
# The conditioning vector $c = \mathrm{emb}(t) + \mathrm{emb}(y)$ steers every block
# through its layer norms. A linear layer (after a SiLU) maps $c$ to six $C$-vectors:
# a shift $\beta$, a scale $\gamma$ and a gate $\alpha$ for each of the two sublayers,
#
# $$x \leftarrow x + \alpha_1 \odot \mathrm{Attn}\big(\mathrm{LN}(x) \odot (1 + \gamma_1) + \beta_1\big), \qquad x \leftarrow x + \alpha_2 \odot \mathrm{MLP}\big(\mathrm{LN}(x) \odot (1 + \gamma_2) + \beta_2\big),$$
#
# with the same six vectors for all tokens. The layer norms have no parameters of their
# own ($\epsilon = 10^{-6}$): the scale and shift come from $c$. The "Zero" is the
# initialisation: the linear layer that makes $\alpha, \beta, \gamma$ starts at zero, so
# every gate is 0 and **every block is the identity at initialisation** (a residual
# network starting as the identity trains better, as Goyal et al. found for ResNets).
# The paper compares this with cross-attention to $c$, in-context tokens and plain
# adaLN; adaLN-Zero gives the best FID at the lowest cost.
def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class DiTBlock(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        beta_1, gamma_1, alpha_1, beta_2, gamma_2, alpha_2 = \
            self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + alpha_1.unsqueeze(1) * self.attn(modulate(self.norm1(x), beta_1, gamma_1))
        x = x + alpha_2.unsqueeze(1) * self.mlp(modulate(self.norm2(x), beta_2, gamma_2))
        return x


# ## The final layer
#
# One more modulated layer norm (shift and scale, no gate), then a linear map from each
# token to its patch of the output: $p \cdot p \cdot C_{out}$ numbers. Both linear layers
# start at zero, so **the whole network outputs exactly zero at initialisation**.
class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


# ## The whole model
#
# $$\epsilon_\theta(x_t, t, y) = \mathrm{unpatchify}\Big(\mathrm{Final}\big(\mathrm{Block}_D(\cdots \mathrm{Block}_1(\mathrm{Patch}(x_t) + \mathrm{PE},\ c) \cdots,\ c),\ c\big)\Big), \qquad c = \mathrm{emb}(t) + \mathrm{emb}(y).$$
#
# **What the output means.** In the paper, DiT is a DDPM: $T = 1000$ steps with
# the linear $\beta$ schedule, and the output has $2 C_{in}$ channels: the predicted
# noise $\epsilon_\theta$, trained with $L_{simple}$, and the interpolation weights of
# a learned variance $\Sigma_\theta$ (between $\beta_t$ and $\tilde\beta_t$, as in
# Nichol & Dhariwal's improved DDPM), trained with the variational bound. In this course
# the same network, with `learn_sigma=False`, predicts the *velocity* of flow matching
# instead ([[experiment.py]]); nothing in the architecture depends on which.
class DiT(nn.Module):
    def __init__(self, config: DiTConfig | None = None, **overrides):
        super().__init__()
        config = replace(config or DiTConfig(), **overrides)
        self.config = c = config
        if c.input_size % c.patch_size:
            raise ValueError(f"input_size {c.input_size} is not a multiple of patch_size {c.patch_size}")
        if c.hidden_size % c.num_heads:
            raise ValueError(f"hidden_size {c.hidden_size} is not a multiple of num_heads {c.num_heads}")
        self.in_channels, self.out_channels = c.in_channels, c.out_channels
        self.patch_size, self.num_heads = c.patch_size, c.num_heads
        self.x_embedder = PatchEmbed(c.patch_size, c.in_channels, c.hidden_size)
        self.t_embedder = TimestepEmbedder(c.hidden_size)
        self.y_embedder = LabelEmbedder(c.num_classes, c.hidden_size, c.class_dropout_prob)
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_patches, c.hidden_size),
                                      requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(c.hidden_size, c.num_heads, c.mlp_ratio)
                                     for _ in range(c.depth)])
        self.final_layer = FinalLayer(c.hidden_size, c.patch_size, self.out_channels)
        self.initialize_weights()

    # The official initialisation: Xavier-uniform for every linear layer and for the
    # patch projection (viewed as a matrix), zero biases, $\mathcal{N}(0, 0.02^2)$ for the
    # label table and the timestep MLP, the fixed sin-cos table, and zero for every
    # adaLN linear layer and the final linear layer (the "Zero" of adaLN-Zero).
    # On the meta device (used to count the paper models) there is nothing to fill.
    def initialize_weights(self) -> None:
        if self.pos_embed.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        grid = int(round(math.sqrt(self.config.num_patches)))
        self.pos_embed.data.copy_(sincos_2d(self.config.hidden_size, grid).unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def embed(self, x: Tensor, t: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""The tokens $\mathrm{Patch}(x) + \mathrm{PE}$ (N, T, C) and the condition $c$ (N, C)."""
        tokens = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        return tokens, c

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        r"""`x` (N, C_in, H, W), timesteps `t` (N,), labels `y` (N,) (the null class is
        `num_classes`); returns (N, C_out, H, W)."""
        tokens, c = self.embed(x, t, y)
        for block in self.blocks:
            tokens = block(tokens, c)
        out = self.final_layer(tokens, c)
        return unpatchify(out, self.out_channels, self.patch_size)

    # ### The official guidance helper and its quirk
    #
    # `forward_with_cfg` of the official code takes a batch whose two halves hold the
    # same $x_t$ (with labels $y$ and the null class), runs it once and guides:
    # $\hat\epsilon = \epsilon_\varnothing + w(\epsilon_y - \epsilon_\varnothing)$. Its
    # quirk: it guides only the **first three channels** of the output, "for exact
    # reproducibility" as its comment says (`eps, rest = model_out[:, :3], model_out[:, 3:]`).
    # With 4 latent channels and the learned variance the output has 8: the fourth noise
    # channel and the 4 variance channels pass through from the forward pass unguided,
    # each half keeping its own. The paper's FIDs were computed that way; guiding all
    # channels (`channels=None`) is what the formula says. Our samplers use
    # [[flow/flow.py#cfg_velocity]], which guides everything.
    def forward_with_cfg(self, x: Tensor, t: Tensor, y: Tensor, cfg_scale: float,
                         channels: int | None = 3) -> Tensor:
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half]), t, y)
        k = out.shape[1] if channels is None else channels
        eps, rest = out[:, :k], out[:, k:]
        cond_eps, uncond_eps = eps.chunk(2)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "DiT":
        r"""`DiT.from_preset("XL/2")`: the paper's configuration (32x32x4 latents, 1000
        classes, learned variance) of the named size; `overrides` change any field."""
        return cls(preset_config(name, **overrides))


# ## The presets
#
# The paper's four sizes, each with patch size 2, 4 or 8 (`"B/4"`), depth / width /
# heads: S 12/384/6, B 12/768/12, L 24/1024/16, XL 28/1152/16. Their parameter counts
# (all parameters, including the frozen position table), with the official model
# on $32 \times 32 \times 4$ inputs and 1000 classes:
#
# | model | all parameters | trainable |
# |---|---|---|
# | DiT-S/2 | 32,963,360 | 32,865,056 |
# | DiT-B/2 | 130,512,416 | 130,315,808 |
# | DiT-L/2 | 458,102,816 | 457,840,672 |
# | DiT-XL/2 | 675,129,632 | 674,834,720 |
#
# `tiny` is the course's CPU model for $32 \times 32$ RGB shapes ([[data.py#Shapes]]):
# patch size 4 (64 tokens), 4 blocks of width 128, the 21 classes of shapes, and no
# learned variance, since it predicts a velocity. On the $8 \times 8 \times 4$ latents
# of the latent-diffusion chapter's tiny autoencoder the experiment sets patch size 1:
# again 64 tokens ([[experiment.py#the-tiny-defaults]]).
SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}

PRESETS = {f"{size}/{p}": dict(depth=d, hidden_size=w, num_heads=h, patch_size=p)
           for size, (d, w, h) in SIZES.items() for p in (2, 4, 8)}
PRESETS["tiny"] = dict(depth=4, hidden_size=128, num_heads=4, patch_size=4, in_channels=3,
                       num_classes=21, learn_sigma=False)


def preset_config(name: str, **overrides) -> DiTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown DiT preset {name!r}; choose from {', '.join(PRESETS)}")
    return replace(DiTConfig(), **{**PRESETS[name], **overrides})


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ## Try it
#
# `python -m annogen.dit.model`: the tiny DiT on a batch of latents of the course's tiny
# autoencoder ($8 \times 8 \times 4$, patch 1), its size, and adaLN-Zero's promise:
# the untrained network outputs exactly zero. Then XL/2, counted on the meta device.
@torch.no_grad()
def demo() -> None:
    torch.manual_seed(0)
    model = DiT.from_preset("tiny", in_channels=4, input_size=8, patch_size=1).eval()
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([10.0, 500.0, 990.0]), torch.tensor([0, 7, 21])
    out = model(x, t, y)
    print(f"tiny DiT on 8x8x4 latents: {count_parameters(model):,} parameters, "
          f"{model.config.num_patches} tokens; x {tuple(x.shape)} -> {tuple(out.shape)}")
    print(f"untrained output is exactly zero: {bool((out == 0).all())}")
    with torch.device("meta"):
        xl = DiT.from_preset("XL/2")
    print(f"DiT-XL/2: {count_parameters(xl):,} parameters (the paper's 675M)")
    assert (out == 0).all()


if __name__ == "__main__":
    demo()
