"""Train the VQ-VAE and VQGAN chapter defaults on CPU for a fixed budget; report quality.

    python benchmarks/vq.py                      # about 21 minutes
    python benchmarks/vq.py --budget 60 --prior-budget 60 --only vqvae

Each chapter's `experiment.benchmark(budget_seconds, out, seed)` trains its tiny default on
32 px shapes for a wall-clock budget and returns its metrics; this script prints them as
a table against the targets of the issue and writes JSON (default
benchmarks/results/vq.json). Budgets: `--budget` is the VQ-VAE autoencoder's (the target
says "within 5 minutes"), `--prior-budget` its PixelCNN prior's, and `--vqgan-budget` the
total for both VQGAN stages (40% autoencoder, 60% transformer).

Targets (2 CPU cores): VQ-VAE reconstruction PSNR >= 26 dB within 5 minutes with codebook
usage >= 50%; VQGAN prior samples with attribute accuracy >= 60%.
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


def run(chapter: str, args, out: Path) -> dict:
    start = time.perf_counter()
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
    p.add_argument("--only", choices=["vqvae", "vqgan"], default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "vq.json")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: a temp dir)")
    args = p.parse_args(argv)

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
