"""Sana chapter measurements: attention cost against tokens, tokens per image, residual vs
plain autoencoding, and a toy GenEval of the text-to-image model against the
class-conditional DiT at equal training time.

    python benchmarks/sana.py                      # every part
    python benchmarks/sana.py --only cost          # softmax vs linear attention, 256..16384 tokens
    python benchmarks/sana.py --only tokens        # DC-AE f32 patch 1 vs KL f8 patch 2
    python benchmarks/sana.py --only ae            # residual vs plain DC-AE (runs from the CLI)
    python benchmarks/sana.py --only geneval --budget 600
    python benchmarks/sana.py --quick              # a smoke run: small sizes, tiny budgets

Parts:
- `cost`: seconds per call of softmax attention (PyTorch's SDPA) and of ReLU linear
  attention, alone (heads of 32) and as a whole block (DiT's block vs Sana's block, same
  width), at 256 to 16,384 tokens, batch 1, one thread; the exponent b of a least-squares
  fit time ~ a N^b over the points from 1024 tokens on, and from 4096 on (below a few
  MB per tensor the CPU allocator reuses freed memory, above it every call maps and
  faults in fresh pages, a cost that is linear in N but makes the step from 1024 to 4096
  tokens look steeper than the arithmetic), and the crossover, the first token count at which linear beats softmax. Target: linear
  attention faster from some N on, b <= 1.15; softmax b near 2.
- `tokens`: tokens per image for Sana's DC-AE f32 with patch 1 and Stable Diffusion's
  f8 autoencoder with patch 2 (the DiT setup) at 256 to 2048 pixels, from the presets'
  actual latent shapes; one denoising step's time of the same Sana block stack at each
  token count; and, at 32 px where we have trained models, the reconstruction PSNR and
  toy-GenEval ceiling of our DC-AE (f8c16, patch 1: 16 tokens) against the latent-diffusion
  chapter's KL autoencoder (`--kl-run`, f4c4, patch 2: 16 tokens) when that run exists.
- `ae`: reconstruction PSNR of the residual DC-AE and of the plain autoencoder of the same
  shape, trained for the same number of steps by `python -m annogen.sana --stage ae`
  (`--run main` and `--plain --run plain`), on 512 held-out images.
- `geneval` (`--models sana,dit`): the linear DiT trained on the `main` run's DC-AE and text encoder for
  `--budget` seconds, and the class-conditional pixel DiT of the DiT chapter for the same
  seconds; held-out captions generated and read back (`annogen.data.read_shapes`):
  every-shape-right fraction, per-attribute accuracy, first-shape attribute accuracy
  (the DiT's metric), with the real-image and reconstruction ceilings; Flow-DPM-Solver
  20 steps against Euler 20 and 50; and sampling at twice the trained latent size
  (high-frequency energy against the enlarged 1x sample and real 64 px images). Target: first-shape attribute accuracy at least the
  DiT's.

The machine these numbers come from is shared: timings are pessimistic and noisy, and
the JSON records the load average. Results go to benchmarks/results/sana.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TOKENS = (256, 1024, 4096, 8192, 16384)


# The best of several calls: on a shared machine the minimum is the run least disturbed
# by other processes. Cheap calls are repeated until they have used about a second.
def timed(fn, repeats: int, min_total: float = 1.0, max_repeats: int = 50) -> float:
    start = time.perf_counter()
    fn()  # warm-up
    first = time.perf_counter() - start
    n = max(repeats, min(max_repeats, int(min_total / max(first, 1e-6))))
    best = math.inf
    for _ in range(n):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def fit_exponent(tokens, seconds) -> float:
    xs = [math.log(n) for n in tokens]
    ys = [math.log(s) for s in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


# ---- attention cost -------------------------------------------------------------------
@torch.no_grad()
def part_cost(args) -> dict:
    from annogen.dit.model import DiTBlock
    from annogen.sana.model import SanaBlock, linear_attention
    torch.manual_seed(0)
    C, d = args.width, 32
    heads = C // d
    dit = DiTBlock(C, heads).eval()
    torch.nn.init.normal_(dit.adaLN_modulation[-1].weight, std=0.02)
    sana = SanaBlock(C, heads).eval()
    c, t0 = torch.randn(1, C), torch.randn(1, 6 * C)
    y = torch.randn(1, 16, C)  # 16 text tokens for the cross-attention
    rows = []
    for N in args.tokens:
        q, k, v = torch.randn(3, 1, heads, N, d).unbind(0)
        x = torch.randn(1, N, C)
        H = 2 ** int(math.log2(math.sqrt(N)))  # a H x W grid, W = N / H (8192: 64 x 128)
        reps = 1 if N >= 8192 else args.repeats
        row = {"tokens": N, "width": C, "heads": heads, "head_dim": d}
        row["softmax_attention_s"] = timed(lambda: F.scaled_dot_product_attention(q, k, v), reps)
        row["linear_attention_s"] = timed(lambda: linear_attention(q, k, v), reps)
        row["dit_block_s"] = timed(lambda: dit(x, c), reps)
        row["sana_block_s"] = timed(lambda: sana(x, y, t0, None, (H, N // H)), reps)
        rows.append(row)
        print(f"  {N:6d} tokens: softmax {row['softmax_attention_s']:.4f} s, linear "
              f"{row['linear_attention_s']:.4f} s, DiT block {row['dit_block_s']:.4f} s, "
              f"Sana block {row['sana_block_s']:.4f} s", flush=True)
    out = {"rows": rows, "exponents": {}, "exponents_from_4096": {}, "crossover_tokens": {}}
    for name, lowest in (("exponents", 1024), ("exponents_from_4096", 4096)):
        fit = [r for r in rows if r["tokens"] >= lowest]
        fit = fit if len(fit) >= 2 else rows
        for key in ("softmax_attention_s", "linear_attention_s", "dit_block_s", "sana_block_s"):
            out[name][key] = fit_exponent([r["tokens"] for r in fit], [r[key] for r in fit])
    for name, (lin, soft) in {"attention": ("linear_attention_s", "softmax_attention_s"),
                              "block": ("sana_block_s", "dit_block_s")}.items():
        out["crossover_tokens"][name] = next((r["tokens"] for r in rows if r[lin] < r[soft]), None)
    return out


# ---- tokens per image -----------------------------------------------------------------
@torch.no_grad()
def part_tokens(args) -> dict:
    from annogen.ldm.model import KLAutoencoder
    from annogen.sana.dcae import DCAE
    from annogen.sana.model import SanaBlock
    rows = []
    with torch.device("meta"):
        dcae, kl = DCAE.from_preset("f32c32"), KLAutoencoder.from_preset("sd-f8c4")
    for side in (256, 512, 1024, 2048):
        with torch.device("meta"):
            x = torch.empty(1, 3, side, side)
            z_dc, z_kl = dcae.encode(x), kl.encode(x).mean
        rows.append({"image": side, "dcae_f32_latent": list(z_dc.shape[1:]),
                     "dcae_f32_p1_tokens": z_dc.shape[-1] * z_dc.shape[-2],
                     "kl_f8_latent": list(z_kl.shape[1:]),
                     "kl_f8_p2_tokens": (z_kl.shape[-1] // 2) * (z_kl.shape[-2] // 2)})
    # one denoising step of the same block stack at both token counts
    torch.manual_seed(0)
    C = args.width
    blocks = [SanaBlock(C, C // 32).eval() for _ in range(2)]
    t0, y = torch.randn(1, 6 * C), torch.randn(1, 16, C)
    for row in rows:
        if row["image"] > args.max_step_image:
            continue
        for key in ("dcae_f32_p1_tokens", "kl_f8_p2_tokens"):
            N = row[key]
            side = int(round(math.sqrt(N)))
            x = torch.randn(1, N, C)

            def step():
                h = x
                for b in blocks:
                    h = b(h, y, t0, None, (side, side))
            row[key.replace("_tokens", "_step_s")] = timed(step, args.repeats)
        print(f"  {row['image']} px: DC-AE f32 p1 {row['dcae_f32_p1_tokens']} tokens "
              f"({row.get('dcae_f32_p1_step_s', float('nan')):.4f} s), KL f8 p2 "
              f"{row['kl_f8_p2_tokens']} tokens ({row.get('kl_f8_p2_step_s', float('nan')):.4f} s)",
              flush=True)
    out = {"rows": rows, "step_model": f"2 Sana blocks of width {C}, batch 1"}
    out["trained_32px"] = trained_autoencoders(args)
    return out


@torch.no_grad()
def trained_autoencoders(args) -> dict:
    from annogen.data import Shapes
    from annogen.metrics import attribute_accuracy, psnr
    from annogen.sana.experiment import load_module
    held = Shapes(n=args.n_ae, size=32, seed=1)
    real = torch.stack([held[i]["image"] for i in range(len(held))])
    attributes = [held.attributes(i) for i in range(len(held))]
    out = {}
    dc_dir = Path(args.out_runs) / "sana" / args.run / "ae"
    if (dc_dir / "checkpoint.pt").exists():
        ae = load_module(dc_dir, "ae")
        rec = ae(real).clamp(-1, 1)
        z = ae.encode(real[:1])
        out["dcae"] = {"latent": list(z.shape[1:]), "patch": 1, "tokens": z.shape[-1] * z.shape[-2],
                       "psnr": float(psnr(rec, real).mean()),
                       "geneval_all": attribute_accuracy(rec, attributes)["all"]}
    kl_path = Path(args.kl_run) / "checkpoint.pt"
    if kl_path.exists():
        from annogen.ldm.model import KLAutoencoder, KLConfig
        from annogen.train import load_checkpoint
        ckpt = load_checkpoint(kl_path)
        kl = KLAutoencoder(KLConfig(**ckpt["extra"]["kl_config"]))
        kl.load_state_dict(ckpt.get("ema", {}).get("ae") or ckpt["modules"]["ae"])
        kl.eval()
        rec = kl.decode(kl.encode(real).mode()).clamp(-1, 1)
        z = kl.encode(real[:1]).mode()
        out["kl"] = {"run": str(args.kl_run), "steps": ckpt["step"], "latent": list(z.shape[1:]),
                     "patch": 2, "tokens": (z.shape[-1] // 2) * (z.shape[-2] // 2),
                     "psnr": float(psnr(rec, real).mean()),
                     "geneval_all": attribute_accuracy(rec, attributes)["all"]}
    return out


# ---- residual vs plain autoencoder ------------------------------------------------------
@torch.no_grad()
def part_ae(args) -> dict:
    from annogen.data import Shapes
    from annogen.metrics import attribute_accuracy, psnr
    from annogen.sana.experiment import load_module
    from annogen.train import load_checkpoint, read_metrics
    held = Shapes(n=args.n_ae, size=32, seed=1)
    real = torch.stack([held[i]["image"] for i in range(len(held))])
    attributes = [held.attributes(i) for i in range(len(held))]
    out = {}
    for name, run in (("residual", args.run), ("plain", args.plain_run)):
        run_dir = Path(args.out_runs) / "sana" / run / "ae"
        if not (run_dir / "checkpoint.pt").exists():
            out[name] = None
            continue
        ae = load_module(run_dir, "ae")
        rec = ae(real).clamp(-1, 1)
        log = read_metrics(run_dir / "metrics.jsonl")
        out[name] = {"run": str(run_dir), "steps": load_checkpoint(run_dir / "checkpoint.pt")["step"],
                     "shortcut": ae.config.shortcut, "psnr": float(psnr(rec, real).mean()),
                     "geneval_all": attribute_accuracy(rec, attributes)["all"],
                     "psnr_curve": [(r["step"], round(r["psnr"], 2)) for r in log[::5]]}
        print(f"  {name}: PSNR {out[name]['psnr']:.2f} dB, every shape right "
              f"{out[name]['geneval_all']:.3f} ({out[name]['steps']} steps)", flush=True)
    return out


# ---- toy GenEval ----------------------------------------------------------------------
def part_geneval(args) -> dict:
    out = {}
    if "sana" in args.models:
        out.update(geneval_sana(args))
    if "dit" in args.models:
        out["dit"] = geneval_dit(args)
    return out


def geneval_sana(args) -> dict:
    from annogen.data import make_dataset
    from annogen.sana.experiment import (DEFAULTS, LatentCaptions, SanaExperiment, ceilings,
                                         geneval, load_module)
    from annogen.train import TrainConfig, train
    root = Path(args.out_runs) / "sana" / args.run
    ae, text = load_module(root / "ae", "ae"), load_module(root / "text", "text")
    dataset = make_dataset("shapes", 32, n=args.data_size, seed=0)
    big = 10 ** 9
    start = time.perf_counter()
    latents = LatentCaptions(dataset, ae, text)
    encode_seconds = time.perf_counter() - start
    exp = SanaExperiment(ae, text)
    cfg = TrainConfig(**{**DEFAULTS["sana"], "steps": big, "ckpt_every": big, "sample_every": big,
                         "device": "cpu", "out": str(Path(args.out_runs)), "run": f"{args.run}/dit",
                         "seed": args.seed})
    exp.deadline = time.monotonic() + args.budget
    start = time.perf_counter()
    run_dir = train(exp, latents, cfg)
    sana_seconds = time.perf_counter() - start
    sana_steps = cfg.steps
    model = load_module(run_dir, "sana")
    rows = []
    for sampler, steps in args.samplers:
        row, _ = geneval(exp, n=args.n_eval, sampler=sampler, steps=steps, model=model,
                         seed=args.seed)
        rows.append(row)
        print(f"  Sana {sampler} {steps}: all {row['geneval_all']:.3f}, first-shape attribute "
              f"{row['first_shape_attribute_accuracy']:.3f}", flush=True)
    ceiling = ceilings(ae, n=args.n_eval)
    from annogen.sana.experiment import resolution_test
    resolution = resolution_test(exp, model, n=min(64, args.n_eval), seed=args.seed)
    print(f"  twice the resolution: {resolution}", flush=True)
    return {"resolution": resolution, "sana": {"run": str(run_dir), "train_seconds": sana_seconds, "steps": sana_steps,
                     "encode_seconds": encode_seconds, "batch_size": cfg.batch_size,
                     "parameters": sum(p.numel() for p in model.parameters()), "rows": rows},
            "ceilings": ceiling}


# the class-conditional pixel DiT of the DiT chapter, for the same seconds
def geneval_dit(args) -> dict:
    from annogen.data import make_dataset
    from annogen.dit.experiment import DiTExperiment, evaluate_samplers, load_dit
    from annogen.train import TrainConfig, train
    dataset = make_dataset("shapes", 32, n=args.data_size, seed=0)
    big = 10 ** 9
    out_dir = Path(args.out_runs) / "sana-benchmark"
    dit_exp = DiTExperiment()
    dcfg = TrainConfig(steps=big, batch_size=32, lr=2e-3, ema_decay=0.99, ckpt_every=big,
                       sample_every=big, log_every=10, device="cpu", out=str(out_dir), run="dit",
                       seed=args.seed)
    dit_exp.deadline = time.monotonic() + args.budget
    start = time.perf_counter()
    dit_dir = train(dit_exp, dataset, dcfg)
    dit_seconds = time.perf_counter() - start
    dit_exp.modules = {"dit": load_dit(dit_dir)}
    dit_rows, _ = evaluate_samplers(dit_exp, (("dpm", 20),), n=args.n_eval, seed=args.seed)
    print(f"  DiT dpm 20: first-shape attribute {dit_rows[0]['attribute_accuracy']:.3f}", flush=True)
    return {"run": str(dit_dir), "train_seconds": dit_seconds, "steps": dcfg.steps,
            "rows": dit_rows,
            "parameters": sum(p.numel() for p in dit_exp.modules["dit"].parameters())}


PARTS = {"cost": part_cost, "tokens": part_tokens, "ae": part_ae, "geneval": part_geneval}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=list(PARTS), action="append")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=256, help="width of the timed blocks")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=600.0, help="training seconds per model")
    p.add_argument("--n-eval", type=int, default=256)
    p.add_argument("--models", default="sana,dit",
                   help="geneval: which models to train (sana, dit or both; run them as two "
                        "processes side by side for equal conditions)")
    p.add_argument("--n-ae", type=int, default=512)
    p.add_argument("--data-size", type=int, default=10_000)
    p.add_argument("--run", default="main", help="the CLI run with the DC-AE and text encoder")
    p.add_argument("--plain-run", default="plain", help="the CLI run with the plain autoencoder")
    p.add_argument("--out-runs", default=str(ROOT / "runs"))
    p.add_argument("--kl-run", default=str(ROOT / "runs" / "ldm" / "default"))
    p.add_argument("--max-step-image", type=int, default=1024)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sana.json"))
    args = p.parse_args(argv)
    args.tokens = TOKENS
    args.samplers = (("dpm", 20), ("euler", 20), ("euler", 50))
    if args.quick:
        args.tokens, args.budget, args.n_eval, args.n_ae = (64, 256, 1024), 20.0, 16, 32
        args.data_size, args.max_step_image, args.repeats = 256, 256, 1
    torch.set_num_threads(args.threads)
    parts = args.only or list(PARTS)
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    for part in parts:
        print(f"[{part}]", flush=True)
        start = time.perf_counter()
        result[part] = PARTS[part](args)
        result[part]["wall_seconds"] = round(time.perf_counter() - start, 1)
        result[part]["load_average"] = os.getloadavg()
        result[part]["threads"] = args.threads
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if "cost" in result:
        c = result["cost"]
        print("\n| tokens | softmax s | linear s | DiT block s | Sana block s |\n|---|---|---|---|---|")
        for r in c["rows"]:
            print(f"| {r['tokens']} | {r['softmax_attention_s']:.4f} | {r['linear_attention_s']:.4f} "
                  f"| {r['dit_block_s']:.4f} | {r['sana_block_s']:.4f} |")
        for name, label in (("exponents", "b (from 1024)"), ("exponents_from_4096", "b (from 4096)")):
            e = c.get(name)
            if e:
                print(f"| {label} | {e['softmax_attention_s']:.2f} | {e['linear_attention_s']:.2f} | "
                      f"{e['dit_block_s']:.2f} | {e['sana_block_s']:.2f} |")
        print(f"crossover: attention {c['crossover_tokens']['attention']}, block "
              f"{c['crossover_tokens']['block']} tokens")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
