r"""
---
title: Laplacian diffusion, the pyramid
summary: A Laplacian pyramid built from 2x2 average pooling and nearest-neighbour upsampling - why that pair makes up(down(.)) an orthogonal projection, the bands as orthogonal frequency subspaces, and exact reconstruction.
---

# The Laplacian pyramid

A Laplacian pyramid splits an image into **bands**: the coarsest one is a small image,
and every finer band holds only what the next coarser level cannot represent, the
detail. With three levels, on a $32 \times 32$ image,

$$x^{(3)} = \mathrm{down}(\mathrm{down}(x)), \quad
  x^{(2)} = \mathrm{down}(x) - \mathrm{up}(x^{(3)}), \quad
  x^{(1)} = x - \mathrm{up}(\mathrm{down}(x)),$$

of sizes $8 \times 8$, $16 \times 16$ and $32 \times 32$, and the image is their sum once
each band is brought back to full size:

$$x = x^{(1)} + \mathrm{up}(x^{(2)}) + \mathrm{up}(\mathrm{up}(x^{(3)})).$$

The numbering is the Edify Image paper's: band 1 is the finest (highest frequencies),
band 3 the coarsest. The same idea built the residual pyramid of the VAR chapter
([[../var/quant.py]]), where each scale quantises what the coarser scales left over;
here nothing is quantised, and the pyramid is exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["down", "up", "laplacian_pyramid", "reconstruct", "band_images", "radial_spectrum"]


# ## Which down and which up
#
# Any pair of resampling operators gives an exact pyramid (reconstruction just adds back
# what was subtracted). The diffusion process of [[process.py]] needs more: when it
# drops the finest band it must also split the **noise** into the part the low
# resolution keeps and the part it throws away, and re-create the second part when it
# switches back up. That is clean only if $P = \mathrm{up}\circ\mathrm{down}$ is an
# **orthogonal projection**: symmetric ($P^\top = P$) and idempotent ($P^2 = P$).
#
# With 2x2 average pooling for down and nearest-neighbour doubling for up:
#
# * $\mathrm{down}(\mathrm{up}(y)) = y$: copying a pixel four times and averaging the
#   four copies gives it back, so $P^2 = \mathrm{up}\,(\mathrm{down}\,\mathrm{up})\,\mathrm{down} = P$;
# * $\mathrm{down} = \tfrac14\,\mathrm{up}^\top$: the average is a quarter of the sum,
#   and the sum is the transpose of copying. So $P = \tfrac14\,\mathrm{up}\,\mathrm{up}^\top$
#   is symmetric.
#
# $P$ replaces every $2 \times 2$ block by its mean; $I - P$ keeps each block's deviation
# from its mean. A bilinear up or a blurred down would break the symmetry, and then the
# discarded noise would not be independent of the kept one.
#
# What happens to white noise: the average of four independent unit Gaussians has
# standard deviation $\tfrac12$. **Average pooling halves the noise**, the fact behind
# the paper's noise rescaling ($\epsilon^{(r)} = \mathrm{down}(\epsilon^{(R)})\cdot R/r$
# with $R/r = 2$).
def down(x: Tensor) -> Tensor:
    r"""2x2 average pooling: $(B, C, H, W) \to (B, C, H/2, W/2)$."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"down: image size {tuple(x.shape[-2:])} is not even")
    return F.avg_pool2d(x, 2)


def up(x: Tensor) -> Tensor:
    r"""Nearest-neighbour doubling: $(B, C, h, w) \to (B, C, 2h, 2w)$."""
    return x.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)


