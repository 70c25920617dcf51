"""Tests of annogen.train, the shared training loop.

The experiments here are tiny (an MLP on 4x4 images, a two-network GAN) so that each
train() call takes a fraction of a second; they are also used by the DDP worker script,
which imports this file by path.
"""
import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from annogen.train import (ArgumentParser, Budgeted, Experiment, TrainConfig, TrainingDiverged,
                           add_train_args, config_from_args, load_checkpoint, pick_device,
                           save_image_grid, top_k_arg, top_p_arg, train)


class ToyImages(torch.utils.data.Dataset):
    """n random 1x4x4 images in [-1, 1] with the item layout of annogen.data."""
    channels, size, num_classes = 1, 4, 3

    def __init__(self, n=10, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 1, 4, 4, generator=g) * 2 - 1
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i], "caption": f"toy {i}"}


class MLP(Experiment):
    """Denoising autoencoder. With random=True every step draws from torch (dropout and
    noise), Python's `random` and NumPy, so a resume that forgets any generator fails."""
    name = "mlp"
    num_samples = 8

    def __init__(self, random_parts=True, optimizer="adam", nan_at=None, scale=1.0, record=False):
        self.random_parts, self.optimizer, self.nan_at = random_parts, optimizer, nan_at
        self.scale, self.record = scale, record
        self.trace = []

    def configure(self, device):
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32),
                            nn.Dropout(0.2 if self.random_parts else 0.0), nn.Tanh(),
                            nn.Linear(32, 16)).to(device)
        self.modules = {"net": net}
        if self.optimizer == "adam":
            opt = torch.optim.Adam(net.parameters(), lr=self.cfg.lr)
        else:
            opt = torch.optim.SGD(net.parameters(), lr=self.cfg.lr)
        self.optimizers = {"net": opt}
        self.initial = [p.detach().clone() for p in net.parameters()]

    def training_step(self, batch, step, loop):
        x = batch["image"].flatten(1)
        inp = x
        jitter = 1.0
        if self.random_parts:
            inp = x + 0.1 * torch.randn_like(x)
            jitter = 1.0 + 0.1 * random.random() + 0.1 * float(np.random.rand())
        loss = self.scale * jitter * (self.modules["net"](inp) - x).pow(2).mean()
        if step == self.nan_at:
            loss = loss * float("nan")
        params = list(self.modules["net"].parameters())
        if self.record:
            grads = torch.autograd.grad(loss, params, retain_graph=True)
            before = [p.detach().clone() for p in params]
        norm = loop.backward_step(loss, "net")
        if self.record:
            after = [p.detach().clone() for p in params]
            self.trace.append(dict(grads=grads, before=before, after=after, norm=norm))
        return {"loss": loss}

    def sample(self, n):
        z = torch.randn(n, 16)
        return torch.tanh(self.modules["net"](z)).view(n, 1, 4, 4)


class TinyGAN(Experiment):
    """One discriminator step, then one generator step, each with its own Adam."""
    name = "gan"
    num_samples = 4
    ema_modules = ("g",)

    def configure(self, device):
        g = nn.Sequential(nn.Linear(8, 16), nn.Tanh()).to(device)
        d = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1)).to(device)
        self.modules = {"g": g, "d": d}
        self.optimizers = {"g": torch.optim.Adam(g.parameters(), lr=self.cfg.lr),
                           "d": torch.optim.Adam(d.parameters(), lr=self.cfg.lr)}
        self.initial = {n: [p.detach().clone() for p in m.parameters()] for n, m in self.modules.items()}
        self.untouched = []  # (network not being optimised, unchanged?) per backward_step

    def snapshot(self, name):
        return [p.detach().clone() for p in self.modules[name].parameters()]

    def training_step(self, batch, step, loop):
        g, d = self.modules["g"], self.modules["d"]
        real = batch["image"].flatten(1)
        fake = g(torch.randn(len(real), 8))
        loss_d = (nn.functional.softplus(-d(real)) + nn.functional.softplus(d(fake.detach()))).mean()
        g_before = self.snapshot("g")
        loop.backward_step(loss_d, "d")
        self.untouched.append(all(torch.equal(a, b) for a, b in zip(g_before, self.snapshot("g"))))
        loss_g = nn.functional.softplus(-d(fake)).mean()
        d_before = self.snapshot("d")
        loop.backward_step(loss_g, "g")
        self.untouched.append(all(torch.equal(a, b) for a, b in zip(d_before, self.snapshot("d"))))
        return {"loss_d": loss_d, "loss_g": loss_g}

    def sample(self, n):
        return self.modules["g"](torch.randn(n, 8)).view(n, 1, 4, 4)


