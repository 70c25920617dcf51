"""R3GAN: the roadmap's configs at equal budget on shapes, and the 2-D mode-coverage toy.

    python benchmarks/r3gan.py                         # everything (long on a busy CPU)
    python benchmarks/r3gan.py --only gan --runs E --steps 600
    python benchmarks/r3gan.py --only toy --seeds 0 1 2 3 4
    python benchmarks/r3gan.py --table                 # merge the parts written so far
    python benchmarks/r3gan.py --quick                 # a smoke run: tiny budgets

Parts:
- `gan`: `annogen.r3gan.experiment.benchmark`: the tiny networks on 32 px shapes, each
  named run for the same number of steps (batch 32, so the same images shown, the
  paper's protocol for its roadmap): `B` (plain blocks, non-saturating loss, R1), `E`
  (R3GAN: RpGAN, R1 + R2, ResNeXt blocks) and `E-noR2`. Each row: toy FID (feature net
  of annogen.metrics, against as many real images; `toy_fid_floor` is two real draws),
  attribute accuracy, valid, images per second of sampling (one forward pass), training
  seconds. Targets: E has a lower toy FID than B; E's attribute accuracy >= 0.6 within
  10 minutes of training on 2 cores (the row's `train_seconds` says how long it took).
- `toy`: `annogen.r3gan.toy.train_toy` over several seeds: modes covered (of 25) and the
  fraction of high-quality samples for NS + R1, RpGAN + R1 and RpGAN + R1 + R2, with mean
  and spread. Target: R2's effect shows across seeds.

Each part writes benchmarks/results/r3gan/<part>.json (runs of the gan part one file
each, so they can run in parallel); `--table` merges them into benchmarks/results/r3gan.json
and prints the tables. Torch runs on one thread (`--threads`); the load of the machine is
recorded with every part (a shared machine makes every time pessimistic).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

RESULTS = ROOT / "benchmarks" / "results"
PARTS = RESULTS / "r3gan"
RUNS = {"B": {"config": "B"}, "E": {"config": "E"}, "E-noR2": {"config": "E", "r2": False}}
TOY = {"ns+R1": {"loss": "ns", "r2": False}, "rpgan+R1": {"loss": "rpgan", "r2": False},
       "rpgan+R1+R2": {"loss": "rpgan", "r2": True}}


def load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def write(name: str, result: dict) -> Path:
    PARTS.mkdir(parents=True, exist_ok=True)
    path = PARTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def run_gan(args) -> None:
    import tempfile
    from annogen.r3gan.experiment import benchmark
    for name in args.runs:
        start_load = load()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(args.out) if args.out else Path(tmp)
            result = benchmark({name: RUNS[name]}, args.steps, out, seed=args.seed,
                               n_eval=args.n_eval, threads=args.threads)
        result.update(load_start=start_load, load_end=load(), cpus=os.cpu_count())
        print(f"wrote {write('gan-' + name, result)}")


def run_toy(args) -> None:
    import torch
    from annogen.r3gan.toy import ToyConfig, train_toy
    torch.set_num_threads(args.threads)
    rows = []
    start_load = load()
    for name, kw in TOY.items():
        for seed in args.seeds:
            res = train_toy(ToyConfig(seed=seed, steps=args.toy_steps, **kw))
            rows.append({"run": name, "seed": seed, "modes_covered": res.modes_covered,
                         "high_quality": res.high_quality, "final_logit_gap": res.logit_gap[-1],
                         "logit_gap_abs_mean_last_half": statistics.fmean(
                             abs(g) for g in res.logit_gap[len(res.logit_gap) // 2:]),
                         "seconds": res.seconds})
            print(f"{name:12s} seed {seed}: {res.modes_covered}/25 modes, "
                  f"{res.high_quality:.2f} high quality", flush=True)
    print(f"wrote {write('toy', {'rows': rows, 'steps': args.toy_steps, 'load_start': start_load, 'load_end': load()})}")


def table() -> dict:
    merged = {"gan": [], "toy": None}
    for path in sorted(PARTS.glob("gan-*.json")):
        part = json.loads(path.read_text())
        for row in part["rows"]:
            merged["gan"].append({**row, "toy_fid_floor": part["toy_fid_floor"],
                                  "load": [part.get("load_start"), part.get("load_end")]})
    if (PARTS / "toy.json").exists():
        merged["toy"] = json.loads((PARTS / "toy.json").read_text())
    if merged["gan"]:
        print("| run | steps | train s | toy FID (floor) | attribute acc. | valid | sample img/s | load |")
        print("|---|---|---|---|---|---|---|---|")
        for r in merged["gan"]:
            print(f"| {r['run']} | {r['steps']} | {r['train_seconds']:.0f} | {r.get('toy_fid', float('nan')):.0f} "
                  f"({r['toy_fid_floor']:.0f}) | {r.get('attribute_accuracy', float('nan')):.3f} | "
                  f"{r.get('valid', float('nan')):.2f} | {r['sample_images_per_s']:.0f} | {r['load']} |")
    if merged["toy"]:
        rows = merged["toy"]["rows"]
        print("\n| toy run | seeds | modes covered (mean ± sd, min-max) | high quality (mean ± sd) |")
        print("|---|---|---|---|")
        for name in TOY:
            m = [r["modes_covered"] for r in rows if r["run"] == name]
            q = [r["high_quality"] for r in rows if r["run"] == name]
            if m:
                sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
                print(f"| {name} | {len(m)} | {statistics.fmean(m):.1f} ± {sd(m):.1f} ({min(m)}-{max(m)}) "
                      f"| {statistics.fmean(q):.2f} ± {sd(q):.2f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "r3gan.json").write_text(json.dumps(merged, indent=2) + "\n")
    return merged


def gap_figure(runs_root: Path, path: Path) -> None:
    """D's logit gap during training, one curve per run folder under RUNS_ROOT/r3gan/."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for run in sorted((Path(runs_root) / "r3gan").iterdir()):
        log = run / "metrics.jsonl"
        if not log.exists():
            continue
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        ax.plot([r["step"] for r in rows], [r["logit_gap"] for r in rows], label=run.name, lw=1)
    ax.set(xlabel="step", ylabel="mean D(x) - mean D(G(z))", title="logit gap on shapes")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("gan", "toy"), default=None)
    p.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    p.add_argument("--steps", type=int, default=1500, help="training steps of each gan run")
    p.add_argument("--n-eval", type=int, default=504)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--toy-steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="keep the gan runs here (default: a temp dir)")
    p.add_argument("--table", action="store_true", help="only merge and print the parts")
    p.add_argument("--gap-figure", metavar="PNG",
                   help="with --out: plot the logit gap of every run under OUT/r3gan/ and exit")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 steps, 2 seeds of 50 toy steps")
    args = p.parse_args(argv)
    if args.gap_figure:
        gap_figure(Path(args.out or "runs"), Path(args.gap_figure))
        return 0
    if args.quick:
        global PARTS
        PARTS = RESULTS / "r3gan-quick"
        args.steps, args.n_eval, args.seeds, args.toy_steps = 4, 32, [0, 1], 50
    if not args.table:
        if args.only in (None, "gan"):
            run_gan(args)
        if args.only in (None, "toy"):
            run_toy(args)
    table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
