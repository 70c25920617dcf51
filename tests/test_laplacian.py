"""Tests of the Laplacian diffusion chapter: the pyramid's exact inverse and orthogonal
bands, up(down(.)) as an orthogonal projection, where band 1's energy sits (FFT), the
band schedules (monotone, exactly zero past each switch), the forward process against
its textbook full-size form and at t = 0, the resolution switch (white noise of the new
level, low-pass part untouched, exact inverse of pooling), the EDM preconditioning's
unit-variance target, the sampler's bookkeeping with an oracle denoiser, and the CLI."""

import json
import math

import pytest
import torch

from annogen.laplacian.denoiser import Denoiser, cost_per_image, loss, sample, time_grid
from annogen.laplacian.process import SCHEDULES, LaplacianProcess, Schedule, overall, switch_up
from annogen.laplacian.pyramid import (band_images, down, laplacian_pyramid, reconstruct,
                                       radial_spectrum, up)

pytestmark = pytest.mark.usefixtures("one_thread")


def naive_down(x):
    """2x2 block means with explicit slicing."""
    return (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]) / 4


def naive_up(x):
    B, C, h, w = x.shape
    out = torch.empty(B, C, 2 * h, 2 * w, dtype=x.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            out[..., dy::2, dx::2] = x
    return out


def shapes_images(n=8, seed=0):
    from annogen.data import make_dataset
    data = make_dataset("shapes", 32, n=n, seed=seed)
    return torch.stack([data[i]["image"] for i in range(n)])


# --- the pyramid -------------------------------------------------------------------------

@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_reconstruction_is_exact_for_random_tensors(levels):
    g = torch.Generator().manual_seed(levels)
    x = torch.randn(3, 2, 32, 48, generator=g)
    bands = laplacian_pyramid(x, levels)
    assert len(bands) == levels
    assert [tuple(b.shape[-2:]) for b in bands] == [(32 // 2 ** i, 48 // 2 ** i) for i in range(levels)]
    assert (reconstruct(bands) - x).abs().max().item() < 1e-6


def test_bands_follow_the_papers_formulas():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    x1, x2, x3 = laplacian_pyramid(x, 3)
    assert torch.allclose(x3, naive_down(naive_down(x)))
    assert torch.allclose(x2, naive_down(x) - naive_up(x3))
    assert torch.allclose(x1, x - naive_up(naive_down(x)))
    assert torch.allclose(down(x), naive_down(x)) and torch.allclose(up(x3), naive_up(x3))


def test_up_down_is_an_orthogonal_projection():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    P = lambda v: up(down(v))  # noqa: E731
    assert torch.allclose(P(P(x)), P(x))                                   # idempotent
    assert math.isclose((P(x) * y).sum().item(), (x * P(y)).sum().item(), rel_tol=1e-12)  # symmetric
    # down = up^T / 4: <down x, z> = <x, up z> / 4
    z = torch.randn(4, 3, 4, 4, generator=g, dtype=torch.float64)
    assert math.isclose((down(x) * z).sum().item(), (x * up(z)).sum().item() / 4, rel_tol=1e-12)
    # a bilinear up would not be symmetric: the reason for the nearest-neighbour choice
    Pb = lambda v: torch.nn.functional.interpolate(down(v), scale_factor=2, mode="bilinear")  # noqa: E731
    assert abs((Pb(x) * y).sum().item() - (x * Pb(y)).sum().item()) > 1e-3


def test_full_size_bands_are_orthogonal():
    g = torch.Generator().manual_seed(2)
    full = band_images(torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64), 3)
    for i in range(3):
        for j in range(i + 1, 3):
            assert abs((full[i] * full[j]).sum().item()) < 1e-9


def test_finest_band_energy_sits_at_high_frequencies():
    x = shapes_images(16).double()
    x1 = laplacian_pyramid(x, 3)[0]
    # independent of radial_spectrum: the 2-D FFT and |f| directly
    f = torch.fft.fftfreq(32, dtype=torch.float64)
    rho = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
    high = rho > 0.25
    e_band = torch.fft.fft2(x1).abs().pow(2).sum(dim=(0, 1))
    e_image = torch.fft.fft2(x).abs().pow(2).sum(dim=(0, 1))
    share_band = (e_band[high].sum() / e_band.sum()).item()
    share_image = (e_image[high].sum() / e_image.sum()).item()
    assert share_band > 0.6 and share_image < 0.1
    # the helper used for the figure agrees: band 1's spectrum peaks above 0.25 cycles/pixel
    centres, power = radial_spectrum(x1)
    assert centres[power.argmax()].item() > 0.25


# --- the schedules and the forward process ------------------------------------------------

@pytest.mark.parametrize("name", ["edify", "edify-early", "edify-late", "fdm"])
def test_attenuations_are_monotone_and_zero_past_each_switch(name):
    sched = SCHEDULES[name]
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    b1, b2, b3 = (sched.band(i, t) for i in (1, 2, 3))
    for b in (b1, b2):
        assert (b[1:] <= b[:-1] + 1e-15).all()
        assert b[0].item() == 1.0
    assert (b1[t >= sched.t1] == 0).all() and (b1[t < sched.t1] > 0).all()
    assert (b2[t >= sched.t2] == 0).all() and (b2[t < sched.t2] > 0).all()
    assert (b3 == 1).all()
    assert (b1 <= b2).all()  # the finest band is always the most attenuated
    a, s = overall(t)
    assert torch.allclose(a ** 2 + s ** 2, torch.ones_like(t))


def test_single_schedule_never_attenuates_or_switches():
    sched = SCHEDULES["single"]
    t = torch.linspace(0, 1, 11)
    assert (sched.band(1, t) == 1).all() and sched.switch_times == () and sched.level(1.0) == 0
    with pytest.raises(ValueError):
        Schedule("concurrent", 0.8, 0.5)


def test_mean_is_the_sum_of_attenuated_bands():
    proc = LaplacianProcess("edify")
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, 3, 32, 32, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64)
    x1, x2, x3 = laplacian_pyramid(x0, 3)
    for k in range(3):
        tk = float(t[k])
        a = math.cos(math.pi * tk / 2)
        b1 = math.cos(math.pi / 2 * min(tk / 0.5, 1)) if tk < 0.5 else 0.0
        b2 = math.cos(math.pi / 2 * min(tk / 0.75, 1)) if tk < 0.75 else 0.0
        expected = a * b1 * x1[k] + a * b2 * naive_up(x2[k:k + 1])[0] + a * naive_up(naive_up(x3[k:k + 1]))[0]
        assert torch.allclose(proc.mean(x0, t, 0)[k], expected, atol=1e-12)


def test_forward_process_at_t0_returns_the_image():
    x0 = shapes_images(4)
    for name in SCHEDULES:
        z, y, level = LaplacianProcess(name).q_sample(x0, torch.zeros(4))
        assert level == 0 and torch.equal(y, x0)
        assert (z - x0).abs().max().item() < 1e-6


def test_low_resolution_state_is_the_pooled_full_size_state():
    # down^l of the textbook full-size x_t equals q_sample at level l with the pooled noise
    # rescaled to unit variance (eps_l = down^l(eps) * 2^l): the paper's noise correction
    proc = LaplacianProcess("edify")
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 3, 32, 32, generator=g, dtype=torch.float64)
    for t, l in ((0.6, 1), (0.8, 2)):
        tt = torch.full((2,), t, dtype=torch.float64)
        full = proc.full_size(x0, tt, eps)
        pooled, e = full, eps
        for _ in range(l):
            pooled, e = down(pooled), down(e)
        z, _, level = proc.q_sample(x0, tt, eps=e * 2 ** l)
        assert level == l
        assert torch.allclose(z, pooled, atol=1e-12)
        # nothing was lost: the full-size mean already lives in the range of up^l
        mean_full = proc.mean(x0, tt, 0)
        mean_back = mean_full
        for _ in range(l):
            mean_back = down(mean_back)
        for _ in range(l):
            mean_back = up(mean_back)
        assert torch.allclose(mean_full, mean_back, atol=1e-12)


