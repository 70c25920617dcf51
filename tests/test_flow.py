"""Flow matching: the path and its targets, the timestep shift, the samplers against
closed-form Gaussian flows, Flow-DPM-Solver's first-order step against Euler and DDIM,
classifier-free guidance, and the 2-D mixture demonstration."""

import math

import pytest
import torch

from annogen.flow import (cfg_velocity, dpm_solver_sample, euler_sample, flow_match_sigmas,
                          flow_matching_loss, interpolate, logit_normal_sigma, predict_eps,
                          predict_x0, sample, shift_sigma, sigma_schedule, velocity_target)
from annogen.flow.flow import dpm_first_order_step, flow_lambda
from annogen.flow.toy import Mixture, bending, eight_gaussians, sampler_errors


pytestmark = pytest.mark.usefixtures("one_thread")


def test_shift_of_one_half_by_three_is_three_quarters_on_floats_and_tensors():
    assert shift_sigma(0.5, 3) == 0.75
    out = shift_sigma(torch.tensor([0.0, 0.5, 1.0]), 3.0)
    assert torch.allclose(out, torch.tensor([0.0, 0.75, 1.0]))
    # the shift divides the signal-to-noise ratio ((1 - sigma) / sigma)^2 by s^2
    sigma = torch.tensor([0.1, 0.3, 0.7], dtype=torch.float64)
    snr = ((1 - sigma) / sigma) ** 2
    shifted = shift_sigma(sigma, 3.0)
    assert torch.allclose(((1 - shifted) / shifted) ** 2, snr / 9)


def test_x0_is_exactly_x_sigma_minus_sigma_times_velocity():
    g = torch.Generator().manual_seed(0)
    x_0, eps = torch.randn(5, 3, 4, 4, generator=g), torch.randn(5, 3, 4, 4, generator=g)
    sigma = torch.rand(5, generator=g)
    x_sigma = interpolate(x_0, eps, sigma)
    naive = torch.stack([(1 - s) * a + s * e for a, e, s in zip(x_0, eps, sigma)])
    assert torch.allclose(x_sigma, naive)
    v = velocity_target(x_0, eps)
    assert torch.allclose(v, eps - x_0)
    assert torch.allclose(predict_x0(x_sigma, v, sigma), x_0, atol=1e-6)
    assert torch.allclose(predict_eps(x_sigma, v, sigma), eps, atol=1e-6)
    # one Euler step from sigma = 1 with the exact velocity of a single point lands on it
    x_1 = eps[:1]
    out = euler_sample(lambda x, s: eps[:1] - x_0[:1], x_1, torch.tensor([1.0, 0.0]))
    assert torch.allclose(out, x_0[:1], atol=1e-6)


def test_logit_normal_sigmas_are_sigmoids_of_standard_normals():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    sigma = logit_normal_sigma(20000, generator=g1)
    assert torch.allclose(sigma, torch.sigmoid(torch.randn(20000, generator=g2)))
    assert 0 < sigma.min() and sigma.max() < 1
    assert abs(sigma.median().item() - 0.5) < 0.02
    d = logit_normal_sigma(1000, generator=g1, discrete=True)
    table = torch.linspace(0, 0.999, 1000)
    assert all((table - v).abs().min() < 1e-7 for v in d[:50])


def test_schedule_runs_from_just_below_one_to_zero_and_is_shifted():
    s = sigma_schedule(10)
    assert len(s) == 11 and s[-1] == 0 and abs(s[0] - 0.999) < 1e-12
    assert torch.all(s[1:] < s[:-1])
    assert torch.allclose(sigma_schedule(10, shift=3.0), shift_sigma(s, 3.0))
    assert sigma_schedule(4, t_0=0.0)[0] == 1.0


# Gaussian data N(mu, s^2): the optimal velocity in closed form, written out here
# independently of annogen.flow.toy.
MU, S = 1.5, 0.5


def gaussian_v(x, sigma):
    sigma = sigma.reshape(-1, 1)
    a = 1 - sigma
    var = a * a * S * S + sigma * sigma
    e_eps = sigma * (x - a * MU) / var           # E[eps | x_sigma]
    e_x0 = MU + a * S * S * (x - a * MU) / var   # E[x_0 | x_sigma]
    return e_eps - e_x0


