"""Train the VQ-VAE and VQGAN chapter defaults on CPU for a fixed budget; report quality.

    python benchmarks/vq.py                      # about 21 minutes
    python benchmarks/vq.py --budget 60 --prior-budget 60 --only vqvae

Each chapter's `experiment.benchmark(budget_seconds, out, seed)` trains its tiny default on
32 px shapes for a wall-clock budget and returns its metrics; this script prints them as
a table against the chapters' targets and writes JSON (default
benchmarks/results/vq.json). Budgets: `--budget` is the VQ-VAE autoencoder's (the target
says "within 5 minutes"), `--prior-budget` its PixelCNN prior's, and `--vqgan-budget` the
total for both VQGAN stages (40% autoencoder, 60% transformer).

Targets (2 CPU cores): VQ-VAE reconstruction PSNR >= 26 dB within 5 minutes with codebook
usage >= 50%; VQGAN prior samples with attribute accuracy >= 60%.

Two measurements behind the chapters' prose run with `--only`:

    python benchmarks/vq.py --only fid-floor     # toy FID of two real draws vs n (metrics page)
    python benchmarks/vq.py --only l1-plateau    # VQGAN's L1-only plateau: hue lost, brightness kept
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

TARGETS = {
    ("vqvae", "psnr"): (">=", 26.0),
    ("vqvae", "codebook_usage"): (">=", 0.5),
    ("vqgan", "attribute_accuracy"): (">=", 0.6),
}


# The floor of toy FID (annogen/metrics.py, "The floor of a toy FID"): two independent
# draws of n real shapes, four pairs of draws per n, with the cached feature net.
def fid_floor(ns=(64, 256, 1000, 4000)) -> dict:
    import torch
    from annogen.data import Shapes
    from annogen.metrics import frechet_distance, load_feature_net
    net = load_feature_net("shapes", 32)
    feats = {}
    for seed in (1, 2, 3, 4):
        ds = Shapes(n=max(ns), seed=seed)
        x = torch.stack([ds[i]["image"] for i in range(len(ds))])
        with torch.no_grad():
            feats[seed] = torch.cat([net.features(x[i:i + 500]).double() for i in range(0, len(x), 500)])
    stats = lambda f: (f.mean(0), torch.cov(f.T))  # noqa: E731
    trace = torch.cov(torch.cat(list(feats.values())).T).trace().item()
    rows = []
    for n in ns:
        vals = [frechet_distance(*stats(feats[a][:n]), *stats(feats[b][:n]))
                for a, b in ((1, 2), (3, 4), (1, 3), (2, 4))]
        rows.append({"n": n, "mean": sum(vals) / 4, "min": min(vals), "max": max(vals),
                     "n_times_mean": n * sum(vals) / 4, "mean_term_2tr_over_n": 2 * trace / n})
    return {"feature_net": net.meta, "trace_cov": trace, "rows": rows}


# VQGAN with the absolute error alone (annogen/vqgan/experiment.py, "What replaces it"):
# every 50 steps, the decoder's mean output on the shape pixels of 256 held-out images,
# per colour of the first shape, and the fraction of shape channel values with the right
# sign; once as the chapter trains it, once with shape and background pixels weighted
# equally in every batch.
def l1_plateau(steps: int = 400) -> dict:
    import types

    import torch
    from annogen.data import COLOUR_NAMES, Shapes, make_dataset
    from annogen.train import TrainConfig, train
    from annogen.vqgan.experiment import VQGANExperiment

    held = Shapes(n=256, seed=1)
    X = torch.stack([held[i]["image"] for i in range(256)])
    colour = [held.attributes(i)[0]["colour"] for i in range(256)]
    fg = (X > -1).any(1, keepdim=True)

    def balanced(loss, x, x_hat):
        m = (x > -1).any(1, keepdim=True).expand_as(x).float()
        w = m * 0.5 / m.mean().clamp_min(1e-6) + (1 - m) * 0.5 / (1 - m).mean().clamp_min(1e-6)
        return (w * (x - x_hat).abs()).mean()

    class Probe(VQGANExperiment):
        def __init__(self, weighted):
            super().__init__(l2_weight=0.0, disc_start=10 ** 9)
            self.weighted, self.rows = weighted, []

        def configure(self, device):
            super().configure(device)
            if self.weighted:
                self.loss.reconstruction_loss = types.MethodType(balanced, self.loss)

        def training_step(self, batch, step, loop):
            out = super().training_step(batch, step, loop)
            if step % 50 == 0:
                self.model.eval()
                with torch.no_grad():
                    xh = self.model(X)[0]
                self.model.train()
                f = fg.expand_as(X)
                row = {"step": step, "sign_right": ((xh.sign() == X.sign()) & f).sum().item() / f.sum().item()}
                for name in COLOUR_NAMES:
                    sel = torch.tensor([c == name for c in colour])
                    row[name] = [round(xh[sel][:, c][fg[sel, 0]].mean().item(), 3) for c in range(3)]
                self.rows.append(row)
            return out

    data = make_dataset("shapes", 32, n=10_000, seed=0)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for weighted in (False, True):
            exp = Probe(weighted)
            cfg = TrainConfig(steps=steps, batch_size=16, lr=1e-3, log_every=50, ckpt_every=10 ** 9,
                              sample_every=10 ** 9, out=tmp, run=f"w{int(weighted)}", device="cpu", seed=0)
            train(exp, data, cfg)
            result["weighted" if weighted else "l1"] = exp.rows
    return result


def run(chapter: str, args, out: Path) -> dict:
    start = time.perf_counter()
    if chapter == "fid-floor":
        return fid_floor()
    if chapter == "l1-plateau":
        return l1_plateau()
    if chapter == "vqvae":
        from annogen.vqvae.experiment import benchmark
        result = benchmark(args.budget, out / chapter, seed=args.seed,
                           prior_budget_seconds=args.prior_budget)
    else:
        from annogen.vqgan.experiment import benchmark
        result = benchmark(args.vqgan_budget, out / chapter, seed=args.seed)
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    return result


def verdict(chapter: str, key: str, value) -> tuple[str, str]:
    if (chapter, key) not in TARGETS or not isinstance(value, (int, float)):
        return "", ""
    op, target = TARGETS[(chapter, key)]
    ok = value >= target if op == ">=" else value <= target
    return f"{op} {target}", "yes" if ok else "**no**"


def flat(prefix: str, d: dict):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(f"{prefix}{k}.", v)
        else:
            yield prefix + k, v


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=300.0,
                   help="seconds of VQ-VAE autoencoder training (default: %(default)s)")
    p.add_argument("--prior-budget", type=float, default=300.0,
                   help="seconds of VQ-VAE prior training (default: %(default)s)")
    p.add_argument("--vqgan-budget", type=float, default=600.0,
                   help="seconds for both VQGAN stages together (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default: %(default)s; two threads on a busy 2-core "
                        "machine are slower than one)")
    p.add_argument("--only", choices=["vqvae", "vqgan", "fid-floor", "l1-plateau"], default=None,
                   help="one benchmark (default: vqvae and vqgan)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None,
                   help="where to write the results (default: benchmarks/results/vq.json, or vq-MODE.json for fid-floor and l1-plateau)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: a temp dir)")
    args = p.parse_args(argv)
    if args.json is None:
        name = f"vq-{args.only}.json" if args.only in ("fid-floor", "l1-plateau") else "vq.json"
        args.json = ROOT / "benchmarks" / "results" / name

    import torch
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="annogen-vq-"))
    chapters = [args.only] if args.only else ["vqvae", "vqgan"]
    results = {}
    for chapter in chapters:
        print(f"== {chapter}", flush=True)
        results[chapter] = run(chapter, args, out)

    print("\n| chapter | metric | value | target | ok |\n|---|---|---|---|---|")
    for chapter, res in results.items():
        for key, value in flat("", res):
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            target, ok = verdict(chapter, key, value)
            print(f"| {chapter} | {key} | {shown} | {target} | {ok} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None and load > (os.cpu_count() or 1) * 1.5:
        print(f"\n- machine was busy (1-min load average {load:.1f}): timings are noisy")
    record = {"budget_seconds": args.budget, "prior_budget_seconds": args.prior_budget,
              "vqgan_budget_seconds": args.vqgan_budget, "seed": args.seed, "threads": args.threads, "cpus": os.cpu_count(),
              "load_average": load, "python": platform.python_version(), "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
