r"""
---
title: Laplacian diffusion, the forward process
summary: One noise level, one attenuation per frequency band; bands that reach zero are dropped and the state moves to a lower resolution, with the noise rescaled; switching back up re-creates the discarded noise. Our schedules (the paper gives none), the f-DM-style and single-resolution baselines as schedules of the same process.
---

# The forward process: each band fades at its own pace

Plain diffusion scales the whole image by one number and adds noise. Edify Image's
**Laplacian diffusion** scales each band of the pyramid ([[pyramid.py]]) by its own
number,

$$x_t = \sum_{i=1}^{3} \alpha^{(i)}_t\, \mathrm{up}^{i-1}\big(x_0^{(i)}\big) + \sigma_t\, \epsilon,
  \qquad \epsilon \sim \mathcal{N}(0, I),$$

with one noise level $\sigma_t$ for all bands. The attenuations are non-increasing in
$t$, the finest band fades fastest, and band $i < 3$ reaches **exactly zero** at its
switch time $t^{(i*)}$. From then on the mean has no detail at that scale, and the
state can be stored at half the resolution without losing anything the network has to
predict: that is where the savings come from.

Because the full-size bands live in orthogonal subspaces and $\epsilon$ is isotropic,
this is three independent diffusions, one per subspace, sharing a noise level: the
paper's "sum of diffusions".

**What the paper leaves open.** Section 2.2.1 asks only for non-increasing
attenuations, faster for higher bands, and appendix B works the two-band case with
$\alpha$ vanishing after a switch time. There are **no numbers**: no schedule, no
switch times, no noise range. Everything numeric in this file is our choice; the
chapter's benchmark shows that the choice matters ([[experiment.py#the-benchmark]]).

## Time, and the overall schedule

We write $t \in [0, 1]$ and factor each attenuation into an overall variance-preserving
part and a band part:

$$\alpha^{(i)}_t = a_t\, b^{(i)}_t, \qquad a_t = \cos\tfrac{\pi t}{2}, \quad
  \sigma_t = \sin\tfrac{\pi t}{2},$$

the cosine schedule (Nichol and Dhariwal, 2021, without their offset), so $x_1$ is pure
noise. $b^{(3)}_t = 1$: the coarsest band fades only through $a_t$. The DDPM chapter's
discrete $\bar\alpha_t$ would do as well; a continuous $t$ makes switch times plain
numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from annogen.laplacian.pyramid import down, laplacian_pyramid, reconstruct, up

__all__ = ["Schedule", "SCHEDULES", "overall", "switch_up", "LaplacianProcess"]


def overall(t: Tensor) -> tuple[Tensor, Tensor]:
    r"""$(a_t, \sigma_t) = (\cos\frac{\pi t}{2}, \sin\frac{\pi t}{2})$, elementwise."""
    return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)


# ## The band schedules
#
# A `Schedule` holds the switch times $t^{(1*)} \le t^{(2*)}$ (band 3 never switches)
# and a `kind`:
#
# * `"concurrent"` (**ours, for Edify**): every band starts fading at $t = 0$ and fades
#   along a quarter cosine to zero at its own switch time,
#   $b^{(i)}_t = \cos\big(\tfrac{\pi}{2}\min(t / t^{(i*)}, 1)\big)$. With
#   $t^{(1*)} < t^{(2*)}$ the finest band is always the most attenuated, as the paper
#   asks.
# * `"sequential"` (**f-DM-style**): f-DM (Gu et al., 2022) moves the whole signal
#   through a chain of downsamplings, stage by stage; inside stage $k$ it interpolates
#   linearly from the signal at resolution $k$ to the upsampled signal at resolution
#   $k+1$. Since
#
#   $$(1-\gamma)\,y + \gamma\,\mathrm{up}(\mathrm{down}(y))
#   = \mathrm{up}(\mathrm{down}(y)) + (1 - \gamma)\big(y - \mathrm{up}(\mathrm{down}(y))\big),$$
#
#   that interpolation *is* a linear fade of one band: band 1 fades on
#   $[0, t^{(1*)}]$ while band 2 stays whole, then band 2 fades on
#   $[t^{(1*)}, t^{(2*)}]$. In one shared formulation the difference between the two
#   models is exactly this: **concurrent** fades (Edify) or **one stage after another**
#   (f-DM).
# * `"none"`: no band ever fades, $b^{(i)} = 1$; the single-resolution baseline, plain
#   cosine-schedule diffusion at full size.
#
# Both fading kinds are non-increasing and exactly 0 from the switch time on (the test
# checks this on a dense grid).
@dataclass(frozen=True)
class Schedule:
    kind: str = "concurrent"
    t1: float = 0.5  # t^(1*): band 1 (finest) reaches zero
    t2: float = 0.75  # t^(2*): band 2 reaches zero

    def __post_init__(self):
        if self.kind not in ("concurrent", "sequential", "none"):
            raise ValueError(f"schedule kind must be 'concurrent', 'sequential' or 'none', not {self.kind!r}")
        if self.kind != "none" and not 0.0 < self.t1 <= self.t2 <= 1.0:
            raise ValueError(f"switch times must satisfy 0 < t1 <= t2 <= 1, got t1={self.t1}, t2={self.t2}")

    @property
    def switch_times(self) -> tuple[float, ...]:
        r"""$(t^{(1*)}, t^{(2*)})$, or () for the single-resolution schedule."""
        return () if self.kind == "none" else (self.t1, self.t2)

    def band(self, i: int, t: Tensor) -> Tensor:
        r"""$b^{(i)}_t$ for band $i \in \{1, 2, 3\}$, elementwise in `t`."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if i >= 3 or self.kind == "none":
            return torch.ones_like(t)
        start, end = {("concurrent", 1): (0.0, self.t1), ("concurrent", 2): (0.0, self.t2),
                      ("sequential", 1): (0.0, self.t1), ("sequential", 2): (self.t1, self.t2)}[(self.kind, i)]
        p = ((t - start) / max(end - start, 1e-12)).clamp(0.0, 1.0)
        if self.kind == "concurrent":
            b = torch.cos(0.5 * math.pi * p)
        else:
            b = 1.0 - p
        return torch.where(t >= end, torch.zeros_like(b), b)

    def level(self, t: float) -> int:
        r"""How many times the state has been halved at time `t`: $\#\{i : t \ge t^{(i*)}\}$."""
        return sum(t >= s for s in self.switch_times)