def gaussian_start(n=4000):
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_euler_with_many_steps_recovers_gaussian_mean_and_std():
    x_T = gaussian_start()
    x_0 = euler_sample(gaussian_v, x_T, sigma_schedule(1000, t_0=0.0))
    assert abs(x_0.mean().item() - (MU + S * x_T.mean().item())) < 1e-3
    assert abs(x_0.std().item() - S * x_T.std().item()) < 1e-3
    # the exact flow maps z to mu + s z: every sample, not just the statistics
    assert (x_0 - (MU + S * x_T)).abs().max() < 5e-3


def test_dpm_solver_with_20_steps_recovers_gaussian_mean_and_std():
    x_T = gaussian_start()
    x_0 = dpm_solver_sample(gaussian_v, x_T, sigma_schedule(20, t_0=0.0))
    assert abs(x_0.mean().item() - (MU + S * x_T.mean().item())) < 1e-2
    assert abs(x_0.std().item() - S * x_T.std().item()) < 1e-2
    # and with Sana's schedule (first sigma 0.999), second order from the second step on
    x_0 = dpm_solver_sample(gaussian_v, x_T, sigma_schedule(20, shift=3.0))
    assert abs(x_0.mean().item() - MU) < 0.03 and abs(x_0.std().item() - S) < 0.03
    # 20 steps of DPM-Solver land closer than 20 steps of Euler
    exact = MU + S * x_T
    err_dpm = (dpm_solver_sample(gaussian_v, x_T, sigma_schedule(20)) - exact).abs().mean()
    err_euler = (euler_sample(gaussian_v, x_T, sigma_schedule(20)) - exact).abs().mean()
    assert err_dpm < err_euler


def test_dpm_solver_order_one_is_an_euler_and_a_ddim_step():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 3, generator=g, dtype=torch.float64)

    def velocity(x, sigma):  # any smooth field
        return torch.tanh(x @ W) * (1 + sigma[:, None])

    x_T = torch.randn(6, 3, generator=g, dtype=torch.float64)
    sigmas = sigma_schedule(7, shift=2.0)
    # naive Euler loop
    x = x_T.clone()
    for s, t in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        x = x + (t - s) * velocity(x, torch.full((6,), s, dtype=torch.float64))
    assert torch.allclose(dpm_solver_sample(velocity, x_T, sigmas, order=1), x, atol=1e-10)
    # one step written as DDIM: x_t = alpha_t x0_hat + sigma_t eps_hat
    s, t = sigmas[2], sigmas[3]
    v = velocity(x_T, torch.full((6,), float(s), dtype=torch.float64))
    x0_hat, eps_hat = x_T - s * v, x_T + (1 - s) * v
    ddim = (1 - t) * x0_hat + t * eps_hat
    assert torch.allclose(dpm_first_order_step(x_T, x0_hat, s, t), ddim, atol=1e-10)


def test_dpm_solver_second_order_step_matches_the_written_formula():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(2, 2, generator=g, dtype=torch.float64)

    def velocity(x, sigma):
        return torch.sin(x @ W) - sigma[:, None] * x

    x_T = torch.randn(4, 2, generator=g, dtype=torch.float64)
    sigmas = sigma_schedule(3)
    lam = [math.log((1 - s) / s) for s in sigmas[:-1].tolist()]
    s0, s1, s2 = sigmas[:3].tolist()
    # step 1: first order
    v0 = velocity(x_T, torch.full((4,), s0, dtype=torch.float64))
    d0 = x_T - s0 * v0
    x1 = s1 / s0 * x_T - (1 - s1) * math.expm1(-(lam[1] - lam[0])) * d0
    # step 2: second order multistep
    v1 = velocity(x1, torch.full((4,), s1, dtype=torch.float64))
    d1 = x1 - s1 * v1
    lam2 = math.log((1 - s2) / s2)
    h, h0 = lam2 - lam[1], lam[1] - lam[0]
    D = (d1 - d0) * h / h0
    x2 = s2 / s1 * x1 - (1 - s2) * math.expm1(-h) * (d1 + 0.5 * D)
    # step 3 to sigma = 0: first order, returns x0_hat
    v2 = velocity(x2, torch.full((4,), s2, dtype=torch.float64))
    expected = x2 - s2 * v2
    assert torch.allclose(dpm_solver_sample(velocity, x_T, sigmas), expected, atol=1e-10)
    assert torch.isinf(flow_lambda(torch.tensor(0.0))) and torch.isinf(flow_lambda(torch.tensor(1.0)))


