"""VAR on CPU: sampling speed against a raster GPT, the KV cache, and the tiny default's quality.

    python benchmarks/var.py                   # about 9 minutes on 2 cores
    python benchmarks/var.py --quick           # about 3 minutes: short budget, fewer repeats

(i) Images per second and forward passes of VAR against the VQGAN chapter's raster GPT
at the same width and depth, both producing a 16x16 token grid (VAR: the paper's ten
scales, 680 tokens in 10 passes; GPT: 256 tokens in 256 passes). Untrained weights:
speed does not depend on them. Token generation only (VAR includes its f_hat updates,
which feed its next inputs); the decoder is the same for both and left out.
(ii) VAR with and without the KV cache. (iii) `annogen.var.experiment.benchmark`: the
tiny default trained for --budget seconds, then attribute accuracy and toy FID.
Targets (the course's speed goals): VAR >= 5x the GPT's images/s; the cache >= 2x (both at every
batch size). The quality part has no target; it is the tiny default's record.
Writes benchmarks/results/var.json.
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

TARGETS = {"var_speedup_vs_gpt": 5.0, "kv_cache_speedup": 2.0}


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def speed(args, B: int) -> dict:
    import torch
    from annogen.var import MultiScaleQuantizer, build_var
    from annogen.vqgan import build_gpt
    torch.manual_seed(0)
    pn = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    V = args.codes
    var = build_var(depth=args.depth, width=args.width, num_heads=args.heads, num_codes=V,
                    num_classes=21, dim=32, patch_nums=pn).eval()
    quant = MultiScaleQuantizer(V, 32, pn).eval()
    gpt = build_gpt(n_layer=args.depth, n_head=args.heads, n_embd=args.width, num_codes=V,
                    num_classes=21, block_size=256).eval()
    labels = torch.arange(B) % 21
    runs = {
        "gpt": lambda: gpt.generate(B, labels, top_p=0.96),
        "var": lambda: var.generate(quant, labels, cfg=0.0, top_p=0.96),
        "var_cfg": lambda: var.generate(quant, labels, cfg=1.5, top_p=0.96),
        "var_no_cache": lambda: var.generate(quant, labels, cfg=0.0, top_p=0.96, use_cache=False),
    }
    seconds = {}
    with torch.no_grad():
        for name, fn in runs.items():
            seconds[name] = timed(fn, args.repeats)
            print(f"  {name:<13} {B / seconds[name]:8.1f} images/s", flush=True)
    return {
        "width": args.width, "depth": args.depth, "heads": args.heads, "codes": V, "batch": B,
        "gpt_forward_passes": 256, "var_forward_passes": len(pn),
        **{f"{k}_images_per_s": B / v for k, v in seconds.items()},
        "var_speedup_vs_gpt": seconds["gpt"] / seconds["var"],
        "var_cfg_speedup_vs_gpt": seconds["gpt"] / seconds["var_cfg"],
        "kv_cache_speedup": seconds["var_no_cache"] / seconds["var"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=420.0,
                   help="seconds of training for (iii), both stages (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="budget 90 s, one timing repeat")
    p.add_argument("--skip-train", action="store_true", help="only (i) and (ii)")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--codes", type=int, default=256)
    p.add_argument("--batch", default="1,16",
                   help="batch sizes for (i) and (ii), comma-separated (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "var.json")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: a temp dir)")
    args = p.parse_args(argv)
    if args.quick:
        args.budget, args.repeats = min(args.budget, 90.0), 1

    import torch
    torch.set_num_threads(args.threads)
    results = {}
    for B in (int(b) for b in args.batch.split(",")):
        print(f"== (i), (ii): sampling speed, batch {B}", flush=True)
        results[f"speed_batch_{B}"] = speed(args, B)
    if not args.skip_train:
        print(f"== (iii): tiny default, {args.budget:.0f} s of training", flush=True)
        from annogen.var.experiment import benchmark
        out = args.out or Path(tempfile.mkdtemp(prefix="annogen-var-"))
        start = time.perf_counter()
        results["quality"] = benchmark(args.budget, out, seed=args.seed, threads=args.threads)
        results["quality"]["wall_seconds"] = round(time.perf_counter() - start, 1)

    print("\n| part | metric | value | target | ok |\n|---|---|---|---|---|")
    for part, res in results.items():
        for key, value in res.items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            target = TARGETS.get(key)
            ok = "" if target is None else ("yes" if value >= target else "**no**")
            print(f"| {part} | {key} | {shown} | {'' if target is None else f'>= {target}'} | {ok} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None and load > (os.cpu_count() or 1) * 1.5:
        print(f"\n- machine was busy (1-min load average {load:.1f}): timings are noisy")
    record = {"argv": sys.argv[1:] if argv is None else argv, "budget_seconds": args.budget,
              "threads": args.threads, "cpus": os.cpu_count(), "load_average": load,
              "python": platform.python_version(), "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