# The schedules the chapter trains. `edify` is our choice for the chapter; `edify-early`
# and `edify-late` are its ablations (switching earlier or later); `fdm` uses the same
# switch times as `edify` with sequential stages; `single` is plain diffusion.
SCHEDULES: dict[str, Schedule] = {
    "edify": Schedule("concurrent", 0.5, 0.75),
    "edify-early": Schedule("concurrent", 0.25, 0.5),
    "edify-late": Schedule("concurrent", 0.8, 0.95),
    "fdm": Schedule("sequential", 0.5, 0.75),
    "single": Schedule("none", 1.0, 1.0),
}


# ## Switching up
#
# Sampling runs backwards: it starts at the lowest resolution and must go up when $t$
# drops below a switch time. At that moment the band that comes alive has attenuation
# zero, so the full-size mean is just the upsampled low-resolution mean. The noise needs
# care. A low-resolution state with noise level $\sigma$ is what average pooling makes of
# a full-size state whose noise had level $\sigma R / r$ ($R/r = 2$): pooling halves the
# noise ([[pyramid.py#which-down-and-which-up]]). So read the low-resolution noise as
# $\sigma\,\epsilon^{(r)}$ with $\epsilon^{(r)} = \mathrm{down}(\epsilon^{(R)})\,R/r$ for some
# full-size unit Gaussian $\epsilon^{(R)}$, and put back the part of $\epsilon^{(R)}$ that
# pooling discarded (the paper's equations 6 to 10):
#
# $$x^{(R)} = \mathrm{up}(x^{(r)}) + \sigma\,\tfrac{R}{r}\,\big(\epsilon^{(R)}
#   - \mathrm{up}(\mathrm{down}(\epsilon^{(R)}))\big), \qquad \sigma^{(R)} = \sigma\,\tfrac{R}{r}.$$
#
# Check: $\mathrm{up}(x^{(r)})$ carries noise $\sigma\frac{R}{r}\,\mathrm{up}(\mathrm{down}\,\epsilon^{(R)})
# = \sigma^{(R)} P\epsilon^{(R)}$, the added term is $\sigma^{(R)}(I - P)\epsilon^{(R)}$, and
# the two sum to $\sigma^{(R)}\epsilon^{(R)}$: white noise at the new level. If the
# low-resolution noise is *not* literally $\mathrm{down}(\epsilon^{(R)})\frac{R}{r}$ (it never
# is while sampling), the result is still white: $P\epsilon'$ and $(I-P)\epsilon^{(R)}$ are
# independent Gaussians in orthogonal subspaces with the same per-direction variance
# (the test measures the per-pixel standard deviation and the correlation of
# neighbours). The low-pass part is untouched: $\mathrm{down}(x^{(R)}) = x^{(r)}$ exactly,
# because $\mathrm{down}$ kills $I - P$.
def switch_up(x: Tensor, sigma: float | Tensor, noise: Tensor | None = None,
              generator: torch.Generator | None = None) -> tuple[Tensor, float | Tensor]:
    r"""One factor-2 step up: (`x` at $2h \times 2w$, $\sigma \cdot 2$); `noise` is the
    full-resolution unit Gaussian $\epsilon^{(R)}$ (drawn when None)."""
    ratio = 2.0
    x_up = up(x)
    if noise is None:
        where = generator.device if generator is not None else x.device
        noise = torch.randn(x_up.shape, generator=generator, device=where).to(x.device, x.dtype)
    elif noise.shape != x_up.shape:
        raise ValueError(f"switch_up: noise has shape {tuple(noise.shape)}, expected {tuple(x_up.shape)}")
    s = sigma.view(-1, *([1] * (x.dim() - 1))) if torch.is_tensor(sigma) and sigma.dim() == 1 else sigma
    x_up = x_up + s * ratio * (noise - up(down(noise)))
    return x_up, sigma * ratio


