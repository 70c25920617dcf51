r"""
---
title: VQ-VAE, the model
summary: The vector quantiser (nearest code, straight-through gradient, codebook and commitment losses, EMA codebook, dead-code restart), the encoder and decoder of the paper's section 4.1, and the presets.
---

# VQ-VAE: an autoencoder with a dictionary in the middle

A VQ-VAE ([van den Oord et al. (2017)](https://arxiv.org/abs/1711.00937), *Neural
Discrete Representation Learning*) is an ordinary convolutional autoencoder with one change: the encoder's
output is not passed on as it is. Every vector of the encoder's feature map is replaced
by the nearest entry of a learned **codebook** $e_1, \dots, e_K \in \mathbb{R}^D$, and
only the *index* of that entry is kept. A $32 \times 32$ image becomes an $8 \times 8$
grid of integers in $\{0, \dots, K-1\}$, and the decoder rebuilds the image from the
codebook vectors those integers point to.

$$
x \xrightarrow{\text{encoder}} z_e(x) \in \mathbb{R}^{D \times h \times w}
  \xrightarrow{\text{nearest code}} k \in \{0..K-1\}^{h \times w}
  \xrightarrow{\text{lookup}} z_q(x) \in \mathbb{R}^{D \times h \times w}
  \xrightarrow{\text{decoder}} \hat x
$$

Why bother? A grid of integers is a sentence in a language of $K$ words, and we
already know how to model sentences: an autoregressive prior (here a gated PixelCNN,
see [[prior.py]]) learns $p(k)$ and generates new grids, which the decoder turns into
new images. The paper's claim is that this discrete bottleneck loses little: on
CIFAR-10 the VQ-VAE reaches 4.67 bits/dim against 4.51 for a continuous VAE of the
same architecture (and 5.14 for VIMCO, the best earlier discrete model), and it does
not suffer from posterior collapse. The reason is in the VAE objective: the encoder is
deterministic (all its mass on one code) and the prior during training is uniform over
the $K$ codes, so the KL term is the constant $\log K$ per latent. A constant has no
gradient, so nothing pushes the latents to be ignored, and the term drops out of the
loss we train with.

The page is laid out in the order the data flows through the model: the quantiser
first (the only new idea, and the one with all the subtleties), then the encoder and
decoder, then the presets that put them together.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "VectorQuantizer",
    "ResidualBlock",
    "Encoder",
    "Decoder",
    "VQVAE",
    "VQVAEConfig",
    "PRESETS",
    "build_vqvae",
]


# ## Two helpers for several processes
#
# When the course's training loop runs on several GPUs (`torchrun`), every process sees
# its own slice of the batch. The quantiser keeps state that is *not* a gradient (the
# EMA statistics, the usage counts, restarted codes), so DDP's gradient averaging does
# not keep it in sync; we sum such statistics over processes ourselves. Both helpers do
# nothing in a single process, which is how the tests and the CPU runs use them.
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce_sum(t: Tensor) -> Tensor:
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# ## The vector quantiser
class VectorQuantizer(nn.Module):
    r"""
    Replace every vector of $z_e \in \mathbb{R}^{B \times D \times H \times W}$ by its
    nearest code $e_k$ of a codebook $e \in \mathbb{R}^{K \times D}$.

    Arguments, with their symbols:

    * `num_codes`: $K$, the size of the codebook.
    * `dim`: $D$, the length of one code (the encoder's output channels).
    * `beta`: $\beta$, the weight of the commitment term (0.25 in the paper, which
      reports the results hold for $\beta$ from 0.1 to 2.0).
    * `ema`: learn the codebook by exponential moving averages instead of by gradient
      (the paper's appendix; see [[#ema-codebook]]).
    * `decay`: $\gamma$ of the moving averages (0.99).
    * `eps`: $\epsilon$ of the Laplace smoothing of the counts ($10^{-5}$).
    * `restart_every`: if $> 0$, call `restart_dead_codes` every that many training
      forward passes, with the batch at hand (0, the default, never does).
    * `min_usage`: a code chosen fewer times than this since the last restart is dead.
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, ema: bool = False,
                 decay: float = 0.99, eps: float = 1e-5, restart_every: int = 0,
                 min_usage: int = 1):
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"need num_codes >= 1 and dim >= 1, got {num_codes}, {dim}")
        self.num_codes, self.dim = num_codes, dim
        self.beta, self.ema, self.decay, self.eps = beta, ema, decay, eps
        self.restart_every, self.min_usage = restart_every, min_usage
        # The codebook starts as uniform noise in $[-\sqrt{3/D}, \sqrt{3/D}]$: variance
        # $1/D$ per component, so a code has length about 1, comparable with the
        # encoder's first outputs (Sonnet's variance-scaling initialiser). Many PyTorch
        # ports use $[-1/K, 1/K]$ instead; with Adam moving a code by at most the
        # learning rate per step, such tiny codes take hundreds of steps to reach the
        # encoder's outputs, and the VQ loss grows meanwhile. With gradient learning the
        # codebook is a parameter; with EMA learning it is a buffer that the update rule
        # overwrites, so no optimiser touches it.
        bound = (3.0 / dim) ** 0.5
        e = torch.empty(num_codes, dim).uniform_(-bound, bound)
        if ema:
            self.register_buffer("embedding", e)
            # The running statistics start as if every code had been chosen once, at
            # the place where it already is: $N_i = 1$, $m_i = e_i$. Then $e_i = m_i / N_i$
            # holds from the first step, and a code nobody picks stays where it is
            # (both $N_i$ and $m_i$ decay by $\gamma$). Starting from $N_i = 0$ instead
            # would divide an unpicked code by $\approx \epsilon$ and throw it far away.
            self.register_buffer("cluster_size", torch.ones(num_codes))
            self.register_buffer("embed_sum", e.clone())
        else:
            self.embedding = nn.Parameter(e)
        # How often each code was chosen since the last restart (training mode only).
        self.register_buffer("usage", torch.zeros(num_codes))
        self.register_buffer("forward_count", torch.zeros((), dtype=torch.long))

    @property
    def codebook(self) -> Tensor:
        r"""The codebook $e \in \mathbb{R}^{K \times D}$, one code per row."""
        return self.embedding

    # ### Finding the nearest code
    #
    # For every vector $z$ (one position of one image) we want
    # $k^* = \arg\min_j \lVert z - e_j \rVert^2$. Computing all the differences
    # $z - e_j$ would build a $(BHW) \times K \times D$ tensor. Expanding the square,
    #
    # $$\lVert z - e_j \rVert^2 = \lVert z \rVert^2 + \lVert e_j \rVert^2 - 2\, z \cdot e_j,$$
    #
    # the only term that couples $z$ and $e_j$ is a dot product, so all $BHW \times K$
    # distances come from one matrix product. The search is not differentiable and
    # needs no gradient. It runs in at least float32 even under bf16 autocast: rounding
    # the distances to 8 bits of mantissa would pick wrong codes.
    def nearest(self, z: Tensor) -> Tensor:
        r"""Indices $k^*$ of the nearest codes for the rows of `z` $\in \mathbb{R}^{N \times D}$."""
        with torch.no_grad(), torch.autocast(z.device.type, enabled=False):
            dtype = torch.promote_types(z.dtype, torch.float32)
            z, e = z.to(dtype), self.embedding.to(dtype)
            d = (z * z).sum(1, keepdim=True) + (e * e).sum(1) - 2.0 * z @ e.t()
            return d.argmin(1)

    # ### The two VQ losses
    #
    # The nearest-code search has no gradient, so nothing so far would teach the codebook
    # where to go or the encoder to stay near the codebook. The paper adds two terms,
    # built with the stop-gradient operator $\mathrm{sg}[\cdot]$ (identity forward, zero
    # gradient backward; `.detach()` in PyTorch):
    #
    # $$\mathcal{L}_{VQ} = \underbrace{\lVert \mathrm{sg}[z_e] - e \rVert_2^2}_{\text{codebook}}
    #   + \beta\, \underbrace{\lVert z_e - \mathrm{sg}[e] \rVert_2^2}_{\text{commitment}}.$$
    #
    # The **codebook** term moves each chosen code $e$ towards the encoder outputs
    # assigned to it (a k-means step done by gradient descent); the encoder cannot see
    # it. The **commitment** term pulls the encoder towards the codes it chose, so that
    # its outputs do not drift away from the codebook faster than the codebook can
    # follow; the codebook cannot see it. Both are averaged over all $BDHW$ numbers,
    # like the reconstruction loss they are added to.
    @staticmethod
    def codebook_loss(z_e: Tensor, z_q: Tensor) -> Tensor:
        r"""$\lVert \mathrm{sg}[z_e] - e \rVert^2$ (mean): gradient flows into the codes only."""
        return F.mse_loss(z_q, z_e.detach())

    @staticmethod
    def commitment_loss(z_e: Tensor, z_q: Tensor) -> Tensor:
        r"""$\lVert z_e - \mathrm{sg}[e] \rVert^2$ (mean): gradient flows into the encoder only."""
        return F.mse_loss(z_e, z_q.detach())

    # ### Forward: quantise, add the losses, pass the gradient straight through
    #
    # The decoder is fed $z_q$, but $z_q$ is a table lookup: its gradient with respect
    # to $z_e$ is zero almost everywhere. The **straight-through estimator** pretends
    # the quantiser is the identity on the way back: the decoder's gradient
    # $\partial \mathcal{L} / \partial z_q$ is copied onto $z_e$ unchanged. One line of
    # code does it, because the stop-gradient hides the correction from autograd:
    #
    # $$z_{st} = z_e + \mathrm{sg}[z_q - z_e] \quad\text{(forward: } z_q\text{; backward: } \partial z_{st} / \partial z_e = I).$$
    #
    # This works because $z_e$ and $z_q$ are close (that is what the commitment loss is
    # for), so the decoder's gradient at $z_q$ is a fair guess of the gradient it would
    # have at $z_e$.
    def forward(self, z_e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""
        `z_e` $(B, D, H, W)$ $\to$ (`z_q` $(B, D, H, W)$ straight-through, the scalar VQ
        loss, `indices` $(B, H, W)$ int64).
        """
        if z_e.dim() != 4 or z_e.shape[1] != self.dim:
            raise ValueError(f"expected z_e of shape (B, {self.dim}, H, W), got {tuple(z_e.shape)}")
        if z_e.dtype in (torch.float16, torch.bfloat16):  # the losses in float32
            z_e = z_e.float()
        B, D, H, W = z_e.shape
        # Every position is one vector: $(B, D, H, W) \to (BHW, D)$.
        z = z_e.permute(0, 2, 3, 1).reshape(-1, D)

        if self.training and self.restart_every > 0:
            self.forward_count += 1
            if int(self.forward_count) % self.restart_every == 0:
                self.restart_dead_codes(z_e, self.min_usage)

        # $k^* = \arg\min_j \lVert z - e_j \rVert^2$, then $z_q = e_{k^*}$.
        k = self.nearest(z)
        z_q = F.embedding(k, self.embedding).to(z.dtype)
        if self.training:
            self.usage += torch.bincount(k, minlength=self.num_codes).to(self.usage.dtype)

        if self.ema:
            # The codebook learns from its moving averages, so only the commitment
            # term stays in the loss; the codes move after this batch has used them.
            loss = self.beta * self.commitment_loss(z, z_q)
            if self.training:
                self.ema_update(z.detach(), k)
        else:
            loss = self.codebook_loss(z, z_q) + self.beta * self.commitment_loss(z, z_q)

        # $z_{st} = z_e + \mathrm{sg}[z_q - z_e]$, back to $(B, D, H, W)$.
        z_st = z + (z_q - z).detach()
        z_st = z_st.reshape(B, H, W, D).permute(0, 3, 1, 2).contiguous()
        return z_st, loss, k.reshape(B, H, W)

    # ### EMA codebook
    #
    # The paper's appendix offers a second way to learn the codebook, which trains
    # faster and more stably: forget the codebook loss and set every code to the
    # *running mean* of the encoder outputs assigned to it, i.e. an online k-means.
    # With $n_i$ the number of vectors assigned to code $i$ in this batch and
    # $s_i = \sum_{j: k_j = i} z_j$ their sum, the running count $N_i$ and running sum
    # $m_i$ are updated with decay $\gamma$:
    #
    # $$N_i \leftarrow \gamma N_i + (1-\gamma)\, n_i, \qquad m_i \leftarrow \gamma m_i + (1-\gamma)\, s_i .$$
    #
    # A code that is rarely chosen has $N_i \approx 0$ and $e_i = m_i / N_i$ would
    # divide by almost nothing, so the counts are **Laplace smoothed** first: every
    # code gets $\epsilon$ extra, and the result is rescaled so that the total
    # $n = \sum_i N_i$ is unchanged:
    #
    # $$\tilde N_i = \frac{N_i + \epsilon}{n + K\epsilon}\, n, \qquad e_i = \frac{m_i}{\tilde N_i}.$$
    #
    # We store the raw $N_i$ and smooth a copy each time, as Sonnet does. With several
    # processes, $n_i$ and $s_i$ are summed over all of them first, so every process
    # computes the same codebook from the whole global batch.
    @torch.no_grad()
    def ema_update(self, z: Tensor, k: Tensor) -> None:
        r"""One EMA step from vectors `z` $(N, D)$ assigned to codes `k` $(N,)$."""
        gamma, eps, K = self.decay, self.eps, self.num_codes
        one_hot = F.one_hot(k, K).to(z.dtype)  # (N, K)
        n = _all_reduce_sum(one_hot.sum(0))  # $n_i$
        s = _all_reduce_sum(one_hot.t() @ z)  # $s_i$, (K, D)
        self.cluster_size.mul_(gamma).add_((1 - gamma) * n)  # $N_i$
        self.embed_sum.mul_(gamma).add_((1 - gamma) * s)  # $m_i$
        self.embedding.copy_(self.embed_sum / self.smoothed_counts()[:, None])  # $e_i = m_i / \tilde N_i$

    def smoothed_counts(self) -> Tensor:
        r"""$\tilde N_i = (N_i + \epsilon) / (n + K\epsilon) \cdot n$ with $n = \sum_i N_i$."""
        N = self.cluster_size
        n = N.sum()
        return (N + self.eps) / (n + self.num_codes * self.eps) * n

    # ### Restarting dead codes
    #
    # Codebooks *collapse*: a code that is far from every encoder output is never
    # chosen, so neither the codebook loss nor the EMA ever moves it, and it stays dead
    # forever. Even with the initialisation above, which puts the codes on the scale of
    # the encoder's outputs, this happens to most codes in the first steps: the encoder
    # is still changing fast, its outputs gather in a small region, and a few codes near
    # it win everything (in the chapter's default run, 3% of the codes were chosen in the
    # first 50 steps; see the README's discussion). The common remedy (not in the paper; used by Jukebox, many
    # VQGAN ports and others) is to watch usage over a window of steps and move every
    # code chosen fewer than `min_usage` times onto a randomly chosen encoder output
    # of the current batch, where it is certain to be chosen at least once.
    #
    # With several processes the usage counts are summed over processes, so all agree
    # on which codes are dead, and the new codes are drawn from the batch of process 0
    # and broadcast, so all processes end up with the same codebook. (DDP itself would
    # not notice: it only averages gradients.) Every process must therefore call this
    # at the same step, which is what `restart_every` does. Under DDP's default
    # `broadcast_buffers=True` the `usage` buffer is overwritten by process 0's before
    # every forward, so the window mostly counts process 0's batches; the dead set is
    # still the same everywhere, because it comes from the summed counts. Adam's moment
    # estimates for a restarted code are left as they were.
    @torch.no_grad()
    def restart_dead_codes(self, z_e: Tensor, min_usage: int = 1) -> int:
        r"""
        Move codes used fewer than `min_usage` times since the last restart onto random
        rows of `z_e` ($(B, D, H, W)$ or already flat $(N, D)$). Resets the usage window.
        Returns how many codes were restarted.
        """
        z = z_e.detach()
        z = z.permute(0, 2, 3, 1).reshape(-1, self.dim) if z.dim() == 4 else z.reshape(-1, self.dim)
        usage = _all_reduce_sum(self.usage.clone())
        dead = (usage < min_usage).nonzero().flatten()
        self.usage.zero_()
        if dead.numel() == 0:
            return 0
        # Without replacement when the batch is large enough, so two dead codes do not
        # land on the same vector and compete for it.
        if z.shape[0] >= dead.numel():
            pick = torch.randperm(z.shape[0], device=z.device)[: dead.numel()]
        else:
            pick = torch.randint(z.shape[0], (dead.numel(),), device=z.device)
        new = z[pick].to(self.embedding.dtype).contiguous()
        if _distributed():
            dist.broadcast(new, src=0)
        self.embedding[dead] = new
        if self.ema:
            # As at initialisation: count 1, sum = the code, so $e_i = m_i / N_i$ holds.
            self.cluster_size[dead] = 1.0
            self.embed_sum[dead] = new
        return int(dead.numel())


# ## Encoder and decoder
#
# The paper's section 4.1 (the CIFAR-10 comparison with VAE and VIMCO) gives the
# architecture in two sentences: *"The encoder consists of 2 strided convolutional
# layers with stride 2 and window size 4 × 4, followed by two residual 3 × 3 blocks
# (implemented as ReLU, 3x3 conv, ReLU, 1x1 conv), all having 256 hidden units. The
# decoder similarly has two residual 3 × 3 blocks, followed by two transposed
# convolutions with stride 2 and window size 4 × 4."* Each stride-2 layer halves the
# side, so a $32 \times 32$ image becomes an $8 \times 8$ grid of codes, and a
# $28 \times 28$ digit a $7 \times 7$ grid.
#
# ### The residual block
#
# $$\mathrm{Res}(x) = x + \mathrm{Conv}_{1\times1}\big(\mathrm{ReLU}(\mathrm{Conv}_{3\times3}(\mathrm{ReLU}(x)))\big)$$
#
# The block starts with its ReLU, so the skip path $x$ stays linear and the output of
# the last block can take any sign, which matters when it is $z_e$ itself.
class ResidualBlock(nn.Module):
    r"""ReLU, 3x3 conv ($C \to C_{res}$), ReLU, 1x1 conv ($C_{res} \to C$), plus the input."""

    def __init__(self, channels: int, res_channels: int):
        super().__init__()
        self.conv3 = nn.Conv2d(channels, res_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(res_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv1(F.relu(self.conv3(F.relu(x))))


# ### The encoder
#
# Two $4 \times 4$ stride-2 convolutions (padding 1, so the side is exactly halved),
# a ReLU between them, then the residual blocks. The paper quantises the 256-channel
# output directly ($D$ = hidden). When a smaller code length $D$ is wanted (our tiny
# preset, or Sonnet's example with $D = 64$), a ReLU and a $1 \times 1$ projection to
# $D$ channels follow, as in Sonnet's `pre_vq_conv`.
class Encoder(nn.Module):
    r"""$x$ $(B, C_{in}, H, W) \to z_e$ $(B, D, H/4, W/4)$."""

    def __init__(self, in_channels: int, hidden: int, res_hidden: int, num_res_blocks: int,
                 latent_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 4, stride=2, padding=1)
        self.res = nn.Sequential(*[ResidualBlock(hidden, res_hidden) for _ in range(num_res_blocks)])
        self.proj = nn.Conv2d(hidden, latent_dim, 1) if latent_dim != hidden else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.res(self.conv2(F.relu(self.conv1(x))))
        return self.proj(F.relu(h)) if self.proj is not None else h


# ### The decoder
#
# The mirror image: (a $1 \times 1$ projection from $D$ back to the hidden width when
# $D \neq$ hidden), the residual blocks, then two $4 \times 4$ stride-2 *transposed*
# convolutions, each doubling the side: $(h - 1) \cdot 2 - 2 \cdot 1 + 4 = 2h$. The last
# one outputs the image channels with no activation; the images of the course live in
# $[-1, 1]$ and the reconstruction loss is a plain mean squared error.
class Decoder(nn.Module):
    r"""$z_q$ $(B, D, h, w) \to \hat x$ $(B, C_{in}, 4h, 4w)$."""

    def __init__(self, out_channels: int, hidden: int, res_hidden: int, num_res_blocks: int,
                 latent_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(latent_dim, hidden, 1) if latent_dim != hidden else None
        self.res = nn.Sequential(*[ResidualBlock(hidden, res_hidden) for _ in range(num_res_blocks)])
        self.deconv1 = nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1)
        self.deconv2 = nn.ConvTranspose2d(hidden, out_channels, 4, stride=2, padding=1)

    def forward(self, z_q: Tensor) -> Tensor:
        h = self.proj(z_q) if self.proj is not None else z_q
        h = F.relu(self.res(h))
        return self.deconv2(F.relu(self.deconv1(h)))


# ## The configuration and the presets
#
# Two named presets, built by name with [[#build_vqvae]] (parameter counts for RGB
# input; the EMA codebook of `tiny` is a buffer, not a parameter):
#
# | preset | hidden | residual hidden | blocks | $D$ | $K$ | codebook | parameters |
# |---|---|---|---|---|---|---|---|
# | `tiny` | 64 | 32 | 2 | 32 | 128 | EMA, restarts | 223,907 (+ 4,096 codebook) |
# | `paper` | 256 | 256 | 2 | 256 | 512 | gradient | 4,877,059 |
#
# **`paper`** is section 4.1 read literally: every layer 256 channels wide, the
# residual blocks included, and no projection, so the codes have $D = 256$. The
# paper gives $K = 512$ for its ImageNet model and not for this one; we use 512 too.
# The CIFAR-10 latents are quoted as $8 \times 8 \times 10$, which, by analogy with
# the ImageNet model's $32 \times 32 \times 1$, reads as ten codes per position; we
# keep one code per position (the form every later model of the course uses), so our
# `paper` preset is $8 \times 8 \times 1$ and is not expected to reproduce 4.67
# bits/dim. Training as in the paper: Adam, learning rate $2 \cdot 10^{-4}$, batch
# 128, 250k steps.
#
# **`tiny`** is the CPU default, sized so that a few thousand steps on $32 \times 32$
# shapes take minutes on two cores. It follows the Sonnet example's shape (narrow
# residual blocks, a projection to a short code) at half its width, and uses what
# makes a short run reliable: the EMA codebook (which does not oscillate the way the
# gradient-learnt one does in its first hundred steps), dead-code restarts every 100
# steps, and Adam at $10^{-3}$. The dataclass defaults are the `tiny` preset.
@dataclass
class VQVAEConfig:
    in_channels: int = 3
    hidden: int = 64  # channels of the strided convolutions and the residual stream
    res_hidden: int = 32  # channels inside a residual block
    num_res_blocks: int = 2
    latent_dim: int = 32  # $D$
    num_codes: int = 128  # $K$
    beta: float = 0.25  # $\beta$
    ema: bool = True  # learn the codebook by EMA instead of by gradient
    decay: float = 0.99  # $\gamma$
    eps: float = 1e-5  # $\epsilon$
    restart_every: int = 100  # dead-code restart period in training steps (0 = never)
    lr: float = 1e-3  # not used by the model: the learning rate the preset was tried with


PRESETS: dict[str, VQVAEConfig] = {
    "tiny": VQVAEConfig(),
    "paper": VQVAEConfig(hidden=256, res_hidden=256, num_res_blocks=2, latent_dim=256,
                         num_codes=512, ema=False, restart_every=0, lr=2e-4),
}


# ## The VQ-VAE
#
# Encoder, quantiser and decoder in a row. The training loss of the paper is
#
# $$\mathcal{L} = \underbrace{\lVert x - \hat x \rVert^2}_{\text{reconstruction}} + \lVert \mathrm{sg}[z_e] - e \rVert^2 + \beta \lVert z_e - \mathrm{sg}[e] \rVert^2,$$
#
# whose last two terms the quantiser returns as `vq_loss`. (The paper writes the
# reconstruction term as $-\log p(x \mid z_q)$; a Gaussian decoder with fixed variance
# makes it the squared error up to constants.) `losses` computes all of it for a
# training step.
class VQVAE(nn.Module):
    r"""`forward(x)` $\to$ ($\hat x$, VQ loss, indices); `encode`, `decode_indices`."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.in_channels, cfg.hidden, cfg.res_hidden, cfg.num_res_blocks,
                               cfg.latent_dim)
        self.vq = VectorQuantizer(cfg.num_codes, cfg.latent_dim, beta=cfg.beta, ema=cfg.ema,
                                  decay=cfg.decay, eps=cfg.eps, restart_every=cfg.restart_every)
        self.decoder = Decoder(cfg.in_channels, cfg.hidden, cfg.res_hidden, cfg.num_res_blocks,
                               cfg.latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        z_e = self.encoder(x)
        z_q, vq_loss, indices = self.vq(z_e)
        return self.decoder(z_q), vq_loss, indices

    def losses(self, x: Tensor) -> dict[str, Tensor]:
        r"""`loss` = `recon` + `vq` for one batch, and the `indices` it was coded with."""
        x_hat, vq_loss, indices = self(x)
        recon = F.mse_loss(x_hat.float(), x.float())
        return {"loss": recon + vq_loss, "recon": recon, "vq": vq_loss, "indices": indices,
                "x_hat": x_hat}

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        r"""Images $(B, C, H, W) \to$ code indices $(B, H/4, W/4)$."""
        return self.vq(self.encoder(x))[2]

    def decode_indices(self, indices: Tensor) -> Tensor:
        r"""Code indices $(B, h, w) \to$ images $(B, C, 4h, 4w)$: look up $e_k$, then decode."""
        z_q = F.embedding(indices, self.vq.codebook).permute(0, 3, 1, 2).contiguous()
        return self.decoder(z_q)


def build_vqvae(preset: str = "tiny", in_channels: int = 3, **overrides) -> VQVAE:
    r"""A VQ-VAE from a named preset (`tiny` or `paper`); keyword arguments override fields."""
    if preset not in PRESETS:
        raise ValueError(f"unknown VQ-VAE preset {preset!r}; choose one of {sorted(PRESETS)}")
    return VQVAE(replace(PRESETS[preset], in_channels=in_channels, **overrides))


# ## Run this file
#
# `python -m annogen.vqvae.model` builds the tiny VQ-VAE, codes four shapes and checks
# the quantiser's defining property: every $z_q$ vector is the codebook entry nearest
# to its $z_e$, found here by brute force over all $K$ codes.
if __name__ == "__main__":
    from annogen.data import Shapes

    torch.manual_seed(0)
    model = build_vqvae("tiny").eval()
    x = torch.stack([Shapes(n=4)[i]["image"] for i in range(4)])
    with torch.no_grad():
        z_e = model.encoder(x)
        z_q, vq_loss, k = model.vq(z_e)
        x_hat = model.decoder(z_q)
    print(f"tiny VQ-VAE: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"K = {model.vq.num_codes}, D = {model.vq.dim}")
    print(f"x {tuple(x.shape)} -> z_e {tuple(z_e.shape)} -> codes {tuple(k.shape)} -> x_hat {tuple(x_hat.shape)}")
    z = z_e.permute(0, 2, 3, 1).reshape(-1, model.vq.dim)
    nearest = torch.cdist(z, model.vq.codebook).argmin(dim=1)
    assert torch.equal(nearest, k.flatten()), "a code is not the nearest one"
    assert torch.allclose(z_q.permute(0, 2, 3, 1).reshape(-1, model.vq.dim), model.vq.codebook[nearest])
    print(f"checked: each of the {k.numel()} z_q vectors is the nearest of the {model.vq.num_codes} codes")
