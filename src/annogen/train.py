r"""
---
title: One training loop for every chapter
summary: The training loop every chapter shares. It picks the device, seeds, runs DDP under torchrun, clips gradients, keeps EMA weights and stops on NaN. It writes checkpoints atomically and resumes them exactly, and it writes logs and sample grids.
---

# One training loop for every chapter

Every chapter of this course trains something: an autoencoder, a GAN, a diffusion model.
The model code differs from chapter to chapter; the chores around it do not. A run must
pick a device, seed its random numbers, shuffle the data, step the optimizers, clip
gradients, maybe keep an average of the weights, log the losses, save checkpoints,
continue after an interruption, spread over several GPUs when there are several, and
finally show what the model makes. Written once per chapter, these chores hide the model
and come out slightly different (and slightly wrong) every time. So they live here, once,
tested once, and a chapter only says what is specific to it.

A chapter subclasses `Experiment` and fills in two methods: `configure` builds the
networks and their optimizers, and `training_step` computes the losses for one batch and
hands each one to `loop.backward_step`. `sample` is optional and feeds the picture of
samples. Everything else is `train`:

    import torch
    from torch import nn
    from annogen.train import Experiment, TrainConfig, train

    class AutoEncoder(Experiment):
        name = "autoencoder"                       # outputs go to runs/autoencoder/<run>/

        def configure(self, device):
            net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 64), nn.ReLU(),
                                nn.Linear(64, 3 * 32 * 32), nn.Tanh()).to(device)
            self.modules = {"net": net}
            self.optimizers = {"net": torch.optim.Adam(net.parameters(), lr=self.cfg.lr)}

        def training_step(self, batch, step, loop):
            x = batch["image"]
            loss = (self.modules["net"](x).view_as(x) - x).pow(2).mean()
            loop.backward_step(loss, "net")
            return {"loss": loss}

    run_dir = train(AutoEncoder(), dataset, TrainConfig(steps=500, batch_size=32))

A run leaves one folder, `runs/<chapter>/<run>/`:

| file | what it holds |
|---|---|
| `config.json` | the settings of the latest start of the run |
| `metrics.jsonl` | one JSON line per `log_every` steps: the step and the mean of each logged number |
| `checkpoint.pt` | everything needed to continue the run exactly where it stopped |
| `samples.png` | a grid of `Experiment.sample`, redrawn every `sample_every` steps and at the end |
| `loss.png` | the logged curves, drawn at the end |

The same code runs on one CPU, on a Mac (MPS), on one GPU and on several GPUs:

    python -m annogen.vqvae --steps 2000                       # one process
    torchrun --nproc_per_node 4 -m annogen.vqvae --steps 2000  # four GPUs, one process each
    python -m annogen.vqvae --steps 4000 --resume              # continue the first run
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import random
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

CHECKPOINT_FORMAT = 1


# ## The settings
#
# One flat dataclass, in the spirit of nanoGPT's config: every knob of the loop with its
# default, no nesting. `steps` counts optimizer steps (one batch each), not epochs: the
# chapters' datasets are generated and can be any size, so epochs mean little, and a
# step count makes runs of different chapters comparable. `grad_clip=None` turns
# clipping off, `ema_decay=None` keeps no average of the weights, and `bf16` only
# matters on CUDA.
@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-4
    grad_clip: float | None = 1.0
    ema_decay: float | None = None
    ckpt_every: int = 250
    log_every: int = 10
    sample_every: int = 250
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    out: str = "runs"
    run: str = "default"
    resume: bool = False
    bf16: bool = True

    def __post_init__(self):
        self.out = str(self.out)
        for name in ("batch_size", "ckpt_every", "log_every", "sample_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be at least 1, not {getattr(self, name)}")
        if self.steps < 0:
            raise ValueError(f"TrainConfig.steps must be >= 0, not {self.steps}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip must be > 0 or None, not {self.grad_clip}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must be in [0, 1) or None, not {self.ema_decay}")


# ## Command lines
#
# Every chapter's `python -m annogen.<chapter>` uses this parser: a bad flag prints one
# line, `prog: error: what is wrong`, and exits with status 2, instead of argparse's
# usage block followed by the message.
class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


# Two argument types the samplers of several chapters share: `--top-k` (keep the $k$
# most likely tokens) and `--top-p` (nucleus sampling: keep the smallest set of tokens
# whose probabilities sum to $p$). Either can be switched off with `none`; a value out
# of range is a one-line error naming the flag.
def top_k_arg(text: str) -> int | None:
    if text.lower() in ("none", "off", "0"):
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'none', not {text}")
    return value


def top_p_arg(text: str) -> float | None:
    if text.lower() in ("none", "off"):
        return None
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] or 'none', not {text}")
    return value


# Torch's CPU thread count, set for a block and restored after it. Chapters' `--threads`
# and the benchmarks use it: on a 2-core machine shared with other work, one thread is
# often faster than two that fight other processes for the cores.
@contextlib.contextmanager
def torch_threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Every chapter's command line gets the same flags, named after the fields
# (`--batch-size` sets `batch_size`). A chapter passes its own defaults, for instance
# `add_train_args(parser, steps=2000, lr=3e-4)`; a misspelt default is an error, not a
# silently ignored keyword. `--grad-clip none` and `--ema-decay none` switch those off.
def _float_or_none(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


ARG_HELP = {
    "steps": (int, "optimizer steps to train for (in total, counting resumed steps)"),
    "batch_size": (int, "images per step, per process"),
    "lr": (float, "learning rate"),
    "grad_clip": (_float_or_none, "clip the total gradient norm of each optimizer to this ('none': off)"),
    "ema_decay": (_float_or_none, "keep an EMA of the weights with this decay ('none': off)"),
    "ckpt_every": (int, "save a checkpoint every N steps"),
    "log_every": (int, "write a line to metrics.jsonl every N steps"),
    "sample_every": (int, "redraw samples.png every N steps"),
    "seed": (int, "random seed of the weights, the data order and the samples (which images: --data-seed)"),
    "device": (str, "auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps"),
    "num_workers": (int, "DataLoader worker processes"),
    "out": (str, "root folder of all runs"),
    "run": (str, "name of this run: outputs go to OUT/<chapter>/RUN/"),
    "resume": (bool, "continue the run from its checkpoint"),
    "bf16": (bool, "bfloat16 autocast on CUDA"),
}


def add_train_args(parser: argparse.ArgumentParser, **defaults) -> argparse.ArgumentParser:
    r"""Add one flag per `TrainConfig` field; `defaults` override the dataclass defaults."""
    names = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(defaults) - set(names))
    if unknown:
        raise TypeError(f"add_train_args: no such training option(s): {', '.join(unknown)}")
    values = {**asdict(TrainConfig()), **defaults}
    group = parser.add_argument_group("training")
    for name in names:
        kind, help_text = ARG_HELP[name]
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                               default=values[name], help=help_text)
        else:
            group.add_argument(flag, dest=name, type=kind, default=values[name],
                               help=f"{help_text} (default: {values[name]})")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


# ## Choosing a device
#
# The fastest device present wins: an NVIDIA GPU, then Apple's Metal backend, then the
# CPU. `--device cpu` overrides the choice (useful to check a result on the CPU, where
# runs are exactly reproducible), and asking for a device that is not there is an
# error rather than a silent fall back to the CPU.
def pick_device(name: str = "auto") -> torch.device:
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but torch sees no CUDA GPU")
    if device.type == "mps" and not mps_ok:
        raise ValueError(f"device {name!r} requested but the MPS backend is not available")
    return device


# ## Random numbers
#
# Three generators feed a training run: Python's `random`, NumPy's global generator and
# torch's (one for the CPU, one per GPU). Seeding all of them makes a run repeatable.
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds the CPU and every CUDA and MPS device


# Repeating a run from its start is not enough: a resumed run must draw the very numbers
# the uninterrupted run would have drawn after the checkpoint. So the checkpoint holds
# the *state* of each generator. We keep those states as tensors and plain numbers,
# because checkpoints are read with `torch.load(weights_only=True)` (see
# [[#checkpoints|Checkpoints]]), which refuses any other Python object.
def rng_state(device: torch.device) -> dict:
    version, mt, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["mt"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    elif device.type == "mps" and "mps" in state:
        torch.mps.set_rng_state(state["mps"])


# Drawing samples for the picture must not disturb training: if it consumed random
# numbers, a run that draws samples at step 500 would continue differently from one that
# does not. Inside `preserved_rng` we may seed and draw freely; on the way out every
# generator is put back as it was.
@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    saved = rng_state(device)
    try:
        yield
    finally:
        set_rng_state(saved, device)


# ## Writing files atomically
#
# A checkpoint is written over the previous one. If the process dies halfway (out of
# disk, out of time on a cluster, Ctrl-C), writing in place leaves half a file, and the
# run has lost both its old state and its new one. Instead we write to a temporary file
# in the same folder, flush it to disk, and rename it over the target with `os.replace`.
# A rename within one file system is atomic: a reader sees the old file or the new one,
# never a mixture. If anything fails, the temporary file is removed and the old file
# is untouched. Every file of a run (checkpoint, pictures, logs) goes through here.
def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    r"""Call `write(tmp)` to produce the file at a temporary path, then move it to `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf8"))


# ## Checkpoints
#
# `torch.load` is built on `pickle`, and unpickling can run arbitrary code: a checkpoint
# downloaded from somewhere is a program. With `weights_only=True` torch reads only
# tensors and plain containers (dicts, lists, tuples, numbers, strings), so a malicious
# file fails to load instead of running. We load our own checkpoints the same way,
# which is why everything we store is a tensor or a plain value. Tensors are mapped to
# the CPU; `load_state_dict` moves them to the device of the model.
def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


# ## Pictures
#
# A grid of samples says more about an image model than any loss. Images in $[-1, 1]$
# become bytes by $u = \operatorname{round}\big(127.5\,(x + 1)\big)$ so that $-1$ is black
# and $1$ is white; they are laid out `nrow` to a row with a white border of `padding`
# pixels around each.
def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8,
                    padding: int = 2) -> Path:
    from PIL import Image

    x = images.detach().float().cpu().clamp(-1, 1)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"save_image_grid expects (N, 1 or 3, H, W) images, got {tuple(x.shape)}")
    n, c, h, w = x.shape
    u = ((x + 1) * 127.5).round().to(torch.uint8)
    cols = max(1, min(nrow, n))
    rows = math.ceil(n / cols)
    grid = torch.full((c, padding + rows * (h + padding), padding + cols * (w + padding)),
                      255, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top:top + h, left:left + w] = u[i]
    pixels = grid.permute(1, 2, 0).numpy()
    image = Image.fromarray(pixels[:, :, 0] if c == 1 else pixels, mode="L" if c == 1 else "RGB")
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


# The loss curves are drawn from `metrics.jsonl`, one small panel per logged number,
# since a GAN's two losses or a VQ-VAE's reconstruction and commitment terms live on
# different scales. We use matplotlib's object interface with the Agg canvas and never
# `pyplot`: no window opens, no global backend is switched, and it works on a server
# without a display.
def plot_metrics(records: list[dict], path: str | os.PathLike) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    skip = {"step", "sec_per_step"}
    keys = sorted({k for r in records for k, v in r.items()
                   if k not in skip and isinstance(v, (int, float))},
                  key=lambda k: ("loss" not in k, k))  # losses first
    cols = min(3, max(1, len(keys)))
    rows = max(1, math.ceil(len(keys) / cols))
    fig = Figure(figsize=(4.0 * cols, 2.8 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        points = [(r["step"], r[key]) for r in records if key in r and math.isfinite(r[key])]
        if points:
            ax.plot(*zip(*points), linewidth=1.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if not keys:
        fig.text(0.5, 0.5, "nothing logged yet", ha="center", va="center")
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.5 / (2.8 * rows) + 0.05,
                        top=1 - 0.35 / (2.8 * rows), wspace=0.3, hspace=0.55)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def read_metrics(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf8").splitlines() if line.strip()]


# ## What a chapter writes: the Experiment
#
# Before calling `configure`, the loop sets `self.cfg` (the `TrainConfig`, for the
# learning rate) and `self.dataset` (for its channels, size and number of classes).
# `configure` must fill two dicts: `modules` (name to network, on `device`) and
# `optimizers` (name to optimizer). Names are what checkpoints, logs and `backward_step`
# use. In a multi-process run the loop replaces each trainable entry of `modules` by
# its `DistributedDataParallel` wrapper, so `training_step` keeps writing
# `self.modules["net"](x)` either way.
#
# `training_step(batch, step, loop)` gets a batch (a dict of `image`, `label`, `caption`,
# tensors already on the device) and the step number, counted from 1: when it returns,
# `step` steps are done. It calls `loop.backward_step(loss, name)` once for each
# optimizer it updates and returns the numbers to log (floats or 0-d tensors).
#
# `sample(n)` returns `n` images in $[-1, 1]$ or `None`. The loop calls it on the main
# process only, in eval mode, without gradients, with the random generators seeded to
# `cfg.seed` (so every grid of a run shows the same noise, and the pictures change only
# because the model does) and with `self.modules` temporarily holding the plain
# networks, or their EMA copies where there are any.
#
# `extra_state` and `load_extra_state` carry anything else a resume needs, such as a
# learning-rate scheduler's `state_dict()` (plain values and tensors only).
class Experiment:
    r"""Base class of a chapter's training recipe."""
    name: str = "experiment"
    ema_modules: tuple[str, ...] | None = None  # which modules get an EMA copy; None: all trainable
    num_samples: int = 64  # images in samples.png
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    cfg: TrainConfig
    dataset: Any

    def configure(self, device: torch.device) -> None:
        raise NotImplementedError("an Experiment must define configure(device)")

    def training_step(self, batch: dict, step: int, loop: "Loop") -> dict[str, float]:
        raise NotImplementedError("an Experiment must define training_step(batch, step, loop)")

    def sample(self, n: int) -> torch.Tensor | None:
        return None

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


# ## A wall-clock budget
#
# The loop trains for a number of steps. To compare settings fairly on a busy machine
# we sometimes want "as many steps as fit in 3 minutes" instead. An experiment that
# derives from `Budgeted` calls `self.stop_if_out_of_time(step, loop)` at the start of
# every step; once its `deadline` has passed, the step in progress becomes the last one
# by lowering the run's step count to it. The loop then ends exactly as a run of that
# many steps would: checkpoint, samples, curves. (`cfg.steps` afterwards says how many
# steps were done.) The benchmarks of the VQGAN, VAR and DiT chapters use it.
class Budgeted(Experiment):
    deadline: float | None = None  # a time.monotonic() value, or None for no budget

    def stop_if_out_of_time(self, step: int, loop: "Loop") -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            loop.cfg.steps = step


# ## An average of the weights (EMA)
#
# SGD's iterates jitter around a good solution; their running average sits closer to
# it. An exponential moving average keeps a second copy of each network and after every
# optimizer step moves it a little toward the live weights:
#
# $$\theta_{ema} \leftarrow \gamma\,\theta_{ema} + (1-\gamma)\,\theta$$
#
# with decay $\gamma$ close to 1. The copy averages roughly the last $1/(1-\gamma)$ steps
# ($\gamma = 0.999$: a thousand). It starts equal to the initial weights and takes no
# part in training; generative models are usually *evaluated* with it (DDPM, DiT and
# most GANs sample from the EMA generator). Buffers such as batch-norm statistics are
# copied, not averaged. The EMA is per module: a GAN averages its generator
# (`ema_modules = ("g",)`), not its discriminator.
def make_ema(module: nn.Module) -> nn.Module:
    ema = copy.deepcopy(module).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema: nn.Module, module: nn.Module, gamma: float) -> None:
    for theta_ema, theta in zip(ema.parameters(), module.parameters()):
        theta_ema.mul_(gamma).add_(theta.detach(), alpha=1.0 - gamma)
    for b_ema, b in zip(ema.buffers(), module.buffers()):
        b_ema.copy_(b)


# ## Gradient clipping
#
# One unlucky batch can produce a gradient a thousand times larger than usual, and one
# such step can throw the weights somewhere training never recovers from. Clipping
# bounds the step. Treat all gradients $g_p$ of one optimizer's parameters as one long
# vector, with total norm
#
# $$\lVert g \rVert = \sqrt{\textstyle\sum_p \lVert g_p \rVert^2},$$
#
# and if it exceeds the limit $c$, shrink every gradient by the same factor:
#
# $$g_p \leftarrow g_p \cdot \min\!\Big(1, \frac{c}{\lVert g \rVert + \epsilon}\Big).$$
#
# The direction is kept and only the length changes (clipping each value separately
# would also turn the step). We return $\lVert g \rVert$ before clipping; the loop logs it as
# `grad_norm_<optimizer>`, a useful early warning of instability. (This is what
# `torch.nn.utils.clip_grad_norm_` computes, written out.)
@torch.no_grad()
def clip_grad_norm(params: Iterable[torch.Tensor], c: float, eps: float = 1e-6) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = (c / (norm + eps)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return norm


# ## Stopping when the loss is not a number
#
# Once a loss is NaN or infinite, its gradients are too, and a single optimizer step
# spreads NaN through every weight; from then on each step and each checkpoint is
# garbage. So `backward_step` looks at the loss *before* using it. On the first bad
# value the run stops with one line that names the step and the loss, and the weights
# are not updated. Checkpoints are only ever written from finite weights (they are
# checked before each save), so `checkpoint.pt` still holds the last good state: lower
# the learning rate and `--resume`.
#
# `TrainingDiverged` is a `SystemExit`: a chapter run from the command line ends with
# exactly that line and exit status 1, without a traceback (in a multi-process run only
# rank 0 prints it; the others exit with status 1 quietly). Code that wants to go on
# can catch it.
class TrainingDiverged(SystemExit):
    def __init__(self, message: str, step: int, announce: bool = True):
        super().__init__(message if announce else 1)
        self.message = message
        self.step = step

    def __str__(self) -> str:
        return self.message


# ## Several processes
#
# `torchrun --nproc_per_node N` starts N copies of the same program and tells each its
# place through environment variables: `WORLD_SIZE` (N), `RANK` (0 to N-1) and
# `LOCAL_RANK` (which GPU of this machine to use). When `WORLD_SIZE` is above 1, we join
# the process group (NCCL between GPUs, gloo between CPU processes) and then data
# parallelism does the rest: each process sees a different part of every batch, and
# `DistributedDataParallel` averages the gradients across processes during `backward`,
# so all copies take the same step and stay identical. The effective batch is
# `batch_size` times N. Only rank 0, the *main* process, writes files and shows the
# progress bar. We never start processes ourselves: launching is torchrun's job.
@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we called init_process_group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(cfg: TrainConfig) -> tuple[Distributed, torch.device]:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(cfg.device)
    if world_size <= 1:
        return Distributed(), device
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device.type == "mps":
        raise ValueError("multi-process training is not supported on MPS; use --device cpu")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        owns = True
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, owns), device


# ## A data order that can be replayed
#
# Each epoch is a fresh permutation of the dataset, drawn by `DistributedSampler` from a
# generator seeded with `seed + epoch`, and dealt out to the processes (process $r$ of $N$
# gets positions $r, r + N, r + 2N, \dots$). Because the order is a function of the
# epoch alone, a resumed run can rebuild it: step $s$ (counted from 0) is batch
# $s \bmod B$ of epoch $\lfloor s / B \rfloor$, with $B$ batches per epoch, so the loop
# rebuilds that epoch's order and skips the batches already consumed, without loading
# them. Incomplete batches are dropped, so every process takes the same number of equal
# steps.
#
# One trap: starting to iterate a `DataLoader` draws a number from torch's global
# generator (to seed its workers), so a resumed run, which starts a loader mid-epoch
# where the uninterrupted run did not, would shift every random number after it. We hand
# the loader a generator of its own.
def batches_per_epoch(n: int, batch_size: int, world_size: int) -> int:
    return (n // world_size) // batch_size


def epoch_loader(dataset, cfg: TrainConfig, epoch: int, skip: int, ddp: Distributed,
                 device: torch.device) -> DataLoader:
    sampler = DistributedSampler(dataset, num_replicas=ddp.world_size, rank=ddp.rank,
                                 shuffle=True, seed=cfg.seed, drop_last=True)
    sampler.set_epoch(epoch)
    order = list(sampler)[skip * cfg.batch_size:]
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 1009 + ddp.rank)
    return DataLoader(dataset, batch_size=cfg.batch_size, sampler=order, drop_last=True,
                      num_workers=cfg.num_workers, generator=generator,
                      pin_memory=device.type == "cuda")


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


# ## The loop
#
# `Loop` holds the state of a run and is what `training_step` receives. A chapter uses
# `loop.device`, `loop.step`, `loop.cfg`, `loop.is_main`, `loop.ema` (module name to its
# EMA copy, or `None`), `loop.autocast()` and, above all, `loop.backward_step`.
class Loop:
    def __init__(self, exp: Experiment, dataset, cfg: TrainConfig, device: torch.device,
                 ddp: Distributed, run_dir: Path):
        self.exp, self.dataset, self.cfg = exp, dataset, cfg
        self.device, self.ddp, self.run_dir = device, ddp, run_dir
        self.step = 0
        self.is_main = ddp.is_main
        self.rank, self.world_size = ddp.rank, ddp.world_size
        self.checkpoint_path = run_dir / "checkpoint.pt"
        self.metrics_path = run_dir / "metrics.jsonl"
        self.checkpoint_step: int | None = None
        self.bare = dict(exp.modules)  # the networks themselves, never DDP wrappers
        self.params = {name: [p for group in opt.param_groups for p in group["params"]]
                       for name, opt in exp.optimizers.items()}
        self.ema = self._make_ema()
        # which EMA copies follow each optimizer: those of the modules it updates
        self.ema_of = {}
        for opt_name, params in self.params.items():
            ids = {id(p) for p in params}
            self.ema_of[opt_name] = [m for m, e in self.ema.items() if e is not None
                                     and any(id(p) in ids for p in self.bare[m].parameters())]
        self.log_sums: dict[str, float] = {}
        self.log_counts: dict[str, int] = {}
        self.step_logs: dict[str, float] = {}
        self.last_log = (0, time.perf_counter())

    def _make_ema(self) -> dict[str, nn.Module | None]:
        ema = {name: None for name in self.bare}
        if self.cfg.ema_decay is None:
            return ema
        names = self.exp.ema_modules
        if names is None:
            names = [n for n, m in self.bare.items() if any(p.requires_grad for p in m.parameters())]
        for name in names:
            if name not in self.bare:
                raise ValueError(f"ema_modules names {name!r}, which is not in modules {list(self.bare)}")
            ema[name] = make_ema(self.bare[name])
        return ema

    # On CUDA the forward pass runs under bfloat16 autocast: matrix products and
    # convolutions in bf16, much faster on tensor cores, while reductions and the
    # weights stay in float32. bf16 has
    # float32's exponent range, so, unlike float16, it needs no loss scaling. The loop
    # enters this context around `training_step`; on the CPU and MPS it does nothing.
    def autocast(self):
        if self.device.type == "cuda" and self.cfg.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ### One optimizer step
    #
    # In order: check the loss is finite (on every process: if one process sees NaN, all
    # stop together rather than leave the others waiting forever in the next gradient
    # exchange); clear this optimizer's gradients; backpropagate (outside autocast, as
    # torch recommends); clip; step; move the EMA copies of the modules this optimizer
    # updates. The gradients are cleared *just before* `backward`, not after the step:
    # in a GAN the generator's loss also leaves gradients on the discriminator's weights,
    # and clearing at this point guarantees no optimizer ever steps with gradients that
    # another loss left behind. Returns the gradient norm before clipping (or `None`).
    def backward_step(self, loss: torch.Tensor, opt_name: str) -> torch.Tensor | None:
        if opt_name not in self.exp.optimizers:
            raise KeyError(f"backward_step: no optimizer named {opt_name!r}; "
                           f"configure() made {list(self.exp.optimizers)}")
        self._check_finite(loss, f"loss {opt_name!r}")
        optimizer = self.exp.optimizers[opt_name]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=False):
            loss.backward()
        norm = None
        if self.cfg.grad_clip is not None:
            norm = clip_grad_norm(self.params[opt_name], self.cfg.grad_clip)
            self._check_finite(norm, f"gradient norm of {opt_name!r}")
            self.step_logs[f"grad_norm_{opt_name}"] = float(norm)
        optimizer.step()
        for name in self.ema_of[opt_name]:
            ema_update(self.ema[name], self.bare[name], self.cfg.ema_decay)
        return norm

    def _check_finite(self, value: torch.Tensor, what: str) -> None:
        value = value.detach()
        bad = (~torch.isfinite(value)).any().float()
        if self.world_size > 1:
            dist.all_reduce(bad)
        if bad.item() > 0:
            raise self._diverged(what, value)

    def _diverged(self, what: str, value: torch.Tensor) -> TrainingDiverged:
        shown = f"{value.float().item():.6g}" if value.numel() == 1 else "not finite"
        if torch.isfinite(value).all():
            shown = "not finite on another process"
        if self.checkpoint_step is not None:
            kept = f"last good checkpoint: {self.checkpoint_path} (step {self.checkpoint_step})"
        else:
            kept = "no checkpoint was written yet"
        return TrainingDiverged(f"training diverged at step {self.step}: {what} is {shown}; "
                                f"stopped without updating the weights; {kept}",
                                self.step, announce=self.is_main)

    # ### What a checkpoint holds
    #
    # Exactly what the next step depends on: the weights, the optimizer states (Adam's
    # moment estimates matter as much as the weights), the EMA copies, the chapter's
    # extra state, the step number (which fixes the position in the data order), the
    # half-filled log averages, and the random generator states of *every* process,
    # gathered to rank 0. All processes call this at the same steps; only rank 0 writes.
    def save(self) -> None:
        for name, module in self.bare.items():
            if not all(torch.isfinite(p).all() for p in module.parameters()):
                raise TrainingDiverged(f"training diverged at step {self.step}: weights of "
                                       f"{name!r} are not finite; checkpoint not written",
                                       self.step, announce=self.is_main)
        mine = {"rng": rng_state(self.device), "log_sums": dict(self.log_sums),
                "log_counts": dict(self.log_counts)}
        if self.world_size > 1:
            ranks: list = [None] * self.world_size
            dist.all_gather_object(ranks, mine)
        else:
            ranks = [mine]
        if self.is_main:
            save_checkpoint({
                "format": CHECKPOINT_FORMAT,
                "step": self.step,
                "world_size": self.world_size,
                "config": asdict(self.cfg),
                "modules": {n: m.state_dict() for n, m in self.bare.items()},
                "optimizers": {n: o.state_dict() for n, o in self.exp.optimizers.items()},
                "ema": {n: e.state_dict() for n, e in self.ema.items() if e is not None},
                "extra": self.exp.extra_state(),
                "ranks": ranks,
            }, self.checkpoint_path)
        self.checkpoint_step = self.step

    # Resuming restores all of it. The data position needs no extra field: it follows
    # from the step. The random states are applied last, just before the first step, so
    # nothing in between can consume them. A checkpoint from a different batch size,
    # seed or number of processes still loads, with a warning that the continuation
    # cannot replay the same data order.
    def load(self, ckpt: dict) -> dict | None:
        for name, module in self.bare.items():
            module.load_state_dict(ckpt["modules"][name])
        for name, optimizer in self.exp.optimizers.items():
            optimizer.load_state_dict(ckpt["optimizers"][name])
        for name, ema in self.ema.items():
            if ema is None:
                continue
            if name in ckpt.get("ema", {}):
                ema.load_state_dict(ckpt["ema"][name])
            else:
                ema.load_state_dict(self.bare[name].state_dict())
                warnings.warn(f"checkpoint has no EMA of {name!r}; starting it from the weights")
        self.exp.load_extra_state(ckpt.get("extra", {}))
        self.step = self.checkpoint_step = int(ckpt["step"])
        old = ckpt.get("config", {})
        changed = [k for k in ("seed", "batch_size") if old.get(k) != getattr(self.cfg, k)]
        if ckpt.get("world_size") != self.world_size:
            changed.append("number of processes")
        if changed:
            warnings.warn(f"resuming with a different {', '.join(changed)}: "
                          "the data order will not replay the interrupted run")
        ranks = ckpt.get("ranks", [])
        if len(ranks) != self.world_size:
            return None
        mine = ranks[self.rank]
        self.log_sums, self.log_counts = dict(mine["log_sums"]), dict(mine["log_counts"])
        return mine["rng"]

    def wrap(self) -> None:
        if self.world_size == 1:
            return
        ids = [self.device.index] if self.device.type == "cuda" else None
        for name, module in self.bare.items():
            if any(p.requires_grad for p in module.parameters()):
                self.exp.modules[name] = DistributedDataParallel(module, device_ids=ids)

    def unwrap(self) -> None:
        self.exp.modules = dict(self.bare)

    # ### Logging
    #
    # Each step's numbers are added up; every `log_every` steps their means (over those
    # steps and, with several processes, over all processes) become one line of
    # `metrics.jsonl`, together with the seconds per step. The file is appended line by
    # line, so a crashed run keeps its log up to the crash.
    def accumulate(self, logs: dict) -> None:
        for key, value in {**logs, **self.step_logs}.items():
            if isinstance(value, torch.Tensor):
                value = value.detach()
            self.log_sums[key] = self.log_sums.get(key, 0.0) + float(value)
            self.log_counts[key] = self.log_counts.get(key, 0) + 1
        self.step_logs = {}

    def write_log(self) -> dict:
        keys = sorted(self.log_sums)
        sums = [self.log_sums[k] for k in keys]
        counts = [float(self.log_counts[k]) for k in keys]
        if self.world_size > 1 and keys:
            t = torch.tensor(sums + counts, dtype=torch.float64,
                             device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(t)
            sums, counts = t[:len(keys)].tolist(), t[len(keys):].tolist()
        record: dict[str, Any] = {"step": self.step}
        record.update({k: s / c for k, s, c in zip(keys, sums, counts)})
        last_step, last_time = self.last_log
        now = time.perf_counter()
        record["sec_per_step"] = (now - last_time) / max(1, self.step - last_step)
        self.last_log = (self.step, now)
        self.log_sums, self.log_counts = {}, {}
        if self.is_main:
            with open(self.metrics_path, "a", encoding="utf8") as f:
                f.write(json.dumps(record) + "\n")
        return record

    # ### Samples
    def write_samples(self) -> None:
        exp = self.exp
        live = exp.modules
        use = {n: (self.ema[n] if self.ema.get(n) is not None else m) for n, m in self.bare.items()}
        modes = {n: m.training for n, m in use.items()}
        exp.modules = use
        try:
            for m in use.values():
                m.eval()
            with preserved_rng(self.device), torch.no_grad(), self.autocast():
                seed_everything(self.cfg.seed)
                images = exp.sample(exp.num_samples)
        finally:
            for n, m in use.items():
                m.train(modes[n])
            exp.modules = live
        if images is not None:
            save_image_grid(images.float(), self.run_dir / "samples.png")

    def batches(self) -> Iterator[Any]:
        per_epoch = batches_per_epoch(len(self.dataset), self.cfg.batch_size, self.world_size)
        if per_epoch == 0:
            raise ValueError(f"the dataset has {len(self.dataset)} items: too few for one batch of "
                             f"{self.cfg.batch_size} on each of {self.world_size} process(es)")
        epoch, skip = divmod(self.step, per_epoch)
        while True:
            yield from epoch_loader(self.dataset, self.cfg, epoch, skip, self.ddp, self.device)
            epoch, skip = epoch + 1, 0

    # ### The steps
    #
    # Fetch a batch, move it to the device, run the chapter's step under autocast, log,
    # checkpoint every `ckpt_every` steps and at the last one, redraw the samples every
    # `sample_every` steps. At the end, the main process draws the samples and the loss
    # curves one last time. When the loss diverges, the curves are still drawn (they
    # show how it happened) before the run stops.
    def run(self) -> None:
        cfg, exp = self.cfg, self.exp
        bar = tqdm(total=cfg.steps, initial=min(self.step, cfg.steps), disable=not self.is_main,
                   desc=f"{exp.name}/{cfg.run}", dynamic_ncols=True)
        batches = self.batches() if self.step < cfg.steps else iter(())
        sampled_at = None
        try:
            for m in self.bare.values():
                m.train()
            while self.step < cfg.steps:
                batch = to_device(next(batches), self.device)
                self.step += 1
                with self.autocast():
                    logs = exp.training_step(batch, self.step, self) or {}
                self.accumulate(logs)
                if self.step % cfg.log_every == 0:
                    self.write_log()
                bar.update(1)
                bar.set_postfix({k: f"{float(v.detach() if isinstance(v, torch.Tensor) else v):.4g}"
                                 for k, v in logs.items()}, refresh=False)
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                    self.save()
                if self.is_main and self.step % cfg.sample_every == 0:
                    self.write_samples()
                    sampled_at = self.step
        except TrainingDiverged:
            bar.close()
            if self.is_main:
                plot_metrics(read_metrics(self.metrics_path), self.run_dir / "loss.png")
            raise
        finally:
            bar.close()
            if hasattr(batches, "close"):
                batches.close()
        if self.is_main:
            if sampled_at != self.step:
                self.write_samples()
            plot_metrics(read_metrics(self.metrics_path), self.run_dir / "loss.png")


# ## `train`: putting it together
#
# The order matters for exact resumption. Seed, build the networks (their
# initialisation draws random numbers), then either restore a checkpoint (weights,
# optimizers, EMA, step, and last of all the random states) or reseed with
# `seed + rank`, so that the processes of a multi-process run draw different noise. Only
# then wrap the networks for DDP and start stepping.
#
# With several processes, all of them return from `train` together, after rank 0 has
# written the last files, so code after `train` may read them on any rank.
#
# A fresh run truncates `metrics.jsonl`. A resumed run cuts it back to the checkpoint's
# step: if the previous run logged steps after its last checkpoint and then crashed,
# those lines are replayed, not duplicated, and the file reads as one run.
def train(exp: Experiment, dataset, cfg: TrainConfig) -> Path:
    r"""Train `exp` on `dataset` as `cfg` says; return the run folder."""
    ddp, device = init_distributed(cfg)
    run_dir = Path(cfg.out) / exp.name / cfg.run
    try:
        seed_everything(cfg.seed)
        exp.cfg, exp.dataset = cfg, dataset
        exp.configure(device)
        if not getattr(exp, "modules", None) or not getattr(exp, "optimizers", None):
            raise ValueError(f"{type(exp).__name__}.configure() must set self.modules and "
                             "self.optimizers (non-empty dicts)")
        loop = Loop(exp, dataset, cfg, device, ddp, run_dir)
        rng = None
        resumed = cfg.resume and loop.checkpoint_path.exists()
        if cfg.resume and not resumed and ddp.is_main:
            tqdm.write(f"--resume: no checkpoint at {loop.checkpoint_path}; starting from step 0")
        if resumed:
            rng = loop.load(load_checkpoint(loop.checkpoint_path))
        if ddp.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            config = {**asdict(cfg), "experiment": exp.name, "world_size": ddp.world_size,
                      "device": str(device), "torch": torch.__version__}
            atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2) + "\n")
            kept = [r for r in read_metrics(loop.metrics_path) if r["step"] <= loop.step] if resumed else []
            atomic_write_text(loop.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
        loop.wrap()
        if rng is not None:
            set_rng_state(rng, device)
        else:
            if resumed:
                warnings.warn("checkpoint has no random states for this number of processes; reseeding")
            seed_everything(cfg.seed + ddp.rank)
        try:
            loop.run()
        finally:
            loop.unwrap()
        if ddp.world_size > 1:  # leave together, once rank 0 has written the outputs
            dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)
        return run_dir
    finally:
        if ddp.owns_group:
            dist.destroy_process_group()


# ## Run this file
#
# `python -m annogen.train` trains the small autoencoder of this page's introduction on
# 16-pixel shapes for 20 steps, in a temporary folder, then trains it again for 10
# steps, stops, and resumes for the other 10. The loop's central promise is checked:
# the resumed run ends with exactly the weights of the uninterrupted one.
if __name__ == "__main__":
    import tempfile

    from annogen.data import Shapes

    class AutoEncoder(Experiment):
        name = "autoencoder"
        num_samples = 8

        def configure(self, device):
            net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.ReLU(),
                                nn.Linear(32, 3 * 16 * 16), nn.Tanh()).to(device)
            self.modules = {"net": net}
            self.optimizers = {"net": torch.optim.Adam(net.parameters(), lr=self.cfg.lr)}

        def training_step(self, batch, step, loop):
            x = batch["image"]
            loss = (self.modules["net"](x).view_as(x) - x).pow(2).mean()
            loop.backward_step(loss, "net")
            return {"loss": loss}

    data = Shapes(n=256, size=16)
    with tempfile.TemporaryDirectory() as tmp, torch_threads(1):
        settings = dict(batch_size=32, lr=1e-3, ckpt_every=5, log_every=5, sample_every=10,
                        out=tmp, device="cpu")
        whole = train(AutoEncoder(), data, TrainConfig(steps=20, run="whole", **settings))
        train(AutoEncoder(), data, TrainConfig(steps=10, run="halves", **settings))
        halves = train(AutoEncoder(), data, TrainConfig(steps=20, run="halves", resume=True, **settings))
        print("run folder:", sorted(p.name for p in whole.iterdir()))
        losses = [r["loss"] for r in read_metrics(whole / "metrics.jsonl")]
        print(f"loss every 5 steps: {', '.join(f'{v:.4f}' for v in losses)}")
        a = load_checkpoint(whole / "checkpoint.pt")["modules"]["net"]
        b = load_checkpoint(halves / "checkpoint.pt")["modules"]["net"]
        assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs"
        print("checked: 10 steps + resume + 10 steps ends with exactly the weights of 20 steps")
