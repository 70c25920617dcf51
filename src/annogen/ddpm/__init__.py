r"""
---
title: DDPM and DDIM
summary: Denoising Diffusion Probabilistic Models (Ho et al., 2020) and Denoising Diffusion Implicit Models (Song et al., 2021) - pixel-space diffusion with a small U-Net, sampled with 1,000 DDPM steps or 20 to 50 DDIM steps.
---

# DDPM and DDIM

The chapter's code, in reading order:

* [[unet.py]]: the noise predictor $\epsilon_\theta(x_t, t, y)$, a U-Net with a
  sinusoidal timestep embedding, GroupNorm residual blocks and self-attention at low
  resolution; the `tiny` preset and the paper's CIFAR-10 preset (35,746,307 parameters).
* [[diffusion.py]]: the linear $\beta$ schedule, $q(x_t \mid x_0)$, the loss
  $L_\text{simple}$, the DDPM reverse step and sampler, and the DDIM step and sampler.
* [[experiment.py]]: training on the course's loop, sampling, the evaluation and the
  benchmark.
* [[__main__.py]]: `python -m annogen.ddpm`.

The names below are what the rest of the course imports from `annogen.ddpm`; the
training code is imported from `annogen.ddpm.experiment`, so that using the model does
not pull in the training loop.
"""

from .diffusion import Diffusion, linear_beta_schedule
from .unet import (PRESETS, AttnBlock, Downsample, ResnetBlock, UNet, UNetConfig, Upsample,
                   build_unet, count_parameters, timestep_embedding)

__all__ = [
    "linear_beta_schedule", "Diffusion",
    "UNet", "UNetConfig", "PRESETS", "build_unet", "count_parameters", "timestep_embedding",
    "ResnetBlock", "AttnBlock", "Downsample", "Upsample",
]
