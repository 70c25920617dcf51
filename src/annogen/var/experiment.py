r"""
---
title: VAR, training both stages
summary: The tokenizer trained with VQGAN's losses and training step, then the next-scale transformer over the frozen tokenizer's pyramids, on the course's loop; evaluation and the benchmark.
---

# VAR: training both stages

Like VQGAN ([[vqgan/experiment.py]]), VAR trains in two stages:

1. **The tokenizer** ([[vae.py]]): VQGAN's autoencoder with the multi-scale quantiser,
   trained with VQGAN's losses. Nothing in VQGAN's training step depends on how the
   quantiser works — it needs $(\hat x, \mathcal{L}_{VQ}, \text{indices})$ from the
   model — so [[#VAEExperiment]] *is* VQGAN's experiment with another model.
2. **The transformer** ([[model.py]]): the tokenizer is frozen, every training image
   becomes its token pyramid once, and VAR learns $p(r_1, \dots, r_M \mid y)$.
   [[#VARExperiment]].

Both run on the course's loop ([[train.py]]); the tiny defaults train on `shapes` in
about 25 minutes on one thread (stage 1 about 8, stage 2 about 15).

Run it: `python src/annogen/var/experiment.py` prints the commands that train and
evaluate both stages.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from annogen.data import Shapes, make_dataset
from annogen.metrics import codebook_perplexity, codebook_usage, psnr, toy_fid
from annogen.train import TrainConfig, load_checkpoint, save_image_grid, torch_threads, train
from annogen.metrics import score_labels
from annogen.train import Budgeted
from annogen.vqgan.experiment import VQGANExperiment

from annogen.var.model import VAR, VARConfig, build_var, reveal_half
from annogen.var.vae import VAE, VAEConfig, build_vae

# ## The tiny defaults
#
# Stage 1 copies VQGAN's tiny recipe ([[vqgan/experiment.py#stage-1-the-vqgan]]):
# 800 steps of batch 16, Adam at $10^{-3}$, L1 + L2 instead of LPIPS, the critic from
# step 600 at weight 0.1, dead-code restarts every 50 steps. Stage 2: 2000 steps of
# batch 32 and AdamW at $10^{-3}$ (the paper: $10^{-4} \times$ batch/256, for batch 768
# to 1024 over 200–350 epochs); half VQGAN's batch, to keep a CPU step short. Sampling:
# the paper's `cfg = 1.5` (guidance weight $w = 2.5$ at the last scale,
# [[model.py#sampling]]) and top-$p$ 0.96, and top-$k$ scaled from 900 of 4096 codes to
# 56 of 256.
DEFAULTS = {
    "vae": {"steps": 800, "batch_size": 16, "lr": 1e-3, "log_every": 10,
            "ckpt_every": 200, "sample_every": 200},
    "model": {"disc_start": 600, "disc_weight": 0.1, "restart_every": 50},
    "var": {"steps": 2000, "batch_size": 32, "lr": 1e-3, "log_every": 10,
            "ckpt_every": 400, "sample_every": 400, "grad_clip": 2.0},
    "sampling": {"cfg": 1.5, "top_k": 56, "top_p": 0.96},
}


# ## Stage 1: the tokenizer
#
# VQGAN's experiment with the model built by [[vae.py#build_vae]]. The module keeps
# VQGAN's name, `vqgan`, in the checkpoint; the run goes to `runs/var/<run>/`.
class VAEExperiment(VQGANExperiment):
    name = "var"

    def build_model(self, channels: int, size: int) -> VAE:
        f = 16 if self.preset == "paper" else \
            2 ** (len(self.overrides.get("ch_mult", VAEConfig.ch_mult)) - 1)
        settings = {"resolution": size, "attn_resolutions": (size // f,), **self.overrides}
        return build_vae(self.preset, in_channels=channels, **settings)

    def extra_state(self) -> dict:
        return {"vae_config": asdict(self.model.config)}


# ## Stage 2: token pyramids
#
# Every training image is encoded once; an item holds its flat pyramid `tokens`
# $(L,)$ (scale after scale) and its label. Unlabelled data gets class 0.
class Pyramids(Dataset):
    def __init__(self, tokens: torch.Tensor, labels: torch.Tensor, num_classes: int):
        self.tokens, self.labels = tokens, labels.clamp(min=0)
        self.num_classes = max(1, num_classes)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        return {"tokens": self.tokens[i], "label": self.labels[i]}


@torch.no_grad()
def encode_dataset(vae: VAE, dataset, batch_size: int = 256) -> Pyramids:
    vae.eval()
    device = next(vae.parameters()).device
    tokens, labels = [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = torch.stack([it["image"] for it in items]).to(device)
        tokens.append(vae.quantize.flatten_idxs(vae.img_to_idxs(x)).cpu())
        labels.append(torch.stack([it["label"] for it in items]))
    return Pyramids(torch.cat(tokens), torch.cat(labels), getattr(dataset, "num_classes", 0))


# ## Stage 2: the transformer
#
# VAR is sized to the tokenizer (its $K$, $c$ and scales) and to the data's
# classes. The optimizer is the official one: AdamW with $\beta = (0.9, 0.95)$ and
# weight decay 0.05, except on biases, vectors and the position, level and
# temperature parameters; the gradient norm is clipped at 2.
class VARExperiment(Budgeted):
    name = "var"  # runs go to runs/var/<stage-1 run>/transformer/
    num_samples = 63  # three per class of shapes

    def __init__(self, vae: VAE, preset: str = "tiny", cfg: float = DEFAULTS["sampling"]["cfg"],
                 top_k: int | None = DEFAULTS["sampling"]["top_k"],
                 top_p: float | None = DEFAULTS["sampling"]["top_p"],
                 weight_decay: float = 0.05, **overrides):
        self.vae = vae.eval().requires_grad_(False)
        self.preset, self.overrides = preset, overrides
        self.guidance, self.top_k, self.top_p = cfg, top_k, top_p
        self.weight_decay = weight_decay

    @property
    def quant(self):
        return self.vae.quantize

    def configure(self, device: torch.device) -> None:
        self.vae.to(device)
        q = self.quant
        self.var = build_var(self.preset, **{**self.overrides, "num_codes": q.num_codes,
                                             "dim": q.dim, "patch_nums": q.patch_nums,
                                             "num_classes": self.dataset.num_classes}).to(device)
        self.modules = {"var": self.var}
        self.optimizers = {"var": torch.optim.AdamW(param_groups(self.var, self.weight_decay),
                                                    lr=self.cfg.lr, betas=(0.9, 0.95))}

    # One step: cross-entropy over the whole pyramid ([[model.py#the-loss]]). The
    # teacher-forcing inputs come from the frozen quantiser; the forward pass goes
    # through `self.modules["var"]`, which is the DDP wrapper on several GPUs. A
    # `two_pass` model also gets half of some scales revealed, and the loss counts the
    # tokens that were not ([[model.py#the-two-pass-sampler]]).
    def training_step(self, batch: dict, step: int, loop) -> dict:
        self.stop_if_out_of_time(step, loop)
        tokens = batch["tokens"]
        reveal, counted = None, None
        with torch.no_grad():
            x_in = self.quant.teacher_inputs(self.quant.split_idxs(tokens))
            if self.var.config.two_pass:
                codes, where, counted = reveal_half(self.quant, tokens)
                reveal = (codes, where)
        logits = self.modules["var"](batch["label"], x_in, reveal)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1),
                             reduction="none")
        loss = ce.mean() if counted is None else ce[counted.reshape(-1)].mean()
        loop.backward_step(loss, "var")
        return {"loss": loss}

    # ### Sampling
    #
    # Image $i$ gets class $i \bmod$ `num_classes`; VAR draws its pyramid
    # ([[model.py#sampling]]) and the frozen decoder turns $\hat f$ into pixels.
    # `pyramid=True` also returns the token maps.
    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, generator=None,
               pyramid: bool = False, **kwargs):
        var = self.modules["var"]
        was_training = var.training
        var.eval()
        device = var.pos_1LC.device
        if labels is None:
            labels = torch.arange(n) % var.config.num_classes
        settings = {"cfg": self.guidance, "top_k": self.top_k, "top_p": self.top_p, **kwargs}
        idxs = var.generate(self.quant, labels.to(device), generator=generator, **settings)
        images = self.vae.idxs_to_img(idxs).clamp(-1, 1).cpu()
        var.train(was_training)
        return (images, idxs) if pyramid else images

    def extra_state(self) -> dict:
        return {"var_config": asdict(self.var.config)}


def param_groups(var: VAR, weight_decay: float) -> list[dict]:
    no_decay_names = ("pos_1LC", "pos_start", "lvl_embed", "scale_mul")
    decay, rest = [], []
    for name, p in var.named_parameters():
        if p.dim() < 2 or name.endswith("bias") or any(k in name for k in no_decay_names):
            rest.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0}]


# ## Loading trained networks
#
# A checkpoint holds its network's configuration, so a run folder is enough.
def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def load_vae(run_dir: str | Path, device: str | torch.device = "cpu") -> VAE:
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    model = VAE(VAEConfig(**_tuples(ckpt["extra"]["vae_config"])))
    model.load_state_dict(ckpt.get("ema", {}).get("vqgan", ckpt["modules"]["vqgan"]))
    return model.to(device).eval()


def load_var(run_dir: str | Path, device: str | torch.device = "cpu") -> VAR:
    ckpt = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    model = VAR(VARConfig(**_tuples(ckpt["extra"]["var_config"])))
    model.load_state_dict(ckpt.get("ema", {}).get("var", ckpt["modules"]["var"]))
    return model.to(device).eval()


def load_experiment(run_dir: str | Path, transformer: str = "transformer",
                    **sampling) -> VARExperiment:
    r"""The trained pair of a run folder `runs/var/<run>`, ready to sample (`transformer`:
    the stage-2 subfolder, `transformer-two-pass` for a `--two-pass` run)."""
    run_dir = Path(run_dir)
    exp = VARExperiment(load_vae(run_dir), **sampling)
    exp.var = load_var(run_dir / transformer)
    exp.modules = {"var": exp.var}
    return exp


# ## Judging the tokenizer
#
# PSNR of the reconstructions, codebook usage and perplexity over all tokens of all
# scales, and on `shapes` the attribute accuracy of the reconstructions (the ceiling
# for stage 2), as in VQGAN's chapter ([[vqgan/experiment.py#judging-the-autoencoder]]).
@torch.no_grad()
def evaluate_vae(model: VAE, dataset, n: int = 512, batch_size: int = 128, net=None) -> dict:
    from annogen.metrics import attribute_accuracy
    model.eval()
    n = min(n, len(dataset))
    xs, x_hats, tokens = [], [], []
    for start in range(0, n, batch_size):
        x = torch.stack([dataset[i]["image"] for i in range(start, min(start + batch_size, n))])
        x_hat, _, tok = model(x)
        xs.append(x)
        x_hats.append(x_hat.clamp(-1, 1))
        tokens.append(tok)
    x, x_hat, tok = torch.cat(xs), torch.cat(x_hats), torch.cat(tokens)
    V = model.config.num_codes
    out = {"psnr": psnr(x, x_hat).mean().item(), "codebook_usage": codebook_usage(tok, V),
           "codebook_perplexity": codebook_perplexity(tok, V)}
    if isinstance(dataset, Shapes):
        acc = attribute_accuracy(x_hat, [dataset.attributes(i) for i in range(n)])
        out.update({f"recon_{k}": v for k, v in acc.items()})
    if net is not None:
        out["recon_toy_fid"] = toy_fid(x, x_hat, net)
    return out


# ## Judging the samples
#
# Class-conditional samples cycling through the classes, scored as in VQGAN's
# chapter ([[vqgan/experiment.py#judging-the-samples]]): shape and colour of the
# first shape against the label (`attribute_accuracy` is their mean), `valid`, and
# with a feature net the toy FID against real images.
@torch.no_grad()
def evaluate_var(exp: VARExperiment, n: int = 420, real=None, net=None, batch_size: int = 210,
                 seed: int = 0, **sampling) -> tuple[dict, torch.Tensor]:
    num_classes = exp.modules["var"].config.num_classes
    labels = torch.arange(n) % num_classes
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    images = torch.cat([exp.sample(len(lab), lab, generator=g, **sampling)
                        for lab in labels.split(batch_size)])
    out = {"samples": n, "sample_images_per_s": n / (time.perf_counter() - start)}
    if num_classes == Shapes.num_classes and images.shape[1] == 3:
        out.update(score_labels(images, labels))
    if real is not None and net is not None:
        out["toy_fid"] = toy_fid(real[:n], images, net)
    return out, images


# ## The benchmark
#
# `benchmark(budget_seconds, out)`: the tiny default on $32^2$ `shapes`, the
# tokenizer for 40% of the budget and the transformer for the rest (encoding the
# pyramids counts towards it), as many steps as fit
# ([[vqgan/experiment.py#a-wall-clock-budget]]); then, outside the budget, the
# tokenizer's scores, 420 samples' attribute accuracy and toy FID, and the toy FID
# between two real draws (the floor). One torch thread by default. Writes
# `out/benchmark.json`.
def benchmark(budget_seconds: float, out: Path, seed: int = 0, stage1_share: float = 0.4,
              data_size: int = 10_000, eval_samples: int = 420,
              threads: int | None = 1) -> dict:
    with torch_threads(threads):
        return _benchmark(budget_seconds, Path(out), seed, stage1_share, data_size, eval_samples)


def _benchmark(budget_seconds, out, seed, stage1_share, data_size, eval_samples) -> dict:
    from annogen.metrics import load_feature_net
    dataset = make_dataset("shapes", 32, n=data_size, seed=0)
    big = 10 ** 9
    t0 = time.monotonic()
    cfg1 = TrainConfig(**{**DEFAULTS["vae"], "steps": big, "seed": seed, "out": str(out),
                          "run": "benchmark", "ckpt_every": big, "sample_every": big,
                          "device": "cpu"})
    exp1 = VAEExperiment(disc_start=DEFAULTS["model"]["disc_start"])
    exp1.deadline = t0 + stage1_share * budget_seconds
    start = time.perf_counter()
    run_dir = train(exp1, dataset, cfg1)
    stage1_seconds = time.perf_counter() - start

    start = time.perf_counter()
    pyramids = encode_dataset(exp1.model, dataset)
    cfg2 = TrainConfig(**{**DEFAULTS["var"], "steps": big, "seed": seed, "out": str(out),
                          "run": "benchmark/transformer", "ckpt_every": big,
                          "sample_every": big, "device": "cpu"})
    exp2 = VARExperiment(exp1.model)
    exp2.deadline = t0 + budget_seconds
    train(exp2, pyramids, cfg2)
    stage2_seconds = time.perf_counter() - start

    net = load_feature_net("shapes", 32)
    fresh = make_dataset("shapes", 32, n=max(eval_samples, 512), seed=1)
    real = torch.stack([fresh[i]["image"] for i in range(len(fresh))])
    other = make_dataset("shapes", 32, n=len(real), seed=2)
    real2 = torch.stack([other[i]["image"] for i in range(len(other))])
    result = {"budget_seconds": budget_seconds, "seed": seed,
              "vae_steps": cfg1.steps, "vae_seconds": stage1_seconds,
              "var_steps": cfg2.steps, "var_seconds": stage2_seconds,
              "var_images_per_s": cfg2.steps * cfg2.batch_size / stage2_seconds}
    result.update({f"vae_{k}": v for k, v in
                   evaluate_vae(exp1.model, fresh, n=len(fresh), net=net).items()})
    scores, images = evaluate_var(exp2, n=eval_samples, real=real, net=net)
    result.update(scores)
    result["toy_fid_floor"] = toy_fid(real[:eval_samples], real2[:eval_samples], net)
    save_image_grid(images[:63], run_dir / "transformer" / "eval-samples.png", nrow=9)
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    print("Both stages of the tiny VAR on shapes, then its samples scored:")
    print("  python -m annogen.var --threads 1 --fid")
    print("One stage at a time, or more steps of stage 2:")
    print("  python -m annogen.var --threads 1 --stage vae")
    print("  python -m annogen.var --threads 1 --stage var --resume --var-steps 3000")
    print("The fixed-budget benchmark (both stages, then attribute accuracy and toy FID):")
    print("  python benchmarks/var.py")
