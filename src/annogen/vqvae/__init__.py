r"""
---
title: VQ-VAE
summary: Neural Discrete Representation Learning (van den Oord et al., 2017) - a vector-quantised autoencoder and a gated PixelCNN prior over its codes.
---

# VQ-VAE

The chapter's code, in reading order:

* [[model.py]]: the vector quantiser (nearest code, straight-through gradient, the
  codebook and commitment losses, the EMA codebook, dead-code restart), the encoder
  and decoder of the paper's section 4.1, and the `tiny` and `paper` presets.
* [[prior.py]]: a gated PixelCNN that learns the distribution of code grids, so that
  new grids can be sampled and decoded into new images.
* [[experiment.py]]: the two training stages on the course's loop, the step that turns
  images into code grids between them, the evaluation of each stage and the benchmark.
* [[__main__.py]]: `python -m annogen.vqvae`, which runs both stages on a CPU in
  minutes, resumes them, counts the paper model's parameters and redraws the figures.

The names below are what the rest of the course imports from `annogen.vqvae`; the
training code is imported from `annogen.vqvae.experiment`, so that using the model does
not pull in the training loop.
"""

from .model import (PRESETS, VQVAE, Decoder, Encoder, ResidualBlock, VectorQuantizer,
                    VQVAEConfig, build_vqvae)
from .prior import PRIOR_PRESETS, GatedBlock, GatedPixelCNN, PriorConfig, build_prior

__all__ = [
    "VectorQuantizer", "ResidualBlock", "Encoder", "Decoder", "VQVAE", "VQVAEConfig",
    "PRESETS", "build_vqvae",
    "GatedBlock", "GatedPixelCNN", "PriorConfig", "PRIOR_PRESETS", "build_prior",
]