def losses(run_dir, key="loss"):
    return [(r["step"], r[key]) for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]


def cfg(tmp_path, **kw):
    base = dict(steps=6, batch_size=4, lr=1e-2, ckpt_every=3, log_every=1, sample_every=1000,
                out=str(tmp_path / "runs"), seed=3)
    base.update(kw)
    return TrainConfig(**base)


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        elif isinstance(a[k], dict):
            assert_same_state(a[k], b[k])
        else:
            assert a[k] == b[k], k


# 10 items, batch 4: two batches an epoch, so 6 steps cross two epoch boundaries and the
# resume at step 3 lands in the middle of an epoch.
@pytest.mark.parametrize("interruption", ["stopped at 3", "crashed at 5 after checkpoint 3"])
def test_resume_replays_the_uninterrupted_run_exactly(tmp_path, interruption):
    data = ToyImages(n=10)
    whole = train(MLP(), data, cfg(tmp_path, run="whole", ema_decay=0.9))

    if interruption == "stopped at 3":
        train(MLP(), data, cfg(tmp_path, run="parts", steps=3, ema_decay=0.9))
    else:  # logs steps 1..4, checkpoint at 3, then dies at 5
        with pytest.raises(TrainingDiverged):
            train(MLP(nan_at=5), data, cfg(tmp_path, run="parts", ema_decay=0.9))
        assert [s for s, _ in losses(tmp_path / "runs/mlp/parts")] == [1, 2, 3, 4]
    assert load_checkpoint(tmp_path / "runs/mlp/parts/checkpoint.pt")["step"] == 3
    parts = train(MLP(), data, cfg(tmp_path, run="parts", ema_decay=0.9, resume=True))

    assert losses(parts) == losses(whole)
    assert [s for s, _ in losses(whole)] == [1, 2, 3, 4, 5, 6]
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(parts / "checkpoint.pt")
    assert a["step"] == b["step"] == 6
    for part in ("modules", "ema", "optimizers"):
        assert_same_state(a[part], b[part])
    assert not torch.equal(a["modules"]["net"]["1.weight"], a["ema"]["net"]["1.weight"])


def test_resume_without_restoring_random_state_would_differ(tmp_path):
    # Guard that the experiment above really depends on the random state: a fresh run
    # started from the step-3 weights but reseeded gives different losses.
    data = ToyImages(n=10)
    whole = train(MLP(), data, cfg(tmp_path, run="whole"))
    train(MLP(), data, cfg(tmp_path, run="parts", steps=3))
    ckpt_path = tmp_path / "runs/mlp/parts/checkpoint.pt"
    ckpt = load_checkpoint(ckpt_path)
    ckpt["ranks"] = []  # forget the generators
    torch.save(ckpt, ckpt_path)
    with pytest.warns(UserWarning, match="reseeding"):
        parts = train(MLP(), data, cfg(tmp_path, run="parts", resume=True))
    assert losses(parts)[:3] == losses(whole)[:3]
    assert losses(parts)[3:] != losses(whole)[3:]


def test_gan_alternates_two_optimizers_and_updates_both(tmp_path):
    exp = TinyGAN()
    run = train(exp, ToyImages(n=16), cfg(tmp_path, steps=4, ema_decay=0.5, log_every=2))
    for name, module in exp.modules.items():
        assert all(not torch.equal(p0, p) for p0, p in zip(exp.initial[name], module.parameters()))
        state = exp.optimizers[name].state
        assert all(int(state[p]["step"]) == 4 for p in module.parameters())
    assert exp.untouched == [True] * 8  # each optimizer step moves only its own network
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert set(ckpt["ema"]) == {"g"}
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_d", "loss_g", "grad_norm_d", "grad_norm_g"} <= set(lines[0])


