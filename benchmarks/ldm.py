"""The latent-diffusion chapter's comparisons: the KL autoencoder against VQGAN at the same
downsampling factor (f = 4) and the same budget, and what the KL weight does to the scale
of the latents.

    python benchmarks/ldm.py                         # all runs, 300 steps each (the fair budget on a busy machine)
    python benchmarks/ldm.py --budget 180            # all runs, 180 s of wall clock each instead
    python benchmarks/ldm.py --kl-weights 1e-6 --no-vqgan --name kl-1e-6   # one run
    python benchmarks/ldm.py --merge                 # print the table of every results/ldm-*.json

Each run trains the tiny recipe of the chapter (VQGAN's stage-1 recipe) on 10,000 shapes
images and is scored on the same 512 held-out images: PSNR, attribute accuracy of the
reconstructions, toy rFID, and for the KL runs the latents' standard deviation, the
scaling factor 1/std, the mean KL per image and the median posterior standard deviation.
Results go to benchmarks/results/ldm[-NAME].json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results"

COLUMNS = ("model", "kl_weight", "steps", "train_seconds", "psnr", "recon_shape", "recon_colour",
           "recon_toy_fid", "latent_std", "scaling_factor", "kl", "posterior_std_median")


def show(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_table(rows: list[dict]) -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for r in rows:
        print("| " + " | ".join(show(r.get(c)) for c in COLUMNS) + " |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="steps per run (default: %(default)s)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds per run instead of a number of steps")
    p.add_argument("--kl-weights", type=float, nargs="*", default=[0.0, 1e-6, 1e-2])
    p.add_argument("--no-vqgan", action="store_true", help="skip the VQGAN run")
    p.add_argument("--name", default=None, help="suffix of the results file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--merge", action="store_true", help="only print the table of saved results")
    args = p.parse_args()
    if args.merge:
        rows = []
        for path in sorted(RESULTS.glob("ldm*.json")):
            data = json.loads(path.read_text())
            print(f"{path.name}: steps {data.get('steps')}, budget {data.get('budget_seconds')}, "
                  f"load average {show(data.get('load_average'))}")
            rows += data["rows"]
        print_table(rows)
        return 0
    from annogen.ldm.experiment import benchmark
    with tempfile.TemporaryDirectory() as tmp:
        result = benchmark(args.budget, Path(tmp), kl_weights=tuple(args.kl_weights),
                           threads=args.threads, vqgan=not args.no_vqgan,
                           steps=None if args.budget else args.steps)
    result["note"] = ("measured on a 2-core machine shared with other jobs (load average "
                      "above); seconds are pessimistic, steps are comparable")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"ldm{'-' + args.name if args.name else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result["rows"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