# ## The pyramid and its inverse
#
# `laplacian_pyramid(x, levels)` returns the bands finest first,
# $[x^{(1)}, x^{(2)}, \dots, x^{(L)}]$, band $i$ at $1/2^{i-1}$ of the image's side; the
# last is the low-pass image $\mathrm{down}^{L-1}(x)$. `reconstruct` runs the loop
# backwards: start from the coarsest, upsample, add the next band. The test checks the
# round trip to $10^{-6}$ for random tensors and several depths.
def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    r"""Bands $[x^{(1)}, \dots, x^{(L)}]$ of `x`, finest first."""
    if levels < 1:
        raise ValueError(f"levels must be at least 1, not {levels}")
    if any(side % 2 ** (levels - 1) for side in x.shape[-2:]):
        raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by 2^{levels - 1} "
                         f"for a {levels}-level pyramid")
    bands, current = [], x
    for _ in range(levels - 1):
        low = down(current)
        bands.append(current - up(low))
        current = low
    bands.append(current)
    return bands


def reconstruct(bands: list[Tensor]) -> Tensor:
    r"""$x = x^{(1)} + \mathrm{up}(x^{(2)} + \mathrm{up}(\dots))$: the inverse of `laplacian_pyramid`."""
    x = bands[-1]
    for band in reversed(bands[:-1]):
        x = band + up(x)
    return x


# ## The bands as full-size images
#
# Brought to full size, band $i$ is $\mathrm{up}^{i-1}(x^{(i)})$, and these full-size
# bands are the image's components in three **orthogonal subspaces** (they are
# $(I - P_1)x$, $(P_1 - P_2)x$ and $P_2 x$ for the nested projections
# $P_k = \mathrm{up}^k \mathrm{down}^k$). That is what lets the diffusion give each band its
# own attenuation and still add one isotropic noise: the three parts of the noise in
# those subspaces are independent.
def band_images(x: Tensor, levels: int) -> list[Tensor]:
    r"""$[\mathrm{up}^{i-1}(x^{(i)})]_{i=1..L}$, each the size of `x`; they sum to `x`."""
    out = []
    for i, band in enumerate(laplacian_pyramid(x, levels)):
        for _ in range(i):
            band = up(band)
        out.append(band)
    return out


# ## Where a band's energy sits
#
# For the figure and the test: the power spectrum $|\mathcal{F}x|^2$, summed over
# channels and batch, averaged over rings of equal radial frequency
# $\rho = \sqrt{f_x^2 + f_y^2}$ (in cycles per pixel, $0$ to $0.5\sqrt2$). The finest band
# should have its energy at high $\rho$: $I - P$ removes each block's mean, which kills
# the lowest frequencies.
def radial_spectrum(x: Tensor, bins: int = 16) -> tuple[Tensor, Tensor]:
    r"""(bin centres in cycles per pixel, mean power per bin) of `x` $(B, C, H, W)$."""
    H, W = x.shape[-2:]
    power = torch.fft.fft2(x.double()).abs().pow(2).sum(dim=tuple(range(x.dim() - 2)))
    fy = torch.fft.fftfreq(H, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(W, dtype=torch.float64)[None, :]
    rho = (fx ** 2 + fy ** 2).sqrt()
    edges = torch.linspace(0, float(rho.max()) + 1e-9, bins + 1, dtype=torch.float64)
    idx = torch.bucketize(rho.flatten(), edges[1:-1])
    total = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, power.flatten())
    count = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, torch.ones_like(rho.flatten()))
    return 0.5 * (edges[1:] + edges[:-1]), total / count.clamp(min=1)


if __name__ == "__main__":
    from annogen.data import make_dataset

    data = make_dataset("shapes", 32, n=8, seed=0)
    x = torch.stack([data[i]["image"] for i in range(8)])
    bands = laplacian_pyramid(x, 3)
    print("bands:", [tuple(b.shape) for b in bands])
    err = (reconstruct(bands) - x).abs().max().item()
    print(f"max |reconstruct(bands) - x| = {err:.2e}")
    full = band_images(x, 3)
    inner = [[float((a * b).sum()) for b in full] for a in full]
    print("inner products of the full-size bands (off-diagonal ~ 0):")
    for row in inner:
        print("   " + "  ".join(f"{v:10.3f}" for v in row))
    for i, b in enumerate(full, 1):
        rho, p = radial_spectrum(b)
        print(f"band {i}: energy-weighted mean frequency {float((rho * p).sum() / p.sum()):.3f} cycles/pixel")