class ToyModel(torch.nn.Module):
    """v(x, t, y) that depends on all three inputs."""

    def forward(self, x, t, y):
        return x * (t[:, None] / 1000) + y[:, None].float() - 0.5


def test_cfg_with_scale_one_is_the_conditional_velocity_and_otherwise_extrapolates():
    model = ToyModel()
    x = torch.randn(4, 2)
    sigma = torch.tensor([0.1, 0.4, 0.6, 0.9])
    y = torch.tensor([0, 3, 1, 2])
    cond = model(x, sigma * 1000, y)
    uncond = model(x, sigma * 1000, torch.full_like(y, 7))
    assert torch.allclose(cfg_velocity(model, y, 7, 1.0)(x, sigma), cond)
    assert torch.allclose(cfg_velocity(model, y, 7, 0.0)(x, sigma), uncond)
    assert torch.allclose(cfg_velocity(model, y, 7, 4.0)(x, sigma), uncond + 4.0 * (cond - uncond))


def test_flow_matching_loss_is_the_mean_squared_velocity_error():
    class Recorder(torch.nn.Module):
        def forward(self, x, t, y):
            self.seen = (x, t)
            return torch.zeros_like(x)

    model = Recorder()
    x_0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    loss = flow_matching_loss(model, x_0, None, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    sigma = torch.sigmoid(torch.randn(8, generator=g))
    eps = torch.randn(8, 2, generator=g)
    assert torch.allclose(model.seen[1], sigma * 1000)
    assert torch.allclose(model.seen[0], (1 - sigma[:, None]) * x_0 + sigma[:, None] * eps)
    assert torch.allclose(loss, (eps - x_0).pow(2).mean())


def test_mixture_velocity_is_the_posterior_average_of_component_velocities():
    # one component: the mixture formula reduces to the Gaussian closed form
    one = Mixture(torch.tensor([[MU]], dtype=torch.float64), torch.tensor([S], dtype=torch.float64),
                  torch.tensor([1.0], dtype=torch.float64))
    x = torch.randn(10, 1, dtype=torch.float64)
    sigma = torch.rand(10, dtype=torch.float64)
    assert torch.allclose(one.velocity(x, sigma), gaussian_v(x, sigma))
    # eight components: Bayes' rule, component by component, with torch's Gaussian densities
    from torch.distributions import MultivariateNormal
    mix = eight_gaussians()
    x = torch.randn(5, 2, dtype=torch.float64) * 2
    for s in (0.2, 0.6, 0.95):
        a = 1 - s
        expected = []
        for xi in x:
            w, v = [], []
            for mu_k, s_k, pi_k in zip(mix.mu, mix.s, mix.pi):
                var = a * a * s_k * s_k + s * s
                dist = MultivariateNormal(a * mu_k, var * torch.eye(2, dtype=torch.float64))
                w.append(pi_k * dist.log_prob(xi).exp())
                e_eps = s * (xi - a * mu_k) / var
                e_x0 = mu_k + a * s_k * s_k * (xi - a * mu_k) / var
                v.append(e_eps - e_x0)
            w = torch.stack(w) / sum(w)
            expected.append((w[:, None] * torch.stack(v)).sum(0))
        got = mix.velocity(x, torch.full((5,), s, dtype=torch.float64))
        assert torch.allclose(got, torch.stack(expected), atol=1e-8)


def test_samplers_on_the_mixture_converge_to_the_exact_flow():
    rows = sampler_errors(eight_gaussians(), steps=(4, 32), n=300)
    by = {(r["sampler"], r["steps"]): r for r in rows}
    for name in ("euler", "euler_diffusers", "dpm"):
        assert by[(name, 32)]["error_in_s"] < by[(name, 4)]["error_in_s"]
        assert by[(name, 32)]["on_a_mode"] > 0.95
    assert by[("dpm", 32)]["error_in_s"] < by[("euler", 32)]["error_in_s"]
    # at 4 steps the diffusers grid's last step (0.001 -> 0) is nearly wasted
    assert by[("euler_diffusers", 4)]["error_in_s"] > by[("euler", 4)]["error_in_s"]


# diffusers' FlowMatchEulerDiscreteScheduler, written out step by step in NumPy as its
# __init__ and set_timesteps do it (training table, its ends, linspace, shift again, 0).
def diffusers_sigmas(steps, shift, T=1000):
    np = pytest.importorskip("numpy")
    table = np.linspace(1, T, T)[::-1] / T
    table = shift * table / (1 + (shift - 1) * table)
    sigma_max, sigma_min = table[0], table[-1]
    sig = np.linspace(sigma_max * T, sigma_min * T, steps) / T
    sig = shift * sig / (1 + (shift - 1) * sig)
    return list(sig) + [0.0]


@pytest.mark.parametrize("steps,shift", [(1, 1.0), (4, 1.0), (4, 3.0), (28, 3.0)])
def test_flow_match_grid_is_the_diffusers_euler_schedulers(steps, shift):
    got = flow_match_sigmas(steps, shift)
    assert got.tolist() == pytest.approx(diffusers_sigmas(steps, shift), abs=1e-12)
    assert got[0] == 1.0 and got[-1] == 0.0 and len(got) == steps + 1


def test_sample_by_name_uses_the_grid_asked_for():
    v = lambda x, s: x * 0 + 1.0  # constant velocity: Euler lands at x - (sigma_0 - 0)
    x = torch.zeros(3, 2, dtype=torch.float64)
    assert torch.allclose(sample(v, x, 4, "euler"), x - 0.999)                 # uniform: from 0.999
    assert torch.allclose(sample(v, x, 4, "euler", grid="diffusers"), x - 1.0)  # diffusers: from 1
    # the DPM-Solver on a grid that starts at sigma = 1 stays finite (first steps first order)
    out = sample(gaussian_v, gaussian_start(200), 8, "dpm", grid="diffusers")
    assert torch.isfinite(out).all() and abs(out.mean().item() - MU) < 0.1
    with pytest.raises(ValueError, match="grid"):
        sample(v, x, 4, "euler", grid="karras")


def test_bending_is_zero_for_straight_paths_and_the_exact_angle_for_a_gaussian():
    # a point mass (s = 0): every path is the straight line from z to mu
    point = Mixture(torch.tensor([[1.0, 0.5]], dtype=torch.float64),
                    torch.tensor([0.0], dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    assert bending(point, n=50, fine=400)["total_degrees"] < 1e-3
    # one Gaussian: the velocity is -mu + g'(sigma) z, g' rises from -s to 1, so the
    # direction turns monotonically from (-s z - mu) at sigma = 0 to (z - mu) at sigma = 1
    mu, s, n = torch.tensor([2.0, 0.0], dtype=torch.float64), 0.3, 200
    one = Mixture(mu[None], torch.tensor([s], dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a, b = z - mu, -s * z - mu
    angle = torch.arccos((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)))
    got = bending(one, n=n, seed=5, fine=2000)
    assert got["total_degrees"] == pytest.approx(math.degrees(angle.mean().item()), rel=1e-2)
    assert sum(got["share"]) == pytest.approx(1.0)


def test_command_line_writes_the_run_folder_and_copies_the_figure(tmp_path, capsys):
    import json
    from annogen.flow.__main__ import main
    assert main(["--steps", "2,4", "--samples", "50", "--out", str(tmp_path / "runs"),
                 "--run", "r", "--figure", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert "| euler | uniform | 2 |" in out and "| dpm | uniform | 4 |" in out
    assert "| euler_diffusers | diffusers | 4 |" in out
    run = tmp_path / "runs" / "flow" / "r"
    assert (run / "flow.png").stat().st_size > 10_000
    assert (tmp_path / "f.png").read_bytes() == (run / "flow.png").read_bytes()
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["samplers"]) == 6 and metrics["settings"]["samples"] == 50
    assert sum(metrics["bending"]["share"]) == pytest.approx(1.0)


def test_command_line_help_documents_every_flag():
    from annogen.flow.__main__ import make_parser
    for action in make_parser()._actions:
        assert action.help and len(action.help.split()) >= 3, action.option_strings


@pytest.mark.parametrize("argv", [["--steps", "0,4"], ["--shift", "-1"], ["--bogus"],
                                  ["--samples", "0"]])
def test_command_line_bad_flag_is_one_line_and_exit_status_2(argv, capsys):
    from annogen.flow.__main__ import main
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m annogen.flow: error:")
