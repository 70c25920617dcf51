r"""
---
title: VAR, the multi-scale residual quantiser
summary: One codebook, many scales - the latent map is quantised coarse to fine, each scale coding what the coarser ones left over, with a small convolution phi after every upsampling; a Laplacian pyramid of features.
---

# VAR: the multi-scale residual quantiser

VQGAN ([[vqgan/model.py]]) turns the encoder's feature map $f \in \mathbb{R}^{c \times h \times w}$
into *one* grid of $h w$ code indices, which its transformer then reads in raster order.
VAR ([Tian et al. (2024)](https://arxiv.org/abs/2404.02905)) keeps the autoencoder and
replaces the quantiser: $f$ becomes a **pyramid** of $M$ token maps $r_1, \dots, r_M$ of
sides $h_1 < h_2 < \dots < h_M = h$ (square maps, $w_k = h_k$; at $256^2$:
$1, 2, 3, 4, 5, 6, 8, 10, 13, 16$), all drawn from **one shared codebook**
$e_1, \dots, e_K$. (The paper calls the number of scales $K$; the course keeps $K$ for
the codebook size, [[notation.md]].) $r_1$ is a single token that says roughly what the
whole image is; every later map codes what the coarser ones got wrong.

Encoding is residual. With $f_{rest} = f$ and $\hat f = 0$, for $k = 1, \dots, M$:

$$r_k = Q\big(\operatorname{down}_{h_k}(f_{rest})\big), \qquad
h_k = \phi_k\big(\operatorname{up}_{h}(e(r_k))\big), \qquad
\hat f \leftarrow \hat f + h_k, \qquad f_{rest} \leftarrow f_{rest} - h_k,$$

with $Q$ the nearest-code lookup of VQ-VAE, $\operatorname{down}$ area (average)
downsampling, $\operatorname{up}$ bicubic upsampling and $e(\cdot)$ the codebook
embedding. (The $h_k$ inside the sum is a feature map, the contribution of scale $k$;
the $h_k$ in a subscript is that scale's side. The paper uses both.) The decoder sees
$\hat f$ after all $M$ scales. The pyramid holds $\sum_k h_k^2$ tokens: 680 at $256^2$
against VQGAN's 256, but the transformer ([[model.py]]) predicts a whole map per step,
so it takes $M = 10$ steps instead of 256. It is a Laplacian pyramid of the features;
[[#a-laplacian-pyramid-of-features]] below makes that precise.

Run it: `python src/annogen/var/quant.py` (or `python -m annogen.var.quant`) encodes a
random feature map, decodes it back, and prints the residual energy after each scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ## Scale schedules
#
# The paper's schedules $h_1, \dots, h_M$ for a $16 \times 16$ latent ($256^2$ images)
# and a $32 \times 32$ one ($512^2$), and the small ones we use for the $4 \times 4$ and
# $8 \times 8$ latents of the course's $16^2$ and $32^2$ images.
PATCH_NUMS = {
    4: (1, 2, 3, 4),
    8: (1, 2, 3, 4, 6, 8),
    16: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
    32: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32),
}


def default_patch_nums(latent: int) -> tuple[int, ...]:
    r"""The scale schedule for a latent map of side `latent`."""
    if latent not in PATCH_NUMS:
        raise ValueError(f"no default scale schedule for a {latent}x{latent} latent; "
                         f"pass patch_nums (known: {sorted(PATCH_NUMS)})")
    return PATCH_NUMS[latent]


# ## The refinement $\phi$
#
# Bicubic upsampling of a $1 \times 1$ or $2 \times 2$ map is very smooth: every
# position of $\operatorname{up}(e(r_k))$ is a blend of a few codes. The paper follows
# it with a small convolution that can sharpen or shift the blend, mixed half and half
# with its input:
#
# $$\phi(h) = (1 - q)\, h + q\, \operatorname{Conv}_{3 \times 3}(h), \qquad q = 0.5$$
#
# (`quant_resi` in the official code). With $q = 0$ it is the identity.
class Phi(nn.Conv2d):
    def __init__(self, dim: int, q: float = 0.5):
        super().__init__(dim, dim, kernel_size=3, padding=1)
        self.q = abs(q)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (1 - self.q) * h + self.q * super().forward(h)


# ### Four convolutions for ten scales
#
# One $\phi$ per scale would be 10 convolutions, one for all would ask the same
# weights to refine a $1 \times 1$ blur and a full-resolution map. The official code
# shares **4** of them ("partially shared", `share_quant_resi=4`): scale $k$ (counted
# from 0) sits at the relative depth $k / (M - 1) \in [0, 1]$, the $n = 4$ convolutions
# at the ticks `linspace(1/12, 11/12, 4)` $= \frac{3}{36}, \frac{13}{36}, \frac{23}{36}, \frac{33}{36}$,
# ten apart, and each scale takes the nearest tick. At $M = 10$ the scales sit at
# multiples of $\frac{4}{36}$, and two of them fall exactly halfway between two ticks:
# $k = 2$ at $\frac{8}{36}$ (between $\frac{3}{36}$ and $\frac{13}{36}$) and $k = 7$ at
# $\frac{28}{36}$ (between $\frac{23}{36}$ and $\frac{33}{36}$). Floating-point rounding
# of the ticks puts both on the later one; we compute the ticks the way NumPy's
# `linspace` does (start $+ i \cdot$ step, the last set to the stop exactly) so that we
# round the same way: $[0, 0, 1, 1, 1, 2, 2, 3, 3, 3]$.
#
# For any other number $n$ of shared convolutions (and for one per scale) the official
# code spaces the ticks differently, `linspace(1/(2n), 1 - 1/(2n), n)`: the centres of
# $n$ equal bins. The $\frac{1}{3n}$ margins are a special case of $n = 4$; we copy both.
def phi_index(k: int, num_scales: int, num_phis: int = 4) -> int:
    r"""Which of the `num_phis` shared convolutions scale `k` (0-based) of `num_scales` uses."""
    if num_scales == 1 or num_phis == 1:
        return 0
    margin = 1 / (3 * num_phis) if num_phis == 4 else 1 / (2 * num_phis)
    start, stop = margin, 1 - margin
    step = (stop - start) / (num_phis - 1)
    ticks = [start + i * step for i in range(num_phis - 1)] + [stop]
    at = k / (num_scales - 1)
    distances = [abs(t - at) for t in ticks]
    return distances.index(min(distances))  # the first of equals, as argmin


# ## The quantiser
#
# `MultiScaleQuantizer(num_codes, dim, patch_nums)`: $K$ codes of length $c$ (4096 and
# 32 in the paper; VQGAN used 1024 codes of 256), the schedule $h_1, \dots, h_M$,
# `num_phis` shared $\phi$ convolutions with mixing weight `q`, the commitment weight
# $\beta$. Codes start uniform in $(-1/K, 1/K)$, as in VQGAN's official code. VAR's
# public code has the same initialiser (`eini` with a negative argument) but never calls
# it, so its codebook starts as PyTorch's `nn.Embedding` default, $\mathcal{N}(0, 1)$;
# the small uniform start, with the dead-code restarts below, is our choice.
#
# `restart_every` is not in the official code: with a $K = 4096$ codebook and
# millions of steps the paper does without, but in a few hundred CPU steps most of a
# codebook that starts near zero is never chosen. As in the VQ-VAE chapter
# ([[vqvae/model.py#restarting-dead-codes]]), every `restart_every` training
# forwards the codes that no scale chose since the last restart are moved onto
# random residual vectors of the current batch. 0 turns it off.
class MultiScaleQuantizer(nn.Module):
    r"""Residual quantisation of $f$ $(B, c, h, w)$ into maps $r_k$ of sides `patch_nums`.

    * `num_codes` — $K$, the size of the one codebook all scales share.
    * `dim` — $c$, the length of a code (the channels of $f$).
    * `patch_nums` — $h_1, \dots, h_M$; the last is the side of $f$.
    * `num_phis`, `q` — the shared refinements $\phi$ and their mixing weight.
    * `beta` — weight of the term that pulls the encoder towards $\hat f$.
    * `restart_every` — dead-code restart period in training forwards (0 = never).
    """

    def __init__(self, num_codes: int, dim: int, patch_nums: tuple[int, ...], num_phis: int = 4,
                 q: float = 0.5, beta: float = 0.25, restart_every: int = 0):
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.patch_nums = tuple(patch_nums)
        self.beta, self.restart_every = beta, restart_every
        self.embedding = nn.Embedding(num_codes, dim)
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / num_codes, 1.0 / num_codes)
        self.phis = nn.ModuleList(Phi(dim, q) for _ in range(num_phis))
        self.register_buffer("usage", torch.zeros(num_codes))
        self.register_buffer("forward_count", torch.zeros((), dtype=torch.long))

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    def phi(self, k: int) -> Phi:
        r"""$\phi_k$, the shared convolution of scale $k$."""
        return self.phis[phi_index(k, self.num_scales, len(self.phis))]

    # ### The two resamplings
    #
    # Down: the mean over each cell of a $p \times p$ partition (area interpolation;
    # for $16 \to 13$ the cells overlap, as PyTorch computes it). Up: bicubic to the
    # full side $h$. The last scale has $h_M = h$ and needs neither.
    def down(self, f: torch.Tensor, p: int) -> torch.Tensor:
        return f if f.shape[-1] == p else F.interpolate(f, size=(p, p), mode="area")

    def up(self, z: torch.Tensor) -> torch.Tensor:
        H = self.patch_nums[-1]
        return z if z.shape[-1] == H else F.interpolate(z, size=(H, H), mode="bicubic")

    # ### From tokens to $h_k$
    #
    # $h_k = \phi_k(\operatorname{up}(e(r_k)))$: the codes of map $r_k$ $(B, p, p)$ as a
    # $(B, c, p, p)$ tensor, upsampled, refined. Encoding, decoding, teacher forcing and
    # sampling all go through this one function, which is what makes them agree.
    def h_of(self, k: int, r_k: torch.Tensor) -> torch.Tensor:
        e = self.embedding(r_k).permute(0, 3, 1, 2)
        return self.phi(k)(self.up(e))

    # Nearest code by squared distance, $\|z\|^2 + \|e\|^2 - 2 z \cdot e$, for
    # $z$ of shape $(B, c, p, p)$; returns $(B, p, p)$.
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        B, C, p, _ = z.shape
        z_flat = z.permute(0, 2, 3, 1).reshape(-1, C)
        e = self.embedding.weight
        d = z_flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * z_flat @ e.t()
        return d.argmin(dim=1).view(B, p, p)

    # ## Encoding: $f \mapsto r_1, \dots, r_K$
    #
    # The loop of the introduction, without gradients. `f_to_idxs(f)` returns the list
    # of maps $r_k$ $(B, h_k, h_k)$; `encode(f)` also returns $\hat f$ and the
    # downsampled residuals (which the dead-code restart draws from).
    @torch.no_grad()
    def encode(self, f: torch.Tensor):
        f_rest = f.detach().float().clone()
        f_hat = torch.zeros_like(f_rest)
        idxs, rests = [], []
        for k, p in enumerate(self.patch_nums):
            z = self.down(f_rest, p)
            r_k = self.nearest(z)
            h_k = self.h_of(k, r_k)
            f_hat = f_hat + h_k
            f_rest = f_rest - h_k
            idxs.append(r_k)
            rests.append(z.permute(0, 2, 3, 1).reshape(-1, self.dim))
        return idxs, f_hat, rests

    def f_to_idxs(self, f: torch.Tensor) -> list[torch.Tensor]:
        r"""The token maps $r_k$ $(B, h_k, h_k)$, int64, of the features $f$ $(B, c, h, w)$."""
        return self.encode(f)[0]

    # ## Decoding: $r_1, \dots, r_K \mapsto \hat f$
    #
    # $\hat f = \sum_k \phi_k(\operatorname{up}(e(r_k)))$. Given only the first $k$
    # maps, the same sum stops early: `idxs_to_fhat(idxs[:k])` is the image "after
    # scale $k$" of the chapter's first experiment.
    def idxs_to_fhat(self, idxs: list[torch.Tensor]) -> torch.Tensor:
        r"""$\hat f$ $(B, c, h, w)$ from the maps $r_1, \dots, r_k$ (any prefix of the pyramid)."""
        f_hat = 0.0
        for k, r_k in enumerate(idxs):
            f_hat = f_hat + self.h_of(k, r_k)
        return f_hat

    # ## A Laplacian pyramid of features
    #
    # The classic Laplacian pyramid (Burt and Adelson, 1983) stores an image as a small
    # blurred copy plus, for every finer level, what the blurring lost there: level $k$
    # is $G_k - \operatorname{up}(G_{k+1})$, the detail between two resolutions, and
    # summing the levels from coarse to fine rebuilds the image exactly. VAR's
    # tokenizer is that idea run on the feature map $f$: $h_1$ is a $1 \times 1$ average,
    # upsampled; $h_k$ is what is still missing, seen at resolution $h_k$; the running
    # sum $\hat f^{(k)} = h_1 + \dots + h_k$ is the image "up to scale $k$". Two
    # differences matter. Each level is *quantised*, so $h_k$ also has to correct the
    # coarser levels' rounding errors, not only add detail; and it is the residual after
    # *all* coarser levels that is downsampled, so nothing guarantees that $h_k$ holds
    # only frequencies between two resolutions.
    #
    # `pyramid(f)` returns the contributions $h_k$, the running sums $\hat f^{(k)}$ and
    # the energy left, $\|f - \hat f^{(k)}\|^2 / \|f\|^2$ after each scale, the numbers
    # and pictures of the chapter's Laplacian figure ([[experiments.py#laplacian_figure]]).
    @torch.no_grad()
    def pyramid(self, f: torch.Tensor) -> dict:
        idxs = self.f_to_idxs(f)
        f = f.float()
        h, sums, left, f_hat = [], [], [], torch.zeros_like(f)
        for k, r_k in enumerate(idxs):
            h_k = self.h_of(k, r_k)
            f_hat = f_hat + h_k
            h.append(h_k)
            sums.append(f_hat)
            left.append(((f - f_hat).pow(2).sum() / f.pow(2).sum()).item())
        return {"idxs": idxs, "h": h, "f_hat": sums, "energy_left": left,
                "energy_of_h": [(x.pow(2).sum() / f.pow(2).sum()).item() for x in h]}

    # ## Training the tokenizer
    #
    # The gradient of $\hat f$ with respect to the codebook and the $\phi$s flows
    # through the sum above (the indices are constants). The loss averages, over the
    # $M$ partial sums $\hat f^{(k)} = h_1 + \dots + h_k$, VQ-VAE's two terms:
    #
    # $$\mathcal{L}_{VQ} = \frac{1}{M} \sum_{k=1}^{M} \Big( \beta\, \|\operatorname{sg}[\hat f^{(k)}] - f\|^2 + \|\hat f^{(k)} - \operatorname{sg}[f]\|^2 \Big)$$
    #
    # (means over elements). The second pulls every partial sum — and so the coarse
    # scales on their own — towards $f$: it trains the codebook and the $\phi$s. The
    # first commits the encoder to what the pyramid can express, with weight $\beta$:
    # VQ-VAE's form, not the "legacy" placement of VQGAN's official code
    # ([[vqgan/model.py#VQGANQuantizer]]). The decoder gets the
    # straight-through $\hat f_{st} = f + \operatorname{sg}[\hat f - f]$: the value of
    # $\hat f$, the gradient of $f$.
    def forward(self, f: torch.Tensor):
        r"""Returns $\hat f_{st}$ $(B, c, h, w)$, $\mathcal{L}_{VQ}$ and the maps $r_k$."""
        f = f.float()
        idxs, _, rests = self.encode(f)
        f_hat, loss = 0.0, 0.0
        for k, r_k in enumerate(idxs):
            f_hat = f_hat + self.h_of(k, r_k)
            loss = loss + self.beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f.detach())
        loss = loss / self.num_scales
        f_hat_st = f + (f_hat - f).detach()
        if self.training:
            self.count_and_restart(idxs, rests)
        return f_hat_st, loss, idxs

    @torch.no_grad()
    def count_and_restart(self, idxs: list[torch.Tensor], rests: list[torch.Tensor]) -> None:
        for r_k in idxs:
            self.usage += torch.bincount(r_k.flatten(), minlength=self.num_codes).float()
        self.forward_count += 1
        if self.restart_every > 0 and int(self.forward_count) % self.restart_every == 0:
            z = torch.cat(rests)
            dead = (self.usage < 1).nonzero().flatten()
            if dead.numel() > 0:
                pick = torch.randint(z.shape[0], (dead.numel(),), device=z.device)
                self.embedding.weight[dead] = z[pick].to(self.embedding.weight.dtype)
            self.usage.zero_()

    # ## Teacher forcing for the transformer
    #
    # The transformer ([[model.py]]) predicts $r_k$ from what scales $1, \dots, k-1$
    # have built: its input for scale $k \ge 2$ is $\hat f^{(k-1)}$ downsampled to
    # $h_k$, one $c$-vector per token of $r_k$. Concatenated over $k = 2, \dots, M$
    # this is $(B, L - h_1^2, c)$, $(B, 679, 32)$ in the paper. Given only a prefix
    # $r_1, \dots, r_m$ of the pyramid, it returns the inputs of scales
    # $2, \dots, m + 1$: what the sampler without a cache feeds the network.
    def teacher_inputs(self, idxs: list[torch.Tensor]) -> torch.Tensor:
        B = idxs[0].shape[0]
        f_hat = 0.0
        inputs = []
        for k in range(min(len(idxs), self.num_scales - 1)):
            f_hat = f_hat + self.h_of(k, idxs[k])
            inputs.append(self.next_input(f_hat, k + 1))
        if not inputs:
            return self.embedding.weight.new_zeros(B, 0, self.dim)
        return torch.cat(inputs, dim=1)

    # The input tokens of scale `k`: $\operatorname{down}_{h_k}(\hat f)$ as $(B, h_k^2, c)$.
    def next_input(self, f_hat: torch.Tensor, k: int) -> torch.Tensor:
        z = self.down(f_hat, self.patch_nums[k])
        return z.flatten(2).transpose(1, 2)

    # The flat token sequence $(B, L)$ of a pyramid, scale by scale, row by row, and back.
    def flatten_idxs(self, idxs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([r.flatten(1) for r in idxs], dim=1)

    def split_idxs(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for p in self.patch_nums:
            out.append(tokens[:, start:start + p * p].reshape(-1, p, p))
            start += p * p
        return out


# ## Demo
#
# `python src/annogen/var/quant.py`: an untrained quantiser with the paper's ten
# scales on a random $16 \times 16$ feature map: the token maps, the $\phi$ mapping,
# the residual energy after each scale, and the checked property that decoding the
# tokens gives the $\hat f$ that encoding built.
if __name__ == "__main__":
    torch.manual_seed(0)
    quant = MultiScaleQuantizer(num_codes=4096, dim=32, patch_nums=PATCH_NUMS[16])
    f = torch.randn(2, 32, 16, 16)
    idxs, f_hat, _ = quant.encode(f)
    print(f"f {tuple(f.shape)} -> {quant.num_scales} maps:", [tuple(r.shape[1:]) for r in idxs],
          f"= {sum(r[0].numel() for r in idxs)} tokens per image")
    print("phi of each scale:", [phi_index(k, quant.num_scales) for k in range(quant.num_scales)])
    print(f"parameters: codebook {quant.embedding.weight.numel():,}, "
          f"phis {sum(p.numel() for p in quant.phis.parameters()):,}")
    left = quant.pyramid(f)["energy_left"]
    print("energy left after each scale (untrained codes near 0: about 1):", [round(e, 3) for e in left])
    assert torch.allclose(quant.idxs_to_fhat(idxs), f_hat, atol=1e-5)
    print("check: decoding the token maps gives the f_hat that encoding built")
