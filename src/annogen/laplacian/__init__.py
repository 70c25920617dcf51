r"""
---
title: Laplacian diffusion
summary: Edify Image's Laplacian diffusion (NVIDIA, 2024) - frequency bands of a Laplacian pyramid fading at their own rates under one noise level, with resolution switches - against f-DM-style and single-resolution diffusion.
---

# Laplacian diffusion

The chapter's code, in reading order:

* [[pyramid.py]]: `laplacian_pyramid(x, levels)` (bands finest first) and
  `reconstruct(bands)`, with the down/up pair that makes the bands orthogonal.
* [[process.py]]: the band schedules, the forward process at any resolution, and
  `switch_up(x, sigma, noise=None)`.
* [[denoiser.py]]: the preconditioned U-Net, the loss and the sampler.
* [[experiment.py]], [[figures.py]], [[__main__.py]]: training, evaluation, figures,
  `python -m annogen.laplacian`.

The names below are what the rest of the course imports from `annogen.laplacian`; the
training code stays in `annogen.laplacian.experiment`.
"""

from annogen.laplacian.denoiser import Denoiser, cost_per_image, loss, sample, time_grid
from annogen.laplacian.process import SCHEDULES, LaplacianProcess, Schedule, overall, switch_up
from annogen.laplacian.pyramid import band_images, down, laplacian_pyramid, reconstruct, up

__all__ = ["laplacian_pyramid", "reconstruct", "band_images", "down", "up",
           "Schedule", "SCHEDULES", "LaplacianProcess", "overall", "switch_up",
           "Denoiser", "loss", "sample", "time_grid", "cost_per_image"]