def test_ema_equals_naive_recomputation(tmp_path):
    gamma = 0.8
    exp = MLP(random_parts=False, record=True)
    run = train(exp, ToyImages(n=8), cfg(tmp_path, steps=5, ema_decay=gamma, grad_clip=None))
    ema = [p.clone() for p in exp.initial]
    for t in exp.trace:
        ema = [gamma * e + (1 - gamma) * theta for e, theta in zip(ema, t["after"])]
    got = load_checkpoint(run / "checkpoint.pt")["ema"]["net"]
    names = [n for n, _ in exp.modules["net"].named_parameters()]
    for name, expected in zip(names, ema):
        torch.testing.assert_close(got[name], expected, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(got[names[0]], exp.trace[-1]["after"][0])


def test_grad_clipping_bounds_the_total_norm(tmp_path):
    c = 0.05
    exp = MLP(random_parts=False, optimizer="sgd", scale=100.0, record=True)
    train(exp, ToyImages(n=8), cfg(tmp_path, steps=3, lr=1.0, grad_clip=c))
    for t in exp.trace:
        total = torch.sqrt(sum((g.double() ** 2).sum() for g in t["grads"]))
        assert total > 10 * c  # clipping is active
        torch.testing.assert_close(t["norm"].double(), total, rtol=1e-5, atol=0)
        factor = min(1.0, c / (float(total) + 1e-6))
        steps = [b - a for a, b in zip(t["before"], t["after"])]  # SGD, lr 1: -clipped g
        for s, g in zip(steps, t["grads"]):
            torch.testing.assert_close(s, -g * factor, rtol=1e-4, atol=1e-7)
        step_norm = torch.sqrt(sum((s.double() ** 2).sum() for s in steps))
        assert step_norm <= c * (1 + 1e-4)


def test_grad_clipping_leaves_small_gradients_alone(tmp_path):
    exp = MLP(random_parts=False, optimizer="sgd", record=True)
    train(exp, ToyImages(n=8), cfg(tmp_path, steps=2, lr=0.1, grad_clip=1e6))
    for t in exp.trace:
        for a, b, g in zip(t["before"], t["after"], t["grads"]):
            torch.testing.assert_close(b - a, -0.1 * g, rtol=1e-4, atol=1e-8)


def test_failed_checkpoint_save_keeps_the_old_file(tmp_path, monkeypatch):
    real_save = torch.save
    calls = []

    def flaky_save(obj, path, *args, **kwargs):
        calls.append(Path(path))
        if len(calls) == 1:
            return real_save(obj, path, *args, **kwargs)
        with open(path, "wb") as f:  # half a file, then the disk is full
            f.write(b"PK\x03\x04 partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(OSError, match="No space"):
        train(MLP(), ToyImages(n=10), cfg(tmp_path, steps=4, ckpt_every=2))
    monkeypatch.undo()
    run = tmp_path / "runs/mlp/default"
    assert calls[1] != run / "checkpoint.pt"  # it wrote beside the checkpoint, not over it
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 2
    leftovers = sorted(p.name for p in run.iterdir())
    assert leftovers == ["checkpoint.pt", "config.json", "metrics.jsonl"]


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
    exp = MLP(nan_at=5)
    with pytest.raises(TrainingDiverged) as info:
        train(exp, ToyImages(n=10), cfg(tmp_path, steps=10, ckpt_every=2))
    message = str(info.value)
    assert "step 5" in message and "nan" in message and "'net'" in message
    assert "\n" not in message
    assert info.value.step == 5
    run = tmp_path / "runs/mlp/default"
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["modules"]["net"].values())
    # the weights in memory were not touched by the NaN step either
    assert all(torch.isfinite(p).all() for p in exp.modules["net"].parameters())
    assert [s for s, _ in losses(run)] == [1, 2, 3, 4]
    assert (run / "loss.png").exists()


def test_run_folder_has_all_outputs(tmp_path):
    run = train(MLP(), ToyImages(n=10), cfg(tmp_path, steps=6, log_every=2, sample_every=3))
    assert run == tmp_path / "runs" / "mlp" / "default"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 // 2
    assert [json.loads(x)["step"] for x in lines] == [2, 4, 6]
    with Image.open(run / "samples.png") as im:  # 8 samples of 4x4 in one row, 2 px borders
        assert im.format == "PNG" and im.size == (2 + 8 * 6, 2 + 6)
    with Image.open(run / "loss.png") as im:
        assert im.format == "PNG"
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 6 and config["experiment"] == "mlp"
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 6


def test_save_image_grid_places_each_image(tmp_path):
    images = torch.tensor([[-1.0, 0.0], [0.5, 1.0]]).view(1, 1, 2, 2).repeat(3, 1, 1, 1)
    images[1] = -images[1]
    images[2] = 1.0
    save_image_grid(images, tmp_path / "g.png", nrow=2, padding=1)
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.shape == (1 + 2 * 3, 1 + 2 * 3)
    expected = [np.round(127.5 * (im[0].numpy() + 1)) for im in images]
    assert (grid[1:3, 1:3] == expected[0]).all()
    assert (grid[1:3, 4:6] == expected[1]).all()
    assert (grid[4:6, 1:3] == expected[2]).all()
    assert (grid[4:6, 4:6] == 255).all() and (grid[0] == 255).all() and (grid[:, 3] == 255).all()


def test_train_args_round_trip_to_config():
    parser = argparse.ArgumentParser()
    add_train_args(parser, steps=50, ema_decay=0.999)
    args = parser.parse_args(["--lr", "1e-3", "--grad-clip", "none", "--no-bf16", "--resume",
                              "--batch-size", "8", "--run", "x"])
    assert config_from_args(args) == TrainConfig(steps=50, ema_decay=0.999, lr=1e-3, grad_clip=None,
                                                 bf16=False, resume=True, batch_size=8, run="x")
    assert config_from_args(parser.parse_args([])) == TrainConfig(steps=50, ema_decay=0.999)
    with pytest.raises(TypeError, match="stpes"):
        add_train_args(argparse.ArgumentParser(), stpes=5)


class BudgetedMLP(Budgeted, MLP):
    """The MLP with a wall-clock deadline: checks it before each step, counts the steps."""
    def __init__(self, stop_after=None):
        MLP.__init__(self, random_parts=False)
        self.stop_after, self.done = stop_after, 0

    def training_step(self, batch, step, loop):
        if self.stop_after is not None and step == self.stop_after:
            self.deadline = time.monotonic()  # the clock runs out during this step
        self.stop_if_out_of_time(step, loop)
        self.done += 1
        return super().training_step(batch, step, loop)


@pytest.mark.parametrize("stop_after", [None, 1, 4])
def test_budget_makes_the_step_in_progress_the_last(tmp_path, stop_after):
    c = cfg(tmp_path, steps=6, ckpt_every=100)
    exp = BudgetedMLP(stop_after)
    run_dir = train(exp, ToyImages(), c)
    expected = 6 if stop_after is None else stop_after
    assert exp.done == c.steps == expected
    # the run ended as a run of that many steps would: final checkpoint and log line
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == expected
    assert losses(run_dir)[-1][0] == expected


def test_top_k_and_top_p_flags_parse_switch_off_and_reject_out_of_range(capsys):
    assert top_k_arg("8") == 8 and top_k_arg("none") is None and top_k_arg("0") is None
    assert top_p_arg("0.8") == 0.8 and top_p_arg("1") == 1.0 and top_p_arg("OFF") is None
    for bad in ("-1",):
        with pytest.raises(argparse.ArgumentTypeError):
            top_k_arg(bad)
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(argparse.ArgumentTypeError):
            top_p_arg(bad)
    parser = ArgumentParser(prog="prog")
    parser.add_argument("--top-p", type=top_p_arg)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--top-p", "2"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--top-p" in err and "must be in (0, 1]" in err


def test_pick_device_prefers_accelerators_and_rejects_missing_ones():
    assert pick_device("cpu") == torch.device("cpu")
    auto = pick_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    elif not torch.backends.mps.is_available():
        assert auto.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            pick_device("cuda")


DDP_CONFIG = dict(steps=4, batch_size=4, lr=0.5, ckpt_every=2, log_every=1, sample_every=1000,
                  seed=3, ema_decay=0.5)


def ddp_worker(rank, world_size, port, work):
    """One process of a two-process run, with the environment torchrun would set."""
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    work = Path(work)
    (work / f"rank{rank}").mkdir()
    os.chdir(work / f"rank{rank}")  # relative paths: whatever this rank writes lands here
    exp = MLP(random_parts=False, optimizer="sgd")
    train(exp, ToyImages(n=16), TrainConfig(out="runs", **DDP_CONFIG))  # train() joins the group
    torch.save(exp.modules["net"].state_dict(), work / f"weights{rank}.pt")
    # A GAN (each network called more than once per step) in a group the caller set up
    # (through a file: a second TCP store could race with the first one's shutdown).
    torch.distributed.init_process_group("gloo", init_method=f"file://{work}/store",
                                         rank=rank, world_size=world_size)
    gan = TinyGAN()
    train(gan, ToyImages(n=16), TrainConfig(out="runs", **DDP_CONFIG))
    assert torch.distributed.is_initialized()  # train() left the caller's group alone
    torch.distributed.destroy_process_group()
    torch.save({n: m.state_dict() for n, m in gan.modules.items()}, work / f"gan{rank}.pt")


TORCHRUN_SCRIPT = textwrap.dedent("""
    import importlib.util, os, sys
    spec = importlib.util.spec_from_file_location("train_tests", sys.argv[1])
    tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tests)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    tests.ddp_worker(rank, world, os.environ["MASTER_PORT"], sys.argv[2])
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_fork(tmp_path):
    # Forked children inherit the imported modules, which saves three torch imports.
    ctx = torch.multiprocessing.start_processes(ddp_worker, args=(2, free_port(), str(tmp_path)),
                                                nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two processes did not finish within 120 s")


def launch_torchrun(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(TORCHRUN_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(script), __file__, str(tmp_path)]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its workers
        proc.communicate()
        pytest.fail("torchrun did not finish within 180 s")
    assert proc.returncode == 0, out[-5000:]


@pytest.mark.parametrize("launch", [launch_fork, pytest.param(launch_torchrun, marks=pytest.mark.slow)],
                         ids=["fork", "torchrun"])
def test_ddp_two_cpu_processes_agree_and_only_rank0_writes(tmp_path, launch):
    launch(tmp_path)
    w0 = torch.load(tmp_path / "weights0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights1.pt", weights_only=True)
    assert_same_state(w0, w1)
    g0 = torch.load(tmp_path / "gan0.pt", weights_only=True)
    g1 = torch.load(tmp_path / "gan1.pt", weights_only=True)
    assert_same_state(g0, g1)
    assert list((tmp_path / "rank1").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "rank0" / "runs").iterdir()) == ["gan", "mlp"]
    run0 = tmp_path / "rank0" / "runs" / "mlp" / "default"
    assert sorted(p.name for p in run0.iterdir()) == ["checkpoint.pt", "config.json", "loss.png",
                                                      "metrics.jsonl", "samples.png"]
    ckpt = load_checkpoint(run0 / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 2
    assert_same_state(ckpt["modules"]["net"], w0)

    # Averaging the gradients of two processes with batch 4 each is one process with
    # batch 8: rank r takes positions r, r + 2, ... of the same permutation.
    single = MLP(random_parts=False, optimizer="sgd")
    run = train(single, ToyImages(n=16),
                TrainConfig(out=str(tmp_path / "single"), **{**DDP_CONFIG, "batch_size": 8}))
    for k, v in single.modules["net"].state_dict().items():
        torch.testing.assert_close(w0[k], v, rtol=1e-5, atol=1e-6)
    assert len(losses(run0)) == len(losses(run)) == 4
    for (s0, l0), (s1, l1) in zip(losses(run0), losses(run)):
        assert s0 == s1 and l0 == pytest.approx(l1, rel=1e-5)
    assert not all(torch.equal(a, b) for a, b in zip(single.initial, single.modules["net"].parameters()))
