r"""
---
title: VQGAN
summary: Taming Transformers for High-Resolution Image Synthesis (Esser et al., 2021) - VQ-VAE with a deep autoencoder, perceptual and adversarial losses, and a transformer prior over the codes.
---

# VQGAN

The chapter is written as a change to VQ-VAE, with the diff marked on the page. In
reading order:

* [[model.py]]: the encoder and decoder (ResNet blocks, GroupNorm, swish, self-attention
  at the lowest resolution), the $1 \times 1$ convolutions around the codebook, the
  quantiser and the official code's $\beta$ quirk, and the `tiny` and `paper` presets.
* [[losses.py]]: L1 plus LPIPS, the PatchGAN discriminator, the hinge loss, the adaptive
  weight $\lambda$, and `VQGANLoss` that combines them.
* [[transformer.py]]: the GPT prior over the code grid, class-conditional, with a KV
  cache and top-$k$ / top-$p$ sampling.
* [[experiment.py]]: both training stages on the course's loop, their evaluation and
  the benchmark.
* [[__main__.py]]: `python -m annogen.vqgan`.

The names below are what the rest of the course imports from `annogen.vqgan`. They are
loaded on first use, so that running one file of the chapter (`python -m
annogen.vqgan.model`) does not import the others first.
"""

from __future__ import annotations

import importlib

# Each exported name and the module of the chapter that defines it.
_EXPORTS = {
    "LPIPS": "losses",
    "NLayerDiscriminator": "losses",
    "VQGANLoss": "losses",
    "adaptive_weight": "losses",
    "generator_loss": "losses",
    "hinge_d_loss": "losses",
    "PRESETS": "model",
    "VQGAN": "model",
    "AttnBlock": "model",
    "Decoder": "model",
    "Encoder": "model",
    "ResnetBlock": "model",
    "VQGANConfig": "model",
    "VQGANQuantizer": "model",
    "build_vqgan": "model",
    "GPT": "transformer",
    "GPTConfig": "transformer",
    "build_gpt": "transformer",
    "top_k_filter": "transformer",
    "top_p_filter": "transformer",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"annogen.vqgan.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'annogen.vqgan' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if __name__ == "__main__":
    print("The VQGAN chapter. Train it with `python -m annogen.vqgan`; run one of its files "
          "with `python -m annogen.vqgan.model`.")
