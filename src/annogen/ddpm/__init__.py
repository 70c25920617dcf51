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

__all__ = [
    "linear_beta_schedule", "Diffusion",
    "UNet", "UNetConfig", "PRESETS", "build_unet", "count_parameters", "timestep_embedding",
    "ResnetBlock", "AttnBlock", "Downsample", "Upsample",
]

_WHERE = {name: module for module, names in {
    "diffusion": ["Diffusion", "linear_beta_schedule"],
    "unet": ["PRESETS", "AttnBlock", "Downsample", "ResnetBlock", "UNet", "UNetConfig", "Upsample", "build_unet", "count_parameters", "timestep_embedding"],
}.items() for name in names}


# The names are loaded on first use, so that `python -m annogen.ddpm.<file>` runs the
# file without importing it twice.
def __getattr__(name: str):
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f"annogen.ddpm.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'annogen.ddpm' has no attribute {name!r}")
