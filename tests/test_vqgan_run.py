"""VQGAN chapter, end to end: both stages through the CLI, exact resume with two
optimizers, the paper preset's parameter counts, the scoring of samples, bad flags."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from annogen.data import make_dataset
from annogen.train import TrainConfig, load_checkpoint, train
from annogen.vqgan.__main__ import main
from annogen.vqgan.experiment import VQGANExperiment

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")


# 16x16 shapes: the tiny VQGAN (f = 4) turns them into 4x4 grids of codes.
SMALL = ["--data-size", "48", "--image-size", "16", "--batch-size", "8", "--gpt-batch-size", "8",
         "--log-every", "1", "--ckpt-every", "2", "--sample-every", "100", "--disc-start", "3",
         "--restart-every", "2", "--eval-samples", "0"]


def records(path):
    return [{k: v for k, v in json.loads(line).items() if k != "sec_per_step"}
            for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    main(SMALL + ["--steps", "10", "--gpt-steps", "10", "--lr", "2e-3", "--out", str(out)])
    return out / "vqgan" / "default"


def test_both_stages_write_their_files_and_losses_fall(smoke):
    for folder in (smoke, smoke / "transformer"):
        for name in ("checkpoint.pt", "metrics.jsonl", "samples.png", "loss.png", "config.json"):
            assert (folder / name).is_file(), folder / name
    stage1 = records(smoke / "metrics.jsonl")
    assert [r["step"] for r in stage1] == list(range(1, 11))
    assert stage1[-1]["rec"] < stage1[0]["rec"]
    # the discriminator trains from disc_start (step 3) on, and not before
    assert "d_loss" not in stage1[1] and "d_loss" in stage1[2]
    assert stage1[1]["lambda"] == 0.0 and stage1[2]["lambda"] > 0.0
    stage2 = records(smoke / "transformer" / "metrics.jsonl")
    assert stage2[-1]["loss"] < stage2[0]["loss"]
    # a GPT that knows nothing starts near the uniform distribution over K = 128 codes
    assert abs(stage2[0]["loss"] - torch.log(torch.tensor(128.0)).item()) < 0.5


def test_figures_mode_writes_the_readme_pictures(smoke, tmp_path):
    out = smoke.parent.parent
    main(["--figures", str(tmp_path), "--out", str(out)])
    assert (tmp_path / "reconstructions.png").is_file() and (tmp_path / "samples.png").is_file()


def _vqgan_run(tmp, steps, resume=False):
    data = make_dataset("shapes", 16, n=40)
    cfg = TrainConfig(steps=steps, batch_size=8, lr=2e-3, log_every=1, ckpt_every=3,
                      sample_every=100, out=str(tmp), run="r", resume=resume, device="cpu")
    exp = VQGANExperiment(disc_start=2, restart_every=2)
    run_dir = train(exp, data, cfg)
    return run_dir


def test_resume_with_two_optimizers_continues_exactly(tmp_path):
    # 6 steps in one go, against 3 steps, a stop and 3 more: the discriminator's
    # optimizer (from step 2), BatchNorm statistics, dead-code restarts (every 2 steps)
    # and the data order must all carry over.
    whole = _vqgan_run(tmp_path / "a", 6)
    _vqgan_run(tmp_path / "b", 3)
    part = _vqgan_run(tmp_path / "b", 6, resume=True)
    assert records(whole / "metrics.jsonl") == records(part / "metrics.jsonl")
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(part / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    for module in ("vqgan", "disc"):
        for key, value in a["modules"][module].items():
            assert torch.equal(value, b["modules"][module][key]), (module, key)
    for opt in ("ae", "disc"):
        for i, state in a["optimizers"][opt]["state"].items():
            for k, v in state.items():
                assert torch.equal(v, b["optimizers"][opt]["state"][i][k]), (opt, i, k)


def test_transformer_stage_resumes_exactly_through_the_cli(tmp_path):
    args = SMALL + ["--steps", "2", "--lr", "2e-3"]
    main(args + ["--gpt-steps", "4", "--out", str(tmp_path / "a")])
    main(args + ["--gpt-steps", "2", "--out", str(tmp_path / "b")])
    main(args + ["--gpt-steps", "4", "--out", str(tmp_path / "b"), "--resume"])
    run = Path("vqgan") / "default" / "transformer" / "metrics.jsonl"
    assert records(tmp_path / "a" / run) == records(tmp_path / "b" / run)
    assert len(records(tmp_path / "a" / run)) == 4


def test_deadline_makes_the_step_in_progress_the_last(tmp_path):
    data = make_dataset("shapes", 16, n=16)
    cfg = TrainConfig(steps=50, batch_size=8, out=str(tmp_path), run="r", device="cpu")
    exp = VQGANExperiment()
    exp.deadline = time.monotonic()  # already over: one step, then stop
    run_dir = train(exp, data, cfg)
    assert cfg.steps == 1 and load_checkpoint(run_dir / "checkpoint.pt")["step"] == 1


def test_paper_preset_reports_the_official_parameter_counts():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, "-m", "annogen.vqgan", "--preset", "paper"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    # counted on the official modules (encoder, decoder, codebook + quant convs, PatchGAN)
    for number in ("29,298,176", "42,449,795", "393,728", "72,141,699", "2,765,633"):
        assert number in res.stdout
    assert "16x16" in res.stdout and "256 tokens" in res.stdout


@pytest.mark.parametrize("argv", [["--no-such-flag"], ["--stage", "pixels"], ["--top-p", "2"]])
def test_bad_flag_is_one_line_and_exit_status_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m annogen.vqgan: error:")


def test_tiny_reconstruction_loss_is_l1_plus_l2_without_lpips_and_paper_form_with_it():
    from annogen.vqgan import VQGANLoss
    exp = VQGANExperiment()
    assert exp.perceptual_weight == 0.0 and exp.l2_weight == 1.0
    with_lpips = VQGANExperiment(lpips_weights=("vgg16.pth", "vgg.pth"))
    assert with_lpips.perceptual_weight == 1.0 and with_lpips.l2_weight == 0.0
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    crit = VQGANLoss(perceptual_weight=0.0, l2_weight=exp.l2_weight)
    d = (x - y).flatten().tolist()
    naive = sum(abs(v) for v in d) / len(d) + sum(v * v for v in d) / len(d)
    assert crit.reconstruction_loss(x, y).item() == pytest.approx(naive, rel=1e-6)


class Wrapper(torch.nn.Module):
    """Stands in for DistributedDataParallel where a process group cannot be had: it has
    the wrapped network's forward and parameters, and no `.loss`."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def transformer_step_through(wrap):
    """Loss and gradients of one transformer step taken through `wrap(gpt)`, and the bare
    GPT's own loss and gradients on the same batch."""
    from types import SimpleNamespace

    from annogen.vqgan.experiment import CodeGrids, TransformerExperiment
    from annogen.vqgan.model import build_vqgan

    torch.manual_seed(0)
    grids = CodeGrids(torch.randint(0, 16, (8, 4, 4)), torch.arange(8) % 3, 3, 16)
    exp = TransformerExperiment(build_vqgan("tiny", num_codes=16))
    exp.cfg, exp.dataset = TrainConfig(lr=1e-3), grids
    exp.configure(torch.device("cpu"))
    batch = {"codes": grids.codes, "label": grids.labels}
    expected = exp.gpt.loss(batch["codes"], batch["label"])
    expected.backward()
    expected_grads = [p.grad.clone() for p in exp.gpt.parameters()]
    exp.gpt.zero_grad(set_to_none=True)
    exp.modules["gpt"] = wrap(exp.gpt)
    loop = SimpleNamespace(cfg=exp.cfg, backward_step=lambda loss, name: loss.backward())
    logs = exp.training_step(batch, 1, loop)
    grads = [p.grad for p in exp.gpt.parameters()]
    return logs["loss"], grads, expected.detach(), expected_grads


