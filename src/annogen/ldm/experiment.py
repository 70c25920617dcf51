r"""
---
title: The KL autoencoder, training and measuring
summary: Training the KL autoencoder with VQGAN's losses and the KL term on the course's loop, computing the scaling factor, turning a dataset into scaled latents for a diffusion model, and the two comparisons - KL against VQGAN at equal budget, and what the KL weight does to the latents' scale.
---

# Training the KL autoencoder

The training is VQGAN's stage 1 ([[vqgan/experiment.py#stage-1-the-vqgan]]) with one
term swapped: the codebook loss becomes the KL of the posterior, weighted by $10^{-6}$.
Same encoder and decoder, same reconstruction loss, same patch discriminator and
adaptive weight, same two Adam optimizers, same tiny recipe. After training, one more
step: the scaling factor ([[model.py#the-scaling-factor]]) is measured on training
images and stored in the checkpoint.

The rest of the page serves the diffusion chapters: [[#encode_latents]] turns a dataset
into the scaled latents a DiT trains on, [[#load_autoencoder]] rebuilds the trained
autoencoder from its run folder, and [[#benchmark]] runs the chapter's two comparisons.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from annogen.data import Shapes, make_dataset
from annogen.metrics import attribute_accuracy, psnr, toy_fid
from annogen.train import (Budgeted, TrainConfig, load_checkpoint,
                           torch_threads, train)
from annogen.vqgan.experiment import DEFAULTS as VQGAN_DEFAULTS
from annogen.vqgan.experiment import interleave_rows
from annogen.vqgan.losses import VQGANLoss

from annogen.ldm.model import DiagonalGaussian, KLAutoencoder, KLConfig


# ## The tiny defaults
#
# VQGAN's tiny stage-1 recipe (batches of 16 images, Adam at $10^{-3}$ with
# $\beta = (0.5, 0.9)$, L1 plus the squared error in place of LPIPS, the critic from
# step 600 at weight 0.1; the VQGAN chapter explains each choice), so that the
# comparison of the two bottlenecks changes nothing else, with one cut: 600 steps
# instead of 800. This autoencoder is the first stage of the DiT chapter's default,
# which should train, autoencoder and DiT together, in minutes; the steps with the
# critic are the most expensive ones (a discriminator forward and backward pass and two
# extra gradients for $\lambda$). So the default run meets the critic for its last step
# only; `--steps 800` is VQGAN's full recipe. The official SD autoencoder: Adam at
# $4.5 \cdot 10^{-6}$ per image of the batch, LPIPS, the critic from step 50,001 at
# weight 0.5, KL weight $10^{-6}$.
DEFAULTS = {
    "train": {**VQGAN_DEFAULTS["vqgan"], "steps": 600},
    "model": {"kl_weight": 1e-6, "disc_start": VQGAN_DEFAULTS["model"]["disc_start"],
              "disc_weight": VQGAN_DEFAULTS["model"]["disc_weight"]},
    "scaling_images": 1024,
}


# ## The loss
#
# The official `LPIPSWithDiscriminator` of the latent-diffusion code computes, per batch
# of $B$ images,
#
# $$\mathcal{L}_{AE} = \frac{1}{B}\sum_{b}\Big(\sum_{\text{pixels}} \big(|x - \hat x| + \mathcal{L}_{LPIPS}\big)
#   + w_{KL}\,\mathrm{KL}\big(q(z \mid x_b)\,\|\,\mathcal{N}(0, I)\big)\Big) + \lambda f\,\mathcal{L}_G,$$
#
# a reconstruction error **summed** over the $CHW$ pixel values of each image, not
# averaged as in VQGAN, and the KL summed over the latent values. Against a sum of
# $3 \cdot 256^2$ errors, $w_{KL} = 10^{-6}$ is a whisper: the KL keeps the latents from
# drifting arbitrarily far, nothing more.
#
# We reuse [[vqgan/losses.py#VQGANLoss]], whose reconstruction term is a *mean*. Divided
# by $CHW$, the official loss is that mean plus $w_{KL}\,\mathrm{KL} / (CHW)$: the same
# objective, scaled by a constant, which changes nothing under Adam (it divides the
# gradient and its running RMS alike) but keeps the gradient-clipping threshold of the
# course's loop meaningful. The adaptive weight $\lambda$ is a ratio of gradient norms
# and is scaled along with everything else.
#
# The official loss also divides the reconstruction by $e^{\ell}$ and adds $\ell$, for a
# learned "log-variance" $\ell$ initialised to 0; but $\ell$ is not among the
# parameters of either optimizer (`configure_optimizers` lists the encoder, decoder and
# the two convolutions), so it stays 0 and the term is the identity. We leave it out.
class KLLoss(VQGANLoss):
    def __init__(self, kl_weight: float = 1e-6, **kwargs):
        super().__init__(codebook_weight=1.0, **kwargs)
        self.kl_weight = kl_weight

    def autoencoder_loss(self, x: Tensor, x_hat: Tensor, posterior: DiagonalGaussian,  # [!code hl]
                         step: int, last_layer: Tensor | None = None):
        # $\mathrm{KL}$ per image, averaged over the batch, and $CHW$, the values per image
        kl = posterior.kl().mean()  # [!code ++]
        values = x[0].numel()  # [!code ++]
        loss, logs = super().autoencoder_loss(x, x_hat, self.kl_weight * kl / values, step,  # [!code hl]
                                              last_layer)
        logs.pop("codebook")  # [!code ++]
        logs["kl"] = kl.item()  # [!code ++]
        return loss, logs


# ## The experiment
#
# `KLExperiment` is VQGAN's stage-1 experiment with the model and the loss swapped. The
# autoencoder is sized to the data (channels, resolution). `samples.png` shows rows of 8
# real images, each followed by a row of reconstructions from the posterior's mode.
class KLExperiment(Budgeted):
    r"""Train `KLAutoencoder.from_preset(preset, **overrides)` with [[#KLLoss]]."""

    name = "ldm"
    num_samples = 32

    def __init__(self, preset: str = "tiny", kl_weight: float = DEFAULTS["model"]["kl_weight"],
                 disc_start: int = DEFAULTS["model"]["disc_start"],
                 disc_weight: float = DEFAULTS["model"]["disc_weight"], disc_ndf: int = 32,
                 disc_layers: int = 2, l2_weight: float = 1.0,
                 scaling_images: int = DEFAULTS["scaling_images"], **overrides):
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        self.preset, self.overrides, self.kl_weight = preset, overrides, kl_weight
        self.disc_start, self.disc_weight = disc_start, disc_weight
        self.disc_ndf, self.disc_layers, self.l2_weight = disc_ndf, disc_layers, l2_weight
        self.scaling_images = scaling_images

    def configure(self, device: torch.device) -> None:
        ds = self.dataset
        self.model = KLAutoencoder.from_preset(self.preset, in_channels=ds.channels,
                                               **{"resolution": ds.size, **self.overrides}).to(device)
        self.loss = KLLoss(kl_weight=self.kl_weight, disc_start=self.disc_start,
                           disc_weight=self.disc_weight, disc_in_channels=ds.channels,
                           disc_ndf=self.disc_ndf, disc_layers=self.disc_layers,
                           perceptual_weight=0.0, l2_weight=self.l2_weight).to(device)
        self.modules = {"ae": self.model, "disc": self.loss.discriminator}
        betas = (0.5, 0.9)
        self.optimizers = {
            "ae": torch.optim.Adam(self.model.parameters(), lr=self.cfg.lr, betas=betas),
            "disc": torch.optim.Adam(self.loss.discriminator.parameters(), lr=self.cfg.lr,
                                     betas=betas),
        }

    # One step, as VQGAN's: the autoencoder (reconstruction, KL, adversarial term from
    # `disc_start` on), then the discriminator on the same $\hat x$.
    def training_step(self, batch: dict, step: int, loop) -> dict:
        self.stop_if_out_of_time(step, loop)
        self.loss.discriminator = self.modules["disc"]
        x = batch["image"]
        x_hat, posterior = self.modules["ae"](x)
        loss, logs = self.loss.autoencoder_loss(x, x_hat, posterior, step,
                                                last_layer=self.model.last_layer)
        loop.backward_step(loss, "ae")
        if self.loss.factor(step) > 0:
            d_loss, d_logs = self.loss.discriminator_loss(x, x_hat, step)
            loop.backward_step(d_loss, "disc")
            logs.update(d_logs)
        logs["latent_std"] = posterior.mean.detach().std().item()
        return logs

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        x = torch.stack([self.dataset[i]["image"] for i in range(n // 2)])
        ae = self.modules["ae"]
        device = next(ae.parameters()).device
        x_hat = ae.decode(ae.encode(x.to(device)).mode()).clamp(-1, 1).cpu()
        return interleave_rows(x, x_hat, 8)

    def extra_state(self) -> dict:
        return {"kl_config": asdict(self.model.config), "kl_weight": self.kl_weight}


# ## The scaling factor, after training
#
# Measured once the weights are final, on `n` training images (1024 by default; the
# official code uses its first batch), with the weights the run will be used with: the
# EMA copy if the run kept one. [[#finish]] writes it into the checkpoint, so that every
# later `load_autoencoder` returns a model whose `scaling_factor` is set.
@torch.no_grad()
def finish(run_dir: str | Path, dataset, n: int = DEFAULTS["scaling_images"], seed: int = 0) -> float:
    r"""Compute the scaling factor of the run's autoencoder and store it in its checkpoint."""
    from annogen.train import save_checkpoint
    path = Path(run_dir) / "checkpoint.pt"
    ckpt = load_checkpoint(path)
    ae = _build(ckpt)
    x = torch.stack([dataset[i]["image"] for i in range(min(n, len(dataset)))])
    lam = ae.compute_scaling_factor(x, torch.Generator().manual_seed(seed))
    key = "ema" if "ae" in ckpt.get("ema", {}) else "modules"
    ckpt[key]["ae"]["scale"] = ae.scale.clone()
    if key == "ema":
        ckpt["modules"]["ae"]["scale"] = ae.scale.clone()
    ckpt["extra"]["scaling_factor"] = lam
    save_checkpoint(ckpt, path)
    return lam


def _build(ckpt: dict) -> KLAutoencoder:
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["extra"]["kl_config"].items()}
    ae = KLAutoencoder(KLConfig(**config))
    ae.load_state_dict(ckpt.get("ema", {}).get("ae", ckpt["modules"]["ae"]))
    return ae.eval()


# A trained autoencoder from its run folder (EMA weights when the run kept them), with
# its scaling factor.
def load_autoencoder(run_dir: str | Path, device: str | torch.device = "cpu") -> KLAutoencoder:
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"no KL autoencoder checkpoint at {path}; train one with "
                                "python -m annogen.ldm")
    return _build(load_checkpoint(path)).requires_grad_(False).to(device)


# ## Latents for a diffusion model
#
# A diffusion model on latents never sees pixels. As VQGAN's transformer does with its
# code grids, we encode every training image once with the frozen autoencoder and
# train on the stored latents: one posterior sample per image, multiplied by the
# scaling factor, $z = \lambda_z (\mu + s \odot \epsilon)$. (The official code encodes
# each batch anew and so draws a fresh $\epsilon$ every epoch; with posterior standard
# deviations around $10^{-3}$ of the latents' spread the difference is invisible.)
# The result is a dataset like the others, with `image` holding the latent, so that a
# diffusion experiment trains on it unchanged: `channels` is $c$, `size` is $h$.
class Latents(Dataset):
    def __init__(self, latents: Tensor, labels: Tensor, num_classes: int, scaling_factor: float):
        self.latents, self.labels = latents, labels
        self.num_classes, self.scaling_factor = num_classes, scaling_factor
        self.channels, self.size = latents.shape[1], latents.shape[2]

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.latents[i], "label": self.labels[i]}


@torch.no_grad()
def encode_latents(ae: KLAutoencoder, dataset, batch_size: int = 256, seed: int = 0) -> Latents:
    r"""Every image of `dataset` as a scaled latent $\lambda_z z$, shape $(c, h, w)$."""
    device = next(ae.parameters()).device
    g = torch.Generator().manual_seed(seed)
    lam = ae.scaling_factor
    zs, labels = [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = torch.stack([it["image"] for it in items]).to(device)
        zs.append(ae.encode(x).sample(g.manual_seed(seed + start)).cpu() * lam)
        labels.append(torch.stack([torch.as_tensor(it["label"]) for it in items]))
    return Latents(torch.cat(zs), torch.cat(labels), getattr(dataset, "num_classes", 0), lam)


# ## Judging the autoencoder
#
# On `n` held-out images: **PSNR** of the reconstructions (from the mode), on `shapes`
# the **attribute accuracy of the reconstructions** (the checker reads the decoded
# pixels; the ceiling for any diffusion model on these latents), the **toy rFID** with
# a feature net, and three numbers about the latent space: the mean KL per image, the
# standard deviation of the latents $\operatorname{std}(\mu)$ and the typical posterior
# standard deviation $\operatorname{median}(s)$.
@torch.no_grad()
def evaluate_autoencoder(ae: KLAutoencoder, dataset, n: int = 512, batch_size: int = 128,
                         net=None) -> dict:
    ae.eval()
    device = next(ae.parameters()).device
    n = min(n, len(dataset))
    xs, x_hats, means, stds, kls = [], [], [], [], []
    for start in range(0, n, batch_size):
        x = torch.stack([dataset[i]["image"] for i in range(start, min(start + batch_size, n))])
        q = ae.encode(x.to(device))
        xs.append(x)
        x_hats.append(ae.decode(q.mode()).clamp(-1, 1).cpu())
        means.append(q.mean.cpu())
        stds.append(q.std.cpu())
        kls.append(q.kl().cpu())
    x, x_hat = torch.cat(xs), torch.cat(x_hats)
    out = {"psnr": psnr(x, x_hat).mean().item(), "kl": torch.cat(kls).mean().item(),
           "latent_std": torch.cat(means).std().item(),
           "posterior_std_median": torch.cat(stds).median().item(),
           "scaling_factor": ae.scaling_factor}
    if isinstance(dataset, Shapes):
        acc = attribute_accuracy(x_hat, [dataset.attributes(i) for i in range(n)])
        out.update({f"recon_{k}": v for k, v in acc.items()})
    if net is not None:
        out["recon_toy_fid"] = toy_fid(x, x_hat, net)
    return out


# ## The benchmark
#
# `benchmark(budget_seconds, out)` runs the chapter's two comparisons on $32^2$ shapes,
# every run with the tiny recipe for the same wall-clock budget (the deadline of
# [[train.py#a-wall-clock-budget]]), each scored on the same 512 held-out images
# (data seed 1; training uses seed 0):
#
# 1. **KL against VQGAN at the same $f = 4$**: the tiny KL autoencoder ($8 \times 8
#    \times 4$ continuous latent) against the VQGAN chapter's tiny model ($8 \times 8$
#    codes from $K = 128$): PSNR, attribute accuracy of the reconstructions, rFID;
# 2. **the KL weight against the latents' scale**: $w_{KL} \in$ `kl_weights`, the
#    latents' standard deviation, the scaling factor it implies, the KL and PSNR.
#
# Returns the rows and writes `out/benchmark.json`.
def benchmark(budget_seconds: float | None, out: Path, seed: int = 0,
              kl_weights=(0.0, 1e-6, 1e-4, 1e-2), data_size: int = 10_000,
              threads: int | None = 1, vqgan: bool = True, steps: int | None = None) -> dict:
    r"""As above; `steps` (with `budget_seconds=None`) trains every run for the same number
    of steps instead, the fair budget on a machine whose load changes."""
    from annogen.metrics import load_feature_net
    from annogen.vqgan.experiment import VQGANExperiment, evaluate_vqgan
    out = Path(out)
    with torch_threads(threads):
        data = make_dataset("shapes", 32, n=data_size, seed=0)
        held_out = make_dataset("shapes", 32, n=512, seed=1)
        net = load_feature_net("shapes", 32)
        big = 10 ** 9

        def config(run):
            return TrainConfig(**{**DEFAULTS["train"], "steps": big, "seed": seed, "out": str(out),
                                  "run": run, "ckpt_every": big, "sample_every": big,
                                  "device": "cpu"})
        rows = []
        runs = [("kl", w) for w in kl_weights] + ([("vqgan", None)] if vqgan else [])
        for kind, w in runs:
            cfg = config(f"{kind}-{w}" if w is not None else kind)
            if steps is not None:
                cfg.steps = steps
            exp = KLExperiment(kl_weight=w) if kind == "kl" else VQGANExperiment()
            if budget_seconds is not None:
                exp.deadline = time.monotonic() + budget_seconds
            start = time.perf_counter()
            run_dir = train(exp, data, cfg)
            seconds = time.perf_counter() - start
            row = {"model": kind, "kl_weight": w, "steps": cfg.steps, "train_seconds": seconds}
            if kind == "kl":
                row["scaling_factor"] = finish(run_dir, data, seed=seed)
                row.update(evaluate_autoencoder(load_autoencoder(run_dir), held_out, net=net))
            else:
                scores = evaluate_vqgan(exp.model.eval(), held_out, n=512, net=net)
                row.update({k: v for k, v in scores.items() if not k.startswith("codebook")})
                row["codebook_usage"] = scores["codebook_usage"]
            rows.append(row)
        result = {"budget_seconds": budget_seconds, "steps": steps,
                  "threads": torch.get_num_threads(),
                  "load_average": _load(), "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _load() -> float | None:
    import os
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# `python -m annogen.ldm.experiment` says what to run.
if __name__ == "__main__":
    print("Train the tiny KL autoencoder:        python -m annogen.ldm --threads 1\n"
          "Its comparisons (KL vs VQGAN, KL weight vs latent scale):\n"
          "                                      python benchmarks/ldm.py\n"
          "Then a DiT on its latents:            python -m annogen.dit")
