"""Train the diffusion chapters' tiny defaults on CPU for a fixed budget; compare samplers.

    python benchmarks/diffusion.py                   # DDPM/DDIM, DiT with flow matching, cost
    python benchmarks/diffusion.py --only dit --budget 300
    python benchmarks/diffusion.py --only cost       # seconds per forward vs tokens (seconds)
    python benchmarks/diffusion.py --only dit-space --budget 600   # DiT on latents vs pixels
    python benchmarks/diffusion.py --quick           # a smoke run: tiny budgets, few samples

Parts:
- `ddpm`: `annogen.ddpm.experiment.benchmark(budget, out, seed, samplers, n_eval)`, the
  pixel-space U-Net trained with L_simple, sampled with DDPM (1000 steps) and DDIM (20, 50).
- `dit`: `annogen.dit.experiment.benchmark(...)`, the tiny DiT trained with flow matching,
  sampled with Euler (20, 50) and Flow-DPM-Solver (10, 20), guidance 2.
- `dit-space`: the same DiT benchmark on the latents of the ldm chapter's KL autoencoder
  (`--ae-run`, default runs/ldm/default) and on pixels, equal training budgets, 20 steps
  of Flow-DPM-Solver, toy FID on --n-eval samples (1024), attribute accuracy, s / image.
  Not in the default set of parts (it needs a trained autoencoder).
- `cost`: `annogen.dit.experiment.forward_cost(tokens)`, seconds per forward pass of a
  stack of DiT blocks at 256, 1024 and 4096 tokens (softmax attention).

Each sampler row has the toy FID (feature net of annogen.metrics, against as many real
images), the attribute accuracy of the samples (shape and colour of the first shape
against the class; for unconditional models whatever the chapter reports) and seconds per
image. Target: Flow-DPM-Solver at 20 steps reaches the toy FID of Euler at 50 steps (we
count "reaches" as no more than 5% above; with 256 samples per row the run-to-run noise is
as large as that margin, hence 1024 by default). Results go to
benchmarks/results/diffusion.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

DDPM_SAMPLERS = (("ddpm", 1000), ("ddim", 20), ("ddim", 50))
DIT_SAMPLERS = (("euler", 20), ("euler", 50), ("dpm", 10), ("dpm", 20))
TOKENS = (256, 1024, 4096)


def run_part(part: str, args, out: Path) -> dict:
    start = time.perf_counter()
    if part == "ddpm":
        from annogen.ddpm.experiment import benchmark
        result = benchmark(args.budget, out / "ddpm", seed=args.seed, samplers=DDPM_SAMPLERS,
                           n_eval=args.ddpm_n_eval)
    elif part == "dit":
        from annogen.dit.experiment import benchmark
        result = benchmark(args.budget, out / "dit", seed=args.seed, samplers=DIT_SAMPLERS,
                           n_eval=args.n_eval)
    elif part == "dit-space":
        # the DiT on the ldm autoencoder's latents and on pixels, the same training budget
        # each (the autoencoder's own training time is reported beside it), one sampler
        from annogen.dit.experiment import benchmark
        result = {"rows": []}
        for space in ("latent", "pixel"):
            r = benchmark(args.budget, out / f"dit-{space}", seed=args.seed,
                          samplers=(("dpm", 20),), n_eval=args.n_eval, space=space,
                          ae_run=args.ae_run)
            result["rows"] += [{**row, "space": space, "model": r["model"]} for row in r["rows"]]
    else:
        from annogen.dit.experiment import forward_cost
        result = {"rows": forward_cost(tokens=args.tokens, threads=args.threads)}
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    return result


def show(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def target_verdict(dit: dict) -> str | None:
    rows = {(r["sampler"], r["steps"]): r for r in dit.get("rows", [])}
    dpm, euler = rows.get(("dpm", 20)), rows.get(("euler", 50))
    if not dpm or not euler or dpm.get("toy_fid") is None or euler.get("toy_fid") is None:
        return None
    ok = dpm["toy_fid"] <= 1.05 * euler["toy_fid"]
    return (f"Flow-DPM-Solver 20 steps toy FID {dpm['toy_fid']:.4g} vs Euler 50 steps "
            f"{euler['toy_fid']:.4g}: {'reached' if ok else '**not reached**'}")


def print_tables(results: dict) -> None:
    samplers = [(part, r) for part in ("ddpm", "dit") if part in results
                for r in results[part].get("rows", [])]
    if samplers:
        # toy FID grows as n shrinks, so rows are comparable only at equal n: the DDPM
        # chapter scores its 1000-step row on fewer samples and adds every row's score
        # at the smallest n of the chapter ("common n").
        print("\n| chapter | sampler | steps | n | toy FID | toy FID at common n | "
              "attribute accuracy | s / image |")
        print("|---|---|---|---|---|---|---|---|")
        for part, r in samplers:
            common = (f"{show(r.get('toy_fid_common'))} (n={r['common_n']})"
                      if r.get("toy_fid_common") is not None else "-")
            print(f"| {part} | {r['sampler']} | {r['steps']} | {show(r.get('n'))} | "
                  f"{show(r.get('toy_fid'))} | {common} | "
                  f"{show(r.get('attribute_accuracy'))} | {show(r.get('sec_per_image'))} |")
    for part in ("ddpm", "dit"):
        if part in results and "model" in results[part]:
            print(f"\n{part} model: " + ", ".join(f"{k} {show(v)}"
                                                 for k, v in results[part]["model"].items()))
    if "cost" in results and "rows" in results["cost"]:
        print("\n| tokens | width | depth | s / forward | attention GFLOP | linear GFLOP |")
        print("|---|---|---|---|---|---|")
        for r in results["cost"]["rows"]:
            print(f"| {r['tokens']} | {r['width']} | {r['depth']} | {r['sec_per_forward']:.4g} | "
                  f"{r['attention_gflop']:.3g} | {r['linear_gflop']:.3g} |")
    for part, res in results.items():
        if "error" in res:
            print(f"\n{part}: FAILED: {res['error']}")
    if "dit-space" in results and "rows" in results["dit-space"]:
        print("\n| DiT on | tokens | training steps | training s | autoencoder s | toy FID "
              "(n) | attribute accuracy | valid | s / image |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in results["dit-space"]["rows"]:
            m = r["model"]
            print(f"| {r['space']} | {m['tokens']} | {m['steps']} | {show(m['train_seconds'])} | "
                  f"{show(m.get('ae_train_seconds'))} | {show(r.get('toy_fid'))} ({m['n_eval']}) | "
                  f"{show(r.get('attribute_accuracy'))} | {show(r.get('valid'))} | "
                  f"{show(r.get('sec_per_image'))} |")
    if "dit" in results:
        verdict = target_verdict(results["dit"])
        if verdict:
            print(f"\ntarget: {verdict}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=300.0,
                   help="seconds of training per chapter (default: %(default)s)")
    # 1024 samples: at 256 the toy FID of one sampler moved by tens between runs, as
    # much as the differences between samplers that the target is about.
    p.add_argument("--n-eval", type=int, default=1024,
                   help="samples per DiT sampler (default: %(default)s)")
    p.add_argument("--ddpm-n-eval", type=int, default=256, help="samples per DDPM/DDIM sampler")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 20 s budgets, 32 samples, tokens 64/256")
    p.add_argument("--only", choices=["ddpm", "dit", "dit-space", "cost"], default=None)
    p.add_argument("--ae-run", type=Path, default=ROOT / "runs" / "ldm" / "default",
                   help="KL autoencoder run folder for --only dit-space "
                        "(train it first: python -m annogen.ldm)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default: %(default)s; two threads on a busy 2-core "
                        "machine are slower than one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "diffusion.json")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: a temp dir)")
    args = p.parse_args(argv)
    args.tokens = TOKENS
    if args.quick:
        args.budget, args.n_eval, args.ddpm_n_eval, args.tokens = 20.0, 32, 32, (64, 256)

    import torch
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="annogen-diffusion-"))
    parts = [args.only] if args.only else ["ddpm", "dit", "cost"]
    results = {}
    for part in parts:
        print(f"== {part}", flush=True)
        try:
            results[part] = run_part(part, args, out)
        except Exception as e:  # one failing chapter must not hide the others' numbers
            traceback.print_exc()
            results[part] = {"error": f"{type(e).__name__}: {e}"}

    print_tables(results)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None and load > (os.cpu_count() or 1) * 1.5:
        print(f"\n- machine was busy (1-min load average {load:.1f}): timings are noisy")
    record = {"budget_seconds": args.budget, "n_eval": args.n_eval,
              "ddpm_n_eval": args.ddpm_n_eval, "quick": args.quick, "seed": args.seed,
              "threads": args.threads, "cpus": os.cpu_count(), "load_average": load,
              "python": platform.python_version(), "results": results}
    if "dit" in results:
        record["target"] = target_verdict(results["dit"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    print(f"wrote {args.json}")
    return 0 if not any("error" in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
