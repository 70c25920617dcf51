"""End-to-end tests of the DDPM chapter: training on the course's loop (loss falls, run
files, EMA, label dropout, the wall-clock budget), loading a run, the samplers on a
trained network, the evaluation against naive scores, exact resumption through the
command line, sampling a finished run, the CLI's paper preset and its error handling.
Everything runs on tiny data (16 px shapes, a few dozen steps)."""

import json
import math
import subprocess
import sys

import pytest
import torch

from annogen.data import Shapes
from annogen.ddpm import Diffusion, build_unet, count_parameters
from annogen.ddpm.__main__ import main
from annogen.ddpm.experiment import (DDPMExperiment, class_labels, evaluate, load_model,
                                     sample_images, score_labels)
from annogen.metrics import FeatureNet, toy_fid
from annogen.train import TrainConfig, load_checkpoint, read_metrics, train

RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "samples.png", "loss.png", "config.json")


pytestmark = pytest.mark.usefixtures("one_thread")


def data(n=64, size=16, seed=0):
    return Shapes(n=n, size=size, seed=seed)


def config(out, **kw):
    base = dict(steps=40, batch_size=16, lr=2e-3, ema_decay=0.9, out=str(out), run="t",
                log_every=10, ckpt_every=1000, sample_every=1000, device="cpu")
    return TrainConfig(**{**base, **kw})


class FewStepSamples(DDPMExperiment):
    """The chapter's experiment with a cheap picture (8 images, 5 DDIM steps), predicting
    the noise as the paper does (the tiny default predicts v; its run is tested below)."""
    num_samples = 8

    def __init__(self, **kw):
        kw.setdefault("diffusion", Diffusion(prediction="eps"))
        super().__init__(sample_steps=5, warmup=5, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    exp = FewStepSamples()
    run_dir = train(exp, data(), config(out))
    return exp, run_dir


def test_training_lowers_the_loss_and_writes_the_run_files(trained):
    exp, run_dir = trained
    assert run_dir.name == "t" and run_dir.parent.name == "ddpm"
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    # an untrained predictor of eps = 0 scores E||eps||^2 = 1; training beats it clearly
    assert records[0]["loss"] > 0.5 and records[-1]["loss"] < 0.6 * records[0]["loss"]


def test_the_tiny_default_predicts_v_and_its_loss_falls(tmp_path):
    exp = DDPMExperiment(sample_steps=5, warmup=5)
    assert exp.diffusion.prediction == "v"
    run_dir = train(exp, data(), config(tmp_path))
    records = read_metrics(run_dir / "metrics.jsonl")
    # v = sqrt(abar) eps - sqrt(1 - abar) x0: an untrained v = 0 scores E||v||^2, between
    # E||x0||^2 and 1; 40 steps bring it down clearly
    assert records[0]["loss"] > 0.5 and records[-1]["loss"] < 0.8 * records[0]["loss"]
    # warmup over 5 steps, then a half cosine to zero at the run's 40th step (the log holds the mean over 10 steps)
    naive = [2e-3 * min(1, s / 5) * (1 + math.cos(math.pi * min(max((s - 5) / 35, 0), 1))) / 2 for s in range(1, 41)]
    for r in records:
        assert r["lr"] == pytest.approx(sum(naive[r["step"] - 10:r["step"]]) / 10)
    assert naive[-1] == 0 and exp.learning_rate(40) == pytest.approx(0, abs=1e-12)


def test_the_paper_preset_keeps_a_constant_learning_rate_after_warmup():
    exp = DDPMExperiment("paper")
    exp.cfg = TrainConfig(steps=100_000, lr=2e-4)
    exp.decay_steps = 100_000
    assert not exp.decay and exp.warmup == 5000
    assert [exp.learning_rate(s) for s in (1, 2500, 5000, 60_000, 100_000)] == pytest.approx(
        [2e-4 / 5000, 1e-4, 2e-4, 2e-4, 2e-4])


def test_the_network_is_class_conditional_and_the_checkpoint_holds_its_ema(trained):
    exp, run_dir = trained
    assert exp.model.num_classes == 21 and exp.model.cfg.image_size == 16
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    live, ema = ckpt["modules"]["unet"], ckpt["ema"]["unet"]
    assert any(not torch.equal(live[k], ema[k]) for k in live)  # the average lags the weights
    model = load_model(run_dir)
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(v, live[k]) for k, v in load_model(run_dir, ema=False).state_dict().items())
    assert count_parameters(model) == count_parameters(build_unet("tiny", image_size=16, num_classes=21))


