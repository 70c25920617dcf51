"""Tests of the DDPM/DDIM chapter's model code: the schedule and q(x_t | x_0) against
naive products and sample statistics, the posterior against Bayes' rule written out, the
DDPM and DDIM steps against the papers' formulas, DDIM's determinism and its eta = 1
limit, sampling Gaussian data with the closed-form optimal noise predictor, and the
U-Net's shapes, initialisation and the paper preset's parameter count."""

import math
from unittest import mock

import pytest
import torch

from annogen.ddpm import (Diffusion, UNet, UNetConfig, build_unet, count_parameters,
                          linear_beta_schedule, timestep_embedding)


pytestmark = pytest.mark.usefixtures("one_thread")


def naive_alpha_bar(T=1000, b1=1e-4, bT=0.02):
    """alpha_bar_t as a Python loop over the paper's betas, in plain floats."""
    out, prod = [], 1.0
    for i in range(T):
        beta = b1 + (bT - b1) * i / (T - 1)
        prod *= 1.0 - beta
        out.append(prod)
    return out


# --- the schedule and the forward process ----------------------------------------------

def test_linear_schedule_runs_from_1e4_to_0_02_in_equal_steps():
    betas = linear_beta_schedule()
    assert betas.dtype == torch.float64 and betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    diffs = betas[1:] - betas[:-1]
    assert torch.allclose(diffs, torch.full_like(diffs, (0.02 - 1e-4) / 999))
    short = linear_beta_schedule(T=10, beta_1=0.1, beta_T=0.2)
    assert torch.allclose(short, torch.tensor([0.1 + 0.1 * i / 9 for i in range(10)], dtype=torch.float64))


def test_alpha_bar_is_the_running_product_of_one_minus_beta():
    d = Diffusion()
    naive = naive_alpha_bar()
    assert torch.allclose(d.alpha_bar, torch.tensor(naive, dtype=torch.float64), rtol=1e-12)
    assert d.alpha_bar[-1].item() < 1e-4  # x_T carries almost nothing of x_0


def test_q_sample_has_the_closed_form_mean_and_variance():
    d = Diffusion()
    ab = naive_alpha_bar()
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1, 1, 1), 0.7)
    for t in (0, 100, 500, 999):
        eps = torch.randn(x0.shape, generator=g)
        x_t = d.q_sample(x0, torch.full((len(x0),), t), eps)
        # the same eps through the formula, in float64
        expected = math.sqrt(ab[t]) * 0.7 + math.sqrt(1 - ab[t]) * eps.double()
        assert torch.allclose(x_t.double(), expected, atol=1e-6)
        assert x_t.mean().item() == pytest.approx(math.sqrt(ab[t]) * 0.7, abs=0.02)
        assert x_t.std().item() == pytest.approx(math.sqrt(1 - ab[t]), rel=0.03, abs=2e-4)


def test_q_sample_uses_each_images_own_timestep():
    d = Diffusion()
    x0 = torch.ones(3, 1, 2, 2)
    eps = torch.zeros_like(x0)
    x_t = d.q_sample(x0, torch.tensor([0, 10, 999]), eps)
    ab = naive_alpha_bar()
    for i, t in enumerate((0, 10, 999)):
        assert torch.allclose(x_t[i], torch.full((1, 2, 2), math.sqrt(ab[t])), atol=1e-6)


