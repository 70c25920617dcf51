r"""
---
title: VAR, the next-scale transformer
summary: A GPT-2-like transformer with adaptive LayerNorm that predicts a whole token map per step - block-causal attention over the scale pyramid, normalised queries and keys, the official initialisation, sampling with a KV cache and classifier-free guidance, and a two-pass sampler that tests the within-scale independence.
---

# VAR: next-scale prediction

VQGAN's transformer ([[vqgan/transformer.py]]) factorises an image's $N$ codes in
raster order, $p(s) = \prod_i p(s_i \mid s_{<i})$: $N$ steps, and a token in the top
row is chosen without knowing anything below it. VAR
([Tian et al. (2024)](https://arxiv.org/abs/2404.02905)) factorises over the $M$
**scales** of the pyramid built by the tokenizer ([[quant.py]]), for a class label $y$:

$$p(r_1, \dots, r_M \mid y) = \prod_{k=1}^{M} p(r_k \mid y, r_1, \dots, r_{k-1}).$$

Each step predicts a whole map $r_k$ — all $h_k w_k$ tokens at once, each from its own
softmax, which makes them **independent given the coarser scales**:
$p(r_k \mid r_{<k}) = \prod_i p(r_k^i \mid r_{<k})$. The paper does not argue for that
assumption; the chapter's experiments ([[experiments.py]]) probe it, and
[[#the-two-pass-sampler]] below relaxes it.

Everything else is a GPT-2-style decoder-only transformer: the class enters through
adaptive LayerNorm (explained where the block is, [[#the-adaln-block]]), queries and
keys are normalised, and attention is causal between scales and bidirectional within
one.

The paper's claim: on ImageNet $256^2$, FID 1.92 (d30, 2.0B parameters; 1.73 with
longer training), better than DiT-XL/2 (2.27) at a 45th of its wall-clock sampling
time, and a power law between model size and loss like language models'.

Run it: `python src/annogen/var/model.py` (or `python -m annogen.var.model`) builds the
tiny model on an untrained tokenizer, samples a pyramid with the cache and checks it
against the reference path without one, in a few seconds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from annogen.vqgan.transformer import top_k_filter, top_p_filter

from annogen.var.quant import MultiScaleQuantizer, PATCH_NUMS


# ## Configuration
#
# The official family ties everything to the depth $d$: width $64 d$, $d$ heads of
# 64, an MLP 4 times as wide, drop-path up to $0.1 \cdot d / 24$. `num_codes` $K$ and
# `dim` $c$ are the tokenizer's (its codebook size and its latent channels);
# `num_classes` does not count the extra null class of classifier-free guidance. `tiny`
# is $d = 2$ by the same rule (width $C = 128$, 2 heads) over the six scales of the tiny
# tokenizer ([[vae.py#configurations]]). `two_pass` is ours, not the paper's: it adds
# the input that [[#the-two-pass-sampler]] needs.
@dataclass
class VARConfig:
    depth: int = 2
    width: int = 128
    num_heads: int = 2
    mlp_ratio: float = 4.0
    num_classes: int = 21
    num_codes: int = 256
    dim: int = 32
    patch_nums: tuple[int, ...] = PATCH_NUMS[8]
    drop_path_rate: float = 0.1 * 2 / 24
    cond_drop_rate: float = 0.1
    norm_eps: float = 1e-6
    two_pass: bool = False

    @property
    def L(self) -> int:
        return sum(p * p for p in self.patch_nums)


def paper_config(depth: int) -> VARConfig:
    return VARConfig(depth=depth, width=64 * depth, num_heads=depth, num_classes=1000,
                     num_codes=4096, dim=32, patch_nums=PATCH_NUMS[16],
                     drop_path_rate=0.1 * depth / 24)


PRESETS: dict[str, VARConfig] = {"tiny": VARConfig(),
                                 **{f"d{d}": paper_config(d) for d in (16, 20, 24, 30)}}


# ## The block-causal mask
#
# Token $i$ of the flat sequence (scales one after another, each row by row) belongs
# to scale $\ell(i)$. It may attend to token $j$ iff
#
# $$\ell(j) \le \ell(i):$$
#
# everything at coarser scales and everything at its own, in both directions. At
# $256^2$ that is 286,434 of the $680^2$ pairs (62%); VQGAN's causal mask over 256
# tokens allows 32,896. `True` means "may attend".
def levels(patch_nums) -> torch.Tensor:
    r"""$\ell(i)$ for every token of the sequence, $(L,)$."""
    return torch.cat([torch.full((p * p,), k) for k, p in enumerate(patch_nums)])


def block_causal_mask(patch_nums) -> torch.Tensor:
    r"""$(L, L)$ bool; row $i$, column $j$: may token $i$ attend to token $j$."""
    lvl = levels(patch_nums)
    return lvl[:, None] >= lvl[None, :]


# ## Attention with normalised queries and keys
#
# Multi-head attention where $q$ and $k$ of each head are L2-normalised and the
# softmax temperature is learnt, one per head:
#
# $$\operatorname{Attn} = \operatorname{softmax}\big(e^{s_h} \hat q \hat k^\top + A\big)\, v, \qquad \hat q = \frac{q}{\|q\|},\ \hat k = \frac{k}{\|k\|},$$
#
# for the queries, keys and values $q, k, v$ of one head (one row per token), with $A$
# the mask ($0$ where attention is allowed, $-\infty$ elsewhere) and $s_h$ starting at $\log 4$ and capped at $\log 100$. The logits are cosines
# times at most 100, so no head can blow up its softmax, the instability that large
# transformers trained in mixed precision run into. $q$ and $v$ have biases, $k$
# none (a bias on $k$ adds the same amount to every logit of a row and cancels in the
# softmax); the three projections are one matrix, `mat_qkv`, as in the official code.
#
# With a `cache` (a dict), keys and values of earlier calls are kept and the new
# tokens attend to all of them and to each other: the tokens of one call are one
# scale, and every cached token is of a coarser one, so no mask is needed.
#
# Two names differ from the official checkpoints: the temperature is `scale_mul` here
# and `scale_mul_1H11` there, and the zero bias of $k$ is a non-persistent buffer here
# (not saved) but a saved one there. [[#loading-official-weights]] renames and drops.
class SelfAttention(nn.Module):
    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, width // num_heads
        self.mat_qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width), persistent=False)
        self.scale_mul = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
        self.max_scale_mul = math.log(100.0)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                cache: dict | None = None) -> torch.Tensor:
        B, T, C = x.shape
        bias = torch.cat([self.q_bias, self.zero_k_bias, self.v_bias])
        qkv = F.linear(x, self.mat_qkv.weight, bias).view(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, d)
        # $e^{s_h} \hat q$ and $\hat k$
        q = F.normalize(q, dim=-1) * self.scale_mul.clamp(max=self.max_scale_mul).exp()
        k = F.normalize(k, dim=-1)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        att = q @ k.transpose(-2, -1)  # softmax scale 1: the cosine is already scaled
        if mask is not None:
            att = att.masked_fill(~mask, float("-inf"))
        y = att.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


# The MLP: $\operatorname{fc}_2(\operatorname{GELU}_{\tanh}(\operatorname{fc}_1(x)))$,
# four times as wide inside (the tanh approximation of GELU, as GPT-2).
class FFN(nn.Module):
    def __init__(self, width: int, mlp_ratio: float):
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


# Stochastic depth: in training, each sample skips a residual branch with probability
# $p$, and the branch is scaled by $1 / (1 - p)$ when kept.
class DropPath(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


# ## The AdaLN block
#
# The condition is the class embedding $c \in \mathbb{R}^{C}$ (no timestep: VAR is not
# a diffusion model). *Adaptive LayerNorm* (adaLN) makes the normalisation of every
# block depend on it: LayerNorm has no weights of its own, and a linear map of
# $\operatorname{SiLU}(c)$ gives, per block, a shift $\beta$, a scale $\gamma$ and a gate
# $\alpha$ for each of the two branches (1 = attention, 2 = MLP):
#
# $$(\alpha_1, \alpha_2, \gamma_1, \gamma_2, \beta_1, \beta_2) = W \operatorname{SiLU}(c) + b,$$
# $$x \leftarrow x + \alpha_1 \odot \operatorname{Attn}\big((1 + \gamma_1) \odot \operatorname{LN}(x) + \beta_1\big), \qquad
#   x \leftarrow x + \alpha_2 \odot \operatorname{FFN}\big((1 + \gamma_2) \odot \operatorname{LN}(x) + \beta_2\big).$$
#
# Every token of every scale reads the class in every block, not only through the
# start token. The gates $\alpha$ start near zero (see the initialisation below), so a
# fresh block is close to the identity. The same block, with a timestep added to the
# condition, is DiT's (the DiT chapter, [[dit/model.py]]); the symbols are the course's
# ([[notation.md]]). The official code unpacks the six vectors in the order
# `gamma1, gamma2, scale1, scale2, shift1, shift2`: its `gamma` is our gate $\alpha$, its
# `scale` our $\gamma$, its `shift` our $\beta$.
class AdaLNBlock(nn.Module):
    def __init__(self, width: int, num_heads: int, mlp_ratio: float, drop_path: float,
                 eps: float):
        super().__init__()
        self.width = width
        self.ln_wo_grad = nn.LayerNorm(width, eps=eps, elementwise_affine=False)
        self.attn = SelfAttention(width, num_heads)
        self.ffn = FFN(width, mlp_ratio)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None,
                cache: dict | None = None) -> torch.Tensor:
        alpha1, alpha2, gamma1, gamma2, beta1, beta2 = \
            self.ada_lin(cond).view(-1, 1, 6, self.width).unbind(2)
        h = self.attn(self.ln_wo_grad(x) * (1 + gamma1) + beta1, mask, cache)
        x = x + self.drop_path(h * alpha1)
        h = self.ffn(self.ln_wo_grad(x) * (1 + gamma2) + beta2)
        return x + self.drop_path(h * alpha2)


# Before the head, one more adaptive LayerNorm, with a scale $\gamma$ and a shift
# $\beta$ only.
class AdaLNBeforeHead(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.width = width
        self.ln_wo_grad = nn.LayerNorm(width, eps=eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.ada_lin(cond).view(-1, 1, 2, self.width).unbind(2)
        return self.ln_wo_grad(x) * (1 + gamma) + beta


# ## The model
#
# **Inputs.** The first scale has a single token and nothing to read yet: its input
# is the **start token**, the class embedding plus a learnt vector `pos_start`. Scale
# $k \ge 2$ reads the $h_k w_k$ vectors $\operatorname{down}_{h_k}(\hat f^{(k-1)})$
# ([[quant.py#teacher-forcing-for-the-transformer]]), each mapped from $c$ to
# the width $C$ by `word_embed`. Every token then gets a learnt absolute position
# (`pos_1LC`, one per token of the pyramid) and a learnt **level embedding** of its
# scale (`lvl_embed`), which tells apart tokens of different scales at similar
# positions:
#
# $$x_i = \operatorname{word\_embed}(u_i) + P_i + E_{\ell(i)}.$$
#
# **Classes.** The table has `num_classes + 1` rows; the last is the null class. In
# training each label is replaced by it with probability 0.1, so the same network
# learns $p(r \mid y)$ and $p(r)$, which classifier-free guidance mixes at sampling
# time. We drop labels in training mode only; the official `forward` drops them in
# evaluation mode too, so a validation loss computed with it scores 10% of the batch
# unconditionally. Ours is what the method intends (and the official sampler does not
# go through `forward`, so its samples are unaffected).
#
# **Output.** The adaLN head and a linear map to $K$ logits per token; the logits at
# the tokens of scale $k$ are the distribution of $r_k$.
#
# **Buffers.** The level of each token (`lvl`) and the block-causal mask (`mask`, bool)
# are recomputed from the scales and not saved; the official model saves them as
# `lvl_1L` and `attn_bias_for_masking` (an additive $0 / -\infty$ float mask).
class VAR(nn.Module):
    def __init__(self, config: VARConfig | None = None):
        super().__init__()
        c = self.config = config or VARConfig()
        C = c.width
        self.patch_nums = tuple(c.patch_nums)
        self.first_l = self.patch_nums[0] ** 2
        self.word_embed = nn.Linear(c.dim, C)
        self.class_emb = nn.Embedding(c.num_classes + 1, C)
        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, c.L, C))
        self.lvl_embed = nn.Embedding(len(self.patch_nums), C)
        # drop-path rising linearly from 0 in the first block to the rate in the last
        dpr = [c.drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]
        self.blocks = nn.ModuleList(AdaLNBlock(C, c.num_heads, c.mlp_ratio, dpr[i], c.norm_eps)
                                    for i in range(c.depth))
        self.head_nm = AdaLNBeforeHead(C, c.norm_eps)
        self.head = nn.Linear(C, c.num_codes)
        self.register_buffer("lvl", levels(self.patch_nums), persistent=False)
        self.register_buffer("mask", block_causal_mask(self.patch_nums), persistent=False)
        if c.two_pass:
            self.reveal_embed = nn.Linear(c.dim, C)  # see the two-pass sampler
        self.init_weights()

    # ### The official initialisation
    #
    # With $\sigma = \sqrt{1 / (3C)}$ (0.018 at $C = 1024$):
    #
    # * every linear and embedding weight (and `pos_start`, `pos_1LC`) is drawn from a
    #   truncated normal of standard deviation $\sigma$; biases are 0;
    # * the output projections of attention and MLP (`proj`, `fc2`) are divided by
    #   $\sqrt{2d}$, so the $2d$ residual branches together start at the size of one;
    # * the head is multiplied by 0.02: the first logits are nearly uniform;
    # * in every adaLN map, the rows that produce the gates $\alpha_1, \alpha_2$ are
    #   multiplied by $10^{-5}$ and the others by 0.5: every block starts as (almost) the
    #   identity, the same idea as DiT's adaLN-Zero.
    #
    # (`nn.init.trunc_normal_` cuts at $\pm 2$ absolutely, not at $\pm 2\sigma$; with
    # $\sigma < 0.1$ that cuts nothing in practice, in their code and ours.)
    @torch.no_grad()
    def init_weights(self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5,
                     init_head: float = 0.02) -> None:
        C, depth = self.config.width, self.config.depth
        std = math.sqrt(1 / (3 * C))
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()
        nn.init.trunc_normal_(self.pos_start, std=std)
        nn.init.trunc_normal_(self.pos_1LC, std=std)
        self.head.weight.mul_(init_head)
        self.head.bias.zero_()
        self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        self.head_nm.ada_lin[-1].bias.zero_()
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * depth))
            block.ffn.fc2.weight.div_(math.sqrt(2 * depth))
            ada = block.ada_lin[-1]
            ada.weight[2 * C:].mul_(init_adaln)
            ada.weight[:2 * C].mul_(init_adaln_gamma)
            ada.bias.zero_()

    # The embedded start token plus `lvl_embed` and `pos_1LC` of the first scale, and the
    # embedded inputs of the later ones; `x_in` may stop after any scale. `reveal`, for
    # the two-pass sampler only: the revealed tokens' code vectors and where they are.
    def embed(self, cond: torch.Tensor, x_in: torch.Tensor, reveal=None) -> torch.Tensor:
        B = cond.shape[0]
        sos = cond[:, None, :] + self.pos_start.expand(B, -1, -1)
        x = torch.cat([sos, self.word_embed(x_in.float())], dim=1)
        T = x.shape[1]
        x = x + self.lvl_embed(self.lvl[:T]) + self.pos_1LC[:, :T]
        if reveal is not None:
            x = x + self.revealed(*reveal)[:, :T]
        return x

    # $R_i = m_i\,(W_r\, e(r_i) + b_r)$: zero where nothing is revealed ($m_i = 0$).
    def revealed(self, codes: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        if not self.config.two_pass:
            raise ValueError("this VAR was built without two_pass=True: it cannot read revealed tokens")
        return self.reveal_embed(codes.float()) * where[..., None].to(codes.dtype)

    # ### The full forward pass (training, and the reference sampler)
    #
    # `labels` $(B,)$, `x_in` $(B, T - 1, c)$ (the teacher-forcing inputs of the
    # first scales; $T = L$ in training): logits $(B, T, K)$ under the block-causal
    # mask. In training mode, labels are dropped to the null class with probability
    # `cond_drop_rate`.
    def forward(self, labels: torch.Tensor, x_in: torch.Tensor, reveal=None) -> torch.Tensor:
        if self.training and self.config.cond_drop_rate > 0:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.config.cond_drop_rate
            labels = torch.where(drop, torch.full_like(labels, self.config.num_classes), labels)
        cond = self.class_emb(labels)
        x = self.embed(cond, x_in, reveal)
        T = x.shape[1]
        mask = self.mask[:T, :T]
        for block in self.blocks:
            x = block(x, cond, mask)
        return self.head(self.head_nm(x, cond))

    # ### The loss
    #
    # Cross-entropy over all $L$ tokens of the pyramid, each weighted $1/L$, averaged
    # over the batch: the mean over tokens. The $h_M w_M = 256$ tokens of the last scale
    # are 38% of the 680, the single token of the first 0.15%.
    def loss(self, quant: MultiScaleQuantizer, idxs: list[torch.Tensor],
             labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x_in = quant.teacher_inputs(idxs)
        logits = self(labels, x_in)
        target = quant.flatten_idxs(idxs)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

    # ## Sampling
    #
    # $M$ steps. Step $k$ runs the network on the $h_k w_k$ input tokens of scale $k$ only
    # (the start token at $k = 1$): the KV cache of every block holds the keys and
    # values of all coarser scales. The logits of the step's tokens give $r_k$; then,
    # as in encoding, $\hat f \leftarrow \hat f + \phi_k(\operatorname{up}(e(r_k)))$,
    # and $\operatorname{down}_{h_{k+1}}(\hat f)$ is the next step's input. After step
    # $M$, the tokenizer's decoder turns $\hat f$ into pixels.
    #
    # **Classifier-free guidance.** The batch is doubled: the first half with the
    # labels, the second with the null class. With $\ell_c$, $\ell_\varnothing$ the two
    # halves' logits, step $k$ (from 0) uses
    #
    # $$\ell = \ell_\varnothing + w_k\, (\ell_c - \ell_\varnothing) = (1 + t_k)\, \ell_c - t_k\, \ell_\varnothing, \qquad w_k = 1 + t_k, \quad t_k = \mathrm{cfg} \cdot \frac{k}{M - 1}:$$
    #
    # the course's guidance weight $w$ ([[notation.md]]) is $1 + t_k$, so the code's
    # argument `cfg` is $w - 1$ at the last scale (the paper's FID setting `cfg = 1.5`
    # is $w = 2.5$ there), and the first token gets no guidance ($w_0 = 1$). The FID
    # setting also uses top-$k$ 900 and top-$p$ 0.96.
    #
    # **Filtering.** Top-$k$, then top-$p$, then one draw per token
    # ([[vqgan/transformer.py#top-k-and-nucleus-top-p-filtering]]).
    #
    # Arguments beyond the paper's, for the experiments: `forced` gives the maps of the
    # first scales instead of sampling them (they still pass through the network, so
    # the cache is the same); `choose(k, logits)` replaces the draw at scale $k$ (it
    # returns $(B, h_k w_k)$ tokens, or `None` to draw as usual); `two_pass=True` draws
    # each scale in two passes ([[#the-two-pass-sampler]]). `use_cache=False` is
    # the reference path: at every step it reruns the *whole* sequence so far under
    # the block-causal mask, with the inputs rebuilt from the tokens
    # ([[quant.py#teacher-forcing-for-the-transformer]]). `return_logits` also
    # returns the raw logits of every step, $(B, L, K)$ per half, before guidance (with
    # `two_pass`, those of the second pass).
    @torch.no_grad()
    def generate(self, quant: MultiScaleQuantizer, labels: torch.Tensor, cfg: float = 1.5,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, use_cache: bool = True,
                 forced: list[torch.Tensor] | None = None,
                 choose: Callable | None = None, return_logits: bool = False,
                 two_pass: bool = False):
        B, M = labels.shape[0], len(self.patch_nums)
        guided = cfg != 0
        lab = torch.cat([labels, torch.full_like(labels, self.config.num_classes)]) \
            if guided else labels
        nb = lab.shape[0]
        cond = self.class_emb(lab)
        lvl_pos = self.lvl_embed(self.lvl)[None] + self.pos_1LC  # $P_i + E_{\ell(i)}$
        x = cond[:, None, :] + self.pos_start + lvl_pos[:, :self.first_l]
        caches = [{} for _ in self.blocks]
        # the revealed tokens of every scale so far (two passes only): codes and where
        codes = quant.embedding.weight.new_zeros(nb, self.config.L, quant.dim)
        where = torch.zeros(nb, self.config.L, dtype=torch.bool, device=labels.device)
        f_hat, idxs, raw, start = 0.0, [], [], 0

        # The logits of scale k, from the cache or from the reference path; with `reveal`
        # the revealed half of the scale's tokens is added to its inputs.
        def step_logits(k: int, p: int, x: torch.Tensor, reveal: bool) -> torch.Tensor:
            if use_cache:
                h = x + self.revealed(codes, where)[:, start:start + p * p] if reveal else x
                for block, cache in zip(self.blocks, caches):
                    h = block(h, cond, cache=cache)
                return self.head(self.head_nm(h, cond))
            x_in = quant.teacher_inputs(idxs) if idxs else \
                quant.embedding.weight.new_zeros(B, 0, quant.dim)
            x_in = x_in.repeat(2, 1, 1) if guided else x_in
            rev = (codes, where) if self.config.two_pass else None
            return self.forward(lab, x_in, rev)[:, start:start + p * p]

        def guide(k: int, logits: torch.Tensor) -> torch.Tensor:
            if not guided:
                return logits
            t = cfg * k / (M - 1) if M > 1 else 0.0
            return (1 + t) * logits[:B] - t * logits[B:]

        def draw(k: int, p: int, logits: torch.Tensor) -> torch.Tensor:
            r_k = None
            if forced is not None and k < len(forced):
                r_k = forced[k].reshape(B, p * p)
            elif choose is not None:
                r_k = choose(k, logits)
            if r_k is None:
                r_k = sample_tokens(logits, top_k, top_p, generator)
            return r_k

        for k, p in enumerate(self.patch_nums):
            kept = [c["k"].shape[2] if "k" in c else 0 for c in caches]
            logits = step_logits(k, p, x, reveal=False)
            r_k = draw(k, p, guide(k, logits))
            if two_pass and p > 1 and not (forced is not None and k < len(forced)):
                first = checkerboard(p, device=labels.device)
                # pass 2: forget pass 1's keys, reveal the first half, redraw the second
                for c, n in zip(caches, kept):
                    if "k" in c:
                        c["k"], c["v"] = c["k"][:, :, :n], c["v"][:, :, :n]
                rows = slice(start, start + p * p)
                codes[:, rows] = quant.embedding(r_k).repeat(nb // B, 1, 1) * first[None, :, None]
                where[:, rows] = first[None]
                logits = step_logits(k, p, x, reveal=True)
                second = draw(k, p, guide(k, logits))
                r_k = torch.where(first[None], r_k, second)
            raw.append(logits)
            r_k = r_k.view(B, p, p)
            idxs.append(r_k)
            f_hat = f_hat + quant.h_of(k, r_k)
            start += p * p
            if use_cache and k < M - 1:
                q = self.patch_nums[k + 1]
                x = self.word_embed(quant.next_input(f_hat, k + 1)) + lvl_pos[:, start:start + q * q]
                x = x.repeat(2, 1, 1) if guided else x
        if return_logits:
            return idxs, torch.cat(raw, dim=1)
        return idxs


# ## The two-pass sampler
#
# Not in the paper: a way to *test* the within-scale independence. Split the tokens of
# a scale into the two colours of a checkerboard, $A$ (row + column even) and $B$.
# Pass 1 draws the whole scale as VAR does and keeps only $A$; pass 2 runs the scale
# again with the chosen $A$ tokens *revealed* in its input and draws $B$ from the new
# logits. Within a scale attention is bidirectional, so every $B$ token now sees its
# four $A$ neighbours' codes:
#
# $$p(r_k \mid r_{<k}) \approx \prod_{i \in A} p(r_k^i \mid r_{<k}) \prod_{j \in B} p(r_k^j \mid r_{<k}, r_k^A).$$
#
# The network must have learnt to read revealed tokens: with `two_pass=True` it has an
# extra input $R_i = m_i (W_r e(r_i) + b_r)$ added to token $i$'s embedding ($m_i = 1$
# where $r_i$ is revealed), and in training ([[experiment.py#stage-2-the-transformer]])
# each scale of each image has its $A$ half revealed with probability 1/2, the loss then
# counting only the $B$ tokens of that scale (the $A$ answers are in the input). With
# nothing revealed it is an ordinary VAR, so the same network samples both ways.
# Scales of one token have no second half. Pass 2 costs one more forward pass per
# scale: twice VAR's sampling cost.
def checkerboard(p: int, device=None) -> torch.Tensor:
    r"""$(p^2,)$ bool, row by row: True on the first half $A$ (row + column even)."""
    i = torch.arange(p, device=device)
    return ((i[:, None] + i[None, :]) % 2 == 0).flatten()


# For training: the revealed codes $(B, L, c)$, where they are $(B, L)$, and the
# tokens the loss counts $(B, L)$. `tokens` is the flat pyramid $(B, L)$.
def reveal_half(quant: MultiScaleQuantizer, tokens: torch.Tensor, prob: float = 0.5,
                generator: torch.Generator | None = None):
    B = tokens.shape[0]
    where = torch.zeros_like(tokens, dtype=torch.bool)
    start = 0
    for p in quant.patch_nums:
        if p > 1:
            chosen = torch.rand(B, 1, generator=generator, device=tokens.device) < prob
            where[:, start:start + p * p] = chosen & checkerboard(p, tokens.device)[None]
        start += p * p
    codes = quant.embedding(tokens) * where[..., None]
    return codes, where, ~where


# One draw per token from the filtered softmax; logits $(B, l, K)$, tokens $(B, l)$.
def sample_tokens(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    B, l, V = logits.shape
    flat = logits.reshape(B * l, V)
    if top_k is not None and top_k < V:
        flat = top_k_filter(flat, top_k)
    if top_p is not None and top_p < 1.0:
        flat = top_p_filter(flat, top_p)
    return torch.multinomial(flat.softmax(-1), 1, generator=generator).view(B, l)


# ## Loading official weights
#
# Our module names follow the official ones (`word_embed`, `class_emb`, `pos_start`,
# `pos_1LC`, `lvl_embed`, `blocks.i.attn.mat_qkv`, `q_bias`, `v_bias`, `proj`,
# `blocks.i.ffn.fc1`, `fc2`, `blocks.i.ada_lin.1`, `head_nm.ada_lin.1`, `head`), so a
# state dict of the official VAR loads after two changes: the temperature
# `blocks.i.attn.scale_mul_1H11` is renamed `blocks.i.attn.scale_mul`, and the saved
# buffers we recompute instead (`lvl_1L`, `attn_bias_for_masking`,
# `blocks.i.attn.zero_k_bias`) are dropped. The class embedding's last row is the null
# class in both.
def from_official_state_dict(state: dict) -> dict:
    r"""The official VAR's state dict with our names: load it with `load_state_dict`."""
    dropped = ("lvl_1L", "attn_bias_for_masking", "zero_k_bias")
    return {k.replace("scale_mul_1H11", "scale_mul"): v for k, v in state.items()
            if not k.endswith(dropped)}


