"""Sana chapter end to end: the three stages through the CLI on a few images, the files they
write, checkpoints that rebuild their models, sampling and the toy GenEval on the result,
the paper presets' sizes, bad flags as one-line errors."""

import json
from pathlib import Path

import pytest
import torch

from annogen.sana.__main__ import main
from annogen.sana.experiment import (SanaExperiment, geneval, high_frequency_energy,
                                     load_module, load_run)

pytestmark = pytest.mark.usefixtures("one_thread")

RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "loss.png", "config.json")
SMALL = ["--data-size", "64", "--image-size", "16", "--batch-size", "8", "--log-every", "1",
         "--ckpt-every", "100", "--sample-every", "100", "--ae-steps", "2", "--text-steps", "2",
         "--sampling-steps", "2", "--eval-samples", "0"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(SMALL + ["--steps", "4", "--out", str(out)]) == 0
    return out / "sana" / "default"


def test_three_stages_write_their_files(smoke):
    for stage, steps in (("ae", 2), ("text", 2), ("dit", 4)):
        for name in RUN_FILES:
            assert (smoke / stage / name).is_file(), (stage, name)
        log = [json.loads(line) for line in (smoke / stage / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log] == list(range(1, steps + 1))
        assert all(r["loss"] == r["loss"] and r["loss"] > 0 for r in log)


def test_checkpoints_rebuild_and_the_model_samples_images(smoke):
    ae, text, model = load_run(smoke)
    assert ae.config.f == 8 and model.config.input_size == 2 and model.config.in_channels == 16
    assert load_module(smoke / "ae", "ae").scaling_factor == 1.0
    assert ae.scaling_factor != 1.0  # measured on the training latents, kept with the DiT
    exp = SanaExperiment(ae, text, sampling_steps=2)
    x = exp.generate(["a large red circle in the centre", ""], model=model)
    assert x.shape == (2, 3, 16, 16) and x.abs().max() <= 1
    assert exp.generate(["a small blue square in the top left"], model=model, size=4).shape == \
        (1, 3, 32, 32)


def test_toy_geneval_on_held_out_captions(smoke):
    ae, text, _ = load_run(smoke)
    exp = SanaExperiment(ae, text, sampling_steps=2)
    # the held-out captions describe 32 px layouts: sample a 4x4 latent, which decodes to
    # 32 px (the model has no positional embedding to outgrow)
    model32 = load_module(smoke / "dit", "sana")
    model32.config.input_size = 4
    row, images = geneval(exp, n=4, steps=2, model=model32)
    assert images.shape == (4, 3, 32, 32)
    for key in ("geneval_all", "geneval_shape", "geneval_colour", "geneval_size",
                "geneval_position", "first_shape_attribute_accuracy"):
        assert 0 <= row[key] <= 1


def test_high_frequency_energy_of_enlarged_images_is_small():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    big = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear")
    noise = torch.rand(2, 3, 32, 32)
    assert high_frequency_energy(big) < 0.5 * high_frequency_energy(noise)
    assert high_frequency_energy(torch.ones(1, 3, 8, 8)) == 0


def test_paper_presets_print_their_sizes(capsys):
    assert main(["--preset", "0.6B"]) == 0
    assert "591,747,872" in capsys.readouterr().out
    assert main(["--ae-preset", "f32c32"]) == 0
    assert "312,250,275" in capsys.readouterr().out


def test_bad_flags_are_one_line_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--preset", "2B"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "2B" in err
    with pytest.raises(SystemExit):
        main(["--data", "digits", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "shapes" in err