def test_posterior_mean_and_variance_match_bayes_rule():
    # q(x_{t-1} | x_0) = N(sqrt(ab_{t-1}) x_0, 1 - ab_{t-1}) times the likelihood
    # q(x_t | x_{t-1}) = N(sqrt(a_t) x_{t-1}, beta_t): precisions add, means weight by them.
    d = Diffusion()
    ab = naive_alpha_bar()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    x_t = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    for t in (1, 2, 50, 500, 999):
        beta = 1e-4 + (0.02 - 1e-4) * t / 999
        prior_var = 1 - ab[t - 1]
        precision = 1 / prior_var + (1 - beta) / beta
        var = 1 / precision
        mean = var * (math.sqrt(ab[t - 1]) * x0 / prior_var + math.sqrt(1 - beta) * x_t / beta)
        got_mean, got_var = d.q_posterior(x0, x_t, torch.full((5,), t))
        assert torch.allclose(got_mean, mean, rtol=1e-9, atol=1e-12)
        assert torch.allclose(got_var, torch.full_like(got_var, var), rtol=1e-9)
    # at t = 1 (index 0) the step back is x_0 itself, with no variance
    got_mean, got_var = d.q_posterior(x0, x_t, torch.zeros(5, dtype=torch.long))
    assert torch.allclose(got_mean, x0) and float(got_var.max()) == 0.0


