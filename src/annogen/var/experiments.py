r"""
---
title: VAR, probing the within-scale independence
summary: Zhou Yifan's experiments, reproduced on a trained tiny VAR - the image after each scale, re-seeding the sampler from scale k, freezing the first two scales - plus the Laplacian view of the tokenizer and a test that can see incoherence within a scale - neighbour statistics and a two-pass sampler.
---

# VAR: what do the later scales do?

Within a scale, VAR draws every token from its own softmax: the $h_k w_k$ tokens of
$r_k$ are **independent given the coarser scales**,

$$p(r_k \mid r_{<k}, y) = \prod_{i=1}^{h_k w_k} p(r_k^i \mid r_{<k}, y).$$

For a $1 \times 1$ map this is no assumption at all; for the $16 \times 16$ map, 256
tokens that together must draw one coherent image, it is a strong one — two
neighbouring tokens cannot agree on which of two plausible edges to draw. The paper
does not justify it. Zhou Yifan's reading, in
[his review of VAR](https://zhouyifan.net/2024/12/21/20241218-VAR/): if the model still
works, the coarse scales must already fix the content, and the later scales (and the
decoder) only render it. The author's three experiments test that reading on our tiny
model:

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

None of the three can see incoherence *within* a scale directly; two more
measurements can ([[#neighbour-statistics]], [[#two_pass_experiment]]): how often
neighbouring tokens go together in samples compared with the encodings of real images,
and whether a sampler that lets half of a scale see the other half
([[model.py#the-two-pass-sampler]]) changes that, or the images.
[[#laplacian_figure]] draws the tokenizer as the Laplacian pyramid it is.

`write_figures(run_dir, out)` runs the author's three on a trained run
(`python -m annogen.var --figures DIR`), `write_independence(run_dir, out)` the
within-scale measurements (`--independence DIR`), and `laplacian_figure` the pyramid
(`--laplacian DIR`, stage 1 only). Run it: `python src/annogen/var/experiments.py`
prints these commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from annogen.data import make_dataset, read_shapes
from annogen.train import save_image_grid
from annogen.metrics import score_labels

from annogen.var.experiment import VARExperiment, load_experiment, load_vae
from annogen.var.model import sample_tokens


def enlarge(images: torch.Tensor, factor: int = 2) -> torch.Tensor:
    return images.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)


# ## The image after each scale
#
# For samples of the model: the decoder applied to $\hat f^{(k)}$,
# $k = 1, \dots, M$, and the checker's scores at each $k$: from which scale on is the
# class readable?
@torch.no_grad()
def images_after_each_scale(exp: VARExperiment, labels: torch.Tensor, generator=None):
    _, idxs = exp.sample(len(labels), labels, generator=generator, pyramid=True)
    M = len(idxs)
    per_scale = [exp.vae.idxs_to_img(idxs[:k]).clamp(-1, 1) for k in range(1, M + 1)]
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
    M = len(idxs)
    rows, images = [], []
    for k in range(M + 1):
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
# * **uniform** — every later token uniformly from the $K$ codes;
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
# $\operatorname{down}_{h_k}(\hat f^{(2)})$ instead of $\hat f^{(k-1)}$; guidance and
# filtering as in normal sampling.
@torch.no_grad()
def parallel_rest(exp: VARExperiment, labels: torch.Tensor, first: list, g) -> list:
    quant, var = exp.quant, exp.modules["var"].eval()
    M, frozen = len(quant.patch_nums), len(first)
    x_in = [quant.teacher_inputs(first)]  # the inputs of scales 2..frozen+1
    f_hat = quant.idxs_to_fhat(first)
    x_in += [quant.next_input(f_hat, k) for k in range(frozen + 1, M)]
    x_in = torch.cat(x_in, dim=1)
    B = len(labels)
    lab = torch.cat([labels, torch.full_like(labels, var.config.num_classes)])
    logits = var(lab, x_in.repeat(2, 1, 1))
    rest, start = [], sum(p * p for p in quant.patch_nums[:frozen])
    for k in range(frozen, M):
        p = quant.patch_nums[k]
        lk = logits[:, start:start + p * p]
        t = exp.guidance * k / (M - 1)
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


# ## The tokenizer as a Laplacian pyramid
#
# For a few real images: the decoded running sum $\hat f^{(k)}$ (pixels), and in
# feature space the contribution $h_k$ of each scale alone next to the running sum
# ([[quant.py#a-laplacian-pyramid-of-features]]). A feature map has $c = 32$ channels;
# we show its first three principal components (computed on $f$ of that image) as red,
# green and blue, each $h_k$ panel stretched to its own range (its RMS is written
# above it, as a fraction of $f$'s). On the right, the energy of $f$ still missing after
# each scale and the energy of each $h_k$, averaged over `n` images.
@torch.no_grad()
def laplacian_figure(run_dir: Path, out: Path, n: int = 256, shown: int = 2, seed: int = 1) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vae = load_vae(run_dir)
    quant = vae.quantize
    data = make_dataset("shapes", vae.config.resolution, n=n, seed=seed)
    x = torch.stack([data[i]["image"] for i in range(n)])
    f = vae.features(x)
    pyr = quant.pyramid(f)
    left = [((f - s).pow(2).sum((1, 2, 3)) / f.pow(2).sum((1, 2, 3))).mean().item()
            for s in pyr["f_hat"]]
    energy = [(h.pow(2).sum((1, 2, 3)) / f.pow(2).sum((1, 2, 3))).mean().item() for h in pyr["h"]]
    M = quant.num_scales

    def pca_rgb(maps: torch.Tensor, basis: torch.Tensor, stretch: bool) -> torch.Tensor:
        y = torch.einsum("chw,cd->dhw", maps, basis)
        if stretch:
            y = y / y.abs().amax().clamp(min=1e-8)
        return (0.5 + 0.5 * y.clamp(-1, 1)).permute(1, 2, 0).numpy()

    fig = plt.figure(figsize=(2.0 * (M + 1) + 4.5, 2.1 * 3 * shown), layout="constrained")
    grid = fig.add_gridspec(3 * shown, M + 2, width_ratios=[1] * (M + 1) + [2.6])
    for j in range(shown):
        fj = f[j]
        flat = fj.flatten(1) - fj.flatten(1).mean(1, keepdim=True)
        basis = torch.linalg.svd(flat, full_matrices=False).U[:, :3]
        scale = torch.einsum("chw,cd->dhw", fj, basis).abs().amax()
        rms_f = fj.pow(2).mean().sqrt()
        rows = [("decoded", None), ("h_k alone", None), ("running sum", None)]
        for r, (name, _) in enumerate(rows):
            ax = fig.add_subplot(grid[3 * j + r, 0])
            if r == 0:
                ax.imshow((0.5 + 0.5 * x[j]).clamp(0, 1).permute(1, 2, 0).numpy())
                ax.set_title("image", fontsize=9)
            elif r == 1:
                ax.axis("off")
                ax.text(0.5, 0.5, "$h_k$ alone\n(features)", ha="center", va="center", fontsize=10)
            else:
                ax.imshow(pca_rgb(fj / scale, basis, False))
                ax.set_title("$f$ (features)", fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
            for k in range(M):
                ax = fig.add_subplot(grid[3 * j + r, k + 1])
                if r == 0:
                    img = vae.fhat_to_img(pyr["f_hat"][k][j:j + 1])[0]
                    ax.imshow((0.5 + 0.5 * img).clamp(0, 1).permute(1, 2, 0).numpy())
                    ax.set_title(f"after scale {k + 1} ({quant.patch_nums[k]}x{quant.patch_nums[k]})",
                                 fontsize=8)
                elif r == 1:
                    h = pyr["h"][k][j]
                    ax.imshow(pca_rgb(h, basis, True))
                    ax.set_title(f"$h_{{{k + 1}}}$, RMS {h.pow(2).mean().sqrt() / rms_f:.2f}", fontsize=8)
                else:
                    ax.imshow(pca_rgb(pyr["f_hat"][k][j] / scale, basis, False))
                    ax.set_title(f"$\\hat f^{{({k + 1})}}$", fontsize=8)
                ax.set_xticks([]), ax.set_yticks([])
    ax = fig.add_subplot(grid[:, M + 1])
    ks = list(range(1, M + 1))
    ax.plot(ks, left, "o-", label=r"left: $\|f - \hat f^{(k)}\|^2 / \|f\|^2$")
    ax.plot(ks, energy, "s--", label=r"$\|h_k\|^2 / \|f\|^2$")
    ax.set_yscale("log")
    ax.set_xticks(ks, [f"{k}\n{p}x{p}" for k, p in zip(ks, quant.patch_nums)])
    ax.set_xlabel("scale k (side)")
    ax.set_title(f"residual energy, mean of {n} images")
    ax.legend(fontsize=8)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "laplacian.png", dpi=72)
    plt.close(fig)
    result = {"energy_left": left, "energy_of_h": energy, "images": n}
    (out / "laplacian.json").write_text(json.dumps(result, indent=1) + "\n")
    print("| scale | side | energy of h_k | energy left |")
    print("|---|---|---|---|")
    for k in range(M):
        print(f"| {k + 1} | {quant.patch_nums[k]} | {energy[k]:.3f} | {left[k]:.3f} |")
    return result


# ## Neighbour statistics
#
# If independent draws within a scale made incoherent maps, it would show in pairs of
# neighbouring tokens: in encoded real images, neighbours go together in some ways
# more often than chance, and independent draws would reproduce only the part of that
# which the coarser scales explain. Two measures over all horizontally and vertically
# adjacent pairs $(a, b)$ of $r_k$:
#
# * **same code**: how often $a = b$;
# * **mutual information** $I(a; b) = \sum_{a, b} P(a, b) \log \frac{P(a, b)}{P(a) P(b)}$
#   in nats, with the codes grouped into 8 clusters (k-means on the codebook vectors),
#   because with all $K = 256$ codes a few thousand pairs would not estimate the
#   $256^2$ cells; we subtract the Miller-Madow bias $(R - 1)(C - 1) / (2N)$ of the
#   plug-in estimate ($R$, $C$ the occupied rows and columns, $N$ pairs).
def code_clusters(quant, n_clusters: int = 8, iters: int = 50, seed: int = 0) -> torch.Tensor:
    r"""The cluster (0..`n_clusters`-1) of each of the $K$ codes: k-means, seeded."""
    e = quant.embedding.weight.detach()
    g = torch.Generator().manual_seed(seed)
    centres = e[torch.randperm(len(e), generator=g)[:n_clusters]].clone()
    for _ in range(iters):
        assign = torch.cdist(e, centres).argmin(1)
        for j in range(n_clusters):
            if (assign == j).any():
                centres[j] = e[assign == j].mean(0)
    return torch.cdist(e, centres).argmin(1)


def neighbour_pairs(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""All horizontally and vertically adjacent pairs of maps $r$ $(B, p, p)$."""
    a = torch.cat([r[:, :, :-1].flatten(), r[:, :-1, :].flatten()])
    b = torch.cat([r[:, :, 1:].flatten(), r[:, 1:, :].flatten()])
    return a, b


