"""Laplacian diffusion against single-resolution and f-DM-style diffusion, and the schedule ablation.

    python benchmarks/laplacian.py                      # train all four schedules, then compare
    python benchmarks/laplacian.py --reuse runs         # reuse runs/laplacian/<schedule> where trained
    python benchmarks/laplacian.py --quick              # a smoke run: a few steps, few samples

Every model is the same tiny U-Net (the DDPM chapter's), trained with the same recipe for
the same number of steps (`annogen.laplacian.experiment.RECIPE`, batch 16 here), on
32x32 shapes; only the forward process differs (`annogen.laplacian.process.SCHEDULES`):
`edify` (ours, concurrent fades, switches at 0.5 and 0.75), `edify-early` (the
ablation, switches at 0.25 and 0.5), `fdm` (f-DM-style sequential stages, same switch
times) and `single` (one resolution). Each model samples `--n` class-cycling images with
8, 16 and 32 deterministic steps; `single` also with the step counts whose cost equals
the Laplacian model's at 8, 16 and 32 steps. Columns: network calls, cost in full-size
network evaluations per image (network evaluations x pixels / 1024), milliseconds per
image, toy FID against `--n` held-out images, attribute accuracy.

With `--extra-seeds` (default 1 2) the key rows are sampled again with other seeds,
each against a fresh held-out set (data seed 10 + seed): toy FID at 256 samples is noisy.

Targets: at equal network-evaluations x pixels the Laplacian model at least
matches the single-resolution toy FID, and reaches single-resolution's best toy FID at
a measured fraction of its compute; the chosen schedule beats the ablated one. The
machine is shared (see `load_average` in the JSON); wall-clock numbers are pessimistic,
the pixel counts are exact. Results: benchmarks/results/laplacian.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

SCHEDULE_NAMES = ("edify", "edify-early", "fdm", "single")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=800, help="training steps per model (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--sampling-steps", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--n", type=int, default=256, help="samples per row for toy FID (default: %(default)s)")
    p.add_argument("--reuse", metavar="OUT", default=None,
                   help="reuse OUT/laplacian/<schedule> runs that hold a checkpoint instead of training")
    p.add_argument("--out", default="benchmarks/results", help="where laplacian.json goes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extra-seeds", type=int, nargs="*", default=[1, 2],
                   help="sample the key rows again with these seeds, against fresh held-out sets")
    p.add_argument("--quick", action="store_true", help="a smoke run: 20 steps, 32 samples")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.n, args.sampling_steps = 20, 32, [4, 8]

    import torch
    torch.set_num_threads(args.threads)
    from annogen.data import make_dataset
    from annogen.laplacian.denoiser import cost_per_image
    from annogen.laplacian.experiment import RECIPE, benchmark, load_run, train_schedule
    from annogen.laplacian.process import LaplacianProcess
    from annogen.train import TrainConfig

    runs_root = Path(args.reuse) if args.reuse else Path(args.out) / "laplacian-runs"
    runs, train_seconds = {}, {}
    data = None
    for name in SCHEDULE_NAMES:
        run_dir = runs_root / "laplacian" / name
        if args.reuse and (run_dir / "checkpoint.pt").exists():
            runs[name] = run_dir
            continue
        if data is None:
            data = make_dataset("shapes", 32, n=50_000, seed=args.seed)
        cfg = TrainConfig(steps=args.steps, out=str(runs_root), run=name, seed=args.seed, device="cpu",
                          log_every=50, ckpt_every=10 ** 9, sample_every=10 ** 9,
                          **{**RECIPE, "batch_size": args.batch_size})
        start = time.perf_counter()
        runs[name] = train_schedule(name, data, cfg)
        train_seconds[name] = time.perf_counter() - start

    lap = LaplacianProcess("edify")
    matched = sorted({max(1, round(cost_per_image(lap, s) / 1024)) for s in args.sampling_steps})
    single_steps = sorted(set(args.sampling_steps) | set(matched))
    load_before = os.getloadavg()[0]
    result = benchmark({k: v for k, v in runs.items() if k != "single"}, Path(args.out) / "laplacian-samples",
                       steps=tuple(args.sampling_steps), n=args.n, seed=args.seed, train_seconds=train_seconds)
    single = benchmark({"single": runs["single"]}, Path(args.out) / "laplacian-samples",
                       steps=tuple(single_steps), n=args.n, seed=args.seed, train_seconds=train_seconds)
    result["models"].update(single["models"])
    result["rows"] += single["rows"]
    result["load_average_before"], result["load_average_after"] = load_before, os.getloadavg()[0]
    result["train_steps"], result["batch_size"] = args.steps, args.batch_size

    print(f"{'model':12s} {'steps':>5s} {'calls':>5s} {'cost':>6s} {'ms/img':>7s} {'toy FID':>8s} {'attr acc':>8s}")
    for r in sorted(result["rows"], key=lambda r: (r["model"], r["steps"])):
        print(f"{r['model']:12s} {r['steps']:5d} {r['nfe']:5d} {r['full_size_evaluations']:6.1f} "
              f"{r['sec_per_image'] * 1000:7.1f} {r.get('toy_fid', float('nan')):8.1f} "
              f"{r.get('attribute_accuracy', float('nan')):8.3f}")
    print(f"real vs real toy FID at n = {args.n}: {result['toy_fid_real']:.1f}")

    # the targets
    def rows(model):
        return sorted((r for r in result["rows"] if r["model"] == model), key=lambda r: r["pixels_per_image"])

    checks = []
    for r in rows("edify"):
        same = min(rows("single"), key=lambda q: abs(q["pixels_per_image"] - r["pixels_per_image"]))
        checks.append({"check": f"equal cost ({r['full_size_evaluations']:.1f} vs {same['full_size_evaluations']:.1f})",
                       "laplacian_fid": r["toy_fid"], "single_fid": same["toy_fid"],
                       "pass": r["toy_fid"] <= same["toy_fid"]})
    best_single = min(rows("single"), key=lambda q: q["toy_fid"])
    reach = [r for r in rows("edify") if r["toy_fid"] <= best_single["toy_fid"]]
    checks.append({"check": "reaches the best single-resolution FID",
                   "single_best_fid": best_single["toy_fid"], "single_cost": best_single["full_size_evaluations"],
                   "laplacian_cost": reach[0]["full_size_evaluations"] if reach else None,
                   "fraction": reach[0]["pixels_per_image"] / best_single["pixels_per_image"] if reach else None,
                   "pass": bool(reach)})
    for s in args.sampling_steps:
        a = next(r for r in rows("edify") if r["steps"] == s)
        b = next(r for r in rows("edify-early") if r["steps"] == s)
        checks.append({"check": f"chosen schedule vs early switches at {s} steps", "edify_fid": a["toy_fid"],
                       "early_fid": b["toy_fid"], "pass": a["toy_fid"] <= b["toy_fid"]})
    result["checks"] = checks

    # the key rows again with other sampling seeds, each against its own held-out set
    from annogen.laplacian.experiment import evaluate
    from annogen.metrics import load_feature_net
    key = [("edify-early", max(args.sampling_steps) // 2), ("single", matched[-1]),
           ("single", max(single_steps)), ("edify", max(args.sampling_steps)), ("fdm", max(args.sampling_steps))]
    seed_rows, feature_net = [], load_feature_net("shapes", 32)
    for seed in args.extra_seeds:
        real = torch.stack([it["image"] for it in make_dataset("shapes", 32, n=args.n, seed=10 + seed)])
        for name, s in key:
            den, _ = load_run(runs[name])
            row, _ = evaluate(den, s, args.n, real, feature_net, seed=seed)
            row.update(model=name, seed=seed)
            seed_rows.append(row)
            print(f"seed {seed}: {name:12s} {s:3d} steps  toy FID {row['toy_fid']:7.1f}  "
                  f"attr acc {row['attribute_accuracy']:.3f}")
    result["seed_rows"] = seed_rows
    for c in checks:
        print(("PASS " if c["pass"] else "FAIL ") + json.dumps(c))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "laplacian.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf8")
    print(f"wrote {out / 'laplacian.json'} (load average {load_before:.1f} before sampling; shared machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
