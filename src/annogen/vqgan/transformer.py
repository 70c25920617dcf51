r"""
---
title: VQGAN, the transformer prior
summary: Stage two of Taming Transformers - a GPT that models the flattened code grid one index at a time, conditioned on a class token, sampled with a KV cache and top-k / nucleus filtering.
---

# VQGAN: the transformer prior

Once the autoencoder ([[model.py]]) is trained and frozen, every image $x$ is a grid of
code indices $s \in \{0, \dots, K-1\}^{h \times w}$. Read in raster order (row by row)
it is a sequence $s_1, \dots, s_N$, $N = h w$, and a sequence can be modelled the way
language is, one token at a time:

$$p(s \mid c) = \prod_{i=1}^{N} p(s_i \mid c, s_{<i}).$$

The paper's argument is in this split: a transformer's attention is quadratic in the
sequence length, so it cannot model $256^2$ pixels, but it can model the $16^2 = 256$
codes of the same image — the convolutional VQGAN handles the local detail, the
transformer the composition.

Where VQ-VAE used a PixelCNN over the codes, VQGAN uses a GPT-2-style decoder-only
transformer (the official code is Karpathy's minGPT): token and position embeddings,
pre-norm blocks of causal self-attention and an MLP, a linear head to $K$ logits.
For class-conditional ImageNet the condition $c$ is one token placed before the codes.

**The paper's size.** The class-conditional ImageNet model (`cin_transformer`) works on
the $f = 16$ VQGAN with $K = 16384$ codes, so $N = 256$, with 48 layers of width 1536 —
about 1.4B parameters (the blocks alone hold $12 \cdot 48 \cdot 1536^2 \approx 1.36$B);
the repository's example sampling command for it uses top-$k$ 600 and top-$p$ 0.92. Our `tiny` preset below has 4 layers of
width 128 and runs on a laptop CPU over the $8 \times 8$ grids of the tiny VQGAN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


# ## Configuration
#
# `num_codes` is $K$; `num_classes` the number of class tokens (the default, 21, is the
# shape-and-colour label of the course's `Shapes` data); `block_size` the number of
# positions the model reads, which is $N$: the class token plus the first $N - 1$ codes
# predict all $N$ codes.
@dataclass
class GPTConfig:
    num_codes: int = 128
    num_classes: int = 21
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0


PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(),
    # The sizes of the class-conditional ImageNet model, for reference (not to be built on
    # a CPU): K = 16384, N = 16 x 16, 48 layers of width 1536. The head count was not
    # checked against the released configuration: 24 heads of 64 is an assumption.
    "paper": GPTConfig(num_codes=16384, num_classes=1000, block_size=256, n_layer=48,
                       n_head=24, n_embd=1536),
}


# ## Causal self-attention with a KV cache
#
# Multi-head attention with the usual mask: position $i$ may attend to positions
# $j \le i$ only,
#
# $$\operatorname{Attn}(Q, K, V) = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{d}} + M\right) V,
#   \qquad M_{ij} = \begin{cases} 0 & j \le i \\ -\infty & j > i \end{cases}$$
#
# with $d$ the width of one head. Because of the mask, the keys and values of the first
# $t$ positions never change when more tokens are appended. When sampling, we therefore
# keep them in a **cache** and compute $q, k, v$ for the new token only: step $t$ costs
# $O(t)$ instead of recomputing all $t$ positions, $O(t^2)$.
#
# `cache` is a dict that this layer fills with its `k` and `v` of shape
# $(B, \text{heads}, t, d)$. New queries sit at absolute positions
# $t_0, \dots, t_0 + T - 1$ after the $t_0$ cached ones, so query $i$ sees keys
# $j \le t_0 + i$.
class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_drop = nn.Dropout(config.dropout)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, T, C = x.shape
        # $(B, T, 3C) \to$ three $(B, \text{heads}, T, d)$
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        t0 = 0
        if cache is not None:
            if "k" in cache:
                t0 = cache["k"].shape[2]
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        # $M$: query at absolute position $t_0 + i$ sees key $j$ iff $j \le t_0 + i$
        i = torch.arange(T, device=x.device)[:, None] + t0
        j = torch.arange(k.shape[2], device=x.device)[None, :]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
        att = att.masked_fill(j > i, float("-inf")).softmax(dim=-1)
        y = self.attn_drop(att) @ v
        # heads side by side again, then the output projection
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.proj(y))


# A pre-norm transformer block: $x \leftarrow x + \operatorname{Attn}(\operatorname{LN}(x))$,
# then $x \leftarrow x + \operatorname{MLP}(\operatorname{LN}(x))$ with a GELU MLP four
# times as wide.
class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, 4 * config.n_embd),
            nn.GELU(),
            nn.Linear(4 * config.n_embd, config.n_embd),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


# ## The model
#
# **Tokens.** One embedding table holds the $K$ codes and, after them, the class tokens:
# class $c$ is token $K + c$. (The official code puts the class index into the same
# table as the codes without an offset, which works there because $K = 16384 > 1000$
# classes but makes code $c$ and class $c$ share a vector; we keep them apart.) The
# head predicts codes only: $K$ logits.
#
# **Training** (`forward`): the input is $(c, s_1, \dots, s_{N-1})$ and the output at
# position $i$ is the distribution of $s_{i+1}$ — cross-entropy against
# $(s_1, \dots, s_N)$ ([[#GPT.loss]]). Weights start as in GPT-2/minGPT: linear and
# embedding weights $\mathcal{N}(0, 0.02)$, biases 0, learned positions 0.
class GPT(nn.Module):
    def __init__(self, config: GPTConfig | None = None):
        super().__init__()
        c = self.config = config or GPTConfig()
        self.tok_emb = nn.Embedding(c.num_codes + c.num_classes, c.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, c.block_size, c.n_embd))
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.head = nn.Linear(c.n_embd, c.num_codes, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    # Logits for a run of tokens. With a list of per-layer caches, the tokens are placed
    # after those already cached. Empty caches are `[{} for _ in range(n_layer)]`, one
    # dict per layer as in `generate` below; `[{}] * n_layer` would be one dict shared by
    # every layer, and each layer would overwrite the keys and values of the one before.
    def logits(self, tokens: torch.Tensor, caches: list[dict] | None = None) -> torch.Tensor:
        T = tokens.shape[1]
        t0 = caches[0]["k"].shape[2] if caches and "k" in caches[0] else 0
        if t0 + T > self.config.block_size:
            raise ValueError(f"sequence of {t0 + T} tokens exceeds block_size {self.config.block_size}")
        x = self.drop(self.tok_emb(tokens) + self.pos_emb[:, t0:t0 + T])
        for n, block in enumerate(self.blocks):
            x = block(x, caches[n] if caches is not None else None)
        return self.head(self.ln_f(x))

    # $(c, s_1, \dots, s_{N-1})$ from the labels $(B,)$ and codes $(B, N)$.
    def tokens(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        class_token = (labels + self.config.num_codes).view(-1, 1)
        return torch.cat([class_token, codes[:, :-1]], dim=1)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        r"""Logits $(B, N, K)$; row $i$ predicts `codes[:, i]`. `codes` is $(B, N)$ or a grid $(B, h, w)$."""
        return self.logits(self.tokens(codes.flatten(1), labels))

    # $-\frac{1}{N}\sum_i \log p(s_i \mid c, s_{<i})$, averaged over the batch.
    def loss(self, codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        codes = codes.flatten(1)
        logits = self(codes, labels)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1))

    # ## Sampling
    #
    # Start from the class token alone; at each step run only the newest token through
    # the network (the cache holds the rest), turn the last logits into a distribution,
    # draw $s_i$, and feed it back. Before drawing, the logits are divided by the
    # `temperature` $\tau$ ($\tau < 1$ sharpens, $\tau > 1$ flattens) and filtered with
    # top-$k$ and/or top-$p$ ([[#top_k_filter]], [[#top_p_filter]]).
    #
    # `return_logits=True` also returns the raw logits of every step, $(n, N, K)$, before
    # temperature and filtering — the tests compare them with a full forward pass.
    @torch.no_grad()
    def generate(self, n: int, label: int | torch.Tensor, top_k: int | None = None,
                 top_p: float | None = None, temperature: float = 1.0,
                 generator: torch.Generator | None = None, return_logits: bool = False):
        device = self.pos_emb.device
        labels = torch.as_tensor(label, dtype=torch.long, device=device)
        if labels.dim() == 0:
            labels = labels.expand(n)
        token = (labels + self.config.num_codes).view(n, 1)
        caches = [{} for _ in self.blocks]
        codes, steps = [], []
        for _ in range(self.config.block_size):
            logits = self.logits(token, caches)[:, -1]
            steps.append(logits)
            logits = logits / temperature
            if top_k is not None:
                logits = top_k_filter(logits, top_k)
            if top_p is not None:
                logits = top_p_filter(logits, top_p)
            probs = logits.softmax(dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)
            codes.append(token)
        codes = torch.cat(codes, dim=1)
        return (codes, torch.stack(steps, dim=1)) if return_logits else codes


# ## Top-k and nucleus (top-p) filtering
#
# A model's long tail of unlikely tokens holds, together, real probability mass; sampling
# from it now and then produces a bad code that the rest of the image must live with.
# Both filters set the logits of the tail to $-\infty$ before the softmax.
#
# **Top-$k$** keeps the $k$ largest logits of each row (exactly $k$, even with ties).
def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.shape[-1])
    keep = torch.zeros_like(logits, dtype=torch.bool)
    keep.scatter_(-1, logits.topk(k, dim=-1).indices, True)
    return logits.masked_fill(~keep, float("-inf"))


# **Top-$p$** (nucleus sampling, [Holtzman et al. (2020)](https://arxiv.org/abs/1904.09751)) keeps the smallest set of most
# probable tokens whose total probability is at least $p$. In a row sorted by
# probability $p_{(1)} \ge p_{(2)} \ge \dots$, token $(m)$ is kept when the mass before
# it is still short of $p$:
#
# $$\sum_{r < m} p_{(r)} < p.$$
#
# The first token is always kept, so the set is never empty.
def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    keep_sorted = mass_before < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


# `build_gpt("tiny")`, or with settings changed: `build_gpt(num_codes=256, block_size=16)`.
def build_gpt(preset: str = "tiny", **overrides) -> GPT:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    base = PRESETS[preset].__dict__
    return GPT(GPTConfig(**{**base, **overrides}))


# ## Run this file
#
# `python -m annogen.vqgan.transformer` builds the tiny GPT and checks the KV cache:
# generating token by token with the cache gives the same logits as one full forward
# pass over the finished sequence.
if __name__ == "__main__":
    torch.manual_seed(0)
    gpt = build_gpt("tiny").eval()
    cfg = gpt.config
    codes, logits = gpt.generate(2, label=3, top_k=8, generator=torch.Generator().manual_seed(0),
                                 return_logits=True)
    print(f"tiny GPT: {sum(p.numel() for p in gpt.parameters()):,} parameters, "
          f"{cfg.n_layer} layers, N = {cfg.block_size} tokens, K = {cfg.num_codes}")
    with torch.no_grad():
        full = gpt(codes, torch.tensor([3, 3]))
    print(f"sampled codes {tuple(codes.shape)}; logits {tuple(full.shape)}")
    assert torch.allclose(logits, full, atol=1e-4), "the cached logits differ"
    print("checked: token-by-token logits with the KV cache equal one full forward pass")