def mutual_information(a: torch.Tensor, b: torch.Tensor, n: int) -> float:
    joint = torch.zeros(n, n, dtype=torch.float64)
    joint.index_put_((a, b), torch.ones(len(a), dtype=torch.float64), accumulate=True)
    N = joint.sum()
    P = joint / N
    pa, pb = P.sum(1, keepdim=True), P.sum(0, keepdim=True)
    nz = P > 0
    mi = (P[nz] * (P[nz] / (pa * pb).expand_as(P)[nz]).log()).sum().item()
    R, C = int((pa > 0).sum()), int((pb > 0).sum())
    return mi - (R - 1) * (C - 1) / (2 * N.item())


def neighbour_statistics(idxs: list[torch.Tensor], clusters: torch.Tensor) -> list[dict]:
    rows = []
    n = int(clusters.max()) + 1
    for k, r in enumerate(idxs):
        if r.shape[-1] < 2:
            continue
        a, b = neighbour_pairs(r)
        rows.append({"scale": k + 1, "side": r.shape[-1], "pairs": len(a),
                     "same_code": (a == b).double().mean().item(),
                     "mutual_information": mutual_information(clusters[a], clusters[b], n)})
    return rows


# ## Two passes against one
#
# The same `two_pass` model (`--two-pass`, [[model.py#the-two-pass-sampler]]) samples
# each way from the same labels and seed; both are compared with the encodings of
# `n` real images. Two settings:
#
# * **free-running**: whole samples, every scale drawn by the model;
# * **given the real coarser scales**: for each scale $k$, the real image's maps
#   $r_1, \dots, r_{k-1}$ are forced and only $r_k$ is measured, so that the
#   comparison with the real $r_k$ is not blurred by differences in the coarser scales.
#
# and the images: attribute accuracy and toy FID of the free-running samples. A second
# set of `n` real images (another seed) shows how much the statistics move by chance.
@torch.no_grad()
def two_pass_experiment(exp: VARExperiment, n: int = 420, seed: int = 0, net=None) -> dict:
    from annogen.metrics import toy_fid
    res = exp.vae.config.resolution
    data = make_dataset("shapes", res, n=n, seed=1)
    real = torch.stack([data[i]["image"] for i in range(n)])
    labels = torch.stack([data[i]["label"] for i in range(n)])
    real_idxs = exp.vae.img_to_idxs(real)
    clusters = code_clusters(exp.quant)
    # a second real set of the same size: how much the statistics move by chance
    other = make_dataset("shapes", res, n=n, seed=2)
    other_idxs = exp.vae.img_to_idxs(torch.stack([other[i]["image"] for i in range(n)]))
    out = {"samples": n, "real": neighbour_statistics(real_idxs, clusters),
           "real_other": neighbour_statistics(other_idxs, clusters)}
    for name, two in (("one_pass", False), ("two_pass", True)):
        g = torch.Generator().manual_seed(seed)
        images, idxs = exp.sample(n, labels, generator=g, pyramid=True, two_pass=two)
        scores = score_labels(images, labels)
        if net is not None:
            scores["toy_fid"] = toy_fid(real, images, net)
        out[name] = {"free": neighbour_statistics(idxs, clusters), "scores": scores}
        given = []
        for k in range(1, len(real_idxs)):
            g = torch.Generator().manual_seed(seed + k)
            _, idxs = exp.sample(n, labels, generator=g, pyramid=True, two_pass=two,
                                 forced=real_idxs[:k])
            given += neighbour_statistics([idxs[k]], clusters)
            given[-1]["scale"] = k + 1
        out[name]["given_real_context"] = given
    out["second_half_loss"] = second_half_loss(exp, n=n)
    return out


