"""End-to-end tests of the VQ-VAE chapter: both training stages on the course's loop, the
step between them (images to code grids), the evaluation helpers against naive
computations, exact resumption through the command line, and the CLI's paper preset and
error handling. Everything runs on tiny data (16 px shapes, a few dozen steps)."""

import math
import subprocess
import sys

import pytest
import torch

from annogen.data import COLOUR_NAMES, SHAPES, Shapes
from annogen.metrics import FeatureNet, toy_fid
from annogen.train import TrainConfig, load_checkpoint, read_metrics, train
from annogen.vqvae import build_prior
from annogen.vqvae.__main__ import main
from annogen.vqvae.experiment import (CodeGrids, PriorExperiment, VQVAEExperiment, encode_dataset,
                                      evaluate_prior, evaluate_vqvae, first_shape_accuracy,
                                      load_prior, load_vqvae)

RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "samples.png", "loss.png", "config.json")


pytestmark = pytest.mark.usefixtures("one_thread")


def data(n=64, size=16, seed=0):
    return Shapes(n=n, size=size, seed=seed)


def config(out, **kw):
    base = dict(steps=30, batch_size=16, lr=1e-3, out=str(out), run="t", log_every=5,
                ckpt_every=1000, sample_every=1000, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A tiny VQ-VAE trained for 30 steps on 64 images of 16 px."""
    out = tmp_path_factory.mktemp("runs")
    exp = VQVAEExperiment("tiny")
    run_dir = train(exp, data(), config(out))
    return exp, run_dir


@pytest.fixture(scope="module")
def stage2(stage1, tmp_path_factory):
    exp1, run1 = stage1
    out = tmp_path_factory.mktemp("prior")
    codes = encode_dataset(exp1.model, data(), progress=False)
    exp = PriorExperiment(load_vqvae(run1), "tiny", vqvae_run=str(run1))
    run_dir = train(exp, codes, config(out, steps=30))
    return exp, run_dir


def mean(xs):
    return sum(xs) / len(xs)


# --- stage 1 ---------------------------------------------------------------------------

def test_vqvae_stage_loss_falls_and_writes_the_run_files(stage1):
    exp, run_dir = stage1
    assert run_dir.name == "t" and run_dir.parent.name == "vqvae"
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]
    assert records[-1]["recon"] < 0.5 * records[0]["recon"]
    for r in records:  # the logged loss is the sum of its two terms
        assert r["loss"] == pytest.approx(r["recon"] + r["vq"], rel=1e-5)
        assert 0 < r["usage"] <= 1 and 1 <= r["perplexity"] <= 128


def test_vqvae_samples_alternate_rows_of_originals_and_reconstructions(stage1):
    exp, _ = stage1
    model = exp.model.eval()
    with torch.no_grad():
        grid = exp.sample(32)
        x = torch.stack([data()[i]["image"] for i in range(16)])
        x_hat = model(x)[0].clamp(-1, 1)
    exp.model.train()
    assert torch.equal(grid[0:8], x[0:8]) and torch.equal(grid[16:24], x[8:16])
    assert torch.allclose(grid[8:16], x_hat[0:8]) and torch.allclose(grid[24:32], x_hat[8:16])


def test_load_vqvae_rebuilds_the_trained_network(stage1):
    exp, run_dir = stage1
    loaded = load_vqvae(run_dir)
    x = torch.stack([data()[i]["image"] for i in range(4)])
    exp.model.eval()
    with torch.no_grad():
        a, b = exp.model(x), loaded(x)
    exp.model.train()
    assert torch.equal(a[2], b[2]) and torch.allclose(a[0], b[0])
    assert loaded.cfg == exp.model.cfg


def test_evaluate_vqvae_matches_a_naive_psnr_and_code_count(stage1):
    exp, _ = stage1
    ds = data(n=20, seed=5)
    result = evaluate_vqvae(exp.model, ds, n=20, batch_size=7)
    exp.model.eval()
    values, codes = [], set()
    with torch.no_grad():
        for i in range(20):
            x = ds[i]["image"][None]
            x_hat, _, idx = exp.model(x)
            mse = ((x_hat.clamp(-1, 1) - x) ** 2).mean().item()
            values.append(10 * math.log10(4.0 / mse))
            codes |= set(idx.flatten().tolist())
    exp.model.train()
    assert result["psnr"] == pytest.approx(mean(values), rel=1e-4)
    assert result["usage"] == len(codes) / 128
    assert 1 <= result["perplexity"] <= len(codes)
    assert 0 <= result["recon_all"] <= 1


def test_budget_of_zero_seconds_stops_after_the_first_step(tmp_path):
    exp = VQVAEExperiment("tiny", budget_seconds=0.0)
    run_dir = train(exp, data(), config(tmp_path, steps=1000, log_every=1))
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 1
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1]
    assert exp.timing["steps"] == 1 and (run_dir / "samples.png").is_file()


# --- between the stages ----------------------------------------------------------------

def test_encode_dataset_gives_each_images_codes_and_label(stage1):
    exp, _ = stage1
    ds = data(n=10, seed=3)
    grids = encode_dataset(exp.model, ds, batch_size=3, progress=False)
    assert isinstance(grids, CodeGrids) and len(grids) == 10 and grids.grid == (4, 4)
    assert grids.num_codes == 128 and grids.num_classes == 21
    exp.model.eval()
    for i in range(10):
        item = grids[i]
        assert torch.equal(item["codes"], exp.model.encode(ds[i]["image"][None])[0])
        assert int(item["label"]) == int(ds[i]["label"])
    exp.model.train()


# --- stage 2 ---------------------------------------------------------------------------

def test_prior_stage_loss_falls_and_writes_the_run_files(stage2):
    exp, run_dir = stage2
    assert run_dir.parent.name == "vqvae-prior"
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    records = read_metrics(run_dir / "metrics.jsonl")
    assert records[-1]["loss"] < 0.6 * records[0]["loss"]
    assert records[0]["loss"] < math.log(128) + 0.5  # starts near a uniform guess
    for r in records:
        assert r["bits_per_code"] == pytest.approx(r["loss"] / math.log(2))


def test_prior_is_conditional_on_the_21_shapes_classes_and_is_not_saved_with_the_vqvae(stage2):
    exp, run_dir = stage2
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert set(ckpt["modules"]) == {"prior"}  # the frozen VQ-VAE stays in stage 1's folder
    prior = load_prior(run_dir)
    assert prior.num_classes == 21 and prior.num_codes == 128
    expected = build_prior("tiny", num_codes=128, num_classes=21)
    assert sum(p.numel() for p in prior.parameters()) == sum(p.numel() for p in expected.parameters())
    assert all(not p.requires_grad for p in exp.vqvae.parameters())


def test_evaluate_prior_nll_fid_and_reproducible_samples(stage1, stage2):
    exp1, _ = stage1
    exp2, _ = stage2
    ds = data(n=12, seed=7)
    net = FeatureNet(3, 21, size=16).eval()
    a = evaluate_prior(exp2.prior, exp1.model, ds, n=12, net=net, seed=3, batch_size=5)
    b = evaluate_prior(exp2.prior, exp1.model, ds, n=12, net=net, seed=3, batch_size=5)
    assert torch.equal(a["samples"], b["samples"])
    real = torch.stack([ds[i]["image"] for i in range(12)])
    labels = torch.stack([ds[i]["label"] for i in range(12)])
    with torch.no_grad():
        codes = exp1.model.eval().encode(real)
        nll = exp2.prior.eval().loss(codes, labels).item()
    exp1.model.train()
    exp2.prior.train()
    assert a["nll"] == pytest.approx(nll, rel=1e-5)
    assert a["toy_fid"] == pytest.approx(toy_fid(real, a["samples"], net), rel=1e-6)
    assert a["samples"].shape == (12, 3, 16, 16) and a["samples"].abs().max() <= 1
    assert {"shape", "colour", "both", "count"} <= set(a)


# --- the label check -------------------------------------------------------------------

def test_first_shape_accuracy_is_one_on_real_images_and_zero_for_a_wrong_colour_or_kind():
    ds = Shapes(n=40, size=32, seed=11)
    images = torch.stack([ds[i]["image"] for i in range(40)])
    labels = [int(ds[i]["label"]) for i in range(40)]
    assert first_shape_accuracy(images, labels) == {"shape": 1.0, "colour": 1.0, "both": 1.0,
                                                   "count": 1.0}
    C = len(COLOUR_NAMES)
    other_colour = [(y // C) * C + (y % C + 1) % C for y in labels]
    r = first_shape_accuracy(images, other_colour)
    assert r["colour"] == 0.0 and r["shape"] == 1.0 and r["both"] == 0.0
    other_kind = [((y // C + 1) % len(SHAPES)) * C + y % C for y in labels]
    r = first_shape_accuracy(images, other_kind)
    assert r["shape"] == 0.0 and r["colour"] == 1.0
    # The label names the first shape in reading order: the second shape's class is not it.
    two = [i for i in range(40) if len(ds.attributes(i)) == 2]
    second = [SHAPES.index(ds.attributes(i)[1]["shape"]) * C
              + COLOUR_NAMES.index(ds.attributes(i)[1]["colour"]) for i in two]
    differs = [k for k, i in enumerate(two) if second[k] != labels[i]]
    assert differs and first_shape_accuracy(images[[two[k] for k in differs]],
                                            [second[k] for k in differs])["both"] == 0.0
    blank = -torch.ones(2, 3, 32, 32)
    assert first_shape_accuracy(blank, [0, 1]) == {"shape": 0.0, "colour": 0.0, "both": 0.0,
                                                  "count": 0.0}


# --- the command line ------------------------------------------------------------------

def cli(out, run, steps, prior_steps, *extra):
    return main(["--data-size", "64", "--image-size", "16", "--batch-size", "16",
                 "--prior-batch-size", "16", "--eval-samples", "0", "--log-every", "2",
                 "--ckpt-every", "3", "--sample-every", "1000", "--restart-every", "3",
                 "--device", "cpu", "--out", str(out), "--run", run, "--steps", str(steps),
                 "--prior-steps", str(prior_steps), *extra])


def without_timing(records):
    return [{k: v for k, v in r.items() if k != "sec_per_step"} for r in records]


def test_cli_resume_of_both_stages_equals_an_uninterrupted_run(tmp_path):
    assert cli(tmp_path, "straight", 10, 8) == 0
    assert cli(tmp_path, "parts", 5, 0, "--stage", "vqvae") == 0
    assert cli(tmp_path, "parts", 10, 4, "--resume") == 0  # stage 1: 5 -> 10, prior: 0 -> 4
    assert cli(tmp_path, "parts", 10, 8, "--resume") == 0  # stage 1 done, prior: 4 -> 8
    for stage in ("vqvae", "vqvae-prior"):
        a, b = tmp_path / stage / "straight", tmp_path / stage / "parts"
        assert without_timing(read_metrics(a / "metrics.jsonl")) == \
            without_timing(read_metrics(b / "metrics.jsonl"))
        wa = load_checkpoint(a / "checkpoint.pt")["modules"]
        wb = load_checkpoint(b / "checkpoint.pt")["modules"]
        for name in wa:
            for key in wa[name]:
                assert torch.equal(wa[name][key], wb[name][key]), (stage, key)
    # the restarts did happen (every 3 steps), so the resume replayed them too
    q = load_checkpoint(tmp_path / "vqvae" / "parts" / "checkpoint.pt")["modules"]["vqvae"]
    assert int(q["vq.forward_count"]) == 10


def test_cli_paper_preset_reports_the_parameter_counts_without_training(tmp_path, capsys):
    assert main(["--preset", "paper", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4,877,059" in out  # section 4.1, counted layer by layer in tests/test_vqvae.py
    # the paper prior for K = 512 codes (6,076,160 unconditional) plus V_f, V_g of
    # 2 * 128 numbers per class and block: 21 classes, 15 blocks
    assert f"{6_076_160 + 21 * 15 * 2 * 128:,}" in out
    assert not any(tmp_path.iterdir())


def test_cli_figures_are_drawn_from_the_runs(tmp_path):
    assert cli(tmp_path, "fig", 4, 2) == 0
    assert main(["--figures", str(tmp_path / "figs"), "--out", str(tmp_path), "--run", "fig",
                 "--image-size", "16", "--data-size", "64", "--eval-samples", "0"]) == 0
    from PIL import Image
    with Image.open(tmp_path / "figs" / "reconstructions.png") as im:
        assert im.size == (2 + 8 * (32 + 2), 2 + 6 * (32 + 2))  # 8 x 6 images at twice 16 px
    with Image.open(tmp_path / "figs" / "prior_samples.png") as im:
        assert im.size == (2 + 12 * (32 + 2), 2 + 7 * (32 + 2))  # 7 colours x (3 kinds x 4)
    assert (tmp_path / "figs" / "curves.png").is_file()


def test_cli_bad_flag_is_one_line_and_exit_status_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--no-such-flag"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--no-such-flag" in err
    with pytest.raises(SystemExit) as e:
        main(["--stage", "everything"])
    assert e.value.code == 2


def test_module_entry_point_reports_a_missing_stage_1_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "annogen.vqvae", "--stage", "prior",
                        "--out", str(tmp_path), "--eval-samples", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "no VQ-VAE checkpoint" in r.stderr
