r"""
---
title: VAR
summary: Visual Autoregressive Modeling, Tian et al. (2024) - a multi-scale residual tokenizer and a transformer that predicts the next scale instead of the next token.
---

# VAR

In reading order:

* [[quant.py]]: the multi-scale residual quantiser, a Laplacian pyramid of features —
  one codebook, scales from $1 \times 1$ to the full latent, area downsampling, bicubic
  upsampling and the shared refinements $\phi$.
* [[vae.py]]: VQGAN's encoder and decoder around it, and the paper's 109M tokenizer.
* [[model.py]]: the next-scale transformer — adaLN blocks, block-causal attention with
  normalised queries and keys, the official initialisation, the paper's d16–d30,
  sampling with a KV cache and classifier-free guidance, and the two-pass sampler.
* [[experiment.py]]: both training stages on the course's loop, evaluation, benchmark.
* [[experiments.py]]: Zhou Yifan's experiments on the within-scale independence
  assumption, the neighbour statistics, and the Laplacian figure.
* [[__main__.py]]: `python -m annogen.var`.
"""

from annogen.var.model import (AdaLNBlock, VAR, VARConfig, block_causal_mask, build_var,
                               checkerboard, count_parameters, from_official_state_dict,
                               reveal_half, sample_tokens)
from annogen.var.quant import MultiScaleQuantizer, Phi, default_patch_nums, phi_index
from annogen.var.vae import VAE, VAEConfig, build_vae

__all__ = ["MultiScaleQuantizer", "Phi", "phi_index", "default_patch_nums", "VAE", "VAEConfig",
           "build_vae", "VAR", "VARConfig", "AdaLNBlock", "block_causal_mask", "build_var",
           "count_parameters", "sample_tokens", "checkerboard", "reveal_half",
           "from_official_state_dict"]