def test_label_dropout_replaces_about_a_tenth_of_the_labels_by_the_null_label():
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, t, y=None):
            seen.append(y.clone())
            return self.net(x, t, y)

    class FakeLoop:
        def backward_step(self, loss, name):
            pass

    ds = data(n=640)
    exp = DDPMExperiment(label_dropout=0.1)
    exp.cfg, exp.dataset = TrainConfig(steps=10, lr=1e-3, device="cpu"), ds
    exp.configure(torch.device("cpu"))
    exp.modules["unet"] = Spy(exp.model)
    torch.manual_seed(0)
    labels = torch.stack([ds[i]["label"] for i in range(640)])
    images = torch.stack([ds[i]["image"] for i in range(640)])
    for b in range(10):
        batch = {"image": images[b * 64:(b + 1) * 64], "label": labels[b * 64:(b + 1) * 64]}
        exp.training_step(batch, b + 1, FakeLoop())
    y = torch.cat(seen)
    dropped = (y == -1).float().mean().item()
    assert 0.05 < dropped < 0.16
    kept = y != -1
    assert torch.equal(y[kept], labels[kept])


def test_a_budget_of_zero_seconds_stops_after_the_first_step(tmp_path):
    exp = FewStepSamples(budget_seconds=0.0)
    run_dir = train(exp, data(), config(tmp_path, steps=1000, log_every=1))
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 1
    assert exp.timing["steps"] == 1 and (run_dir / "samples.png").is_file()


def test_samplers_are_reproducible_and_ddim_eta_0_ignores_the_seed_after_x_T(trained):
    _, run_dir = trained
    model = load_model(run_dir)
    d = Diffusion()
    y = class_labels(4, 21)
    a, _ = sample_images(model, d, 4, "ddim", 10, labels=y, seed=3, batch_size=3)
    b, _ = sample_images(model, d, 4, "ddim", 10, labels=y, seed=3, batch_size=3)
    assert torch.equal(a, b) and a.shape == (4, 3, 16, 16) and a.abs().max() <= 1
    c, _ = sample_images(model, d, 4, "ddim", 10, eta=1.0, labels=y, seed=3, batch_size=3)
    assert not torch.equal(a, c)  # eta = 1 draws fresh noise at every step
    # the chapter's sampling clips DDIM's x0_hat by default; unclipped is a different map
    clipped, _ = sample_images(model, d, 4, "ddim", 10, labels=y, seed=3, batch_size=3, clip=True)
    unclipped, _ = sample_images(model, d, 4, "ddim", 10, labels=y, seed=3, batch_size=3, clip=False)
    assert torch.equal(a, clipped) and not torch.equal(a, unclipped)
    with pytest.raises(ValueError):
        sample_images(model, d, 4, "ddpm", 50)


def test_evaluate_matches_the_scores_computed_by_hand(trained):
    _, run_dir = trained
    model = load_model(run_dir)
    d = Diffusion()
    real = torch.stack([data(n=6, seed=9)[i]["image"] for i in range(6)])
    net = FeatureNet(3, 21, size=16).eval()
    row, images = evaluate(model, d, "ddim", 5, 6, real, net, seed=2)
    again, _ = sample_images(model, d, 6, "ddim", 5, labels=torch.arange(6), seed=2)
    assert torch.equal(images, again)
    assert row["toy_fid"] == pytest.approx(toy_fid(real, images, net), rel=1e-9)
    scores = score_labels(images, torch.arange(6))
    assert row["attribute_accuracy"] == scores["attribute_accuracy"]
    assert row["attribute_accuracy"] == (scores["shape_accuracy"] + scores["colour_accuracy"]) / 2
    assert row["n"] == 6 and row["sec_per_image"] > 0 and row["sampler"] == "ddim"


