"""VAR chapter, end to end: both stages through the CLI, exact resume, the experiments'
figures, the paper presets' parameter counts, bad flags."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from annogen.data import make_dataset
from annogen.train import TrainConfig, load_checkpoint, train
from annogen.var.__main__ import main
from annogen.var.experiment import VAEExperiment, load_experiment

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")


# 16x16 shapes: the tiny tokenizer (f = 4) makes 4x4 latents, scales 1, 2, 3, 4 (30 tokens).
SMALL = ["--data-size", "48", "--image-size", "16", "--batch-size", "8", "--var-batch-size", "8",
         "--log-every", "1", "--ckpt-every", "2", "--sample-every", "100", "--disc-start", "3",
         "--restart-every", "2", "--eval-samples", "0"]


def records(path):
    return [{k: v for k, v in json.loads(line).items() if k != "sec_per_step"}
            for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    main(SMALL + ["--steps", "10", "--var-steps", "10", "--lr", "2e-3", "--var-lr", "3e-3",
                  "--out", str(out)])
    return out / "var" / "default"


def test_both_stages_write_their_files_and_losses_fall(smoke):
    for folder in (smoke, smoke / "transformer"):
        for name in ("checkpoint.pt", "metrics.jsonl", "samples.png", "loss.png", "config.json"):
            assert (folder / name).is_file(), folder / name
    stage1 = records(smoke / "metrics.jsonl")
    assert [r["step"] for r in stage1] == list(range(1, 11))
    assert stage1[-1]["rec"] < stage1[0]["rec"]
    stage2 = records(smoke / "transformer" / "metrics.jsonl")
    assert stage2[-1]["loss"] < stage2[0]["loss"]
    # the official initialisation (head x 0.02) starts at the uniform distribution over V = 256
    assert stage2[0]["loss"] == pytest.approx(torch.log(torch.tensor(256.0)).item(), abs=0.05)


def test_trained_pair_loads_and_samples_a_pyramid(smoke):
    exp = load_experiment(smoke)
    images, idxs = exp.sample(4, torch.tensor([0, 1, 2, 3]), pyramid=True)
    assert images.shape == (4, 3, 16, 16) and images.abs().max() <= 1.0
    assert [tuple(r.shape) for r in idxs] == [(4, p, p) for p in (1, 2, 3, 4)]


def test_figures_mode_writes_the_pictures_and_numbers(smoke, tmp_path):
    main(["--figures", str(tmp_path), "--out", str(smoke.parent.parent), "--eval-samples", "21"])
    for name in ("samples.png", "scales.png", "reseed.png", "freeze.png", "experiments.json"):
        assert (tmp_path / name).is_file(), name
    results = json.loads((tmp_path / "experiments.json").read_text())
    assert [r["scales"] for r in results["after_scale"]] == [1, 2, 3, 4]
    # keeping every scale reproduces the base sample exactly
    assert results["reseed"][-1]["pixel_mse"] == 0.0
    assert [r["mode"] for r in results["freeze"]] == ["normal", "parallel", "uniform", "greedy",
                                                      "none"]


def test_two_pass_stage_and_the_within_scale_measurements(smoke, tmp_path):
    # a two-pass transformer on the smoke run's tokenizer, then the independence table
    out = tmp_path / "runs"
    (out / "var" / "default").mkdir(parents=True)
    shutil.copy(smoke / "checkpoint.pt", out / "var" / "default")
    main(SMALL + ["--stage", "var", "--two-pass", "--var-steps", "3", "--out", str(out)])
    run = out / "var" / "default" / "transformer-two-pass"
    assert (run / "checkpoint.pt").is_file() and not (out / "var" / "default" / "transformer").exists()
    assert load_experiment(out / "var" / "default", transformer="transformer-two-pass").var.config.two_pass
    main(["--independence", str(tmp_path / "fig"), "--out", str(out), "--eval-samples", "21"])
    res = json.loads((tmp_path / "fig" / "independence.json").read_text())
    assert [r["scale"] for r in res["real"]] == [2, 3, 4]  # scale 1 has no neighbours
    for mode in ("one_pass", "two_pass"):
        assert [r["scale"] for r in res[mode]["given_real_context"]] == [2, 3, 4]
        assert 0.0 <= res[mode]["scores"]["attribute_accuracy"] <= 1.0
    main(["--laplacian", str(tmp_path / "fig"), "--out", str(out)])
    lap = json.loads((tmp_path / "fig" / "laplacian.json").read_text())
    assert (tmp_path / "fig" / "laplacian.png").stat().st_size > 10_000
    assert len(lap["energy_left"]) == 4 and lap["energy_left"][-1] < lap["energy_left"][0]


def _vae_run(tmp, steps, resume=False):
    data = make_dataset("shapes", 16, n=40)
    cfg = TrainConfig(steps=steps, batch_size=8, lr=2e-3, log_every=1, ckpt_every=3,
                      sample_every=100, out=str(tmp), run="r", resume=resume, device="cpu")
    return train(VAEExperiment(disc_start=2, restart_every=2), data, cfg)


def test_tokenizer_resume_continues_exactly(tmp_path):
    whole = _vae_run(tmp_path / "a", 6)
    _vae_run(tmp_path / "b", 3)
    part = _vae_run(tmp_path / "b", 6, resume=True)
    assert records(whole / "metrics.jsonl") == records(part / "metrics.jsonl")
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(part / "checkpoint.pt")
    for key, value in a["modules"]["vqgan"].items():  # codebook, usage counts included
        assert torch.equal(value, b["modules"]["vqgan"][key]), key


def test_transformer_stage_resumes_exactly_through_the_cli(smoke, tmp_path):
    # stage 2 alone (--stage var) on the smoke run's tokenizer: 4 steps in one go
    # against 2, a stop, and 2 more
    for name in ("a", "b"):
        (tmp_path / name / "var" / "default").mkdir(parents=True)
        shutil.copy(smoke / "checkpoint.pt", tmp_path / name / "var" / "default")
    args = SMALL + ["--stage", "var"]
    main(args + ["--var-steps", "4", "--out", str(tmp_path / "a")])
    main(args + ["--var-steps", "2", "--out", str(tmp_path / "b")])
    main(args + ["--var-steps", "4", "--out", str(tmp_path / "b"), "--resume"])
    run = Path("var") / "default" / "transformer" / "metrics.jsonl"
    assert records(tmp_path / "a" / run) == records(tmp_path / "b" / run)
    assert len(records(tmp_path / "a" / run)) == 4


def test_paper_preset_prints_the_official_parameter_counts():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, "-m", "annogen.var", "--preset", "d16"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "310,283,520" in res.stdout and "108,948,355" in res.stdout
    assert "680 tokens in 10 steps" in res.stdout


@pytest.mark.parametrize("argv", [["--no-such-flag"], ["--preset", "d99"], ["--top-p", "2"]])
def test_bad_flag_is_one_line_and_exit_status_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m annogen.var: error:")
