"""DiT chapter, end to end: a few CPU steps of flow matching through the CLI (loss falls,
files written, exact resume), sampling and scoring, the cost benchmark's rows, the paper
preset's parameter count, bad flags."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from annogen.data import make_dataset
from annogen.dit.__main__ import main
from annogen.dit.experiment import DiTExperiment, evaluate_samplers, forward_cost, load_dit
from annogen.train import TrainConfig, load_checkpoint, train

ROOT = Path(__file__).resolve().parent.parent
RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "samples.png", "loss.png", "config.json")


pytestmark = pytest.mark.usefixtures("one_thread")


# 16 px shapes, a DiT of width 32 and 2 blocks with patch 4 (16 tokens)
SMALL = ["--data-size", "64", "--image-size", "16", "--batch-size", "16", "--log-every", "1",
         "--ckpt-every", "3", "--sample-every", "100", "--width", "32", "--depth", "2",
         "--patch-size", "4", "--sampling-steps", "3", "--eval-samples", "0", "--lr", "3e-3",
         "--space", "pixel"]


def records(path):
    return [{k: v for k, v in json.loads(line).items() if k != "sec_per_step"}
            for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    main(SMALL + ["--steps", "30", "--out", str(out)])
    return out / "dit" / "default"


def test_run_writes_its_files_and_the_loss_falls(smoke):
    for name in RUN_FILES:
        assert (smoke / name).is_file(), name
    log = records(smoke / "metrics.jsonl")
    assert [r["step"] for r in log] == list(range(1, 31))
    # at initialisation the output is zero, so the loss is E|eps - x_0|^2, about 2 here
    first = sum(r["loss"] for r in log[:5]) / 5
    last = sum(r["loss"] for r in log[-5:]) / 5
    assert 1.5 < log[0]["loss"] < 2.5 and last < 0.75 * first


def test_checkpoint_rebuilds_the_model_and_samples_are_images(smoke):
    model = load_dit(smoke)
    assert (model.config.hidden_size, model.config.depth, model.config.num_classes) == (32, 2, 21)
    assert not model.config.learn_sigma and not model.training
    exp = DiTExperiment(sampling_steps=3)
    exp.modules = {"dit": model.train()}
    x = exp.sample(5)
    assert x.shape == (5, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert model.training  # sampling restores the mode it found
    rows, images = evaluate_samplers(exp, (("euler", 2), ("dpm", 2)), n=8)
    assert [(r["sampler"], r["steps"]) for r in rows] == [("euler", 2), ("dpm", 2)]
    for r in rows:
        assert set(r) >= {"sampler", "steps", "toy_fid", "attribute_accuracy", "sec_per_image"}
        assert 0 <= r["attribute_accuracy"] <= 1 and r["sec_per_image"] > 0
    # the same noise into both samplers: with 2 steps Flow-DPM-Solver is first order
    # throughout (first and last step), so it equals Euler
    assert torch.allclose(images[("euler", 2)], images[("dpm", 2)], atol=1e-5)


def test_figures_mode_writes_the_readme_pictures(smoke, tmp_path):
    main(SMALL + ["--figures", str(tmp_path), "--out", str(smoke.parent.parent)])
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "samplers.png").is_file()


def test_resume_continues_exactly(tmp_path):
    args = SMALL + ["--ckpt-every", "3"]
    main(args + ["--steps", "6", "--out", str(tmp_path / "a")])
    main(args + ["--steps", "3", "--out", str(tmp_path / "b")])
    main(args + ["--steps", "6", "--out", str(tmp_path / "b"), "--resume"])
    run = Path("dit") / "default"
    assert records(tmp_path / "a" / run / "metrics.jsonl") == \
        records(tmp_path / "b" / run / "metrics.jsonl")
    a = load_checkpoint(tmp_path / "a" / run / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / run / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    for part in ("modules", "ema"):
        for key, value in a[part]["dit"].items():
            assert torch.equal(value, b[part]["dit"][key]), (part, key)


def test_unlabelled_labels_train_as_the_null_class(tmp_path):
    data = make_dataset("shapes", 16, n=16)

    class Unlabelled(torch.utils.data.Dataset):
        channels, size, num_classes = 3, 16, 0

        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return {**data[i], "label": torch.tensor(-1)}

    cfg = TrainConfig(steps=2, batch_size=8, out=str(tmp_path), run="u", device="cpu",
                      sample_every=100, ema_decay=None)
    exp = DiTExperiment(hidden_size=32, depth=1, num_heads=2, sampling_steps=2)
    train(exp, Unlabelled(), cfg)
    assert exp.model.config.num_classes == 1


def test_forward_cost_rows_grow_with_tokens():
    rows = forward_cost(tokens=(16, 64), width=32, depth=1, heads=2, repeats=1)
    assert [r["tokens"] for r in rows] == [16, 64]
    for r in rows:
        assert r["sec_per_forward"] > 0 and r["width"] == 32
    # the attention term is quadratic in tokens, the linear layers linear
    assert rows[1]["attention_gflop"] == pytest.approx(16 * rows[0]["attention_gflop"])
    assert rows[1]["linear_gflop"] == pytest.approx(4 * rows[0]["linear_gflop"])


def test_paper_preset_prints_the_official_count():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, "-m", "annogen.dit", "--preset", "XL/2"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "675,129,632" in res.stdout and "674,834,720" in res.stdout
    assert "256 tokens" in res.stdout


@pytest.mark.parametrize("argv", [["--no-such-flag"], ["--preset", "XXL/2"],
                                  ["--sampler", "heun"], ["--sampling-steps", "0"]])
def test_bad_flag_is_one_line_and_exit_status_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m annogen.dit: error:")


def test_latent_space_cli_trains_the_autoencoder_first_then_the_dit_on_its_latents(tmp_path, capsys):
    from annogen.ldm.experiment import load_autoencoder
    args = ["--data-size", "32", "--image-size", "16", "--batch-size", "16", "--log-every", "1",
            "--ae-steps", "2", "--steps", "3", "--width", "32", "--depth", "1",
            "--sampling-steps", "2", "--eval-samples", "4", "--sample-every", "100",
            "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "training it first" in out and "attribute_accuracy" in out
    ae = load_autoencoder(tmp_path / "ldm" / "default")
    assert ae.scaling_factor != 1.0  # measured after training and stored
    dit = load_dit(tmp_path / "dit" / "default")
    # the DiT is sized to the 4x4x4 latent (f = 4 on 16 px), patch 1: 16 tokens
    assert (dit.config.in_channels, dit.config.input_size, dit.config.patch_size) == (4, 4, 1)
    ckpt = load_checkpoint(tmp_path / "dit" / "default" / "checkpoint.pt")
    assert ckpt["extra"]["latent"]["scaling_factor"] == pytest.approx(ae.scaling_factor)
    # a second run reuses the autoencoder instead of training it again
    before = (tmp_path / "ldm" / "default" / "checkpoint.pt").stat().st_mtime_ns
    assert main(args + ["--run", "again"]) == 0
    assert "training it first" not in capsys.readouterr().out
    assert (tmp_path / "ldm" / "default" / "checkpoint.pt").stat().st_mtime_ns == before
    # samples come back as pixels, decoded by the autoencoder
    from annogen.dit.__main__ import load_run_autoencoder
    exp = DiTExperiment(sampling_steps=2, autoencoder=load_run_autoencoder(tmp_path / "dit" / "again"))
    exp.modules = {"dit": load_dit(tmp_path / "dit" / "again")}
    x = exp.sample(3)
    assert x.shape == (3, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