def test_transformer_step_trains_through_a_wrapper_without_loss():
    """With several processes the loop hands training_step a DistributedDataParallel
    wrapper, which has no `.loss`: the step must call its forward, and its loss and
    gradients must equal the bare GPT's."""
    assert not hasattr(Wrapper(torch.nn.Linear(1, 1)), "loss")
    loss, grads, expected, expected_grads = transformer_step_through(Wrapper)
    assert torch.allclose(loss, expected, atol=1e-6)
    for g, e in zip(grads, expected_grads):
        assert torch.allclose(g, e, atol=1e-6)


DDP_SCRIPT = """
import datetime, sys, tempfile
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
sys.path.insert(0, sys.argv[1])
from test_vqgan_run import transformer_step_through
with tempfile.TemporaryDirectory() as tmp:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60))
    try:
        loss, grads, expected, expected_grads = transformer_step_through(DistributedDataParallel)
    finally:
        dist.destroy_process_group()
assert torch.allclose(loss, expected, atol=1e-6), (loss, expected)
assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(grads, expected_grads))
print("ok")
"""


@pytest.mark.slow
def test_transformer_step_trains_through_the_real_ddp_wrapper():
    """The same with a real DistributedDataParallel in a one-process gloo group, in its own
    interpreter with a time limit (a process group that cannot form must not hang the run)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "GLOO_SOCKET_IFNAME": "lo",
           "OMP_NUM_THREADS": "1"}
    try:
        res = subprocess.run([sys.executable, "-c", DDP_SCRIPT, str(ROOT / "tests")], env=env,
                             capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("a one-process gloo group with DDP did not finish within 180 s")
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