def test_loss_is_the_mean_squared_error_of_the_noise_prediction():
    d = Diffusion()
    model = build_unet("tiny", num_classes=0)
    torch.nn.init.normal_(model.conv_out.weight, std=0.1)  # a non-zero prediction
    x0 = torch.rand(4, 3, 32, 32) * 2 - 1
    loss = d.loss(model, x0, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 1000, (4,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    ab = torch.tensor(naive_alpha_bar())[t].float().view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    with torch.no_grad():
        naive = ((eps - model(x_t, t)) ** 2).mean()
    assert loss.item() == pytest.approx(naive.item(), rel=1e-5)
    loss.backward()  # and it trains the network
    assert model.conv_out.weight.grad.abs().sum() > 0


# --- the reverse steps -------------------------------------------------------------------

class FixedEps(torch.nn.Module):
    """A 'network' that always predicts the same noise."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def forward(self, x, t, y=None):
        return self.eps.expand_as(x)


def test_ddpm_step_is_the_papers_mean_plus_sigma_z():
    g = torch.Generator().manual_seed(2)
    x_t = torch.randn(3, 1, 4, 4, generator=g)
    eps = torch.randn(1, 1, 4, 4, generator=g)
    ab = naive_alpha_bar()
    for variance in ("beta", "beta_tilde"):
        d = Diffusion(variance=variance, clip_denoised=False)
        for t in (999, 300, 1):
            beta = 1e-4 + (0.02 - 1e-4) * t / 999
            mu = (x_t - beta / math.sqrt(1 - ab[t]) * eps) / math.sqrt(1 - beta)
            sigma2 = beta if variance == "beta" else (1 - ab[t - 1]) / (1 - ab[t]) * beta
            z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(9))
            got = d.ddpm_step(FixedEps(eps), x_t, t, generator=torch.Generator().manual_seed(9))
            assert torch.allclose(got, mu + math.sqrt(sigma2) * z, atol=1e-5)
        # the last step adds no noise
        mu0 = (x_t - 1e-4 / math.sqrt(1 - ab[0]) * eps) / math.sqrt(1 - 1e-4)
        assert torch.allclose(d.ddpm_step(FixedEps(eps), x_t, 0), mu0, atol=1e-4)


def test_ddpm_step_clips_the_predicted_x0_when_asked():
    x_t = torch.full((1, 1, 2, 2), 3.0)
    eps = torch.zeros(1, 1, 2, 2)  # x0_hat = x_t / sqrt(ab) > 1
    d = Diffusion(clip_denoised=True)
    mean = d.ddpm_step(FixedEps(eps), x_t, 0)
    assert torch.allclose(mean, torch.ones_like(mean))  # t = 1: the mean is the clipped x0_hat


def test_ddim_timesteps_skip_uniformly_and_all_steps_visit_every_t():
    d = Diffusion()
    assert d.ddim_timesteps(50) == list(range(0, 1000, 20))
    assert d.ddim_timesteps(20) == list(range(0, 1000, 50))
    assert d.ddim_timesteps(1000) == list(range(1000))
    # as the DDIM reference code, range(0, T, T // S) whole: S = 30 gives 31 steps
    # (k = 33, 0 to 990) and S = 300 gives 334 (k = 3), not a list cut to S entries
    assert d.ddim_timesteps(30) == [33 * i for i in range(31)]
    assert len(d.ddim_timesteps(300)) == 334 and d.ddim_timesteps(300)[-1] == 999
    with pytest.raises(ValueError):
        d.ddim_timesteps(0)


def test_ddim_eta_1_over_all_steps_has_the_ddpm_posterior_variance():
    d = Diffusion()
    ab = naive_alpha_bar()
    for t in range(1, 1000, 37):
        beta = 1e-4 + (0.02 - 1e-4) * t / 999
        beta_tilde = (1 - ab[t - 1]) / (1 - ab[t]) * beta
        assert d.ddim_sigma(t, t - 1, 1.0) ** 2 == pytest.approx(beta_tilde, rel=1e-9)
        assert d.ddim_sigma(t, t - 1, 0.0) == 0.0
        assert d.ddim_sigma(t, t - 1, 0.5) ** 2 == pytest.approx(0.25 * beta_tilde, rel=1e-9)
    # and the whole step equals the DDPM step with sigma^2 = beta_tilde, given the same z
    ddpm = Diffusion(variance="beta_tilde", clip_denoised=False)
    g = torch.Generator().manual_seed(3)
    x_t, eps = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    for t in (999, 400, 5, 0):
        a = d.ddim_step(x_t, eps, t, t - 1, eta=1.0, generator=torch.Generator().manual_seed(4))
        b = ddpm.ddpm_step(FixedEps(eps), x_t, t, generator=torch.Generator().manual_seed(4))
        assert torch.allclose(a, b, atol=1e-5), t


def test_clipped_ddim_with_eta_1_over_all_steps_is_the_clipping_ddpm_step():
    d = Diffusion()
    ddpm = Diffusion(variance="beta_tilde", clip_denoised=True)
    g = torch.Generator().manual_seed(6)
    x_t, eps = 2.5 * torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    for t in (999, 400, 5, 0):
        a = d.ddim_step(x_t, eps, t, t - 1, eta=1.0, generator=torch.Generator().manual_seed(4), clip=True)
        b = ddpm.ddpm_step(FixedEps(eps), x_t, t, generator=torch.Generator().manual_seed(4))
        assert torch.allclose(a, b, atol=1e-5), t
        unclipped = d.ddim_step(x_t, eps, t, t - 1, eta=1.0, generator=torch.Generator().manual_seed(4))
        assert not torch.allclose(a, unclipped, atol=1e-3)  # the clip did act on these inputs
    # at the last step the clipped sampler returns the clipped estimate of x_0
    last = d.ddim_step(x_t, eps, 0, -1, clip=True)
    assert last.abs().max() <= 1 + 1e-6


class GaussianOptimalEps(torch.nn.Module):
    """The exact E[eps | x_t] for data x_0 ~ N(mu, s^2), independently per pixel:
    x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps is Gaussian with variance ab s^2 + 1 - ab."""

    def __init__(self, mu, s):
        super().__init__()
        self.mu, self.s = mu, s
        self.ab = torch.tensor(naive_alpha_bar())

    def forward(self, x, t, y=None):
        ab = self.ab[t].float().view(-1, *([1] * (x.dim() - 1)))
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.mu) / (ab * self.s ** 2 + 1 - ab)


def naive_ddim_eta0(model, x, steps):
    """The DDIM update, eta = 0, written as a plain loop over the visited timesteps."""
    ab = naive_alpha_bar()
    taus = list(range(0, 1000, 1000 // steps))
    for i in reversed(range(len(taus))):
        t = taus[i]
        ab_prev = ab[taus[i - 1]] if i > 0 else 1.0
        e = model(x, torch.full((len(x),), t))
        x0 = (x - math.sqrt(1 - ab[t]) * e) / math.sqrt(ab[t])
        x = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * e
    return x


def test_ddim_eta_0_is_deterministic_and_follows_the_naive_update_over_all_steps():
    d = Diffusion()
    model = GaussianOptimalEps(0.3, 0.5)
    shape = (64, 1, 2, 2)
    g = torch.Generator().manual_seed(7)
    a = d.ddim_sample(model, shape, steps=1000, eta=0.0, generator=g)
    after = torch.randn(1, generator=g)
    # only x_T was drawn: the generator moved by exactly one draw of `shape`
    g2 = torch.Generator().manual_seed(7)
    x_T = torch.randn(shape, generator=g2)
    assert torch.equal(after, torch.randn(1, generator=g2))
    b = d.ddim_sample(model, shape, steps=1000, eta=0.0, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.allclose(a, naive_ddim_eta0(model, x_T, 1000), atol=1e-4)
    # the same with a subsequence of 50 steps, on a real (random) U-Net
    net = build_unet("tiny", num_classes=0).eval()
    torch.nn.init.normal_(net.conv_out.weight, std=0.02)
    x_T = torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        got = d.ddim_sample(net, (2, 3, 32, 32), steps=10, generator=torch.Generator().manual_seed(8))
        assert torch.allclose(got, naive_ddim_eta0(net, x_T, 10), atol=1e-4)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_sampling_with_the_optimal_predictor_recovers_gaussian_data(variance):
    mu, s = 0.3, 0.5
    d = Diffusion(variance=variance, clip_denoised=False)
    x = d.ddpm_sample(GaussianOptimalEps(mu, s), (4000, 1, 2, 2),
                      generator=torch.Generator().manual_seed(0))
    assert x.mean().item() == pytest.approx(mu, abs=0.015)
    assert x.std().item() == pytest.approx(s, rel=0.03)


def ddim_gaussian_moments(mu, s, steps, eta):
    """Mean and std of DDIM's output for N(mu, s^2) data and the optimal predictor,
    propagated exactly: with that predictor every DDIM step is an affine map plus
    independent noise, x_s = a x_t + b + sigma z."""
    ab = naive_alpha_bar()
    taus = list(range(0, 1000, 1000 // steps))
    m, v = 0.0, 1.0  # x_T ~ N(0, 1)
    for i in reversed(range(len(taus))):
        t = taus[i]
        ab_s = ab[taus[i - 1]] if i > 0 else 1.0
        k = math.sqrt(1 - ab[t]) / (ab[t] * s * s + 1 - ab[t])  # eps_hat = k (x - sqrt(ab) mu)
        sigma = eta * math.sqrt((1 - ab_s) / (1 - ab[t]) * (1 - ab[t] / ab_s))
        c = math.sqrt(max(1 - ab_s - sigma ** 2, 0.0))
        # x0_hat = (x - sqrt(1 - ab) eps_hat) / sqrt(ab);  x_s = sqrt(ab_s) x0_hat + c eps_hat
        a_x0, b_x0 = (1 - math.sqrt(1 - ab[t]) * k) / math.sqrt(ab[t]), k * math.sqrt(1 - ab[t]) * mu
        a = math.sqrt(ab_s) * a_x0 + c * k
        b = math.sqrt(ab_s) * b_x0 - c * k * math.sqrt(ab[t]) * mu
        m, v = a * m + b, a * a * v + sigma ** 2
    return m, math.sqrt(v)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_50_steps_with_the_optimal_predictor_recovers_gaussian_data(eta):
    mu, s = -0.2, 0.4
    d = Diffusion()
    x = d.ddim_sample(GaussianOptimalEps(mu, s), (4000, 1, 2, 2), steps=50, eta=eta,
                      generator=torch.Generator().manual_seed(1))
    m, sd = ddim_gaussian_moments(mu, s, 50, eta)
    assert x.mean().item() == pytest.approx(mu, abs=0.015)
    assert x.mean().item() == pytest.approx(m, abs=0.015)
    assert x.std().item() == pytest.approx(sd, rel=0.02)
    # 50 steps recover the spread up to a first-order discretisation error that vanishes
    # as the steps grow: the output is 7% too narrow for eta = 0 and 13% for eta = 1
    assert sd == pytest.approx(s, rel=0.08 if eta == 0 else 0.15)
    assert ddim_gaussian_moments(mu, s, 1000, eta)[1] == pytest.approx(s, rel=0.01)
    assert abs(ddim_gaussian_moments(mu, s, 100, eta)[1] - s) < abs(sd - s)


def test_classifier_free_guidance_extrapolates_from_the_null_label():
    d = Diffusion()
    net = build_unet("tiny", num_classes=4).eval()
    torch.nn.init.normal_(net.conv_out.weight, std=0.05)
    torch.nn.init.normal_(net.label_emb.weight, std=1.0)
    x = torch.randn(3, 3, 32, 32)
    t, y = torch.tensor([5, 500, 900]), torch.tensor([0, 3, 1])
    with torch.no_grad():
        e_y, e_0 = net(x, t, y), net(x, t, None)
        assert torch.allclose(d.eps(net, x, t, y, 1.0), e_y)
        assert torch.allclose(d.eps(net, x, t, y, 0.0), e_0, atol=1e-6)
        assert torch.allclose(d.eps(net, x, t, y, 3.0), e_0 + 3.0 * (e_y - e_0), atol=1e-5)


# --- the U-Net ---------------------------------------------------------------------------

def test_timestep_embedding_is_sines_then_cosines_of_geometric_frequencies():
    t = torch.tensor([0, 1, 37, 999])
    emb = timestep_embedding(t, 16)
    assert emb.shape == (4, 16)
    for i, ti in enumerate(t.tolist()):
        for k in range(8):
            w = 10000 ** (-k / 7)
            assert emb[i, k].item() == pytest.approx(math.sin(ti * w), abs=1e-4)
            assert emb[i, 8 + k].item() == pytest.approx(math.cos(ti * w), abs=1e-4)


def test_unet_output_has_the_input_shape_and_starts_at_zero():
    for cfg in (dict(num_classes=21), dict(in_channels=1, image_size=28, num_classes=10),
                dict(image_size=16)):
        net = build_unet("tiny", **cfg)
        c, s = net.cfg.in_channels, net.cfg.image_size
        x = torch.randn(2, c, s, s)
        with torch.no_grad():
            out = net(x, torch.tensor([3, 700]))
        assert out.shape == x.shape
        assert float(out.abs().max()) == 0.0  # conv_out is zero-initialised, as in the official code


def test_unet_depends_on_t_and_on_the_label_and_none_means_the_null_label():
    net = build_unet("tiny", num_classes=21).eval()
    torch.nn.init.normal_(net.conv_out.weight, std=0.05)
    for block in net.modules():  # wake up the zero-initialised branches
        if hasattr(block, "conv2"):
            torch.nn.init.normal_(block.conv2.weight, std=0.05)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([10, 10])
    with torch.no_grad():
        base = net(x, t, torch.tensor([3, 3]))
        assert not torch.allclose(base, net(x, torch.tensor([600, 600]), torch.tensor([3, 3])))
        assert not torch.allclose(base, net(x, t, torch.tensor([4, 4])))
        assert torch.equal(net(x, t, None), net(x, t, torch.tensor([-1, -1])))
        assert torch.equal(net(x, t, None), net(x, t, torch.tensor([21, 21])))
        # images in a batch do not interact (GroupNorm is per image)
        assert torch.allclose(net(x[:1], t[:1], torch.tensor([3])), base[:1], atol=1e-5)


def test_paper_preset_has_the_official_cifar10_parameter_count():
    # diffusion_tf's CIFAR-10 model (ch 128, ch_mult 1,2,2,2, 2 res blocks, attention at
    # 16x16): "35.7M parameters" in the paper; exactly 35,746,307 counted module by module.
    with torch.device("meta"):
        net = build_unet("paper")
    assert count_parameters(net) == 35_746_307
    c = net.cfg
    assert (c.ch, c.ch_mult, c.num_res_blocks, c.attn_resolutions, c.dropout) == \
        (128, (1, 2, 2, 2), 2, (16,), 0.1)
    # attention sits at 16x16 only: 2 blocks down, 3 up, plus the middle one
    attns = [m for m in net.modules() if type(m).__name__ == "AttnBlock"]
    assert len(attns) == 2 + 3 + 1 and all(a.q.in_channels == 256 for a in attns)


def test_tiny_preset_is_small_enough_for_cpu_sampling():
    net = build_unet("tiny", num_classes=21)
    assert count_parameters(net) == 688_755
    assert count_parameters(net) < 1_000_000


def test_config_rejects_sizes_the_unet_cannot_halve():
    with pytest.raises(ValueError):
        UNet(UNetConfig(image_size=30))
    with pytest.raises(ValueError):
        build_unet("huge")


class GaussianOptimalV(GaussianOptimalEps):
    """The same optimal predictor, written as v = (eps - sqrt(1 - ab) x_t) / sqrt(ab)."""

    def forward(self, x, t, y=None):
        ab = self.ab[t].float().view(-1, *([1] * (x.dim() - 1)))
        return (super().forward(x, t, y) - (1 - ab).sqrt() * x) / ab.sqrt()


def test_v_prediction_loss_targets_v_and_converts_back_to_eps_and_x0():
    d = Diffusion(prediction="v")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 4, 4, generator=g) * 2 - 1
    eps = torch.randn(x0.shape, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    ab = torch.tensor(naive_alpha_bar())[t].float().view(-1, 1, 1, 1)
    v = ab.sqrt() * eps - (1 - ab).sqrt() * x0  # written out by hand
    torch.testing.assert_close(d.v_target(x0, t, eps), v, atol=1e-6, rtol=1e-5)
    x_t = d.q_sample(x0, t, eps)
    torch.testing.assert_close(d.output_to_eps(x_t, t, v), eps, atol=1e-5, rtol=1e-5)
    # x0 through the eps the sampler sees (t < T: at t = T dividing by sqrt(ab) amplifies rounding)
    torch.testing.assert_close(d.predict_x0(x_t, t, d.output_to_eps(x_t, t, v))[:3], x0[:3],
                               atol=1e-3, rtol=1e-3)

    # the loss is the squared error against v: zero for the model that outputs v
    class Oracle(torch.nn.Module):
        def forward(self, x, tt, y=None):
            return v
    with mock.patch("torch.randint", return_value=t), mock.patch("torch.randn", return_value=eps):
        assert d.loss(Oracle(), x0).item() < 1e-10
        assert Diffusion(prediction="eps").loss(Oracle(), x0).item() > 0.1
    with pytest.raises(ValueError, match="prediction"):
        Diffusion(prediction="x0")


def test_v_prediction_samples_like_the_equivalent_eps_predictor():
    # the same optimal predictor in the two parameterisations gives the same samples
    shape = (16, 1, 2, 2)
    for sample in (lambda d, m, g: d.ddim_sample(m, shape, 20, eta=1.0, generator=g),
                   lambda d, m, g: d.ddim_sample(m, shape, 10, generator=g, clip=True)):
        a = sample(Diffusion(), GaussianOptimalEps(0.3, 0.5), torch.Generator().manual_seed(1))
        b = sample(Diffusion(prediction="v"), GaussianOptimalV(0.3, 0.5), torch.Generator().manual_seed(1))
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-3)