# ## The process at any resolution
#
# After $l$ switches the state lives at $1/2^l$ of the full side: it is
# $\mathrm{down}^l(x_t)$. What does that look like? $\mathrm{down}$ removes the finest
# band exactly ($\mathrm{down}(x^{(1)}) = 0$) and leaves the others as the bands of the
# smaller image, and it halves the noise. So the state at level $l$ is the *same kind of
# process* on the smaller pyramid,
#
# $$z_t = \mathrm{down}^l(x_t) = a_t \sum_{i > l} b^{(i)}_t\, \mathrm{up}^{i-1-l}\big(x_0^{(i)}\big)
#   + \frac{\sigma_t}{2^l}\, \epsilon_l, \qquad \epsilon_l \sim \mathcal{N}(0, I)
#   \text{ at the small size}.$$
#
# `mean(y, t, l)` applies the attenuations to an image $y$ at level $l$ (bands
# $l+1..3$ of the full pyramid); `sigma(t, l)` is $\sigma_t / 2^l$; `q_sample` draws
# $z_t$ directly at its level (which is what training needs: a state at level 2 costs
# an $8 \times 8$ network call, not a $32 \times 32$ one). At $t = 0$ every $b = 1$,
# $a = 1$, $\sigma = 0$: the image itself, at any level.
class LaplacianProcess:
    r"""The forward process of one `Schedule` over a `levels`-level pyramid (3: 32, 16, 8 px)."""

    def __init__(self, schedule: Schedule | str = "edify", levels: int = 3):
        self.schedule = SCHEDULES[schedule] if isinstance(schedule, str) else schedule
        if levels != 3 and self.schedule.kind != "none":
            raise ValueError("the band schedules are written for a 3-level pyramid")
        self.levels = levels

    def level(self, t: float) -> int:
        return self.schedule.level(t)

    def attenuations(self, t: Tensor) -> list[Tensor]:
        r"""$[\alpha^{(1)}_t, \alpha^{(2)}_t, \alpha^{(3)}_t] = [a_t b^{(i)}_t]$ for a batch of `t`."""
        t = torch.as_tensor(t, dtype=torch.float64)
        a, _ = overall(t)
        return [a * self.schedule.band(i, t) for i in range(1, self.levels + 1)]

    def sigma(self, t: Tensor, level: int = 0) -> Tensor:
        return overall(torch.as_tensor(t, dtype=torch.float64))[1] / 2 ** level

    def mean(self, y: Tensor, t: Tensor, level: int = 0) -> Tensor:
        r"""$\sum_{i > l} \alpha^{(i)}_t\, \mathrm{up}^{i-1-l}(y^{(i-l)})$ for `y` at level `l`, per image."""
        t = torch.as_tensor(t, dtype=torch.float64, device=y.device).expand(y.shape[0])
        alphas = self.attenuations(t)[level:]
        bands = laplacian_pyramid(y, self.levels - level)
        shape = (-1,) + (1,) * (y.dim() - 1)
        return reconstruct([al.to(y.dtype).view(shape) * b for al, b in zip(alphas, bands)])

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor | None = None, level: int | None = None,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, int]:
        r"""$(z_t, \mathrm{down}^l(x_0), l)$: the state at its level for full-size `x0` and
        times `t` that all share level `l` (default: the level of `t[0]`)."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x0.device).expand(x0.shape[0])
        l = self.level(float(t[0])) if level is None else level
        y = x0
        for _ in range(l):
            y = down(y)
        if eps is None:
            eps = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        s = self.sigma(t, l).to(y.dtype).view(-1, *([1] * (y.dim() - 1)))
        return self.mean(y, t, l) + s * eps, y, l

    def full_size(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        r"""The textbook form at full size, $\sum_i \alpha^{(i)}_t \mathrm{up}^{i-1}(x_0^{(i)}) + \sigma_t\epsilon$ (for tests and figures)."""
        t = torch.as_tensor(t, dtype=torch.float64, device=x0.device).expand(x0.shape[0])
        s = self.sigma(t).to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return self.mean(x0, t, 0) + s * eps


if __name__ == "__main__":
    from annogen.data import make_dataset

    data = make_dataset("shapes", 32, n=4, seed=0)
    x0 = torch.stack([data[i]["image"] for i in range(4)])
    for name, sched in SCHEDULES.items():
        proc = LaplacianProcess(sched)
        ts = torch.tensor([0.0, 0.25, 0.5, 0.75, 0.9])
        b = [[round(float(v), 3) for v in sched.band(i, ts)] for i in (1, 2)]
        print(f"{name:12s} switches {sched.switch_times}  b1 {b[0]}  b2 {b[1]}")
    proc = LaplacianProcess("edify")
    for t in (0.0, 0.3, 0.6, 0.9):
        z, y, l = proc.q_sample(x0, torch.full((4,), t))
        print(f"t = {t}: state {tuple(z.shape)} at level {l}, noise std {float(proc.sigma(t, l)):.3f}")
    z, _, _ = proc.q_sample(x0, torch.zeros(4))
    print(f"t = 0 returns the image: max error {float((z - x0).abs().max()):.1e}")
    lo = torch.randn(20000, 1, 4, 4) * 0.3
    hi, s = switch_up(lo, 0.3)
    print(f"switch_up of white noise std 0.3 at 4x4: std {float(hi.std()):.3f} at 8x8 (expected {s:.3f})")