# --- the command line ------------------------------------------------------------------

def cli(out, run, steps, *extra):
    return main(["--data-size", "64", "--image-size", "16", "--batch-size", "16",
                 "--eval-samples", "0", "--log-every", "2", "--ckpt-every", "3",
                 "--sample-every", "1000", "--warmup", "4", "--ema-decay", "0.9", "--sampling-steps", "2",
                 "--device", "cpu", "--out", str(out), "--run", run, "--steps", str(steps), *extra])


def without_timing(records):
    return [{k: v for k, v in r.items() if k != "sec_per_step"} for r in records]


def test_cli_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    assert cli(tmp_path, "straight", 8) == 0  # the learning rate decays to zero at step 8
    assert cli(tmp_path, "parts", 5, "--decay-steps", "8") == 0
    # from the step-5 checkpoint, which also holds the schedule's length (8, not 5)
    assert cli(tmp_path, "parts", 8, "--resume") == 0
    a, b = tmp_path / "ddpm" / "straight", tmp_path / "ddpm" / "parts"
    assert without_timing(read_metrics(a / "metrics.jsonl")) == without_timing(read_metrics(b / "metrics.jsonl"))
    ca, cb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert ca["step"] == cb["step"] == 8
    for part in ("modules", "ema"):
        for key in ca[part]["unet"]:
            assert torch.equal(ca[part]["unet"][key], cb[part]["unet"][key]), (part, key)


def test_cli_samples_a_finished_run_with_the_chosen_sampler(tmp_path, capsys):
    assert cli(tmp_path, "s", 3) == 0
    before = load_checkpoint(tmp_path / "ddpm" / "s" / "checkpoint.pt")
    run = tmp_path / "ddpm" / "s"
    # DDIM clips x0_hat by default (the chapter's choice); --no-clip samples as the official DDIM code.
    # The tiny model samples with classifier-free guidance w = 3 unless told otherwise.
    for flags, tag, clip, w in (([], "ddim4-eta1-w3", True, 3.0),
                                (["--no-clip"], "ddim4-eta1-noclip-w3", False, 3.0),
                                (["--guidance", "1"], "ddim4-eta1", True, 1.0)):
        assert cli(tmp_path, "s", 3, "--resume", "--eval-samples", "3", "--sampler", "ddim",
                   "--sampling-steps", "4", "--eta", "1", *flags) == 0
        out = capsys.readouterr().out
        assert f"{tag}, 3 samples" in out
        row = json.loads((run / f"eval-{tag}.json").read_text())
        assert row["steps"] == 4 and row["eta"] == 1.0 and row["n"] == 3 and row["clip"] is clip
        assert row["guidance"] == w
        assert (run / f"samples-{tag}.png").is_file()
    after = load_checkpoint(run / "checkpoint.pt")
    assert after["step"] == 3  # no training happened
    assert all(torch.equal(before["modules"]["unet"][k], after["modules"]["unet"][k])
               for k in before["modules"]["unet"])


def test_cli_paper_preset_reports_the_parameter_count_without_training(tmp_path, capsys):
    assert main(["--preset", "paper", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "35,746,307 parameters" in out  # the count tests/test_ddpm.py checks
    assert not any(tmp_path.iterdir())


def test_cli_bad_flags_are_one_line_and_exit_status_2(capsys):
    for argv in (["--no-such-flag"], ["--sampler", "euler"], ["--sampler", "ddpm", "--sampling-steps", "50"],
                 ["--sampling-steps", "0"], ["--decay-steps", "0"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error" in err


def test_module_entry_point_reports_a_missing_run_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "annogen.ddpm", "--figures", str(tmp_path / "f"),
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "no DDPM checkpoint" in r.stderr
