r"""
---
title: VAR, probing the within-scale independence
summary: The course author's experiments, reproduced on a trained tiny VAR - the image after each scale, re-seeding the sampler from scale k, and freezing the first two scales before sampling the rest in four different ways.
---

# VAR: what do the later scales do?

Within a scale, VAR draws every token from its own softmax: the $p_k^2$ tokens of
$r_k$ are **independent given the coarser scales**,

$$p(r_k \mid r_{<k}, c) = \prod_{i=1}^{p_k^2} p(r_k^i \mid r_{<k}, c).$$

For a $1 \times 1$ map this is no assumption at all; for the $16 \times 16$ map, 256
tokens that together must draw one coherent image, it is a strong one — two
neighbouring tokens cannot agree on which of two plausible edges to draw. The paper
does not justify it. The course author's reading: if the model still works, the
coarse scales must already fix the content, and the later scales (and the decoder)
only render it. Three experiments test that reading on our tiny model:

1. **The image after each scale** ([[#images_after_each_scale]]): decode
   $\hat f^{(k)}$, the sum of the first $k$ scales' contributions, for every $k$.
2. **Re-seeding from scale $k$** ([[#reseed]]): keep a sample's first $k$ maps,
   draw the rest again with new random numbers. From which $k$ on does the content
   stay put?
3. **Freezing the first two scales** ([[#freeze_two_scales]]): take the model's
   first two maps, then produce the rest (a) normally, (b) all at once, each token
   independently of the other *later* scales too, (c) uniformly at random, (d)
   greedily. If uniform noise in the later scales barely hurts, the content lives in
   the first two.

`write_figures(run_dir, out)` runs all three on a trained run
(`python -m annogen.var --figures DIR`) and writes the pictures and the numbers the
README discusses.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from annogen.data import make_dataset, read_shapes
from annogen.train import save_image_grid
from annogen.metrics import score_labels

from .experiment import VARExperiment, load_experiment
from .model import sample_tokens


def enlarge(images: torch.Tensor, factor: int = 2) -> torch.Tensor:
    return images.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


# ## The image after each scale
#
# For samples of the model: the decoder applied to $\hat f^{(k)}$,
# $k = 1, \dots, K$, and the checker's scores at each $k$: from which scale on is the
# class readable?
@torch.no_grad()
def images_after_each_scale(exp: VARExperiment, labels: torch.Tensor, generator=None):
    _, idxs = exp.sample(len(labels), labels, generator=generator, pyramid=True)
    K = len(idxs)
    per_scale = [exp.vae.idxs_to_img(idxs[:k]).clamp(-1, 1) for k in range(1, K + 1)]
    return per_scale, idxs


# ## Re-seeding from scale $k$
#
# One base sample per label; then, for each $k$, its maps $r_1, \dots, r_k$ are kept
# (`forced`) and $r_{k+1}, \dots, r_K$ drawn again with another generator. We
# measure how often the re-drawn image shows the same first shape (shape, colour and
# position, as the checker reads them) as the base, among the bases in which the
# checker finds a shape, and the mean squared pixel difference. $k = 0$ keeps
# nothing: two independent samples of the same class.
def first_shape(image: torch.Tensor):
    found = read_shapes(image)
    return (found[0]["shape"], found[0]["colour"], found[0]["position"]) if found else None


@torch.no_grad()
def reseed(exp: VARExperiment, labels: torch.Tensor, seeds=(1, 2, 3), base_seed: int = 0):
    base, idxs = exp.sample(len(labels), labels, generator=torch.Generator().manual_seed(base_seed),
                            pyramid=True)
    base_read = [first_shape(x) for x in base]
    K = len(idxs)
    rows, images = [], []
    for k in range(K + 1):
        same, mse, imgs = 0, 0.0, []
        for s in seeds:
            g = torch.Generator().manual_seed(1000 * s + k)
            x = exp.sample(len(labels), labels, generator=g, forced=idxs[:k])
            same += sum(first_shape(xi) == b for xi, b in zip(x, base_read) if b is not None)
            mse += (x - base).pow(2).mean().item()
            imgs.append(x)
        n = sum(b is not None for b in base_read) * len(seeds)
        rows.append({"kept_scales": k, "same_first_shape": same / max(n, 1),
                     "pixel_mse": mse / len(seeds)})
        images.append(imgs)
    return rows, base, images


# ## Freezing the first two scales
#
# The first two maps come from the model (one shared draw per image). The later
# ones:
#
# * **normal** — VAR's own sampling, scale by scale;
# * **parallel** — all later scales from *one* forward pass whose inputs are built
#   from $\hat f^{(2)}$ only: every later token is drawn knowing $r_1, r_2$ and
#   nothing else, so they are independent across the later scales too;
# * **uniform** — every later token uniformly from the $V$ codes;
# * **greedy** — scale by scale, each token the argmax of its guided logits;
# * **none** — no later scales: the decoder gets $\hat f^{(2)}$.
MODES = ("normal", "parallel", "uniform", "greedy", "none")


@torch.no_grad()
def freeze_two_scales(exp: VARExperiment, labels: torch.Tensor, mode: str, seed: int = 0,
                      frozen: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    _, idxs = exp.sample(len(labels), labels, generator=g, pyramid=True)
    first = idxs[:frozen]
    quant, var = exp.quant, exp.modules["var"]
    g = torch.Generator().manual_seed(seed + 1)
    V = quant.num_codes
    if mode == "normal":
        return exp.sample(len(labels), labels, generator=g, forced=first)
    if mode == "greedy":
        return exp.sample(len(labels), labels, generator=g, forced=first,
                          choose=lambda k, logits: logits.argmax(-1))
    if mode == "uniform":
        rest = [torch.randint(V, (len(labels), p, p), generator=g)
                for p in quant.patch_nums[frozen:]]
        return exp.vae.idxs_to_img(first + rest).clamp(-1, 1)
    if mode == "none":
        return exp.vae.idxs_to_img(first).clamp(-1, 1)
    if mode == "parallel":
        return exp.vae.idxs_to_img(first + parallel_rest(exp, labels, first, g)).clamp(-1, 1)
    raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")


# One masked forward pass in which scale $k > 2$ reads
# $\operatorname{down}_{p_k}(\hat f^{(2)})$ instead of $\hat f^{(k-1)}$; guidance and
# filtering as in normal sampling.
@torch.no_grad()
def parallel_rest(exp: VARExperiment, labels: torch.Tensor, first: list, g) -> list:
    quant, var = exp.quant, exp.modules["var"].eval()
    K, frozen = len(quant.patch_nums), len(first)
    x_in = [quant.teacher_inputs(first)]  # the inputs of scales 2..frozen+1
    f_hat = quant.idxs_to_fhat(first)
    x_in += [quant.next_input(f_hat, k) for k in range(frozen + 1, K)]
    x_in = torch.cat(x_in, dim=1)
    B = len(labels)
    lab = torch.cat([labels, torch.full_like(labels, var.config.num_classes)])
    logits = var(lab, x_in.repeat(2, 1, 1))
    rest, start = [], sum(p * p for p in quant.patch_nums[:frozen])
    for k in range(frozen, K):
        p = quant.patch_nums[k]
        lk = logits[:, start:start + p * p]
        t = exp.guidance * k / (K - 1)
        lk = (1 + t) * lk[:B] - t * lk[B:]
        rest.append(sample_tokens(lk, exp.top_k, exp.top_p, g).view(B, p, p))
        start += p * p
    return rest


# ## All of it, with figures
#
# `n` samples per measurement (cycling through the 21 classes), the toy FID against
# `n` real images, and the floor: the toy FID between two real draws (`fid=False`
# skips the FIDs, which need the feature net).
def write_figures(run_dir: Path, out: Path, seed: int = 0, n: int = 420, fid: bool = True) -> dict:
    from annogen.metrics import load_feature_net
    exp = load_experiment(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = load_feature_net("shapes", exp.vae.config.resolution) if fid else None

    def toy_fid(a, b, net):
        from annogen.metrics import toy_fid as fid_of
        return fid_of(a, b, net) if net is not None else float("nan")

    real = make_dataset("shapes", exp.vae.config.resolution, n=n, seed=1)
    real = torch.stack([real[i]["image"] for i in range(n)])
    other = make_dataset("shapes", exp.vae.config.resolution, n=n, seed=2)
    other = torch.stack([other[i]["image"] for i in range(n)])
    labels = torch.arange(n) % exp.modules["var"].config.num_classes
    results = {"toy_fid_floor": toy_fid(real, other, net)}

    # the samples: one row per colour, three each of circle, square, triangle
    grid = torch.tensor([s * 7 + c for c in range(7) for s in range(3) for _ in range(3)])
    torch.manual_seed(seed)
    save_image_grid(enlarge(exp.sample(len(grid), grid), 3), out / "samples.png", nrow=9)

    # 1. after each scale
    per_scale, _ = images_after_each_scale(exp, labels, torch.Generator().manual_seed(seed))
    results["after_scale"] = []
    for k, x in enumerate(per_scale, start=1):
        row = {"scales": k, **score_labels(x, labels), "toy_fid": toy_fid(real, x, net)}
        results["after_scale"].append(row)
    shown = torch.stack([x[:8] for x in per_scale], dim=1).flatten(0, 1)
    save_image_grid(enlarge(shown, 2), out / "scales.png", nrow=len(per_scale))

    # 2. re-seeding
    rows, base, images = reseed(exp, labels[:105], base_seed=seed)
    results["reseed"] = rows
    # two base images side by side; a row per k, each base followed by its three re-draws
    pick = [0, 4]
    tiles = []
    for k in range(len(images)):
        for i in pick:
            tiles += [base[i]] + [imgs[i] for imgs in images[k]]
    save_image_grid(enlarge(torch.stack(tiles), 2), out / "reseed.png", nrow=4 * len(pick))

    # 3. freezing the first two scales
    results["freeze"] = []
    shown = []
    for mode in MODES:
        x = freeze_two_scales(exp, labels, mode, seed=seed)
        results["freeze"].append({"mode": mode, **score_labels(x, labels),
                                  "toy_fid": toy_fid(real, x, net)})
        shown.append(x[:9])
    save_image_grid(enlarge(torch.cat(shown), 2), out / "freeze.png", nrow=9)
    # 4. guidance, for reference: the same n samples at four values of cfg
    results["guidance"] = []
    for cfg in (0.0, 1.5, 3.0, 5.0):
        x = exp.sample(n, labels, generator=torch.Generator().manual_seed(seed), cfg=cfg)
        results["guidance"].append({"cfg": cfg, **score_labels(x, labels),
                                    "toy_fid": toy_fid(real, x, net)})
    (out / "experiments.json").write_text(json.dumps(results, indent=1) + "\n")
    print_results(results)
    return results


def print_results(results: dict) -> None:
    print(f"toy FID floor (two real draws): {results['toy_fid_floor']:.2f}")
    print("| scales decoded | shape | colour | valid | toy FID |")
    for r in results["after_scale"]:
        print(f"| {r['scales']} | {r['shape_accuracy']:.3f} | {r['colour_accuracy']:.3f} | "
              f"{r['valid']:.3f} | {r['toy_fid']:.2f} |")
    print("| scales kept | same first shape | pixel MSE |")
    for r in results["reseed"]:
        print(f"| {r['kept_scales']} | {r['same_first_shape']:.3f} | {r['pixel_mse']:.4f} |")
    print("| later scales | attribute acc. | shape | colour | valid | toy FID |")
    for r in results["freeze"]:
        print(f"| {r['mode']} | {r['attribute_accuracy']:.3f} | {r['shape_accuracy']:.3f} | "
              f"{r['colour_accuracy']:.3f} | {r['valid']:.3f} | {r['toy_fid']:.2f} |")
    print("| cfg | attribute acc. | shape | colour | valid | toy FID |")
    for r in results["guidance"]:
        print(f"| {r['cfg']} | {r['attribute_accuracy']:.3f} | {r['shape_accuracy']:.3f} | "
              f"{r['colour_accuracy']:.3f} | {r['valid']:.3f} | {r['toy_fid']:.2f} |")