# Does the network read the revealed half at all? On real pyramids, with teacher forcing,
# the cross-entropy of the second half $B$ of each scale with nothing revealed and with
# the real first half $A$ revealed (every scale at once), in nats per token.
@torch.no_grad()
def second_half_loss(exp: VARExperiment, n: int = 420, seed: int = 1) -> list[dict]:
    import torch.nn.functional as F
    from annogen.var.model import checkerboard
    var, quant = exp.modules["var"].eval(), exp.quant
    data = make_dataset("shapes", exp.vae.config.resolution, n=n, seed=seed)
    idxs = exp.vae.img_to_idxs(torch.stack([data[i]["image"] for i in range(n)]))
    labels = torch.stack([data[i]["label"] for i in range(n)])
    tokens, x_in = quant.flatten_idxs(idxs), quant.teacher_inputs(idxs)
    where = torch.cat([checkerboard(p) if p > 1 else torch.zeros(1, dtype=torch.bool)
                       for p in quant.patch_nums])[None].expand(n, -1)
    codes = quant.embedding(tokens) * where[..., None]
    rows, start = [], 0
    for reveal, name in ((None, "hidden"), ((codes, where), "revealed")):
        logits = var(labels, x_in, reveal)
        ce = F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none")  # (n, L)
        start = 0
        for k, p in enumerate(quant.patch_nums):
            if p > 1:
                B_half = ~checkerboard(p)
                value = ce[:, start:start + p * p][:, B_half].mean().item()
                if name == "hidden":
                    rows.append({"scale": k + 1, "side": p, "hidden": value})
                else:
                    next(r for r in rows if r["scale"] == k + 1)["revealed"] = value
            start += p * p
    return rows


