r"""
---
title: R3GAN, training on the course's loop
summary: One discriminator step with R1 and R2, then one generator step, inside the shared training loop; the cosine schedules; the roadmap's configs B and E as presets; sampling in one forward pass; the benchmark.
---

# Training R3GAN

A GAN step is two optimizer steps: first $D$ on a batch of real images and fresh
fakes, then $G$ on fresh fakes. Both happen inside one `training_step` of the course's
loop ([[train.py]]), each through `loop.backward_step`, which clears the gradients of
exactly the optimizer it steps (so the gradients $G$'s loss leaves on $D$'s weights
never reach $D$'s optimizer). The loop keeps an EMA of $G$ only (`ema_modules`), and
samples come from it.

On this page: [[#the-roadmap]] (configs B and E), [[#R3GANExperiment]] (the step and
the schedules), [[#evaluate]] (toy FID, attribute accuracy, images per second) and
[[#benchmark]].
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from annogen.data import Shapes, make_dataset
from annogen.metrics import score_labels, toy_fid
from annogen.r3gan.losses import (LOSSES, cosine_schedule, ema_decay_from_half_life,
                                  gradient_penalty)
from annogen.r3gan.model import (Discriminator, Generator, R3GANConfig, count_parameters,
                                 preset_config)
from annogen.train import (Budgeted, TrainConfig, load_checkpoint, save_image_grid,
                           seed_everything, torch_threads, train)


# ## The roadmap
#
# The paper gets from StyleGAN2 to R3GAN in steps (its Table 2, FFHQ $256^2$, 5M images
# each): **A** StyleGAN2, FID 7.52; **B** everything stripped to a DCGAN-like network
# with the non-saturating loss and $R_1$, 12.46; **C** RpGAN and $R_2$ added, 11.65;
# **D** a ResNet, 9.95; **E** ResNeXt-style grouped convolutions with inverted
# bottlenecks, 7.05. Two of those configs are presets here, the two ends of what the
# chapter builds:
#
# | | block ([[model.py]]) | loss ([[losses.py]]) | penalties |
# |---|---|---|---|
# | `B` | `plain`: $3\times 3$ conv + leaky ReLU, no skip | non-saturating | $R_1$ |
# | `E` | `resnext`: 1-3-1 inverted bottleneck, grouped | RpGAN | $R_1 + R_2$ |
#
# Every other setting (widths, resampling, schedules, optimizer, batch) is shared, and
# the switches `loss`, `r1`, `r2` and `block` give the configurations in between (C is
# `B` with `loss="rpgan", r2=True`).
CONFIGS = {
    "B": {"block": "plain", "loss": "ns", "r1": True, "r2": False},
    "E": {"block": "resnext", "loss": "rpgan", "r1": True, "r2": True},
}


# ## The tiny defaults
#
# | setting | paper (CIFAR-10) | tiny (shapes, $32^2$) |
# |---|---|---|
# | networks | 768 wide, 2 blocks per stage, 21M each | 64 wide, 1 block per stage, 0.15M each |
# | batch | 512 | 32 |
# | images shown $T$ | 20M | steps $\times$ 32 (54,400 for the default 1,700 steps) |
# | $\gamma$ | 0.05 $\to$ 0.005 | 0.5 $\to$ 0.05 from the command line (`TINY_GAMMA`); the paper's in the benchmark |
# | learning rate | $2 \cdot 10^{-4} \to 5 \cdot 10^{-5}$ | $2 \cdot 10^{-3} \to 5 \cdot 10^{-4}$ |
# | Adam | $\beta_1 = 0$, $\beta_2$ 0.9 $\to$ 0.99 | the same |
# | EMA half-life | 0 $\to$ 5M images ($T/4$) | 0 $\to$ $T/4$ |
# | augmentation | adaptive, $p$ up to 0.55 | none |
#
# 1,700 steps are what two free CPU cores do in under ten minutes (measured: 557 s of
# training, 563 s in all): a step of config E costs about 0.3 s at batch 32 on two
# threads, 0.4 s on one (two penalties, each a double backward pass through $D$),
# config B about half that. All schedules run over the whole run ($T$ = `steps`
# $\times$ batch, or `schedule_steps` $\times$ batch when given), so a shorter run is a
# compressed version of a longer one.
#
# **$\gamma$, ten times the paper's, for the tiny run.** The paper's schedule was made
# for 20M images; compressed into a few thousand steps it turns the penalties down
# while $D$ and $G$ are still far apart, and $D$ runs away (the chapter's discussion
# shows the logit gap). Starting ten times higher holds $D$ back while $G$ learns its
# colours: over 1,900 steps attribute accuracy 0.63, where the paper's values reach 0.58
# to 0.59 in 2,000 steps; the default 1,700 steps reach 0.60 and 0.63 on two seeds (see
# the README). The command line's tiny default uses `TINY_GAMMA`; `R3GANExperiment`
# itself, and so the benchmark's roadmap, keep the paper's.
TINY_GAMMA = (0.5, 0.05)
DEFAULTS = {
    "train": {"steps": 1700, "batch_size": 32, "lr": 2e-3, "grad_clip": None,
              "ema_decay": 0.999, "log_every": 10, "ckpt_every": 500, "sample_every": 500},
    "schedule": {"gamma": (0.05, 0.005), "lr_ratio": 0.25, "beta2": (0.9, 0.99),
                 "ema_fraction": 0.25},
}


class R3GANExperiment(Budgeted):
    r"""A class-conditional GAN of the given preset, roadmap config and loss switches."""

    name = "r3gan"
    ema_modules = ("g",)
    num_samples = 63  # three per class of shapes

    def __init__(self, preset: str = "tiny", config: str = "E", loss: str | None = None,
                 r1: bool | None = None, r2: bool | None = None,
                 gamma: tuple[float, float] = DEFAULTS["schedule"]["gamma"],
                 lr_ratio: float = DEFAULTS["schedule"]["lr_ratio"],
                 beta2: tuple[float, float] = DEFAULTS["schedule"]["beta2"],
                 ema_fraction: float = DEFAULTS["schedule"]["ema_fraction"],
                 schedule_steps: int | None = None, **overrides):
        if config not in CONFIGS:
            raise ValueError(f"unknown roadmap config {config!r}; choose one of {list(CONFIGS)}")
        chosen = {**CONFIGS[config], **{k: v for k, v in
                                        (("loss", loss), ("r1", r1), ("r2", r2)) if v is not None}}
        if chosen["loss"] not in LOSSES:
            raise ValueError(f"unknown loss {chosen['loss']!r}; choose one of {list(LOSSES)}")
        self.preset, self.config_name = preset, config
        self.loss, self.r1, self.r2 = chosen["loss"], chosen["r1"], chosen["r2"]
        self.overrides = {"block": chosen["block"], **overrides}
        self.gamma, self.lr_ratio, self.beta2 = tuple(gamma), lr_ratio, tuple(beta2)
        self.ema_fraction, self.schedule_steps = ema_fraction, schedule_steps

    def build_config(self, dataset) -> R3GANConfig:
        settings = {"channels": dataset.channels, "num_classes": getattr(dataset, "num_classes", 0),
                    **self.overrides}
        c = preset_config(self.preset, **settings)
        if c.resolution != dataset.size:
            raise ValueError(f"the {self.preset} preset makes {c.resolution}x{c.resolution} "
                             f"images but the data is {dataset.size}x{dataset.size}; use "
                             f"--image-size {c.resolution}")
        return c

    # Adam with $\beta_1 = 0$: no momentum. In a two-player game momentum keeps pushing
    # in the direction that was right a few steps ago, after the other player has moved.
    def configure(self, device: torch.device) -> None:
        c = self.build_config(self.dataset)
        self.G, self.D = Generator(c).to(device), Discriminator(c).to(device)
        self.modules = {"g": self.G, "d": self.D}
        betas = (0.0, self.beta2[0])
        self.optimizers = {"d": torch.optim.Adam(self.D.parameters(), lr=self.cfg.lr, betas=betas),
                           "g": torch.optim.Adam(self.G.parameters(), lr=self.cfg.lr, betas=betas)}

    # ### The schedules, at step $t$
    #
    # [[losses.py#the-cosine-schedules]] with $n = (t-1)B$ images shown so far: $\gamma$,
    # the learning rate (base `lr`, final `lr` $\times$ `lr_ratio`), $\beta_2$, and the
    # EMA decay from the half-life ([[losses.py#ema_decay_from_half_life]]), written into
    # the optimizers and the loop's config before the step.
    def schedules(self, step: int, loop) -> dict:
        B = loop.cfg.batch_size
        n, T = (step - 1) * B, (self.schedule_steps or loop.cfg.steps) * B
        values = {
            "gamma": cosine_schedule(n, T, *self.gamma),
            "lr": cosine_schedule(n, T, self.cfg.lr, self.cfg.lr * self.lr_ratio),
            "beta2": cosine_schedule(n, T, *self.beta2),
            "ema_half_life": cosine_schedule(n, T, 0.0, self.ema_fraction * T),
        }
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"], group["betas"] = values["lr"], (0.0, values["beta2"])
        if loop.ema.get("g") is not None:
            loop.cfg.ema_decay = ema_decay_from_half_life(values["ema_half_life"], B)
        return values

    # ### One training step
    #
    # **$D$.** Fakes $\tilde x = G(z, y)$ for the batch's labels $y$ are made without a
    # graph and detached: nothing of this half reaches $G$. Reals and fakes become leaves
    # that require gradients (for $R_1$ and $R_2$), $D$ judges both, and
    #
    # $$L_D = \ell_D\big(D(x, y), D(\tilde x, y)\big) + \frac{\gamma}{2}\big(\overline{R_1} + \overline{R_2}\big)$$
    #
    # with $\ell_D$ the chosen loss ([[losses.py#the-relativistic-pairing-loss-rpgan]] or
    # the non-saturating one) and the penalties switched by `r1`, `r2`.
    #
    # **$G$.** New noise, the same labels; $D$'s weights are frozen for this half (no
    # gradients for them are needed), and $L_G = \ell_G(D(x, y), D(G(z, y), y))$.
    #
    # Logged: both losses, the penalties, $\gamma$, and the **logit gap**
    # $\overline{D(x)} - \overline{D(\tilde x)}$, $D$'s confidence.
    def training_step(self, batch: dict, step: int, loop) -> dict:
        self.stop_if_out_of_time(step, loop)
        sched = self.schedules(step, loop)
        G, D = self.modules["g"], self.modules["d"]
        d_loss_fn, g_loss_fn = LOSSES[self.loss]
        x, y = batch["image"], self.labels_of(batch)
        z_dim = self.G.config.z_dim
        # the discriminator
        with torch.no_grad():
            x_fake = G(torch.randn(len(x), z_dim, device=x.device), y)
        x_real = x.detach().requires_grad_(self.r1)
        x_fake = x_fake.detach().requires_grad_(self.r2)
        real_logits, fake_logits = D(x_real, y), D(x_fake, y)
        loss_d = d_loss_fn(real_logits, fake_logits)
        logs = {"loss_d_adv": loss_d.detach(), "gamma": sched["gamma"], "lr": sched["lr"],
                "logit_gap": (real_logits - fake_logits).mean().detach()}
        if self.r1:
            r1 = gradient_penalty(real_logits, x_real).mean()
            loss_d = loss_d + sched["gamma"] / 2 * r1
            logs["r1"] = r1.detach()
        if self.r2:
            r2 = gradient_penalty(fake_logits, x_fake).mean()
            loss_d = loss_d + sched["gamma"] / 2 * r2
            logs["r2"] = r2.detach()
        loop.backward_step(loss_d, "d")
        # the generator
        self.D.requires_grad_(False)
        try:
            x_fake = G(torch.randn(len(x), z_dim, device=x.device), y)
            real_logits = D(x.detach(), y) if self.loss == "rpgan" else None  # NS ignores them
            loss_g = g_loss_fn(real_logits, D(x_fake, y))
        finally:
            self.D.requires_grad_(True)
        loop.backward_step(loss_g, "g")
        logs.update(loss_d=loss_d.detach(), loss_g=loss_g.detach())
        return logs

    def labels_of(self, batch: dict) -> Tensor | None:
        if not self.G.config.num_classes:
            return None
        y = batch["label"]
        if (y < 0).any():
            raise ValueError("class-conditional R3GAN needs a label for every image; this "
                             "dataset has unlabelled images (use a labelled dataset)")
        return y

    # ### Sampling: one forward pass
    #
    # $x = G(z, y)$, clamped to $[-1, 1]$. Image $i$ gets class $i \bmod$ `num_classes`.
    # That is the whole sampler: no steps, no solver, no guidance.
    @torch.no_grad()
    def sample(self, n: int, labels: Tensor | None = None) -> Tensor:
        G = self.modules["g"]
        c = G.config
        device = G.to_rgb.weight.device
        if c.num_classes and labels is None:
            labels = torch.arange(n) % c.num_classes
        z = torch.randn(n, c.z_dim, device=device)
        y = labels.to(device) if labels is not None else None
        return G(z, y).clamp(-1, 1).cpu()

    def extra_state(self) -> dict:
        return {"r3gan_config": asdict(self.G.config), "loss": self.loss, "r1": self.r1,
                "r2": self.r2, "roadmap": self.config_name}


# A finished run's generator, EMA weights preferred, rebuilt from its checkpoint alone.
def load_generator(run_dir: str | Path, device: str | torch.device = "cpu",
                   ema: bool = True) -> Generator:
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    c = ckpt["extra"]["r3gan_config"]
    config = R3GANConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
    G = Generator(config)
    state = ckpt.get("ema", {}).get("g") if ema else None
    G.load_state_dict(state if state is not None else ckpt["modules"]["g"])
    return G.to(device).eval()


# ## Evaluate
#
# `n` samples, classes cycling, scored by the **attribute accuracy** (the checker reads
# the first shape of each sample and compares its shape and colour with the label:
# [[metrics.py#score_labels]]), the **toy FID** against `n` real images when a feature
# net is given ([[metrics.py#toy-fid]]), and **images per second** of sampling.
@torch.no_grad()
def evaluate(G: Generator, n: int = 252, real: Tensor | None = None, net=None,
             seed: int = 0, batch_size: int = 252) -> tuple[dict, Tensor]:
    exp = R3GANExperiment()
    exp.modules = {"g": G.eval()}
    c = G.config
    labels = torch.arange(n) % max(1, c.num_classes) if c.num_classes else None
    seed_everything(seed)
    start = time.perf_counter()
    chunks = labels.split(batch_size) if labels is not None else [None] * -(-n // batch_size)
    images = torch.cat([exp.sample(len(lab) if lab is not None else min(batch_size, n), lab)
                        for lab in chunks])[:n]
    seconds = time.perf_counter() - start
    out = {"samples": n, "sample_images_per_s": n / seconds}
    if c.num_classes == Shapes.num_classes and images.shape[1] == 3:
        out.update(score_labels(images, labels))
    if real is not None and net is not None:
        out["toy_fid"] = toy_fid(real[:n], images, net)
    return out, images


# ## The benchmark
#
# `benchmark(runs, steps, out)` is what `benchmarks/r3gan.py` runs: for each named run
# (a dict of `R3GANExperiment` arguments) the tiny networks on shapes at $32^2$ for the
# same number of steps (so the same number of images shown, the paper's protocol for its
# roadmap), then `n_eval` samples from the EMA generator, scored as above. Each row also
# has the training time; `toy_fid_floor` is the FID between two real draws of the same
# size, for scale. Torch runs on `threads` threads (default 1; restored afterwards).
def benchmark(runs: dict[str, dict], steps: int, out: Path, seed: int = 0, n_eval: int = 504,
              data_size: int = 10_000, threads: int | None = 1,
              budget_seconds: float | None = None) -> dict:
    with torch_threads(threads):
        return _benchmark(runs, steps, Path(out), seed, n_eval, data_size, budget_seconds)


def _benchmark(runs, steps, out, seed, n_eval, data_size, budget_seconds) -> dict:
    from annogen.metrics import load_feature_net
    dataset = make_dataset("shapes", 32, n=data_size, seed=0)
    net = load_feature_net("shapes", 32)
    real = torch.stack([make_dataset("shapes", 32, n=n_eval, seed=1)[i]["image"]
                        for i in range(n_eval)])
    real2 = torch.stack([make_dataset("shapes", 32, n=n_eval, seed=2)[i]["image"]
                         for i in range(n_eval)])
    rows = []
    for name, kwargs in runs.items():
        cfg = TrainConfig(**{**DEFAULTS["train"], "steps": steps, "seed": seed, "out": str(out),
                             "run": name, "ckpt_every": 10 ** 9, "sample_every": 10 ** 9,
                             "device": "cpu"})
        exp = R3GANExperiment(schedule_steps=steps, **kwargs)
        if budget_seconds is not None:
            exp.deadline = time.monotonic() + budget_seconds
        start = time.perf_counter()
        run_dir = train(exp, dataset, cfg)
        seconds = time.perf_counter() - start
        G = load_generator(run_dir)
        scores, images = evaluate(G, n=n_eval, real=real, net=net, seed=seed)
        save_image_grid(images[:63], run_dir / "eval.png", nrow=9)
        rows.append({"run": name, **kwargs, "steps": cfg.steps, "train_seconds": seconds,
                     "g_parameters": count_parameters(G),
                     "d_parameters": count_parameters(exp.D), **scores})
    result = {"toy_fid_floor": toy_fid(real, real2, net), "n_eval": n_eval,
              "threads": torch.get_num_threads(), "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# ## Run it
#
# `python -m annogen.r3gan.experiment` prints what to run; the command line is
# [[__main__.py]].
if __name__ == "__main__":
    print("R3GAN experiments:\n"
          "  python -m annogen.r3gan                             # config E, tiny, on shapes\n"
          "  python -m annogen.r3gan --config B --threads 1      # the stripped baseline\n"
          "  python -m annogen.r3gan --no-r2 --run no-r2         # E without R2\n"
          "  python -m annogen.r3gan --preset cifar10            # the paper's networks, counted\n"
          "  python -m annogen.r3gan.toy                          # the 2-D mode-coverage toy\n"
          "  python benchmarks/r3gan.py                          # B vs E vs E - R2, and the toy sweep")
