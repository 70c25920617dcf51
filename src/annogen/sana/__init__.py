r"""
---
title: Sana
summary: Sana (Xie et al., 2024) - a linear-attention DiT on a deep-compression autoencoder, conditioned on text - written as the change from DiT and trained here on shapes captions.
---

# Sana

In reading order:

* [[dcae.py]]: the deep-compression autoencoder, with its residual shortcuts.
* [[model.py]]: linear attention, Mix-FFN, adaLN-single, cross-attention to text, the
  caption norm, and the 0.6B / 1.6B presets.
* [[text.py]]: the small language model that stands in for Gemma-2.
* [[experiment.py]]: the three trainings, sampling with guidance, the toy GenEval.
* [[__main__.py]]: `python -m annogen.sana`.

The names below are what tests and users import from `annogen.sana`.
"""

from annogen.sana.dcae import DCAE, DCAEConfig, channel_to_space_duplicate, space_to_channel_average
from annogen.sana.model import (PRESETS, CrossAttention, LinearAttention, MixFFN, RMSNorm, Sana,
                                SanaBlock, SanaConfig, linear_attention)
from annogen.sana.text import TextEncoder, tokenize

__all__ = [
    "linear_attention", "LinearAttention", "MixFFN", "CrossAttention", "SanaBlock", "Sana",
    "SanaConfig", "RMSNorm", "PRESETS", "DCAE", "DCAEConfig", "space_to_channel_average",
    "channel_to_space_duplicate", "TextEncoder", "tokenize",
]
