r"""
---
title: Laplacian diffusion, the figures
summary: How the chapter's figures are drawn - the bands of a shapes image and their spectra, the forward process under each schedule, the sampling path across resolutions, samples of the three models, and quality against compute from the benchmark.
---

# The chapter's figures

`python -m annogen.laplacian --figures DIR` draws them. The first two need no trained
model; the sample figures use the runs named `edify`, `fdm` and `single` under `--out`
(trained as in the chapter's "Run it" box), and `compute.png` reads the benchmark's
`benchmarks/results/laplacian.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from annogen.data import make_dataset
from annogen.laplacian.process import LaplacianProcess
from annogen.laplacian.pyramid import band_images, radial_spectrum, up
from annogen.train import atomic_write, save_image_grid

__all__ = ["draw_figures"]

LABELS = {"edify": "Laplacian (ours: concurrent, switches 0.5 / 0.75)",
          "edify-early": "Laplacian, early switches (0.25 / 0.5)",
          "edify-late": "Laplacian, late switches (0.8 / 0.95)",
          "fdm": "f-DM-style (sequential stages, 0.5 / 0.75)",
          "single": "single resolution"}


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _show(ax, img: torch.Tensor, title: str | None = None, scale: float = 1.0):
    ax.imshow(((img.clamp(-1, 1) * scale + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _to_full(z: torch.Tensor, size: int = 32) -> torch.Tensor:
    while z.shape[-1] < size:
        z = up(z)
    return z


# ## The bands and their spectra
#
# One `shapes` image, its three full-size bands (the finer two amplified four times, or
# they would be invisible), and the radial power spectrum of each band over 64 images.
def pyramid_figure(path: Path) -> Path:
    data = make_dataset("shapes", 32, n=64, seed=0)
    x = torch.stack([data[i]["image"] for i in range(64)])
    bands = band_images(x, 3)
    fig = _figure(8.0, 2.3)
    titles = ["image $x$", r"$x^{(1)}$ (x4)", r"up$(x^{(2)})$ (x4)", r"up$^2(x^{(3)})$"]
    imgs = [x[3], bands[0][3] * 4, bands[1][3] * 4, bands[2][3]]
    for k, (img, title) in enumerate(zip(imgs, titles)):
        _show(fig.add_axes([0.01 + k * 0.13, 0.08, 0.12, 0.75]), img, title)
    ax = fig.add_axes([0.6, 0.2, 0.38, 0.68])
    for i, b in enumerate(bands, 1):
        rho, p = radial_spectrum(b, bins=12)
        ax.semilogy(rho.numpy(), p.numpy(), marker="o", markersize=3, label=f"band {i}")
    ax.set_xlabel("radial frequency (cycles / pixel)", fontsize=8)
    ax.set_ylabel("mean power", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


# ## The forward process under each schedule
#
# One image, one noise draw, the state at each time at its own resolution (shown
# enlarged to full size): single resolution, f-DM-style stages, and ours.
def forward_figure(path: Path, seed: int = 0) -> Path:
    data = make_dataset("shapes", 32, n=4, seed=0)
    x0 = data[1]["image"][None]
    eps = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    ts = [0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 0.85, 1.0]
    names = ["single", "fdm", "edify"]
    fig = _figure(8.0, 3.4)
    for r, name in enumerate(names):
        proc = LaplacianProcess(name)
        for c, t in enumerate(ts):
            tt = torch.tensor([t])
            l = proc.level(t)
            e = eps
            for _ in range(l):
                e = torch.nn.functional.avg_pool2d(e, 2) * 2
            z, _, _ = proc.q_sample(x0, tt, eps=e, level=l)
            ax = fig.add_axes([0.17 + c * 0.103, 0.03 + (2 - r) * 0.3, 0.098, 0.24])
            _show(ax, _to_full(z)[0], f"t={t:g}, {z.shape[-1]}px" if r == 0 or l > 0 else None)
            if r > 0 and l == 0:
                ax.set_title(f"{z.shape[-1]}px", fontsize=8)
        fig.text(0.01, 0.15 + (2 - r) * 0.3, {"single": "single\nresolution", "fdm": "f-DM-style\n(stages)",
                                              "edify": "Laplacian\n(ours)"}[name], fontsize=9)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


# ## The sampling path
#
# One sample of a trained run: the state $z$ (top) and the network's estimate
# $\hat x_0$ (bottom) after each of 16 steps, at the resolution it was computed.
def trajectory_figure(run_dir: Path, path: Path, seed: int = 0) -> Path:
    from annogen.laplacian.denoiser import sample
    from annogen.laplacian.experiment import load_run
    den, _ = load_run(run_dir)
    traj = []
    sample(den, 1, 16, y=torch.tensor([4]), generator=torch.Generator().manual_seed(seed), trajectory=traj)
    pick = traj[::2] + ([traj[-1]] if len(traj) % 2 == 0 else [])
    fig = _figure(8.0, 2.2)
    n = len(pick)
    for c, (s, level, z, x0_hat) in enumerate(pick):
        _show(fig.add_axes([0.01 + c * 0.98 / n, 0.5, 0.95 / n, 0.38]), _to_full(z)[0], f"t={s:.3g}, {z.shape[-1]}px")
        _show(fig.add_axes([0.01 + c * 0.98 / n, 0.04, 0.95 / n, 0.38]), _to_full(x0_hat)[0])
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


# ## Samples and compute
def samples_figure(runs: Path, path: Path, steps: int = 16, seed: int = 0) -> Path | None:
    from annogen.laplacian.experiment import class_labels, load_run, sample_images
    rows = []
    for name in ("single", "fdm", "edify"):
        if not (runs / name / "checkpoint.pt").exists():
            return None
        den, _ = load_run(runs / name)
        images, _, _ = sample_images(den, 21, steps, class_labels(21, den.net.num_classes), seed)
        rows.append(images)
    return save_image_grid(torch.cat(rows), path, nrow=21)


def compute_figure(results: Path, path: Path) -> Path | None:
    if not results.exists():
        return None
    data = json.loads(results.read_text(encoding="utf8"))
    fig = _figure(8.0, 3.0)
    axes = [fig.add_axes([0.08, 0.17, 0.38, 0.72]), fig.add_axes([0.59, 0.17, 0.38, 0.72])]
    for name in data["models"]:
        rows = sorted((r for r in data["rows"] if r["model"] == name), key=lambda r: r["pixels_per_image"])
        px = [r["full_size_evaluations"] for r in rows]
        axes[0].plot(px, [r["toy_fid"] for r in rows], marker="o", label=LABELS.get(name, name))
        axes[1].plot(px, [r["attribute_accuracy"] for r in rows], marker="o")
    axes[0].axhline(data["toy_fid_real"], color="grey", linestyle=":", label="real vs real")
    axes[0].set_ylabel("toy FID (lower is better)", fontsize=8)
    axes[1].set_ylabel("attribute accuracy", fontsize=8)
    for ax in axes:
        ax.set_xlabel("network cost per image (full-size evaluations)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="upper right")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def draw_figures(out_dir: Path, runs_root: Path, seed: int = 0,
                 results: Path = Path("benchmarks/results/laplacian.json")) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = runs_root / "laplacian"
    written = [pyramid_figure(out_dir / "pyramid.png"), forward_figure(out_dir / "forward.png", seed)]
    if (runs / "edify" / "checkpoint.pt").exists():
        written.append(trajectory_figure(runs / "edify", out_dir / "trajectory.png", seed))
    for extra in (samples_figure(runs, out_dir / "samples.png", seed=seed),
                  compute_figure(results, out_dir / "compute.png")):
        if extra is not None:
            written.append(extra)
    return written


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as d:  # the two figures that need no trained run
        for p in (pyramid_figure(Path(d) / "pyramid.png"), forward_figure(Path(d) / "forward.png")):
            print(f"drew {p.name} ({p.stat().st_size // 1024} KB)")
    print("all figures, from trained runs: python -m annogen.laplacian --figures DIR")