def print_two_pass(res: dict) -> None:
    print(f"neighbouring tokens, {res['samples']} images (same code / mutual information in nats)")
    print("| scale | side | real | other real | one pass, free | two passes, free "
          "| one pass, real context | two passes, real context |")
    print("|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(res["real"]):
        cells = [r, res["real_other"][i]] + [res[m]["free"][i] for m in ("one_pass", "two_pass")] + \
                [res[m]["given_real_context"][i] for m in ("one_pass", "two_pass")]
        print(f"| {r['scale']} | {r['side']} | " + " | ".join(
            f"{c['same_code']:.3f} / {c['mutual_information']:.3f}" for c in cells) + " |")
    if "second_half_loss" in res:
        print("| scale | side | loss of the second half, nothing revealed | first half revealed |")
        for r in res["second_half_loss"]:
            print(f"| {r['scale']} | {r['side']} | {r['hidden']:.3f} | {r['revealed']:.3f} |")
    print("| sampler | attribute acc. | shape | colour | valid | toy FID |")
    for m in ("one_pass", "two_pass"):
        s = res[m]["scores"]
        print(f"| {m} | {s['attribute_accuracy']:.3f} | {s['shape_accuracy']:.3f} | "
              f"{s['colour_accuracy']:.3f} | {s['valid']:.3f} | {s.get('toy_fid', float('nan')):.1f} |")


def write_independence(run_dir: Path, out: Path, n: int = 420, seed: int = 0, fid: bool = True,
                       transformer: str = "transformer-two-pass") -> dict:
    from annogen.metrics import load_feature_net
    exp = load_experiment(run_dir, transformer=transformer)
    net = load_feature_net("shapes", exp.vae.config.resolution) if fid else None
    res = two_pass_experiment(exp, n=n, seed=seed, net=net)
    out.mkdir(parents=True, exist_ok=True)
    (out / "independence.json").write_text(json.dumps(res, indent=1) + "\n")
    print_two_pass(res)
    return res


if __name__ == "__main__":
    print("The experiments need a trained run (python -m annogen.var --threads 1). Then:")
    print("  python -m annogen.var --figures src/annogen/var/figures --fid   "
          "# the author's three experiments")
    print("  python -m annogen.var --stage var --two-pass                     "
          "# a transformer that can sample in two passes")
    print("  python -m annogen.var --independence src/annogen/var/figures --fid  "
          "# neighbour statistics, one pass vs two")
    print("  python -m annogen.var --laplacian src/annogen/var/figures          "
          "# the Laplacian figure (stage 1 only)")