# --- switching up ---------------------------------------------------------------------------

def test_switch_up_turns_low_resolution_noise_into_white_noise_of_the_new_level():
    g = torch.Generator().manual_seed(5)
    sigma = 0.3
    x = sigma * torch.randn(40000, 1, 4, 4, generator=g, dtype=torch.float64)
    x_up, sigma_up = switch_up(x, sigma, generator=g)
    assert x_up.shape == (40000, 1, 8, 8) and sigma_up == pytest.approx(0.6)
    per_pixel_std = x_up.std(dim=0)
    assert ((per_pixel_std / sigma_up - 1).abs() < 0.02).all()
    flat = x_up.flatten(1)
    corr = torch.corrcoef(flat.T)
    off = corr - torch.eye(64, dtype=torch.float64)
    assert off.abs().max().item() < 0.03  # horizontal, vertical, diagonal neighbours all ~ 0
    # and the low-pass part is unchanged, sample by sample
    assert torch.allclose(down(x_up), x, atol=1e-12)


def test_switch_up_inverts_pooling_when_given_the_same_noise():
    g = torch.Generator().manual_seed(6)
    low_mean = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64)
    sigma_R = 0.7
    x_R = up(low_mean) + sigma_R * eps  # a full-size state whose finest band is zero
    x_up, sigma_up = switch_up(down(x_R), sigma_R / 2, noise=eps)
    assert sigma_up == pytest.approx(sigma_R)
    assert torch.allclose(x_up, x_R, atol=1e-12)
    with pytest.raises(ValueError):
        switch_up(down(x_R), 0.1, noise=torch.zeros(2, 3, 8, 8))


