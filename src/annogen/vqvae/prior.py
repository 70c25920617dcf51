r"""
---
title: VQ-VAE, the prior
summary: A gated PixelCNN over the grid of codes - vertical and horizontal stacks without a blind spot, gated activations with class conditioning, codes fed through an embedding - and autoregressive sampling.
---

# A gated PixelCNN prior over the codes

The VQ-VAE of [[model.py]] turns an image into a grid of code indices
$k \in \{0..K-1\}^{h \times w}$ and back, but it cannot invent a grid. While it
trains, its prior over codes is uniform; to *generate*, the paper fits an
autoregressive model to the grids of the training set and samples from it:

$$p(k) = \prod_{i=1}^{h} \prod_{j=1}^{w} p\big(k_{ij} \mid k_{<ij}\big),$$

where $k_{<ij}$ means every position before $(i, j)$ in raster order: all rows above,
and the same row to the left. For images (and for CIFAR-10 and ImageNet codes) the
paper uses a **gated PixelCNN** ([van den Oord et al. (2016)](https://arxiv.org/abs/1606.05328),
*Conditional Image Generation with PixelCNN Decoders*), and so do we: a convolutional net that predicts
all $hw$ conditionals in one pass during training, because its convolutions are
arranged so that the output at $(i, j)$ never sees the input at $(i, j)$ or after.

Two lessons shape this file.

* **Codes are words, not colours.** Code 17 is not "between" codes 16 and 18, so the
  grid enters the network through an `nn.Embedding`: code $k$ becomes a learned
  vector $E_k \in \mathbb{R}^{p}$. The first MNIST prior in Zhou Yifan's
  [VQ-VAE post](https://zhouyifan.net/2023/06/06/20230527-VQVAE/) fed the indices in as pixel intensities and learned much
  worse; he reports the embedding as the fix.
* **No blind spot.** The original PixelCNN's masked $3 \times 3$ convolutions, stacked,
  never see the pixels above and to the right of the current one. The gated PixelCNN
  fixes this with two stacks, explained below; `tests/test_vqvae.py` checks, by autograd,
  that every earlier position of an $8 \times 8$ grid reaches the output, and that no
  later one does.

The configuration of the `paper` preset (15 gated blocks, 128 channels) is the one
Zhou Yifan used for the MNIST VQ-VAE prior of [that post](https://zhouyifan.net/2023/06/06/20230527-VQVAE/); the kernel sizes ($7 \times 7$ for
the first layer, $3 \times 3$ after it) follow the PixelCNN papers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GatedBlock", "GatedPixelCNN", "PriorConfig", "PRIOR_PRESETS", "build_prior"]


# ## Two stacks instead of one masked convolution
#
# A masked convolution multiplies its kernel by a mask that zeroes every tap at or
# after the centre in raster order. We write the same convolutions without the zeros:
# each one is a smaller kernel placed by padding, so every stored weight is used and
# the parameter count is honest. For a kernel size $k$ and $c = \lfloor k/2 \rfloor$:
#
# * The **vertical stack** sees a $(c+1) \times k$ window: the $c$ rows above and the
#   current row, $c$ columns either side. Padding $c$ rows on top (none below) and
#   $c$ columns left and right keeps the output the size of the input. It sees the
#   current row, including positions to the right, so it must never feed the output
#   directly: it reaches the horizontal stack only **shifted down by one row**, and
#   then row $i$ of the horizontal stack gets information from rows $< i$ only, but
#   from the whole width of the growing receptive field, so nothing above-right is
#   missed.
# * The **horizontal stack** sees a $1 \times (c+1)$ window of the current row: the
#   $c$ positions to the left and the position itself (padding $c$ on the left). In the
#   first layer the position itself is the code we are predicting, so that layer uses a
#   $1 \times c$ window of the $c$ positions strictly to the left ("mask A").
#
# The first layer's horizontal output at $(i, j)$ thus depends on $k_{i, j-c..j-1}$
# and, through the shifted vertical stack, on rows $i-c-1..i-1$; later layers only
# ever combine positions at or left of $j$ in the same row, and rows above.
def shift_down(x: Tensor) -> Tensor:
    r"""Move every row one down (row 0 becomes zeros): position $(i, j)$ gets $(i-1, j)$."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


