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

The names below are what the rest of the course imports from `annogen.vqgan`.
"""

from .losses import (LPIPS, NLayerDiscriminator, VQGANLoss, adaptive_weight, generator_loss,
                     hinge_d_loss)
from .model import (PRESETS, VQGAN, AttnBlock, Decoder, Encoder, ResnetBlock, VQGANConfig,
                    VQGANQuantizer, build_vqgan)
from .transformer import GPT, GPTConfig, build_gpt, top_k_filter, top_p_filter

__all__ = [
    "VQGAN", "VQGANConfig", "VQGANQuantizer", "Encoder", "Decoder", "ResnetBlock", "AttnBlock",
    "PRESETS", "build_vqgan",
    "NLayerDiscriminator", "LPIPS", "VQGANLoss", "hinge_d_loss", "generator_loss",
    "adaptive_weight",
    "GPT", "GPTConfig", "build_gpt", "top_k_filter", "top_p_filter",
]
