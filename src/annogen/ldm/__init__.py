r"""
---
title: Latent diffusion, the KL autoencoder
summary: High-Resolution Image Synthesis with Latent Diffusion Models (Rombach et al., 2022) - the KL autoencoder of Stable Diffusion, written as the change from VQGAN, and the latent space the course's DiT and Sana denoise.
---

# Latent diffusion: the KL autoencoder

In reading order:

* [[model.py]]: the diagonal Gaussian posterior, the KL autoencoder as the change from
  VQGAN, the scaling factor, the `tiny` and `sd-f8c4` presets.
* [[experiment.py]]: training with VQGAN's losses and the KL term, the scaling factor
  after training, the evaluation and the comparisons.
* [[__main__.py]]: `python -m annogen.ldm`.

The names below are what the rest of the course imports from `annogen.ldm`.
"""

__all__ = ["DiagonalGaussian", "KLAutoencoder", "KLConfig", "PRESETS", "count_parameters"]


# The names are loaded on first use, so that `python -m annogen.ldm.model` runs the
# file without importing it twice.
def __getattr__(name: str):
    if name in __all__:
        from annogen.ldm import model
        return getattr(model, name)
    raise AttributeError(f"module 'annogen.ldm' has no attribute {name!r}")
