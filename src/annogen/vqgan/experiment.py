r"""
---
title: VQGAN, training both stages
summary: The two training recipes of Taming Transformers on the course's training loop - the VQGAN with two alternating optimizers, then a class-conditional GPT over the frozen VQGAN's code grids - and the numbers that judge them.
---

# VQGAN: training both stages

Taming Transformers trains in two stages, and so does this page.

1. **The VQGAN** ([[model.py]], [[losses.py]]): an autoencoder and a patch
   discriminator, trained together, each with its own optimizer, in alternate steps.
   [[#VQGANExperiment]].
2. **The transformer** ([[transformer.py]]): the VQGAN is frozen, every training image
   is turned into its grid of code indices once, and a GPT learns
   $p(s \mid c)$ over those grids. [[#TransformerExperiment]].

Both are `Experiment`s of the course's training loop ([[train.py]]), which does the
seeding, checkpoints, exact resume, logging and pictures. What is left here is what is
specific to VQGAN: the order of the two optimizer steps, the code grids, and how to
judge the results: [[#evaluate_vqgan]] for the autoencoder, [[#evaluate_transformer]]
for the samples, and [[#benchmark]] for both at a fixed wall-clock budget.

The defaults are the `tiny` ones that train on the course's `shapes` data
([[data.py#Shapes]]) on two CPU cores in a few minutes; the chapter's README gives the
commands and the numbers we measured.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from annogen.data import Shapes, make_dataset
from annogen.metrics import codebook_perplexity, codebook_usage, psnr, score_labels, toy_fid
from annogen.train import (Budgeted, Experiment, TrainConfig, load_checkpoint, save_image_grid,
                           seed_everything, torch_threads, train)

from annogen.vqgan.losses import LPIPS, VQGANLoss
from annogen.vqgan.model import VQGAN, VQGANConfig, build_vqgan
from annogen.vqgan.transformer import GPT, GPTConfig, build_gpt


# ## The tiny defaults
#
# The training settings of the tiny demo, per stage, used by the classes below, the
# command line ([[__main__.py]]) and [[#benchmark]]. We found them by trying a few on
# two busy CPU cores (the README's Discussion lists what we measured): stage 1 is about
# 2 minutes there, stage 2 about 3.
DEFAULTS = {
    "vqgan": {"steps": 800, "batch_size": 16, "lr": 1e-3, "log_every": 10,
              "ckpt_every": 200, "sample_every": 200},
    "model": {"disc_start": 600, "disc_weight": 0.1, "restart_every": 50},
    "transformer": {"steps": 1200, "batch_size": 64, "lr": 1e-3, "log_every": 10,
                    "ckpt_every": 400, "sample_every": 400},
    "gpt": {"n_layer": 2},
    "sampling": {"top_k": None, "top_p": 0.8},
}

# ## A wall-clock budget
#
# Both experiments below are [[train.py#Budgeted]] experiments: they check a deadline at
# the start of every step, so that [[#benchmark]] can train "as many steps as fit in 3
# minutes" and still end like a normal run (checkpoint, samples, curves).


# ## Stage 1: the VQGAN
#
# The tiny settings, next to the paper's ImageNet ones:
#
# | setting | paper (ImageNet, f16) | tiny (shapes, $32^2$) |
# |---|---|---|
# | autoencoder | `paper`, 72M parameters | `tiny`, 1.09M ([[model.py#configurations]]) |
# | codebook | $K = 1024$, $D = 256$ | $K = 128$, $D = 64$ |
# | discriminator | `ndf` 64, 3 layers, 2.77M | `ndf` 32, 2 layers, 0.17M |
# | `disc_start` | 250001 | 600 (of 800 steps) |
# | `disc_weight` | 0.8 | 0.1 (see below) |
# | reconstruction | $\lvert x - \hat x \rvert$ + LPIPS (pretrained VGG16) | $\lvert x - \hat x \rvert + \lVert x - \hat x \rVert^2$ (see below) |
# | dead codes | left dead | restarted every 50 steps |
# | optimizer | Adam, $\beta = (0.5, 0.9)$, lr $4.5 \cdot 10^{-6} \times$ batch | the same, lr $10^{-3}$, batch 16 |
#
# **Why LPIPS is off by default.** LPIPS is a *learned* perceptual distance: what makes
# it perceptual is a VGG16 trained on ImageNet and lin weights fitted to human
# judgements. We cannot download them, and with random weights
# ([[losses.py#LPIPS]]) it measures distances between random features, which says
# nothing about perception; on top of that it is 15M parameters of forward and backward
# pass per step, ten times the tiny autoencoder. `lpips_weights=(vgg, lin)` (the CLI's
# `--lpips-vgg` and `--lpips-lin`) switches the real thing on from local files.
#
# **What replaces it.** We first trained with $|x - \hat x|$ alone, and the
# reconstructions came out grey: after 600 steps the colour of only 14% of the shapes
# could be read back (15% with the quantiser taken out; chance is 1/7). Grey, but not
# one grey. Following the decoder's output on 256 held-out images through a run of
# L1 alone, the shapes keep their *brightness* and lose their *hue*: at step 400 the
# three channels agree within 0.05, at about $-0.75$ for red, green and blue (one
# channel on), $+0.1$ for yellow, magenta and cyan (two on) and $+0.4$ for white; from
# step 150 to 400 this hardly changed, and the sign of only 66% of the shapes' channel
# values was right.
#
# Why the hue and not the brightness? The gradient of $|x - \hat x|$ is the *sign* of the
# error, the same size whether the pixel is off by 1 or by 0.001. 88% of the pixels
# are black background; once they are nearly right they keep voting at full strength,
# and their votes, noisy from batch to batch, drown the few shape pixels, whose signal
# is what Adam has to find. The part of that signal that every colour shares (a shape
# is brighter than the background, by how many channels are on) gets through; the part
# that differs from colour to colour, which channels, does not. We tested that
# explanation: the same run with the absolute error weighted so that shape pixels and
# background count equally in every batch found the hue colour by colour, and by step
# 300 every colour had the right channels on (red $(0.64, -0.61, -0.64)$, cyan
# $(-0.44, 0.26, 0.58)$) and 94% of the shapes' channel signs were right, against 65%
# without the weighting (`python benchmarks/vq.py --only l1-plateau` repeats both runs).
#
# The squared error has no such problem: its gradient shrinks with the error, so the
# nearly-right background falls silent and the shapes' errors are what is left. With
# the squared error alone and no quantiser, the colour was read back right in 98% of
# the shapes after 300 steps; with both terms and the quantiser, 98% after 600 steps,
# and PSNR 22.0 dB instead of 15.6. With pretrained LPIPS the perceptual term does
# that job. Without it, the tiny demo adds the squared error,
#
# $$\mathcal{L}_{rec} = |x - \hat x| + \|x - \hat x\|^2,$$
#
# (`l2_weight` = 1, which is 0 whenever LPIPS is on).
#
# **Dead codes.** The official codebook starts in $(-1/K, 1/K)$ and is never repaired.
# On our data that is fatal in a short run: with L1 + L2, 800 steps and no restarts, the
# encoder used 17% of the 128 codes (perplexity 6) and the reconstructions reached
# 17 dB; with the VQ-VAE chapter's dead-code restart every 50 steps
# ([[vqvae/model.py#restarting-dead-codes]]) all codes are used and PSNR is 21 dB
# (both runs with the critic at the paper's weight from step 600).
#
# **The critic's weight.** With the paper's `disc_weight` of 0.8, the critic never
# got going in our runs: its hinge loss stayed at 1.0, the value of a critic that
# cannot tell real from fake, so its gradient was small and without direction, and the
# adaptive weight $\lambda = \|\nabla \mathcal{L}_{rec}\| / \|\nabla \mathcal{L}_G\|$,
# which scales a small gradient up to the size of the reconstruction gradient, grew to
# 3.6 by step 800. The reconstruction error rose from 0.13 at step 600 to 0.18, and
# PSNR, 21.2 dB at step 800, was 18.1 ten steps later. With 0.3 the error stalled
# (21.6 dB at step 850); with 0.1 the critic learns (hinge loss 0.5 at step 800),
# $\lambda$ stays near 0.01, the error keeps falling, and PSNR is 22.9 dB at step 850.
# The paper's critic meets an autoencoder trained for 250k steps; ours meets one
# trained for 600, whose remaining errors are not yet the kind a critic should judge.
#
# **The discriminator** is smaller than the paper's: at $32 \times 32$ the paper's
# three-layer PatchGAN ends in a $2 \times 2$ grid of logits and costs more than the
# autoencoder. Two layers of width 32 give a $6 \times 6$ grid, each logit seeing a
# $34 \times 34$ patch.
class VQGANExperiment(Budgeted):
    r"""Stage 1. `preset` and `overrides` choose the autoencoder ([[model.py#build_vqgan]]);
    the rest configures [[losses.py#VQGANLoss]]."""

    name = "vqgan"
    num_samples = 32  # 16 images and their reconstructions

    def __init__(self, preset: str = "tiny", disc_start: int = DEFAULTS["model"]["disc_start"],
                 disc_weight: float | None = None,
                 disc_ndf: int = 32, disc_layers: int = 2, codebook_weight: float = 1.0,
                 perceptual_weight: float | None = None, l2_weight: float | None = None,
                 lpips_weights: tuple[str, str] | None = None, **overrides):
        if preset == "tiny":
            overrides = {"restart_every": DEFAULTS["model"]["restart_every"], **overrides}
        if disc_weight is None:  # the paper's 0.8, or the tiny default (see above)
            disc_weight = DEFAULTS["model"]["disc_weight"] if preset == "tiny" else 0.8
        self.preset, self.overrides = preset, overrides
        self.disc_start, self.disc_weight = disc_start, disc_weight
        self.disc_ndf, self.disc_layers = disc_ndf, disc_layers
        self.codebook_weight = codebook_weight
        self.lpips_weights = lpips_weights
        # LPIPS counts only when there are weights that make it mean something.
        if perceptual_weight is None:
            perceptual_weight = 1.0 if lpips_weights else 0.0
        self.perceptual_weight = perceptual_weight
        # Without LPIPS, the squared error joins the absolute error (see above).
        if l2_weight is None:
            l2_weight = 0.0 if perceptual_weight > 0 else 1.0
        self.l2_weight = l2_weight

    # The autoencoder is sized to the data: input channels (3 for shapes, 1 for digits),
    # resolution, and attention at the lowest resolution, whatever that is.
    def build_model(self, channels: int, size: int) -> VQGAN:
        f = 2 ** (len(self.overrides.get("ch_mult", VQGANConfig.ch_mult)) - 1)
        if self.preset == "paper":
            f = 16
        settings = {"resolution": size, "attn_resolutions": (size // f,), **self.overrides}
        return build_vqgan(self.preset, in_channels=channels, **settings)

    # ### The two optimizers
    #
    # `"ae"` updates everything in the autoencoder (encoder, decoder, the two
    # $1 \times 1$ convolutions and the codebook); `"disc"` updates the discriminator.
    # Both are Adam with $\beta_1 = 0.5$, $\beta_2 = 0.9$: the usual GAN choice, a short
    # memory for the first moment so that each player reacts quickly to the other.
    # The discriminator is registered as a module of its own, so that it is
    # checkpointed (with its BatchNorm statistics) and, on several GPUs, wrapped for
    # DDP; the loss object then calls that wrapper.
    def configure(self, device: torch.device) -> None:
        ds = self.dataset
        model = self.build_model(ds.channels, ds.size).to(device)
        lpips = None
        if self.perceptual_weight > 0:
            lpips = LPIPS()
            if self.lpips_weights:
                lpips.load_pretrained(*self.lpips_weights)
        self.loss = VQGANLoss(disc_start=self.disc_start, codebook_weight=self.codebook_weight,
                              perceptual_weight=self.perceptual_weight,
                              disc_weight=self.disc_weight, disc_in_channels=ds.channels,
                              disc_ndf=self.disc_ndf, disc_layers=self.disc_layers,
                              lpips=lpips, l2_weight=self.l2_weight).to(device)
        self.model = model
        self.modules = {"vqgan": model, "disc": self.loss.discriminator}
        betas = (0.5, 0.9)
        self.optimizers = {
            "ae": torch.optim.Adam(model.parameters(), lr=self.cfg.lr, betas=betas),
            "disc": torch.optim.Adam(self.loss.discriminator.parameters(), lr=self.cfg.lr,
                                     betas=betas),
        }

    # ### One training step: autoencoder, then discriminator
    #
    # Both steps use the same batch and the same reconstruction $\hat x$.
    #
    # 1. **Autoencoder.** $\mathcal{L}_{AE} = \mathcal{L}_{rec} + \mathcal{L}_{VQ} + \lambda f \mathcal{L}_G$
    #    ([[losses.py#VQGANLoss]]), with $\lambda$ measured at
    #    the decoder's last weight ([[model.py#VQGAN.last_layer]]). Its backward pass
    #    runs through the discriminator too (that is how $\mathcal{L}_G$ reaches the
    #    decoder) and leaves gradients on the discriminator's weights. They must not be
    #    used: `loop.backward_step` clears the gradients of the optimizer it steps just
    #    *before* its backward pass, so the discriminator's step below starts clean.
    # 2. **Discriminator**, from `disc_start` on: the hinge loss on $x$ and a detached
    #    $\hat x$. Before `disc_start` its loss is $0 \cdot \mathcal{L}_D$ and we skip
    #    the step. (The official code steps Adam on those zero gradients, which moves
    #    nothing but advances Adam's step counter.)
    #
    # The official code, through PyTorch Lightning, runs the autoencoder forward pass a
    # second time for the discriminator step, after the autoencoder's update; we reuse
    # $\hat x$ from before the update, which saves a third of the work and differs by
    # one step of the autoencoder.
    def training_step(self, batch: dict, step: int, loop) -> dict:
        self.stop_if_out_of_time(step, loop)
        self.loss.discriminator = self.modules["disc"]  # the DDP wrapper, if any
        x = batch["image"]
        x_hat, codebook_loss, indices = self.modules["vqgan"](x)
        loss, logs = self.loss.autoencoder_loss(x, x_hat, codebook_loss, step,
                                                last_layer=self.model.last_layer)
        loop.backward_step(loss, "ae")
        if self.loss.factor(step) > 0:
            d_loss, d_logs = self.loss.discriminator_loss(x, x_hat, step)
            loop.backward_step(d_loss, "disc")
            logs.update(d_logs)
        K = self.model.config.num_codes
        logs["perplexity"] = codebook_perplexity(indices, K)
        logs["usage"] = codebook_usage(indices, K)
        return logs

    # `samples.png` of stage 1 shows reconstructions: rows of 8 real images, each
    # followed by a row of their reconstructions. The images are the first ones of the
    # dataset, the same in every picture of a run.
    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        x = torch.stack([self.dataset[i]["image"] for i in range(n // 2)])
        device = next(self.modules["vqgan"].parameters()).device
        x_hat = self.modules["vqgan"](x.to(device))[0].cpu()
        return interleave_rows(x, x_hat, 8)

    # Enough to rebuild the networks from the checkpoint alone (see [[#load_vqgan]]).
    def extra_state(self) -> dict:
        return {"vqgan_config": asdict(self.model.config),
                "disc": {"ndf": self.disc_ndf, "layers": self.disc_layers}}


# Real rows and reconstruction rows, alternating, `cols` images per row.
def interleave_rows(x: torch.Tensor, x_hat: torch.Tensor, cols: int) -> torch.Tensor:
    rows = []
    for i in range(0, len(x), cols):
        rows += [x[i:i + cols], x_hat[i:i + cols].clamp(-1, 1)]
    return torch.cat(rows)


# ## Stage 2: code grids
#
# The transformer never sees pixels. Every training image is encoded once by the frozen
# VQGAN into its grid of indices $s \in \{0, \dots, K-1\}^{h \times w}$, and the
# transformer trains on these grids as a plain dataset of integers: encoding on the
# fly would repeat the same encoder pass every epoch for nothing. Items keep the
# dataset's format, a dict, with `codes` $(h, w)$ in place of `image`. Unlabelled data
# (an image folder without subfolders, label $-1$) gets class 0 throughout.
class CodeGrids(Dataset):
    def __init__(self, codes: torch.Tensor, labels: torch.Tensor, num_classes: int,
                 num_codes: int):
        self.codes, self.labels = codes, labels.clamp(min=0)
        self.num_classes, self.num_codes = max(1, num_classes), num_codes

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> dict:
        return {"codes": self.codes[i], "label": self.labels[i]}


@torch.no_grad()
def encode_dataset(vqgan: VQGAN, dataset, batch_size: int = 256) -> CodeGrids:
    r"""The code grid $(h, w)$ of every image of `dataset` under the frozen `vqgan`."""
    device = next(vqgan.parameters()).device
    vqgan.eval()
    codes, labels = [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = torch.stack([it["image"] for it in items]).to(device)
        codes.append(vqgan.encode_indices(x).cpu())
        labels.append(torch.stack([it["label"] for it in items]))
    return CodeGrids(torch.cat(codes), torch.cat(labels),
                     getattr(dataset, "num_classes", 0), vqgan.config.num_codes)


# ## Stage 2: the transformer
#
# The GPT is sized to the code grid: `block_size` $= h w$ positions, `num_codes` $= K$,
# one class token per class. The tiny GPT is smaller than [[transformer.py]]'s `tiny`
# preset, 2 layers of width 128 instead of 4 (0.44M parameters): half the time per
# step, so twice the steps in our few minutes. In our runs the prior was still
# improving when it stopped (0.545 attribute accuracy after 600 steps, 0.631 after
# 1200), so steps were worth more than depth; whether 4 layers catch up in the same
# time is a question we leave open.
#
# The optimizer is minGPT's, which the official code uses too: AdamW with
# $\beta = (0.9, 0.95)$ and weight decay 0.01 on the weight matrices of the linear
# layers only, not on biases, LayerNorm scales, embeddings or positions.
class TransformerExperiment(Budgeted):
    r"""Stage 2: a class-conditional GPT over the code grids of a frozen `vqgan`."""

    name = "vqgan"  # runs go to runs/vqgan/<stage-1 run>/transformer/
    num_samples = 63  # three per class of shapes

    def __init__(self, vqgan: VQGAN, preset: str = "tiny",
                 top_k: int | None = DEFAULTS["sampling"]["top_k"],
                 top_p: float | None = DEFAULTS["sampling"]["top_p"], temperature: float = 1.0,
                 weight_decay: float = 0.01, **overrides):
        self.vqgan = vqgan.eval().requires_grad_(False)
        tiny = DEFAULTS["gpt"] if preset == "tiny" else {}
        self.preset, self.overrides = preset, {**tiny, **overrides}
        self.top_k, self.top_p, self.temperature = top_k, top_p, temperature
        self.weight_decay = weight_decay

    def configure(self, device: torch.device) -> None:
        ds = self.dataset  # a CodeGrids
        h, w = ds.codes.shape[1:]
        self.vqgan.to(device)
        self.gpt = build_gpt(self.preset, **{**self.overrides, "num_codes": ds.num_codes,
                                             "num_classes": ds.num_classes,
                                             "block_size": h * w}).to(device)
        self.grid = (h, w)
        self.modules = {"gpt": self.gpt}
        self.optimizers = {"gpt": torch.optim.AdamW(gpt_param_groups(self.gpt, self.weight_decay),
                                                    lr=self.cfg.lr, betas=(0.9, 0.95))}

    # One step: the mean negative log-likelihood of the codes, as in
    # [[transformer.py#GPT.loss]] but through `self.modules["gpt"]`'s forward: with
    # several processes that module is the DDP wrapper, which synchronises gradients only
    # for calls of its forward (and has no `.loss`).
    def training_step(self, batch: dict, step: int, loop) -> dict:
        self.stop_if_out_of_time(step, loop)
        codes = batch["codes"].flatten(1)
        logits = self.modules["gpt"](codes, batch["label"])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1))
        loop.backward_step(loss, "gpt")
        return {"loss": loss, "bits_per_code": loss.detach() / math.log(2)}

    # ### Sampling
    #
    # Image $i$ gets class $i \bmod$ `num_classes`; the GPT draws its code grid with
    # top-$k$ / top-$p$ filtering ([[transformer.py#GPT.generate]]) and the frozen
    # decoder turns the grid into pixels.
    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        gpt = self.modules["gpt"]
        device = gpt.pos_emb.device
        if labels is None:
            labels = torch.arange(n) % gpt.config.num_classes
        codes = gpt.generate(n, labels.to(device), top_k=self.top_k, top_p=self.top_p,
                             temperature=self.temperature)
        return self.vqgan.decode_indices(codes.view(n, *self.grid)).clamp(-1, 1).cpu()

    def extra_state(self) -> dict:
        return {"gpt_config": asdict(self.gpt.config)}


def gpt_param_groups(gpt: GPT, weight_decay: float) -> list[dict]:
    decay = [p for n, p in gpt.named_parameters() if p.dim() == 2 and "emb" not in n]
    ids = {id(p) for p in decay}
    rest = [p for p in gpt.parameters() if id(p) not in ids]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0}]


# ## Loading trained networks
#
# A checkpoint of either stage holds the configuration of its network (from
# `extra_state`), so a run folder is all that is needed to rebuild it. EMA weights are
# preferred when the run kept them.
def load_vqgan(run_dir: str | Path, device: str | torch.device = "cpu") -> VQGAN:
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    config = ckpt["extra"]["vqgan_config"]
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    model = VQGAN(VQGANConfig(**config))
    model.load_state_dict(ckpt.get("ema", {}).get("vqgan", ckpt["modules"]["vqgan"]))
    return model.to(device).eval()


def load_gpt(run_dir: str | Path, device: str | torch.device = "cpu") -> GPT:
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    model = GPT(GPTConfig(**ckpt["extra"]["gpt_config"]))
    model.load_state_dict(ckpt.get("ema", {}).get("gpt", ckpt["modules"]["gpt"]))
    return model.to(device).eval()


# ## Judging the autoencoder
#
# On `n` images (taken from a fresh draw of the data when the caller passes one):
#
# - **PSNR** of the reconstructions ([[metrics.py#peak-signal-to-noise-ratio]]);
# - **codebook usage** and **perplexity** over all $n h w$ indices: how many of the
#   $K$ codes the encoder actually uses;
# - on `shapes`, the **attribute accuracy of the reconstructions**: the checker
#   ([[data.py#read_shapes]]) reads the reconstructed pixels and we compare with
#   what was drawn. This is the ceiling for stage 2: a transformer cannot draw
#   anything its decoder cannot;
# - with a feature net, the **toy reconstruction FID** (reconstructions against the
#   originals), the measure of the paper's first headline, rFID 7.94 on ImageNet.
@torch.no_grad()
def evaluate_vqgan(model: VQGAN, dataset, n: int = 512, batch_size: int = 128,
                   net=None) -> dict:
    from annogen.metrics import attribute_accuracy
    model.eval()
    device = next(model.parameters()).device
    n = min(n, len(dataset))
    xs, x_hats, indices = [], [], []
    for start in range(0, n, batch_size):
        x = torch.stack([dataset[i]["image"] for i in range(start, min(start + batch_size, n))])
        x_hat, _, idx = model(x.to(device))
        xs.append(x)
        x_hats.append(x_hat.clamp(-1, 1).cpu())
        indices.append(idx.cpu())
    x, x_hat, idx = torch.cat(xs), torch.cat(x_hats), torch.cat(indices)
    K = model.config.num_codes
    out = {"psnr": psnr(x, x_hat).mean().item(), "codebook_usage": codebook_usage(idx, K),
           "codebook_perplexity": codebook_perplexity(idx, K)}
    if isinstance(dataset, Shapes):
        acc = attribute_accuracy(x_hat, [dataset.attributes(i) for i in range(n)])
        out.update({f"recon_{k}": v for k, v in acc.items()})
    if net is not None:
        out["recon_toy_fid"] = toy_fid(x, x_hat, net)
    return out


# ## Judging the samples
#
# A class label of `shapes` names the shape and the colour of the first shape in a
# picture, and nothing else; [[metrics.py#score_labels]] reads each sample back with the
# data's checker and scores exactly those two (chance: $1/3$ for the shape, $1/7$ for the
# colour), their mean, the **attribute accuracy**, and both at once, the **class
# accuracy**.
#
# Samples cycle through the classes, so every class is asked for equally often.
# With a feature net, we add the **toy FID** of the samples against as many real images
# ([[metrics.py#toy-fid]]); compare it with the FID between two real draws of the same
# size, which we report as `toy_fid_floor`.
@torch.no_grad()
def evaluate_transformer(exp: TransformerExperiment, n: int = 1050, real=None, net=None,
                         batch_size: int = 350, seed: int = 0) -> dict:
    r"""Score `n` class-conditional samples: attribute accuracy (on shapes), toy FID
    (given real images and a feature net) and images per second. Returns the scores and
    the images."""
    gpt = exp.modules["gpt"].eval()
    num_classes = gpt.config.num_classes
    labels = torch.arange(n) % num_classes
    seed_everything(seed)
    start = time.perf_counter()
    images = torch.cat([exp.sample(len(lab), lab) for lab in labels.split(batch_size)])
    seconds = time.perf_counter() - start
    out = {"samples": n, "sample_images_per_s": n / seconds}
    if num_classes == Shapes.num_classes and images.shape[1] == 3:
        out.update(score_labels(images, labels))
    if real is not None and net is not None:
        out["toy_fid"] = toy_fid(real[:n], images, net)
    return out, images


# ## The benchmark
#
# `benchmark(budget_seconds, out)` is what the course's benchmark script runs: the tiny
# default on `shapes` at $32^2$, stage 1 for 40% of the budget and stage 2 for the
# rest (encoding the code grids counts towards stage 2), each as many steps as fit (see
# [[#a-wall-clock-budget]]); then the evaluation, which is not counted in the budget.
# The critic starts at step 600, as in the defaults, so a budget too small for 600
# stage-1 steps trains without it. Torch runs on `threads` CPU threads (1 by default:
# on a 2-core machine shared with other work, two threads that fight other processes
# for the cores made a step up to 30 times slower in our runs); the previous setting is
# restored afterwards. It returns the numbers above, the training
# throughput of both stages in images per second and the sampling throughput, and
# writes them to `out/benchmark.json`. The feature net for toy FID is trained (about a
# minute) on first use and cached.
def benchmark(budget_seconds: float, out: Path, seed: int = 0, stage1_share: float = 0.4,
              data_size: int = 10_000, eval_samples: int = 1050,
              threads: int | None = 1) -> dict:
    with torch_threads(threads):
        return _benchmark(budget_seconds, Path(out), seed, stage1_share, data_size, eval_samples)


def _benchmark(budget_seconds: float, out: Path, seed: int, stage1_share: float,
               data_size: int, eval_samples: int) -> dict:
    from annogen.metrics import load_feature_net
    torch.manual_seed(seed)
    dataset = make_dataset("shapes", 32, n=data_size, seed=0)
    big = 10 ** 9  # steps: the deadline stops the run
    t0 = time.monotonic()

    cfg1 = TrainConfig(**{**DEFAULTS["vqgan"], "steps": big, "seed": seed, "out": str(out),
                          "run": "benchmark", "ckpt_every": big, "sample_every": big,
                          "device": "cpu"})
    exp1 = VQGANExperiment()
    exp1.deadline = t0 + stage1_share * budget_seconds
    start = time.perf_counter()
    run_dir = train(exp1, dataset, cfg1)
    stage1_seconds = time.perf_counter() - start

    start = time.perf_counter()
    grids = encode_dataset(exp1.model, dataset)
    encode_seconds = time.perf_counter() - start
    cfg2 = TrainConfig(**{**DEFAULTS["transformer"], "steps": big, "seed": seed,
                          "out": str(out), "run": "benchmark/transformer", "ckpt_every": big,
                          "sample_every": big, "device": "cpu"})
    exp2 = TransformerExperiment(exp1.model)
    exp2.deadline = t0 + budget_seconds
    start = time.perf_counter()
    train(exp2, grids, cfg2)
    stage2_seconds = time.perf_counter() - start

    net = load_feature_net("shapes", 32)
    fresh = make_dataset("shapes", 32, n=max(eval_samples, 512), seed=1)
    real = torch.stack([fresh[i]["image"] for i in range(len(fresh))])
    other = make_dataset("shapes", 32, n=len(real), seed=2)
    real2 = torch.stack([other[i]["image"] for i in range(len(other))])
    result = {"budget_seconds": budget_seconds, "seed": seed, "threads": torch.get_num_threads(),
              "vqgan_steps": cfg1.steps, "vqgan_seconds": stage1_seconds,
              "vqgan_images_per_s": cfg1.steps * cfg1.batch_size / stage1_seconds,
              "encode_seconds": encode_seconds,
              "gpt_steps": cfg2.steps, "gpt_seconds": stage2_seconds,
              "gpt_images_per_s": cfg2.steps * cfg2.batch_size / stage2_seconds}
    result.update({f"vqgan_{k}": v for k, v in
                   evaluate_vqgan(exp1.model, fresh, n=len(fresh), net=net).items()})
    scores, images = evaluate_transformer(exp2, n=eval_samples, real=real, net=net)
    result.update(scores)
    result["toy_fid_floor"] = toy_fid(real[:eval_samples], real2[:eval_samples], net)
    result["images_per_s"] = result["vqgan_images_per_s"]
    save_image_grid(images[:63], run_dir / "transformer" / "eval-samples.png", nrow=9)
    (out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# ## Run this file
#
# This file holds the recipes; the command line runs them. `python -m
# annogen.vqgan.experiment` says what to run.
if __name__ == "__main__":
    print("""The VQGAN training recipes. To run them:

    python -m annogen.vqgan --threads 1          # both stages, tiny, on shapes (about 6 min)
    python -m annogen.vqgan --stage vqgan        # the autoencoder and its critic only
    python -m annogen.vqgan --stage transformer --resume
    python -m annogen.vqgan --preset paper       # the ImageNet f16 sizes, counted, not trained
    python benchmarks/vq.py --only vqgan         # both stages for a fixed wall-clock budget""")
