r"""
---
title: DiT, training with flow matching
summary: A class-conditional DiT trained with rectified flow on the course's loop, sampled with Flow-DPM-Solver and classifier-free guidance, judged by toy FID and attribute accuracy - plus the benchmark of samplers and the cost of attention against the number of tokens.
---

# DiT: training with flow matching

The paper trains DiT as a DDPM: 1000 noise levels, the noise $\epsilon$ as target, a
learned variance, and 250 sampling steps. This chapter trains the same network
([[model.py]]) the way its successors do (SD3, FLUX, Sana): with **flow matching**
([[flow/flow.py]]), the velocity $v = \epsilon - x_0$ as target, and 10 to 50 sampling
steps of Euler or Flow-DPM-Solver. The architecture does not care; only the output
means something else, and with no variance to learn the output has $C_{in}$ channels.

The data is the course's $32 \times 32$ shapes ([[data.py#Shapes]]), and as in the
paper the DiT denoises **latents**: the frozen KL autoencoder of the latent-diffusion
chapter ([[ldm/model.py]]) turns each image into an $8 \times 8 \times 4$ latent, scaled
to unit variance, and with patch size 1 the `tiny` DiT sees 64 tokens. In pixel space
(`--space pixel`) the same DiT takes $4 \times 4$ patches of the RGB image, again 64
tokens. The class is the shape and colour of the first shape (21 classes), which is also
what we score.

On this page: [[#DiTExperiment]] (training and sampling on the loop of [[train.py]]),
[[#evaluate_samplers]], [[#benchmark]] (samplers against each other at a fixed training
budget) and [[#forward_cost]] (seconds per forward pass against the number of tokens,
the cost the Sana chapter attacks with linear attention).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from annogen.data import Shapes, make_dataset
from annogen.flow.flow import cfg_velocity, flow_matching_loss, sample as flow_sample
from annogen.metrics import toy_fid
from annogen.train import (TrainConfig, load_checkpoint, save_image_grid, seed_everything,
                           torch_threads, train)
from annogen.metrics import score_labels
from annogen.train import Budgeted

from annogen.dit.model import DiT, DiTBlock, DiTConfig, count_parameters


# ## The tiny defaults
#
# Next to the paper's ImageNet settings:
#
# | setting | paper (DiT-XL/2, ImageNet $256^2$) | tiny (shapes, $32^2$, pixels) |
# |---|---|---|
# | input | SD-VAE latents $32 \times 32 \times 4$, $\times 0.18215$ | tiny KL latents $8 \times 8 \times 4$, $\times \lambda_z$ (pixels with `--space pixel`) |
# | model | XL/2: 28 blocks, width 1152, patch 2, 256 tokens, 675M | `tiny`: 4 blocks, width 128, patch 1 (pixels: 4), 64 tokens, 1.3M |
# | objective | DDPM, $\epsilon$ + learned variance, 1000 steps | flow matching, $v$, logit-normal $\sigma$ |
# | optimizer | AdamW, lr $10^{-4}$, no weight decay, batch 256 | AdamW, lr $2 \cdot 10^{-3}$ (see below), no weight decay, batch 32 |
# | EMA | 0.9999 | 0.99 |
# | label dropout | 0.1 | 0.1 |
# | steps | 400k (XL/2 to 7M) | 5000 |
# | sampling | 250 DDPM steps, CFG 1.5 | 20 Flow-DPM-Solver steps, CFG 2 |
#
# The paper's learning rate is for a batch 8 times ours and 400k steps; our five thousand
# steps need a larger one. The EMA decay follows the run length: with 0.9999 the
# average of a 5000-step run would still be mostly the random initialisation. Five
# thousand steps are what fits, with the autoencoder, in about 13 minutes on two cores
# (attribute accuracy 0.83; 0.70 after 2000 steps, 0.63 after 1000). We chose
# the size and these settings from short runs on two busy cores (about 2 steps per
# second): a 4.2M model (6 blocks of width 192) managed 66 steps in 76 s, far too few;
# after 5 minutes the 1.3M model with lr $10^{-3}$ and EMA 0.995 reached a toy FID of
# 1115 and attribute accuracy 0.21 (256 samples), with lr $2 \cdot 10^{-3}$ and EMA 0.99
# 850 and 0.37 (126 samples; 1278 and 0.28 without the EMA). Patch size 2 (256 tokens)
# at width 64 ran at 1.2 s per step and was stopped.
DEFAULTS = {
    "train": {"steps": 5000, "batch_size": 32, "lr": 2e-3, "ema_decay": 0.99,
              "log_every": 10, "ckpt_every": 250, "sample_every": 500},
    "sampling": {"sampler": "dpm", "steps": 20, "cfg_scale": 2.0, "shift": 1.0},
    "latent_model": {"patch_size": 1},
}


# ## The experiment
#
# The network is sized to the data: channels, image size and number of classes come
# from the dataset (unlabelled data trains with the null class only). The optimizer is
# AdamW with no weight decay, as in the paper.
class DiTExperiment(Budgeted):
    r"""Class-conditional flow matching with a DiT of the given preset."""

    name = "dit"
    num_samples = 63  # three per class of shapes

    def __init__(self, preset: str = "tiny", shift: float = DEFAULTS["sampling"]["shift"],
                 sampler: str = DEFAULTS["sampling"]["sampler"],
                 sampling_steps: int = DEFAULTS["sampling"]["steps"],
                 cfg_scale: float = DEFAULTS["sampling"]["cfg_scale"],
                 autoencoder=None, ae_run: str | None = None, **overrides):
        if autoencoder is not None and preset == "tiny":
            overrides = {**DEFAULTS["latent_model"], **overrides}
        self.preset, self.overrides = preset, overrides
        self.shift, self.sampler = shift, sampler
        self.sampling_steps, self.cfg_scale = sampling_steps, cfg_scale
        self.autoencoder, self.ae_run = autoencoder, ae_run

    def build_model(self, dataset) -> DiT:
        settings = {"in_channels": dataset.channels, "input_size": dataset.size,
                    "num_classes": max(1, getattr(dataset, "num_classes", 0)),
                    "learn_sigma": False, **self.overrides}
        return DiT.from_preset(self.preset, **settings)

    def configure(self, device: torch.device) -> None:
        self.model = self.build_model(self.dataset).to(device)
        self.modules = {"dit": self.model}
        self.optimizers = {"dit": torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr,
                                                    weight_decay=0.0)}

    # ### One training step
    #
    # The loss of [[flow/flow.py#the-training-loss]]: $\sigma$ logit-normal (shifted by
    # `shift`, 1 by default: at $32^2$ there is nothing to compensate), the DiT gets the
    # timestep $t = 1000\sigma$ and the label, of which the model itself drops 10% to the
    # null class. A label of $-1$ (no label) is the null class too.
    def training_step(self, batch: dict, step: int, loop) -> dict:
        self.stop_if_out_of_time(step, loop)
        x_0, y = batch["image"], batch["label"]
        null = self.model.config.num_classes
        y = torch.where(y < 0, torch.full_like(y, null), y)
        loss = flow_matching_loss(self.modules["dit"], x_0, y, shift=self.shift)
        loop.backward_step(loss, "dit")
        return {"loss": loss}

    # ### Sampling
    #
    # Image $i$ gets class $i \bmod$ `num_classes`. Noise $x_1 \sim \mathcal{N}(0, I)$ goes
    # through the sampler ([[flow/flow.py#flow-dpm-solver]] by default, 20 steps) with the
    # guided velocity of [[flow/flow.py#classifier-free-guidance]]. The network is put in
    # eval mode, so that it does not drop labels while sampling.
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None, sampler: str | None = None,
               steps: int | None = None, cfg_scale: float | None = None) -> Tensor:
        model = self.modules["dit"]
        c = model.config
        device = model.pos_embed.device
        if labels is None:
            labels = torch.arange(n) % c.num_classes
        was_training = model.training
        model.eval()
        try:
            x_T = torch.randn(n, c.in_channels, c.input_size, c.input_size, device=device)
            scale = self.cfg_scale if cfg_scale is None else cfg_scale
            velocity = cfg_velocity(model, labels.to(device), c.num_classes, scale)
            x_0 = flow_sample(velocity, x_T, steps or self.sampling_steps,
                              sampler or self.sampler, self.shift)
        finally:
            model.train(was_training)
        return self.to_pixels(x_0)

    # ### From latents to pixels
    #
    # In pixel space the sample is the image. On latents it is $\lambda_z z$: divide by
    # the scaling factor and decode with the frozen autoencoder
    # ([[ldm/model.py#KLAutoencoder]]). Only pixels are clipped to $[-1, 1]$; latents
    # have no range.
    @torch.no_grad()
    def to_pixels(self, x_0: Tensor) -> Tensor:
        ae = self.autoencoder
        if ae is None:
            return x_0.clamp(-1, 1).cpu()
        ae = ae.to(x_0.device)
        return ae.decode(x_0 / ae.scaling_factor).clamp(-1, 1).cpu()

    # The checkpoint names the autoencoder whose latents the DiT learned, and its
    # scaling factor, so that a run folder can be sampled again later.
    def extra_state(self) -> dict:
        state = {"dit_config": asdict(self.model.config), "shift": self.shift}
        if self.autoencoder is not None:
            state["latent"] = {"ae_run": self.ae_run,
                               "scaling_factor": self.autoencoder.scaling_factor}
        return state


# A finished run's network, EMA weights preferred, rebuilt from its checkpoint alone.
def load_dit(run_dir: str | Path, device: str | torch.device = "cpu") -> DiT:
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    model = DiT(DiTConfig(**ckpt["extra"]["dit_config"]))
    model.load_state_dict(ckpt.get("ema", {}).get("dit", ckpt["modules"]["dit"]))
    return model.to(device).eval()


# ## Judging the samplers
#
# For each (sampler, steps) pair: `n` class-conditional samples, classes cycling, from
# the same noise (the seed is reset for each), scored by
#
# - the **attribute accuracy**: the checker ([[data.py#read_shapes]]) reads the first
#   shape of each sample; its shape and colour are compared with the label, and the two
#   accuracies averaged (the toolkit's [[metrics.py#score_labels]]);
# - the **toy FID** against `n` real images ([[metrics.py#toy-fid]]), when a feature
#   net is given;
# - **seconds per image** of sampling, guidance included (two network evaluations per
#   step for a guided sample).
@torch.no_grad()
def evaluate_samplers(exp: DiTExperiment, samplers=(("euler", 20), ("euler", 50), ("dpm", 10),
                                                    ("dpm", 20)),
                      n: int = 256, real: Tensor | None = None, net=None, seed: int = 0,
                      batch_size: int = 256) -> tuple[list[dict], dict]:
    model = exp.modules["dit"]
    num_classes = model.config.num_classes
    labels = torch.arange(n) % num_classes
    rows, images = [], {}
    for sampler, steps in samplers:
        seed_everything(seed)
        start = time.perf_counter()
        x = torch.cat([exp.sample(len(lab), lab, sampler=sampler, steps=steps)
                       for lab in labels.split(batch_size)])
        seconds = time.perf_counter() - start
        row = {"sampler": sampler, "steps": steps, "toy_fid": None, "attribute_accuracy": None,
               "sec_per_image": seconds / n}
        if num_classes == Shapes.num_classes and x.shape[1] == 3:
            scores = score_labels(x, labels)
            row["attribute_accuracy"] = scores["attribute_accuracy"]
            row["class_accuracy"] = scores["class_accuracy"]
            row["valid"] = scores["valid"]
        if real is not None and net is not None:
            row["toy_fid"] = toy_fid(real[:n], x, net)
        rows.append(row)
        images[(sampler, steps)] = x
    return rows, images


# ## The benchmark
#
# `benchmark(budget_seconds, out)` is what `benchmarks/diffusion.py` runs: the tiny
# default on shapes at $32^2$ for as many steps as fit in the budget (the deadline of
# the VQGAN chapter's [[vqgan/experiment.py#a-wall-clock-budget]]), then every sampler
# of `samplers` on `n_eval` samples, with the EMA weights. Torch runs on one thread by
# default (the machine is shared); the previous setting is restored afterwards. It
# returns `{"model": {...}, "rows": [...]}`, one row per sampler in the format of the
# DDPM chapter's benchmark, with `toy_fid_floor`, the FID between two real draws of
# the same size, for scale; and writes it to `out/benchmark.json`.
#
# `space="latent"` trains on the scaled latents of the KL autoencoder in the run folder
# `ae_run` (trained beforehand by `python -m annogen.ldm`; its training time is read from
# its log and reported as `ae_train_seconds`); the seconds spent encoding the dataset
# count towards the budget. `space="pixel"` is the pixel-space model.
def benchmark(budget_seconds: float, out: Path, seed: int = 0,
              samplers=(("euler", 20), ("euler", 50), ("dpm", 10), ("dpm", 20)),
              n_eval: int = 256, data_size: int = 10_000, threads: int | None = 1,
              space: str = "pixel", ae_run: str | Path | None = None,
              run: str = "benchmark") -> dict:
    if space not in ("pixel", "latent"):
        raise ValueError(f"space must be 'pixel' or 'latent', not {space!r}")
    with torch_threads(threads):
        return _benchmark(budget_seconds, Path(out), seed, samplers, n_eval, data_size, space,
                          ae_run, run)


def _benchmark(budget_seconds, out, seed, samplers, n_eval, data_size, space="pixel",
               ae_run=None, run="benchmark") -> dict:
    from annogen.metrics import load_feature_net
    deadline = time.monotonic() + budget_seconds
    dataset = make_dataset("shapes", 32, n=data_size, seed=0)
    big = 10 ** 9
    cfg = TrainConfig(**{**DEFAULTS["train"], "steps": big, "seed": seed, "out": str(out),
                         "run": run, "ckpt_every": big, "sample_every": big,
                         "device": "cpu"})
    ae, extra = None, {}
    start = time.perf_counter()
    if space == "latent":
        from annogen.ldm.experiment import encode_latents, load_autoencoder
        from annogen.train import read_metrics
        ae_run = Path(ae_run) if ae_run is not None else Path("runs") / "ldm" / "default"
        ae = load_autoencoder(ae_run)
        dataset = encode_latents(ae, dataset)
        log = read_metrics(ae_run / "metrics.jsonl")
        extra = {"ae_run": str(ae_run), "ae_steps": log[-1]["step"] if log else None,
                 "ae_train_seconds": sum(r["sec_per_step"] * (r["step"] - p["step"])
                                         for p, r in zip([{"step": 0}] + log, log)),
                 "encode_seconds": time.perf_counter() - start,
                 "scaling_factor": ae.scaling_factor}
    exp = DiTExperiment(autoencoder=ae, ae_run=str(ae_run) if ae is not None else None)
    exp.deadline = deadline
    run_dir = train(exp, dataset, cfg)
    train_seconds = time.perf_counter() - start

    net = load_feature_net("shapes", 32)
    fresh = make_dataset("shapes", 32, n=n_eval, seed=1)
    real = torch.stack([fresh[i]["image"] for i in range(len(fresh))])
    other = make_dataset("shapes", 32, n=n_eval, seed=2)
    real2 = torch.stack([other[i]["image"] for i in range(len(other))])
    exp.modules = {"dit": load_dit(run_dir)}  # the EMA weights
    rows, images = evaluate_samplers(exp, samplers, n=n_eval, real=real, net=net, seed=seed)
    model = exp.modules["dit"]
    result = {
        "model": {"chapter": "dit", "preset": "tiny", "space": space, **extra,
                  "tokens": model.config.num_patches,
                  "parameters": count_parameters(model),
                  "steps": cfg.steps, "batch_size": cfg.batch_size,
                  "train_seconds": train_seconds,
                  "train_images_per_s": cfg.steps * cfg.batch_size / train_seconds,
                  "cfg_scale": exp.cfg_scale, "n_eval": n_eval,
                  "toy_fid_floor": toy_fid(real, real2, net),
                  "threads": torch.get_num_threads()},
        "rows": rows,
    }
    for (sampler, steps), x in images.items():
        save_image_grid(x[:63], run_dir / f"eval-{sampler}-{steps}.png", nrow=9)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# ## The cost of attention
#
# A DiT block costs $O(T C^2)$ in its linear layers and $O(T^2 C)$ in attention, for
# $T$ tokens of width $C$. At the paper's 256 tokens the linear layers dominate; at
# $1024^2$ pixels with an $f = 8$ autoencoder and patch 2 there are 4096 tokens, and the
# quadratic term takes over. `forward_cost` times the forward pass of a stack of DiT
# blocks (no embedding, no final layer) at each token count, batch 1, width `width`
# (small enough for a CPU), and returns one row per token count: the Sana chapter puts
# its linear attention next to these numbers.
@torch.no_grad()
def forward_cost(tokens=(256, 1024, 4096), width: int = 256, depth: int = 2, heads: int = 4,
                 batch: int = 1, repeats: int = 3, threads: int | None = 1,
                 seed: int = 0) -> list[dict]:
    with torch_threads(threads):
        torch.manual_seed(seed)
        blocks = torch.nn.ModuleList([DiTBlock(width, heads) for _ in range(depth)]).eval()
        for block in blocks:  # random modulation, so that the blocks are not the identity
            torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.02)
        rows = []
        for T in tokens:
            x = torch.randn(batch, T, width)
            c = torch.randn(batch, width)
            times = []
            for _ in range(repeats + 1):  # the first run warms up
                start = time.perf_counter()
                h = x
                for block in blocks:
                    h = block(h, c)
                times.append(time.perf_counter() - start)
            seconds = min(times[1:])
            rows.append({"model": "dit", "attention": "softmax", "tokens": T, "width": width,
                         "depth": depth, "heads": heads, "batch": batch,
                         "sec_per_forward": seconds,
                         "attention_gflop": 4 * batch * depth * T * T * width / 1e9,
                         "linear_gflop": 24 * batch * depth * T * width * width / 1e9})
        return rows


# `python -m annogen.dit.experiment` says what to run.
if __name__ == "__main__":
    print("Train the tiny DiT on latents (the autoencoder first if needed):  python -m annogen.dit\n"
          "The same in pixel space:                                         python -m annogen.dit --space pixel --run pixel\n"
          "Latents against pixels, and the samplers:                        python benchmarks/diffusion.py --only dit-space\n"
          "The chapter's tests:                                             python -m pytest tests/test_dit*.py -q")