# ## The gated block
#
# Each layer of both stacks computes $2p$ channels and splits them into two halves
# $a, b$ that gate each other, as in the LSTM and WaveNet:
#
# $$y = \tanh\big(a + V_f\, h\big) \odot \operatorname{sigmoid}\big(b + V_g\, h\big),$$
#
# where $h$ is the conditioning (here a class label) and $V_f h$, $V_g h$ are a learned
# vector per class, added at every position: a label embedding of size $2p$ per block,
# shared by the two stacks. For the stacks, with $*$ a convolution:
#
# $$v' = \mathrm{gate}(W_v * v), \qquad
#   h' = h + W_o\, \mathrm{gate}\big(W_h * h + W_{vh}\, \mathrm{shift}(W_v * v)\big),$$
#
# with $W_{vh}$ and $W_o$ $1 \times 1$ convolutions. The horizontal stack is residual;
# the first block has no residual, because its input at $(i, j)$ is the very code
# that the output at $(i, j)$ must predict.
class GatedBlock(nn.Module):
    r"""One gated layer of the vertical and the horizontal stack, width $p$, kernel $k$."""

    def __init__(self, dim: int, kernel: int, first: bool = False, num_classes: int = 0):
        super().__init__()
        self.dim, self.first = dim, first
        c = kernel // 2
        self.c = c
        # $W_v$: a $(c+1) \times k$ window on the rows above and the current row.
        self.v_conv = nn.Conv2d(dim, 2 * dim, (c + 1, kernel))
        # $W_h$: $1 \times (c+1)$ (left and here), or $1 \times c$ (left only) in block 1.
        self.h_conv = nn.Conv2d(dim, 2 * dim, (1, c if first else c + 1))
        # $W_{vh}$: the vertical pre-activation, shifted down, into the horizontal gate.
        self.v_to_h = nn.Conv2d(2 * dim, 2 * dim, 1)
        # $W_o$: the horizontal output before the residual sum.
        self.h_out = nn.Conv2d(dim, dim, 1)
        # $V_f, V_g$ for every class, as one vector of $2p$.
        self.label_embed = nn.Embedding(num_classes, 2 * dim) if num_classes > 0 else None

    @staticmethod
    def gate(x: Tensor) -> Tensor:
        r"""$\tanh(a) \odot \operatorname{sigmoid}(b)$ for the two channel halves $a, b$ of $x$."""
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(self, v: Tensor, h: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        c = self.c
        # $W_v * v$, padded $c$ rows on top and $c$ columns on each side.
        v_pre = self.v_conv(F.pad(v, (c, c, c, 0)))
        # $W_h * h$, padded on the left only. The 1 x c window of block 1 is placed so
        # that output $j$ reads inputs $j-c..j-1$: pad by $c$, keep the first $W$ outputs.
        W = h.shape[-1]
        h_pre = self.h_conv(F.pad(h, (c, 0, 0, 0)))[..., :W]
        h_pre = h_pre + self.v_to_h(shift_down(v_pre))
        if cond is not None:  # $+ V h$, broadcast over the grid
            v_pre = v_pre + cond
            h_pre = h_pre + cond
        v_new = self.gate(v_pre)
        h_new = self.h_out(self.gate(h_pre))
        return v_new, (h_new if self.first else h + h_new)


# ## The network
#
# Codes $\to$ embedding $E_k$ $\to$ gated blocks $\to$ a small head of two $1 \times 1$
# convolutions with ReLUs on the horizontal stack, giving $K$ logits per position:
#
# $$\ell_{ij} = W_2\, \mathrm{ReLU}\big(W_1\, \mathrm{ReLU}(h^{(L)}_{ij})\big), \qquad p(k_{ij} \mid k_{<ij}) = \mathrm{softmax}(\ell_{ij}).$$
#
# The training loss is the cross-entropy of the true code under these logits,
# averaged over positions: the negative log-likelihood in nats per code.
@dataclass
class PriorConfig:
    num_codes: int = 128  # $K$, must equal the VQ-VAE's
    dim: int = 64  # $p$, channels of both stacks
    num_blocks: int = 5  # $L$
    first_kernel: int = 7
    kernel: int = 3
    num_classes: int = 0  # 0 = unconditional


class GatedPixelCNN(nn.Module):
    r"""$p(k \mid \text{label})$ over grids of code indices $k \in \{0..K-1\}^{h \times w}$."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        self.num_codes, self.num_classes = cfg.num_codes, cfg.num_classes
        self.embed = nn.Embedding(cfg.num_codes, cfg.dim)  # code $k \to E_k$
        self.blocks = nn.ModuleList(
            GatedBlock(cfg.dim, cfg.first_kernel if i == 0 else cfg.kernel, first=(i == 0),
                       num_classes=cfg.num_classes)
            for i in range(cfg.num_blocks))
        self.head1 = nn.Conv2d(cfg.dim, cfg.dim, 1)  # $W_1$
        self.head2 = nn.Conv2d(cfg.dim, cfg.num_codes, 1)  # $W_2$

    # Labels follow the data convention of the course: an int64 per image, $-1$ for
    # "no label". A negative label gets no conditioning vector, so one model can be
    # trained and sampled with and without labels (classifier-free style dropout of
    # labels is then just setting some of them to $-1$).
    def _condition(self, block: GatedBlock, label: Tensor | None) -> Tensor | None:
        if label is None or block.label_embed is None:
            return None
        label = torch.as_tensor(label, device=block.label_embed.weight.device).long().reshape(-1)
        known = (label >= 0).to(block.label_embed.weight.dtype)[:, None]
        cond = block.label_embed(label.clamp(min=0)) * known
        return cond[:, :, None, None]

    def forward_features(self, x: Tensor, label: Tensor | None = None) -> Tensor:
        r"""Logits $(B, K, h, w)$ from already embedded codes `x` $(B, p, h, w)$."""
        v, h = x, x
        for block in self.blocks:
            v, h = block(v, h, self._condition(block, label))
        return self.head2(F.relu(self.head1(F.relu(h))))

    def forward(self, codes: Tensor, label: Tensor | None = None) -> Tensor:
        r"""Logits $(B, K, h, w)$ of $p(k_{ij} \mid k_{<ij})$ for a grid `codes` $(B, h, w)$."""
        x = self.embed(codes).permute(0, 3, 1, 2).contiguous()  # $(B, p, h, w)$
        return self.forward_features(x, label)

    def loss(self, codes: Tensor, label: Tensor | None = None) -> Tensor:
        r"""$-\frac{1}{hw} \sum_{ij} \log p(k_{ij} \mid k_{<ij})$, averaged over the batch (nats per code)."""
        return F.cross_entropy(self(codes, label), codes)

    def log_prob(self, codes: Tensor, label: Tensor | None = None) -> Tensor:
        r"""$\log p(k) = \sum_{ij} \log p(k_{ij} \mid k_{<ij})$ per grid, shape $(B,)$."""
        nll = F.cross_entropy(self(codes, label), codes, reduction="none")
        return -nll.flatten(1).sum(1)

    # ## Sampling
    #
    # Generation is sequential: position $(i, j)$ can only be drawn once all earlier
    # positions are, so we run the network $hw$ times, each time reading the logits at
    # the next position and drawing
    #
    # $$k_{ij} \sim \mathrm{softmax}(\ell_{ij} / T).$$
    #
    # The temperature $T$ trades diversity for quality: $T < 1$ sharpens the
    # distribution towards its most likely codes. Positions after $(i, j)$ still hold
    # zeros during step $(i, j)$; the causal structure guarantees they have no effect.
    # The same structure lets us skip the rows below row $i$ altogether: every layer
    # reads only the rows above and the current one (the vertical convolutions are
    # padded on top only, the shift moves rows down), so the first $i+1$ rows of the
    # output are the same whether or not the rows below are there. Feeding the grid
    # cropped to rows $0..i$ gives the same logits at about half the cost of a whole
    # $8 \times 8$ pass (the columns cannot be cropped: the vertical stack looks right).
    # Pass a `torch.Generator` (or seed the global one) for a reproducible draw.
    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int], label: Tensor | int | None = None,
               temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        r"""Draw `n` grids of shape `shape` = $(h, w)$: int64 $(n, h, w)$ in $[0, K)$."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        device = self.embed.weight.device
        H, W = shape
        if label is not None:
            label = torch.as_tensor(label, device=device).long().reshape(-1).expand(n)
        codes = torch.zeros(n, H, W, dtype=torch.long, device=device)
        for i in range(H):
            for j in range(W):
                logits = self(codes[:, :i + 1], label)[:, :, i, j].float() / temperature
                probs = torch.softmax(logits, dim=1)
                codes[:, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return codes


# ## Presets
#
# | preset | $p$ | blocks | kernels | parameters ($K = 128$ / $K = 512$, unconditional) |
# |---|---|---|---|---|
# | `tiny` | 64 | 5 | 7, then 3 | 641,408 / 690,944 |
# | `paper` | 128 | 15 | 7, then 3 | 5,977,472 / 6,076,160 |
#
# `paper` is the MNIST prior of Zhou Yifan's VQ-VAE post (15 gated blocks of 128 channels).
# `tiny` has just enough blocks that its receptive field covers an $8 \times 8$ grid
# entirely: the vertical stack reaches $3 + (L-1) = 7$ rows up and 7 columns either
# side, the horizontal stack 7 columns left.
PRIOR_PRESETS: dict[str, PriorConfig] = {
    "tiny": PriorConfig(dim=64, num_blocks=5),
    "paper": PriorConfig(dim=128, num_blocks=15),
}


def build_prior(preset: str = "tiny", num_codes: int = 128, num_classes: int = 0,
                **overrides) -> GatedPixelCNN:
    r"""A gated PixelCNN prior from a named preset, for a codebook of `num_codes` codes."""
    if preset not in PRIOR_PRESETS:
        raise ValueError(f"unknown prior preset {preset!r}; choose one of {sorted(PRIOR_PRESETS)}")
    return GatedPixelCNN(replace(PRIOR_PRESETS[preset], num_codes=num_codes,
                                 num_classes=num_classes, **overrides))


# ## Run this file
#
# `python -m annogen.vqvae.prior` builds the tiny prior and checks that it is causal: the
# logits at a position must not change when a code at that position or after it (in
# raster order) changes.
if __name__ == "__main__":
    torch.manual_seed(0)
    prior = build_prior("tiny", num_codes=128, num_classes=21).eval()
    codes = torch.randint(0, 128, (2, 8, 8))
    label = torch.tensor([3, 10])
    with torch.no_grad():
        logits = prior(codes, label)
        i, j = 3, 5
        changed = codes.clone()
        changed[:, i, j:] = (changed[:, i, j:] + 1) % 128  # the rest of row i ...
        changed[:, i + 1:] = (changed[:, i + 1:] + 1) % 128  # ... and every later row
        after = prior(changed, label)
    print(f"tiny prior: {sum(p.numel() for p in prior.parameters()):,} parameters; "
          f"codes {tuple(codes.shape)} -> logits {tuple(logits.shape)}")
    before_ij = logits.flatten(2)[..., : i * 8 + j + 1]
    assert torch.allclose(before_ij, after.flatten(2)[..., : i * 8 + j + 1], atol=1e-6), "not causal"
    assert not torch.allclose(logits, after), "the later positions should see the change"
    print(f"checked: changing the codes from ({i}, {j}) on leaves the logits up to ({i}, {j}) unchanged")
    print("sampled grid:", tuple(prior.sample(1, (8, 8), label=3, generator=torch.Generator().manual_seed(0)).shape))