# --- the denoiser, the loss and the sampler -------------------------------------------------

def test_preconditioned_target_has_unit_variance():
    # EDM's scales make (x0 - c_skip z) / c_out unit-variance for data of std sigma_data
    proc = LaplacianProcess("single")
    den = Denoiser(torch.nn.Identity(), proc)
    g = torch.Generator().manual_seed(7)
    x0 = 0.5 * torch.randn(5000, 1, 4, 4, generator=g, dtype=torch.float64)
    for t in (0.05, 0.4, 0.9):
        tt = torch.full((len(x0),), t, dtype=torch.float64)
        z, y, _ = proc.q_sample(x0, tt, generator=g)
        c_in, c_skip, c_out = (c.view(-1, 1, 1, 1) for c in den.scales(tt, 0))
        assert (c_in * z).std().item() == pytest.approx(1.0, rel=0.03)
        assert ((y - c_skip * z) / c_out).std().item() == pytest.approx(1.0, rel=0.03)


class Oracle(torch.nn.Module):
    """A 'network' whose denoiser output is always the given images (at the state's size)."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.num_classes = 0

    def forward(self, x, t, y=None):
        return x  # unused: Denoiser.forward is replaced below


def test_sampler_with_an_oracle_denoiser_returns_the_image_and_counts_pixels():
    x0 = shapes_images(2)
    for name in ("edify", "fdm", "single"):
        proc = LaplacianProcess(name)
        den = Denoiser(Oracle(x0), proc)

        def oracle(z, t, level, y=None):
            target = x0
            for _ in range(level):
                target = down(target)
            return target
        den.forward = oracle
        traj = []
        out, pixels = sample(den, 2, 8, generator=torch.Generator().manual_seed(0), trajectory=traj)
        assert torch.allclose(out, x0, atol=1e-5)
        assert pixels == cost_per_image(proc, 8)
        sizes = [z.shape[-1] for _, _, z, _ in traj]
        assert sizes == sorted(sizes)  # resolution only ever goes up
        expected_sizes = {"edify": 8, "fdm": 8, "single": 32}[name]
        assert traj[0][2].shape[-1] in (expected_sizes, expected_sizes * 2)
    assert cost_per_image(LaplacianProcess("single"), 8) == 8 * 1024
    # edify with 8 steps (t = 1, 7/8, ..., 1/8): t >= 0.75 at 8 px (the switch time itself
    # included: band 2 is zero there), 0.5 <= t < 0.75 at 16 px, the rest at 32 px
    assert cost_per_image(LaplacianProcess("edify"), 8) == 3 * 64 + 2 * 256 + 3 * 1024
    assert time_grid(4, (0.6,)) == [1.0, 0.75, 0.6, 0.5, 0.25, 0.0]


def test_loss_backpropagates_and_spends_fewer_pixels_than_one_resolution():
    from annogen.ddpm.unet import build_unet
    torch.manual_seed(0)
    net = build_unet("tiny", image_size=32, num_classes=21)
    x0 = shapes_images(16)
    y = torch.arange(16) % 21
    value, px = loss(Denoiser(net, LaplacianProcess("edify")), x0, y, generator=torch.Generator().manual_seed(0))
    value.backward()
    assert torch.isfinite(value) and all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())
    _, px_single = loss(Denoiser(net, LaplacianProcess("single")), x0, y, generator=torch.Generator().manual_seed(0))
    assert px_single == 16 * 1024 and px < px_single


# --- the command line ---------------------------------------------------------------------------

def test_cli_trains_samples_and_scores(tmp_path):
    from annogen.laplacian.__main__ import main
    rc = main(["--threads", "1", "--steps", "3", "--batch-size", "8", "--data-size", "32", "--image-size", "16",
               "--eval-samples", "8", "--sampling-steps", "4", "--out", str(tmp_path), "--run", "t",
               "--sample-every", "1000", "--ckpt-every", "1000", "--log-every", "1"])
    assert rc == 0
    run = tmp_path / "laplacian" / "t"
    assert (run / "checkpoint.pt").exists() and (run / "samples-4.png").exists()
    row = json.loads((run / "eval-4.json").read_text())
    # 4 steps at 16 px, switches at 0.5 and 0.75: t = 1 and 0.75 at 4 px, 0.5 at 8 px, 0.25 at 16 px
    assert row["nfe"] == 4 and row["pixels_per_image"] == 2 * 16 + 64 + 256


def test_cli_rejects_a_bad_schedule_in_one_line(capsys):
    from annogen.laplacian.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(["--schedule", "nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err