# ## Presets
#
# `build_var("d16")` (and d20, d24, d30) are the paper's models: 310M, 601M, 1.03B
# and 2.01B parameters, exactly the official counts (build them under
# `torch.device("meta")`: d30 needs 8 GB as float32). `build_var("tiny")` is the CPU
# default, 0.68M parameters.
def build_var(preset: str = "tiny", **overrides) -> VAR:
    if preset not in PRESETS:
        raise ValueError(f"unknown VAR preset {preset!r}; choose one of {sorted(PRESETS)}")
    return VAR(VARConfig(**{**asdict(PRESETS[preset]), **overrides}))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ## Demo
#
# `python src/annogen/var/model.py`: the tiny VAR over an untrained tiny tokenizer (the
# weights do not matter for the checks), one class-conditional pyramid per label, with
# and without the KV cache, and the two-pass sampler on a `two_pass` model.
if __name__ == "__main__":
    from annogen.var.vae import build_vae

    torch.manual_seed(0)
    quant = build_vae("tiny").quantize
    var = build_var("tiny", num_codes=quant.num_codes, dim=quant.dim).eval()
    print(f"VAR tiny: depth {var.config.depth}, width C = {var.config.width}, "
          f"{count_parameters(var):,} parameters; scales {var.patch_nums}, L = {var.config.L}")
    labels = torch.tensor([0, 7, 14])
    x_in = quant.teacher_inputs(quant.f_to_idxs(torch.randn(3, quant.dim, 8, 8)))
    print(f"teacher-forcing inputs {tuple(x_in.shape)} -> logits {tuple(var(labels, x_in).shape)}")
    cached, logits = var.generate(quant, labels, generator=torch.Generator().manual_seed(1),
                                  return_logits=True)
    slow, slow_logits = var.generate(quant, labels, generator=torch.Generator().manual_seed(1),
                                     use_cache=False, return_logits=True)
    print("pyramid:", [tuple(r.shape) for r in cached])
    assert all(torch.equal(a, b) for a, b in zip(cached, slow))
    assert torch.allclose(logits, slow_logits, atol=1e-4)
    print("check: the KV-cached sampler draws the same tokens as the masked reference path")
    two = build_var("tiny", num_codes=quant.num_codes, dim=quant.dim, two_pass=True).eval()
    idxs = two.generate(quant, labels, generator=torch.Generator().manual_seed(1), two_pass=True)
    print(f"two-pass sampler ({count_parameters(two) - count_parameters(var):,} extra parameters):",
          [tuple(r.shape) for r in idxs])
