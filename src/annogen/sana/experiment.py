r"""
---
title: Sana, training on captions
summary: The three trainings of a text-to-image model on the course's loop - the DC-AE, the text encoder, then the linear DiT on frozen latents and frozen text states with caption dropout - sampled with Flow-DPM-Solver and guidance against the empty caption, and scored by a toy GenEval that reads every generated shape back.
---

# Sana: training on captions

A text-to-image model is three networks trained one after the other, each frozen once
done: the autoencoder ([[dcae.py]]), the text encoder ([[text.py]]), and the diffusion
transformer ([[model.py]]) that learns on the autoencoder's latents, conditioned on the
text encoder's states. Sana trains only the last; its DC-AE and Gemma come pre-trained.
We train all three, in that order, on the course's $32 \times 32$ shapes and their
captions ([[data.py#Shapes]]).

On this page: [[#AEExperiment]] (stage 1), [[#latents-and-text-states-once]],
[[#SanaExperiment]] (stage 3; stage 2 is in [[text.py#training-it]]), [[#sampling]]
and [[#a-toy-geneval]].
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from annogen.flow.flow import cfg_velocity, flow_matching_loss, sample as flow_sample
from annogen.metrics import attribute_accuracy, psnr, score_labels
from annogen.train import Budgeted, load_checkpoint

from annogen.sana.dcae import DCAE, DCAEConfig
from annogen.sana.model import Sana, SanaConfig
from annogen.sana.text import TextEncoder


# ## The defaults
#
# | setting | paper (Sana-0.6B, $1024^2$) | tiny (shapes, $32^2$) |
# |---|---|---|
# | autoencoder | DC-AE f32c32, 312M | DC-AE f8c16, 1.1M, trained here |
# | latent | $32 \times 32 \times 32$, $\times 0.41407$ | $4 \times 4 \times 16$, $\times 1/\operatorname{std}$ |
# | text | Gemma-2-2B-IT, 2304-d, 300 tokens | our 2-layer LM, 128-d, 24 tokens |
# | model | 28 blocks, width 1152, 590M | 4 blocks, width 128, 1.2M |
# | objective | flow matching, logit-normal, shift 3 | flow matching, logit-normal, shift 1 |
# | optimizer | CAME, lr $10^{-4}$, wd 0, clip 0.1 | AdamW, lr $10^{-3}$, wd 0, clip 1 |
# | caption dropout | 0.1 (to a learned null) | 0.1 (to the empty caption) |
# | sampling | Flow-DPM-Solver 20 steps, CFG 4.5 | Flow-DPM-Solver 20 steps, CFG 3 |
#
# CAME is a memory-saving optimiser for a 600M model; at our size AdamW is the plain
# choice. The learning rate, EMA and batch follow the DiT chapter's tiny run; the
# guidance scale is Sana's order of magnitude. None of them was tuned here (the Lab
# notes of the chapter's README say what we tried).
DEFAULTS = {
    "ae": {"steps": 800, "batch_size": 32, "lr": 1e-3, "log_every": 10, "ckpt_every": 200,
           "sample_every": 500},
    "text": {"steps": 300, "batch_size": 64, "lr": 1e-3, "log_every": 10, "ckpt_every": 300,
             "sample_every": 300},
    "sana": {"steps": 3000, "batch_size": 32, "lr": 1e-3, "ema_decay": 0.995, "log_every": 10,
             "ckpt_every": 500, "sample_every": 1000},
    "sampling": {"sampler": "dpm", "steps": 20, "cfg_scale": 3.0, "shift": 1.0},
}


# ## Stage 1: the autoencoder
#
# Reconstruction only: the mean squared error plus the mean absolute error (the paper's
# first phase uses L1 and LPIPS; we have no LPIPS). `shortcut=False` trains the plain
# autoencoder of the same shape, the baseline of the residual-autoencoding comparison.
class AEExperiment(Budgeted):
    name = "sana"

    def __init__(self, preset: str = "tiny", **overrides):
        self.preset, self.overrides = preset, overrides

    def configure(self, device: torch.device) -> None:
        self.model = DCAE.from_preset(self.preset, in_channels=self.dataset.channels,
                                      **self.overrides).to(device)
        self.modules = {"ae": self.model}
        self.optimizers = {"ae": torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr,
                                                   weight_decay=0.0)}

    def training_step(self, batch: dict, step: int, loop) -> dict:
        self.stop_if_out_of_time(step, loop)
        x = batch["image"]
        x_hat = self.modules["ae"](x)
        loss = (x_hat - x).pow(2).mean() + (x_hat - x).abs().mean()
        loop.backward_step(loss, "ae")
        return {"loss": loss, "psnr": psnr(x_hat.detach().clamp(-1, 1), x).mean()}

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        x = torch.stack([self.dataset[i]["image"] for i in range(min(n, 32) // 2)])
        x_hat = self.modules["ae"](x.to(self.model.scale.device)).clamp(-1, 1).cpu()
        return torch.cat([x, x_hat])

    def extra_state(self) -> dict:
        return {"ae_config": asdict(self.model.config)}


# Finished runs, rebuilt from their checkpoints alone (EMA weights where there are some).
def load_module(run_dir: str | Path, name: str):
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    extra = ckpt["extra"]
    if name == "ae":
        module = DCAE(DCAEConfig(**extra["ae_config"]))
    elif name == "text":
        module = TextEncoder(**extra["text_config"])
    else:
        module = Sana(SanaConfig(**extra["sana_config"]))
    module.load_state_dict(ckpt.get("ema", {}).get(name) or ckpt["modules"][name])
    return module.eval()


# A whole run: the three networks, the autoencoder's scaling factor restored from the
# DiT's checkpoint (it is measured when the DiT's training starts).
def load_run(root: str | Path) -> tuple[DCAE, TextEncoder, Sana]:
    root = Path(root)
    ae, text, model = (load_module(root / "ae", "ae"), load_module(root / "text", "text"),
                       load_module(root / "dit", "sana"))
    scale = load_checkpoint(root / "dit" / "checkpoint.pt")["extra"].get("latent_scale")
    if scale is not None:
        ae.scale.fill_(scale)
    return ae, text, model


# ## Latents and text states, once
#
# Both encoders are frozen, so their outputs never change: we compute them once for the
# whole training set and train the DiT on the stored tensors (Sana's code also reads
# pre-extracted latents and text features). The latent is scaled by the autoencoder's
# scaling factor $\lambda = 1/\operatorname{std}(z)$, computed here from the first 512
# training images, so the diffusion model sees unit variance.
class LatentCaptions(Dataset):
    def __init__(self, dataset, ae: DCAE, text: TextEncoder, batch_size: int = 256):
        items = [dataset[i] for i in range(len(dataset))]  # each item drawn once
        with torch.no_grad():
            images = torch.stack([it["image"] for it in items])
            ae.compute_scaling_factor(images[:512])
            self.latents = torch.cat([ae.encode(b) for b in images.split(batch_size)]) \
                * ae.scaling_factor
            self.captions = [it["caption"] for it in items]
            self.labels = torch.stack([it["label"] for it in items])
            states = [text.encode(self.captions[j:j + batch_size])
                      for j in range(0, len(dataset), batch_size)]
        self.text = torch.cat([s for s, _ in states])
        self.mask = torch.cat([m for _, m in states])
        self.channels, self.size = self.latents.shape[1], self.latents.shape[-1]

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int) -> dict:
        return {"latent": self.latents[i], "text": self.text[i], "mask": self.mask[i],
                "label": self.labels[i]}


# Text states and mask travel through [[flow/flow.py#classifier-free-guidance]] as
# one tensor, the mask appended as a last feature, so that its guided velocity (which
# takes one condition tensor and one null) works unchanged.
def pack(text: Tensor, mask: Tensor) -> Tensor:
    return torch.cat([text, mask[..., None].to(text.dtype)], dim=-1)


def unpack(y: Tensor) -> tuple[Tensor, Tensor]:
    return y[..., :-1], y[..., -1] > 0.5


# ## Stage 3: the linear DiT
#
# One step: the stored latents $x_0$ and text states; 10% of the captions replaced by the
# empty caption (for guidance); the flow-matching loss of [[flow/flow.py#the-training-loss]]
# with logit-normal $\sigma$ and the model fed $t = 1000\sigma$.
class SanaExperiment(Budgeted):
    name = "sana"
    num_samples = 32

    def __init__(self, ae: DCAE, text: TextEncoder, preset: str = "tiny",
                 shift: float = DEFAULTS["sampling"]["shift"], caption_dropout: float = 0.1,
                 sampler: str = DEFAULTS["sampling"]["sampler"],
                 sampling_steps: int = DEFAULTS["sampling"]["steps"],
                 cfg_scale: float = DEFAULTS["sampling"]["cfg_scale"], **overrides):
        self.ae, self.text = ae.eval(), text.eval()
        self.preset, self.overrides, self.shift = preset, overrides, shift
        self.caption_dropout = caption_dropout
        self.sampler, self.sampling_steps, self.cfg_scale = sampler, sampling_steps, cfg_scale
        null_text, null_mask = text.encode([""])
        self.null = pack(null_text, null_mask)[0]               # (L, C + 1)

    def configure(self, device: torch.device) -> None:
        d = self.dataset
        settings = {"in_channels": d.channels, "input_size": d.size,
                    "caption_channels": self.text.dim, "model_max_length": self.text.max_length,
                    **self.overrides}
        self.model = Sana.from_preset(self.preset, **settings).to(device)
        self.modules = {"sana": self.model}
        self.optimizers = {"sana": torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr,
                                                     weight_decay=0.0)}

    def training_step(self, batch: dict, step: int, loop) -> dict:
        self.stop_if_out_of_time(step, loop)
        y = pack(batch["text"], batch["mask"])
        drop = torch.rand(len(y), device=y.device) < self.caption_dropout
        y = torch.where(drop[:, None, None], self.null.to(y.device)[None], y)
        model = self.modules["sana"]
        loss = flow_matching_loss(lambda x, t, y: model(x, t, *unpack(y)), batch["latent"], y,
                                  shift=self.shift)
        loop.backward_step(loss, "sana")
        return {"loss": loss}

    # ## Sampling
    #
    # Noise in latent space, the guided velocity ($w$ = `cfg_scale`, the empty caption as
    # the null condition), Flow-DPM-Solver or Euler, then the decoder:
    # $\hat x = D(z_0 / \lambda)$. `size` samples at another latent size: with no
    # positional embedding the model runs at any.
    @torch.no_grad()
    def generate(self, captions: list[str], sampler: str | None = None, steps: int | None = None,
                 cfg_scale: float | None = None, size: int | None = None,
                 model: Sana | None = None) -> Tensor:
        model = model or self.modules["sana"]
        c = model.config
        device = model.t_block[1].weight.device
        was_training = model.training
        model.eval()
        try:
            text, mask = self.text.to(device).encode(captions)
            y = pack(text, mask)
            side = size or c.input_size
            x_T = torch.randn(len(captions), c.in_channels, side, side, device=device)
            velocity = cfg_velocity(lambda x, t, y: model(x, t, *unpack(y)), y,
                                    self.null.to(device),
                                    self.cfg_scale if cfg_scale is None else cfg_scale)
            z = flow_sample(velocity, x_T, steps or self.sampling_steps,
                            sampler or self.sampler, self.shift)
            ae = self.ae.to(device)
            x = ae.decode(z / ae.scaling_factor)
        finally:
            model.train(was_training)
        return x.clamp(-1, 1).cpu()

    def sample(self, n: int) -> Tensor:
        from annogen.data import Shapes
        held_out = Shapes(n=n, size=32, seed=1)
        return self.generate([held_out[i]["caption"] for i in range(n)])

    def extra_state(self) -> dict:
        return {"sana_config": asdict(self.model.config), "shift": self.shift,
                "latent_scale": self.ae.scaling_factor}


# ## A toy GenEval
#
# GenEval ([Ghosh et al. (2023)](https://arxiv.org/abs/2310.11513)) asks an object
# detector whether a generated image has the objects, colours, counts and positions its
# prompt asked for. Ours asks the analytic checker ([[data.py#read_shapes]]) through
# [[metrics.py#attribute_accuracy]]: for held-out captions (seed 1, never trained on),
# the fraction of images in which **every** shape is right in shape, colour, size and
# position (`all`), the per-attribute accuracies over all asked-for shapes, and, to
# compare with the class-conditional DiT, the first shape's attribute accuracy of
# [[metrics.py#score_labels]]. The same scores on the real images and on the
# autoencoder's reconstructions are the ceilings: the model cannot beat its decoder.
@torch.no_grad()
def geneval(exp: SanaExperiment, n: int = 256, sampler: str | None = None,
            steps: int | None = None, cfg_scale: float | None = None, seed: int = 0,
            batch_size: int = 128, model: Sana | None = None) -> tuple[dict, Tensor]:
    from annogen.data import Shapes
    held_out = Shapes(n=n, size=32, seed=1)
    captions = [held_out[i]["caption"] for i in range(n)]
    attributes = [held_out.attributes(i) for i in range(n)]
    labels = torch.stack([held_out[i]["label"] for i in range(n)])
    torch.manual_seed(seed)
    start = time.perf_counter()
    images = torch.cat([exp.generate(captions[j:j + batch_size], sampler, steps, cfg_scale,
                                     model=model) for j in range(0, n, batch_size)])
    seconds = time.perf_counter() - start
    scores = attribute_accuracy(images, attributes)
    first = score_labels(images, labels)
    row = {"sampler": sampler or exp.sampler, "steps": steps or exp.sampling_steps,
           "cfg_scale": exp.cfg_scale if cfg_scale is None else cfg_scale, "n": n,
           **{f"geneval_{k}": v for k, v in scores.items()},
           "first_shape_attribute_accuracy": first["attribute_accuracy"],
           "sec_per_image": seconds / n}
    return row, images


@torch.no_grad()
def ceilings(ae: DCAE, n: int = 256) -> dict:
    r"""The toy GenEval of real held-out images and of their reconstructions."""
    from annogen.data import Shapes
    held_out = Shapes(n=n, size=32, seed=1)
    real = torch.stack([held_out[i]["image"] for i in range(n)])
    attributes = [held_out.attributes(i) for i in range(n)]
    labels = torch.stack([held_out[i]["label"] for i in range(n)])
    recon = ae.eval()(real).clamp(-1, 1)
    out = {}
    for name, x in (("real", real), ("reconstruction", recon)):
        scores = attribute_accuracy(x, attributes)
        out[name] = {**{f"geneval_{k}": v for k, v in scores.items()},
                     "first_shape_attribute_accuracy": score_labels(x, labels)["attribute_accuracy"]}
    out["reconstruction"]["psnr"] = float(psnr(recon, real).mean())
    return out


# ## Twice the trained resolution
#
# With no positional embedding nothing stops the model from denoising a larger latent:
# an $8 \times 8$ latent decodes to a $64 \times 64$ image. Does it hold more detail
# than the $32^2$ sample enlarged? We measure detail as the **high-frequency energy**:
# the fraction of an image's spectral power (after removing its mean) at spatial
# frequencies above the Nyquist frequency of the $32^2$ grid, i.e. in the band a $32^2$
# image cannot hold at all. A bilinearly enlarged $32^2$ sample has almost none there; a
# real $64^2$ shapes image, with its sharp edges, has some.
def high_frequency_energy(images: Tensor, cutoff: float = 0.25) -> float:
    r"""Mean fraction of power at $|f_x| > c$ or $|f_y| > c$, with $c$ = `cutoff` cycles per pixel."""
    x = images.float() - images.float().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().pow(2)
    fy = torch.fft.fftfreq(x.shape[-2]).abs()[:, None]
    fx = torch.fft.fftfreq(x.shape[-1]).abs()[None, :]
    high = ((fy > cutoff) | (fx > cutoff)).to(power.dtype)
    return float(((power * high).sum(dim=(-2, -1)) / power.sum(dim=(-2, -1)).clamp_min(1e-12)).mean())


@torch.no_grad()
def resolution_test(exp: SanaExperiment, model: Sana, n: int = 64, seed: int = 0) -> dict:
    from annogen.data import Shapes
    held_out = Shapes(n=n, size=64, seed=1)
    captions = [held_out[i]["caption"] for i in range(n)]
    attributes = [held_out.attributes(i) for i in range(n)]
    real = torch.stack([held_out[i]["image"] for i in range(n)])
    torch.manual_seed(seed)
    small = exp.generate(captions, model=model)
    torch.manual_seed(seed)
    big = exp.generate(captions, model=model, size=2 * model.config.input_size)
    enlarged = torch.nn.functional.interpolate(small, scale_factor=2, mode="bilinear",
                                               align_corners=False)
    return {"n": n,
            "hf_energy_2x_sample": high_frequency_energy(big),
            "hf_energy_enlarged_1x_sample": high_frequency_energy(enlarged),
            "hf_energy_real_64px": high_frequency_energy(real),
            "geneval_all_2x_sample": attribute_accuracy(big, attributes)["all"],
            "geneval_all_enlarged_1x_sample": attribute_accuracy(enlarged, attributes)["all"]}


if __name__ == "__main__":
    print("Sana's experiment runs from the command line:\n"
          "  python -m annogen.sana --threads 1            # DC-AE, text encoder, then Sana\n"
          "  python -m annogen.sana --stage sana --steps 0 --resume   # re-score a finished run\n"
          "  python -m annogen.sana --preset 0.6B           # the paper model's size\n"
          "  python benchmarks/sana.py                      # the chapter's measurements")
