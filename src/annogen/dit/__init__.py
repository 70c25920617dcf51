r"""
---
title: DiT
summary: Scalable Diffusion Models with Transformers (Peebles & Xie, 2023) - a plain ViT over latent patches with adaLN-Zero conditioning, trained here with flow matching on the course's shapes.
---

# DiT

In reading order:

* [[model.py]]: patchify, the fixed 2-D sin-cos positions, the timestep and label
  embeddings, the adaLN-Zero block, the final layer, the learned variance, the official
  guidance helper and its quirk, and the S/B/L/XL presets.
* [[experiment.py]]: class-conditional flow matching on the course's loop, sampling with
  Flow-DPM-Solver and guidance, the sampler benchmark and the cost of attention.
* [[__main__.py]]: `python -m annogen.dit`.

The samplers and the loss come from the flow-matching chapter ([[flow/flow.py]]). The
names below are what the rest of the course imports from `annogen.dit`.
"""

__all__ = [
    "DiT", "DiTConfig", "DiTBlock", "FinalLayer", "LabelEmbedder", "PatchEmbed",
    "TimestepEmbedder", "PRESETS", "preset_config", "count_parameters", "patchify",
    "unpatchify", "sincos_2d",
]

_WHERE = {name: module for module, names in {
    "model": ["PRESETS", "DiT", "DiTBlock", "DiTConfig", "FinalLayer", "LabelEmbedder", "PatchEmbed", "TimestepEmbedder", "count_parameters", "patchify", "preset_config", "sincos_2d", "unpatchify"],
}.items() for name in names}


# The names are loaded on first use, so that `python -m annogen.dit.<file>` runs the
# file without importing it twice.
def __getattr__(name: str):
    if name in _WHERE:
        import importlib
        return getattr(importlib.import_module(f"annogen.dit.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'annogen.dit' has no attribute {name!r}")
