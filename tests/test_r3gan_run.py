"""R3GAN chapter, end to end: the 2-D mode-coverage toy (RpGAN + R1 + R2 covers more
modes than the non-saturating loss with R1, fixed seed, with a margin), a few CPU steps
of the GAN through the command line, the checkpoint's generator, bad flags."""

import json
from pathlib import Path

import pytest
import torch

from annogen.r3gan.__main__ import experiment_from_args, main, make_parser
from annogen.r3gan.experiment import evaluate, load_generator
from annogen.r3gan.toy import ToyConfig, grid_modes, score, train_toy

pytestmark = pytest.mark.usefixtures("one_thread")

RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "samples.png", "loss.png", "config.json")
SMALL = ["--data-size", "16", "--batch-size", "4", "--log-every", "1", "--ckpt-every", "100",
         "--sample-every", "100", "--eval-samples", "0"]


def test_toy_score_counts_modes_and_quality():
    modes = grid_modes()
    assert modes.shape == (25, 2) and modes.min() == -2 and modes.max() == 2
    on_three = torch.cat([modes[:3].repeat_interleave(40, 0), torch.full((30, 2), 0.5)])
    covered, quality = score(on_three, modes, sigma=0.05)
    assert covered == 3  # 40 samples each >= (150 / 25) / 5; the 30 at (0.5, 0.5) are off-mode
    assert quality == pytest.approx(120 / 150)


def test_relativistic_loss_with_both_penalties_covers_more_modes_on_the_toy():
    ns = train_toy(ToyConfig(loss="ns", r2=False, seed=0))
    rp = train_toy(ToyConfig(loss="rpgan", r2=True, seed=0))
    # Seed 0: 4 against 9 modes when this test was written. This guards the toy and the
    # losses against regressions on one fixed seed; it is not evidence for the claim:
    # over five seeds (benchmarks/r3gan.py --only toy) the spreads overlap (4.6 +- 2.4
    # against 6.4 +- 3.5 modes), as the chapter's discussion reports.
    assert rp.modes_covered >= ns.modes_covered + 3, (ns.modes_covered, rp.modes_covered)
    assert len(rp.logit_gap) == rp.config.steps // rp.config.log_every


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    main(SMALL + ["--steps", "2", "--out", str(out)])
    main(SMALL + ["--steps", "1", "--config", "B", "--run", "B", "--out", str(out)])
    return out / "r3gan"


def test_cli_run_writes_its_files_and_logs_both_penalties(smoke):
    for name in RUN_FILES:
        assert (smoke / "default" / name).is_file(), name
    log = [json.loads(line) for line in (smoke / "default" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert {"loss_d", "loss_g", "r1", "r2", "gamma", "logit_gap"} <= set(log[0])
    assert log[0]["gamma"] == pytest.approx(0.5)  # the tiny default starts at TINY_GAMMA's 0.5
    log_b = [json.loads(line) for line in (smoke / "B" / "metrics.jsonl").read_text().splitlines()]
    assert "r1" in log_b[0] and "r2" not in log_b[0]


def test_checkpoint_rebuilds_the_generator_and_samples_are_scored(smoke):
    G = load_generator(smoke / "default")
    ckpt = torch.load(smoke / "default" / "checkpoint.pt", weights_only=True)
    assert ckpt["extra"]["loss"] == "rpgan" and ckpt["extra"]["r2"] is True
    assert G.config.num_classes == 21 and G.config.block == "resnext"
    assert load_generator(smoke / "B").config.block == "plain"
    scores, images = evaluate(G, n=21)
    assert images.shape == (21, 3, 32, 32) and images.abs().max() <= 1
    assert 0 <= scores["attribute_accuracy"] <= 1 and scores["sample_images_per_s"] > 0


def test_gamma_defaults_to_ten_times_the_papers_for_the_tiny_preset_only():
    parse = make_parser().parse_args
    assert experiment_from_args(parse([])).gamma == (0.5, 0.05)
    assert experiment_from_args(parse(["--preset", "cifar10", "--train"])).gamma == (0.05, 0.005)
    assert experiment_from_args(parse(["--gamma", "0.05", "0.005"])).gamma == (0.05, 0.005)


def test_cifar10_preset_prints_the_counts(capsys):
    assert main(["--preset", "cifar10"]) == 0
    out = capsys.readouterr().out
    assert "20,781,952" in out and "21,280,512" in out


def test_bad_flags_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--config", "Z"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--config" in err
    with pytest.raises(SystemExit):
        main(SMALL + ["--image-size", "16", "--steps", "1", "--out", "/tmp/unused-r3gan"])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--image-size 32" in err
