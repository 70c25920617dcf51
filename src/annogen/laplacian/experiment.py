r"""
---
title: Laplacian diffusion, training and evaluation
summary: Training the one U-Net under any schedule (Laplacian, f-DM-style or single-resolution) on the course's loop with the same recipe, loading a run, and scoring samples by toy FID and attribute accuracy against the compute they cost.
---

# Training, and measuring what a sample costs

Every model of the chapter, Laplacian diffusion and both baselines, is this one
experiment with a different [[process.py#the-band-schedules|schedule]]: the same U-Net
(the DDPM chapter's `tiny` preset, class-conditional), the same loss
([[denoiser.py#the-loss]]), the same optimizer and learning-rate schedule, the same
number of steps and images. Only the forward process changes, so any difference in the
samples is the process's doing. The loop is the course's ([[train.py]]): EMA weights,
checkpoints, exact resume, logs, sample grids. The command line is [[__main__.py]].
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from annogen.data import Shapes, make_dataset
from annogen.ddpm.unet import UNet, UNetConfig, build_unet, count_parameters
from annogen.laplacian.denoiser import Denoiser, loss, sample, time_grid
from annogen.laplacian.process import SCHEDULES, LaplacianProcess, Schedule
from annogen.metrics import load_feature_net, score_labels, toy_fid
from annogen.train import Experiment, TrainConfig, load_checkpoint, read_metrics, train

__all__ = ["LaplacianExperiment", "RECIPE", "load_run", "class_labels", "sample_images", "evaluate"]


# ## The recipe
#
# The DDPM chapter's tiny recipe, for the same network on the same data: Adam at
# $2 \cdot 10^{-3}$ with a 100-step warmup and a cosine decay to zero by the last step,
# batch 32, gradient clipping at 1, an EMA of decay 0.995, 10% of the labels replaced by
# the null label (so that classifier-free guidance would be possible). 1,500 steps by
# default.
RECIPE = dict(lr=2e-3, batch_size=32, ema_decay=0.995, grad_clip=1.0)
STEPS = 1500
WARMUP = 100


class LaplacianExperiment(Experiment):
    r"""Train the tiny U-Net under `schedule` (a name of `SCHEDULES`); outputs under `runs/laplacian/`."""

    name = "laplacian"
    ema_modules = ("unet",)
    num_samples = 63

    def __init__(self, schedule: str = "edify", label_dropout: float = 0.1, sample_steps: int = 20,
                 warmup: int = WARMUP, preset: str = "tiny"):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose from {sorted(SCHEDULES)}")
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
        self.schedule_name, self.label_dropout = schedule, label_dropout
        self.sample_steps, self.warmup, self.preset = sample_steps, warmup, preset
        self.process = LaplacianProcess(schedule)
        self.pixels_seen = 0

    def configure(self, device: torch.device) -> None:
        data = self.dataset
        if data.size % 4:
            raise ValueError(f"image size {data.size} must be divisible by 4 for a 3-level pyramid")
        net = build_unet(self.preset, in_channels=data.channels, image_size=data.size,
                         num_classes=getattr(data, "num_classes", 0)).to(device)
        self.model = net
        self.modules = {"unet": net}
        self.optimizers = {"unet": torch.optim.Adam(net.parameters(), lr=self.cfg.lr)}

    # Warmup, then half a cosine to zero at the run's last step.
    def learning_rate(self, step: int) -> float:
        p = min(max((step - self.warmup) / max(self.cfg.steps - self.warmup, 1), 0.0), 1.0)
        return self.cfg.lr * min(1.0, step / max(self.warmup, 1)) * 0.5 * (1 + math.cos(math.pi * p))

    def training_step(self, batch: dict, step: int, loop) -> dict:
        lr = self.learning_rate(step)
        for group in self.optimizers["unet"].param_groups:
            group["lr"] = lr
        x0, y = batch["image"], None
        if self.model.num_classes > 0:
            y = batch["label"]
            drop = torch.rand(y.shape, device=y.device) < self.label_dropout
            y = torch.where(drop, torch.full_like(y, -1), y)
        value, pixels = loss(Denoiser(self.modules["unet"], self.process), x0, y)
        self.pixels_seen += pixels
        loop.backward_step(value, "unet")
        return {"loss": value, "lr": lr, "train_pixels": float(self.pixels_seen)}

    def sample(self, n: int) -> Tensor:
        labels = class_labels(n, self.model.num_classes, per_row=9)
        net = self.modules["unet"]
        g = torch.Generator().manual_seed(self.cfg.seed)
        images, _ = sample(Denoiser(net, self.process), n, self.sample_steps, self.dataset.size,
                           self.dataset.channels, None if labels is None else labels.to(next(net.parameters()).device),
                           generator=g)
        return images.clamp(-1, 1)

    def extra_state(self) -> dict:
        return {"unet_config": asdict(self.model.cfg), "schedule_name": self.schedule_name,
                "schedule": asdict(self.process.schedule), "pixels_seen": self.pixels_seen}

    def load_extra_state(self, state: dict) -> None:
        if state.get("schedule_name", self.schedule_name) != self.schedule_name:
            raise ValueError(f"--resume: the run was trained with schedule {state['schedule_name']!r}, "
                             f"not {self.schedule_name!r}")
        self.pixels_seen = state.get("pixels_seen", 0)


def class_labels(n: int, num_classes: int, per_row: int = 1) -> Tensor | None:
    r"""Labels cycling through the classes, each repeated `per_row` times (as the DDPM chapter)."""
    if num_classes <= 0:
        return None
    return (torch.arange(n) // per_row) % num_classes


# ## Loading a run
#
# The checkpoint carries the U-Net's configuration and the schedule, so a run folder
# alone rebuilds the denoiser (EMA weights, as the samples of every chapter).
def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Denoiser, dict]:
    r"""(`Denoiser` with the EMA U-Net, the checkpoint's extra state) of `runs/laplacian/<run>`."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (python -m annogen.laplacian)")
    ckpt = load_checkpoint(path)
    extra = ckpt["extra"]
    net = UNet(UNetConfig(**extra["unet_config"]))
    net.load_state_dict(ckpt["ema"].get("unet", ckpt["modules"]["unet"]) if "ema" in ckpt else ckpt["modules"]["unet"])
    process = LaplacianProcess(Schedule(**extra["schedule"]))
    extra = {**extra, "step": ckpt.get("step")}
    return Denoiser(net, process).to(device).eval(), extra


# ## Sampling and scoring
#
# Samples come in batches from a generator seeded with `seed`; the seconds and the
# network pixels per image come with them: the cost is part of the result. Toy FID
# ([[metrics.py#toy-fid]]) compares the set with as many held-out real images, so only
# numbers at the same $n$ are comparable; attribute accuracy
# ([[metrics.py#score_labels]]) reads back the kind and colour of the first shape, which
# is what the class label asks for.
@torch.no_grad()
def sample_images(den: Denoiser, n: int, steps: int, labels: Tensor | None = None, seed: int = 0,
                  batch_size: int = 256, size: int = 32, channels: int = 3) -> tuple[Tensor, float, int]:
    r"""(`n` images in $[-1, 1]$, seconds, network pixels per image)."""
    g = torch.Generator().manual_seed(seed)
    start, out, pixels = time.perf_counter(), [], 0
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        y = None if labels is None else labels[i:i + m]
        images, pixels = sample(den, m, steps, size, channels, y, generator=g)
        out.append(images.clamp(-1, 1).cpu())
    return torch.cat(out), time.perf_counter() - start, pixels


def evaluate(den: Denoiser, steps: int, n: int, real: Tensor | None = None, net=None,
             seed: int = 0) -> tuple[dict, Tensor]:
    r"""Sample `n` class-cycling images with `steps` steps; return the scores and the images."""
    labels = class_labels(n, den.net.num_classes)
    size, channels = den.net.cfg.image_size, den.net.cfg.in_channels
    images, seconds, pixels = sample_images(den, n, steps, labels, seed, size=size, channels=channels)
    nfe = len(_grid(den, steps)) - 1
    row = {"steps": steps, "nfe": nfe, "n": n, "sec_per_image": seconds / n, "pixels_per_image": pixels,
           "full_size_evaluations": pixels / (size * size)}
    if labels is not None and den.net.num_classes == Shapes.num_classes and channels == 3:
        row.update(score_labels(images, labels))
    if real is not None and net is not None:
        row["toy_fid"] = toy_fid(real[:n], images, net)
    return row, images


def _grid(den: Denoiser, steps: int) -> list[float]:
    return time_grid(steps, den.process.schedule.switch_times)


def last_loss(run_dir: Path) -> float | None:
    records = [r for r in read_metrics(Path(run_dir) / "metrics.jsonl") if "loss" in r]
    return records[-1]["loss"] if records else None


# ## The benchmark
#
# `benchmark(runs, out)` takes trained run folders (one per schedule, trained with the
# same recipe and number of steps) and samples each with every step count in `steps`,
# $n$ images per row, the same seed and labels. Every row reports the toy FID against $n$
# held-out real images, the attribute accuracy, seconds per image and network pixels per
# image; `toy_fid_real` is the distance between two real sets of size $n$, the floor.
# `benchmarks/laplacian.py` trains the runs and prints the table.
def benchmark(runs: dict[str, Path], out: Path, steps=(8, 16, 32), n: int = 256, seed: int = 0,
              train_seconds: dict | None = None) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    real = torch.stack([it["image"] for it in make_dataset("shapes", 32, n=n, seed=seed + 1)])
    other = torch.stack([it["image"] for it in make_dataset("shapes", 32, n=n, seed=seed + 2)])
    net = load_feature_net("shapes", 32)
    rows, models = [], {}
    for name, run_dir in runs.items():
        den, extra = load_run(run_dir)
        models[name] = {"run_dir": str(run_dir), "train_steps": extra.get("step"),
                        "train_pixels_per_image": extra.get("pixels_seen", 0) / max(extra.get("step") or 1, 1) / 32,
                        "schedule": extra["schedule"], "parameters": count_parameters(den.net),
                        "final_loss": last_loss(run_dir),
                        "train_seconds": (train_seconds or {}).get(name)}
        for s in steps:
            row, images = evaluate(den, s, n, real, net, seed=seed)
            row["model"] = name
            rows.append(row)
            from annogen.train import save_image_grid
            save_image_grid(images[:63], out / f"samples_{name}_{s}.png", nrow=9)
    result = {"models": models, "rows": rows, "toy_fid_real": toy_fid(real, other, net), "n": n,
              "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "laplacian.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf8")
    return result


def train_schedule(schedule: str, data, cfg: TrainConfig) -> Path:
    r"""Train one schedule with the recipe (used by the CLI and the benchmark)."""
    return train(LaplacianExperiment(schedule), data, cfg)


if __name__ == "__main__":
    print("The experiment runs through the command line:")
    print("    python -m annogen.laplacian --threads 1                    # Laplacian diffusion, 1,500 steps")
    print("    python -m annogen.laplacian --schedule single --run single # the single-resolution baseline")
    print("    python -m annogen.laplacian --schedule fdm --run fdm       # the f-DM-style baseline")
    print("    python benchmarks/laplacian.py                             # all of them, compared")
    exp = LaplacianExperiment("edify")
    print(f"schedules: {', '.join(f'{k} {v}' for k, v in SCHEDULES.items())}")
    print(f"recipe: {RECIPE}, {STEPS} steps, warmup {WARMUP}; process {exp.process.schedule}")
