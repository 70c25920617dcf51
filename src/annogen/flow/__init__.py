r"""
---
title: Flow matching
summary: Rectified flow (Lipman et al. 2023; Liu et al. 2023) as used by SD3, FLUX and Sana - the straight path from data to noise, the velocity target, logit-normal sigmas, the timestep shift, and the Euler and Flow-DPM-Solver samplers with classifier-free guidance.
---

# Flow matching

A short chapter of equations and samplers, shared by the DiT and Sana chapters. In
reading order:

* [[flow.py]]: the path $x_\sigma = (1 - \sigma) x_0 + \sigma\epsilon$, the velocity
  target, logit-normal $\sigma$ and the timestep shift; the Euler sampler and Sana's
  Flow-DPM-Solver; the two sampling grids; classifier-free guidance; the training loss.
* [[toy.py]]: the exact velocity of a 2-D mixture of Gaussians, and what each sampler
  does with it.
* [[__main__.py]]: `python -m annogen.flow`, the figure and the tables, into
  `runs/flow/<run>/`.

The names below are what the rest of the course imports from `annogen.flow`.
"""

from annogen.flow.flow import (GRIDS, cfg_velocity, dpm_solver_sample, euler_sample,
                               flow_lambda, flow_match_sigmas, flow_matching_loss, interpolate,
                               logit_normal_sigma, predict_eps, predict_x0, sample, shift_sigma,
                               sigma_schedule, velocity_target)

__all__ = [
    "interpolate", "velocity_target", "predict_x0", "predict_eps", "logit_normal_sigma",
    "shift_sigma", "sigma_schedule", "flow_match_sigmas", "GRIDS", "euler_sample",
    "dpm_solver_sample", "flow_lambda", "sample", "cfg_velocity", "flow_matching_loss",
]
