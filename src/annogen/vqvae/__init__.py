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

The names below are what the rest of the course imports from `annogen.vqvae`. They are
loaded on first use, so that running one file of the chapter (`python -m
annogen.vqvae.model`) does not import the others first; the
training code is imported from `annogen.vqvae.experiment`, so that using the model does
not pull in the training loop.
"""

from __future__ import annotations

import importlib

# Each exported name and the module of the chapter that defines it.
_EXPORTS = {
    "PRESETS": "model",
    "VQVAE": "model",
    "Decoder": "model",
    "Encoder": "model",
    "ResidualBlock": "model",
    "VectorQuantizer": "model",
    "VQVAEConfig": "model",
    "build_vqvae": "model",
    "PRIOR_PRESETS": "prior",
    "GatedBlock": "prior",
    "GatedPixelCNN": "prior",
    "PriorConfig": "prior",
    "build_prior": "prior",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"annogen.vqvae.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'annogen.vqvae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if __name__ == "__main__":
    print("The VQVAE chapter. Train it with `python -m annogen.vqvae`; run one of its files "
          "with `python -m annogen.vqvae.model`.")
