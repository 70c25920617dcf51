r"""
---
title: R3GAN
summary: The GAN is dead; long live the GAN! (Huang et al., 2024) - a relativistic loss with R1 and R2 penalties on a modernised ResNet, the course's one-step generator.
---

# R3GAN

In reading order:

* [[losses.py]]: the non-saturating loss, the relativistic pairing loss, the gradient
  penalties $R_1$ and $R_2$, the cosine schedules.
* [[toy.py]]: the 2-D mode-coverage toy: 25 Gaussians, MLPs, modes counted.
* [[model.py]]: the residual block, fix-up initialisation, [1, 3, 3, 1] resampling,
  the generator and the projection discriminator, the CIFAR-10 preset.
* [[experiment.py]]: the GAN step on the course's loop, the roadmap's configs B and E,
  evaluation and the benchmark.
* [[__main__.py]]: `python -m annogen.r3gan`.
"""

from annogen.r3gan.losses import (cosine_schedule, ema_decay_from_half_life, gradient_penalty,
                                  ns_d_loss, ns_g_loss, rpgan_d_loss, rpgan_g_loss)
from annogen.r3gan.model import (PRESETS, Discriminator, Generator, R3GANConfig, ResidualBlock,
                                 count_parameters, preset_config)

__all__ = [
    "rpgan_d_loss", "rpgan_g_loss", "ns_d_loss", "ns_g_loss", "gradient_penalty",
    "cosine_schedule", "ema_decay_from_half_life", "Generator", "Discriminator",
    "R3GANConfig", "ResidualBlock", "PRESETS", "preset_config", "count_parameters",
]
