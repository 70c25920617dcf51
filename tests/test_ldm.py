"""The KL autoencoder of the latent-diffusion chapter: the posterior's maths against
independent computations, the model's shapes and presets, the scaling factor."""

import math

import pytest
import torch

from annogen.ldm import DiagonalGaussian, KLAutoencoder, count_parameters
from annogen.vqgan.model import Decoder, Encoder


pytestmark = pytest.mark.usefixtures("one_thread")


def random_params(B=3, c=4, h=5, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(B, c, h, w, generator=g) * 2
    logvar = torch.randn(B, c, h, w, generator=g) * 1.5
    return torch.cat([mean, logvar], dim=1), mean, logvar


def test_kl_equals_closed_form_and_torch_distributions():
    params, mean, logvar = random_params()
    q = DiagonalGaussian(params)
    kl = q.kl()
    assert kl.shape == (3,)
    # closed form written elementwise with plain Python floats
    for b in range(3):
        total = 0.0
        for m, lv in zip(mean[b].flatten().tolist(), logvar[b].flatten().tolist()):
            total += 0.5 * (m * m + math.exp(lv) - 1.0 - lv)
        assert kl[b].item() == pytest.approx(total, rel=1e-5)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, (0.5 * logvar).exp()),
        torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean)),
    ).sum(dim=(1, 2, 3))
    torch.testing.assert_close(kl, ref, rtol=1e-5, atol=1e-4)


def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    zeros = torch.zeros(2, 8, 3, 3)
    assert DiagonalGaussian(zeros).kl().abs().max().item() < 1e-6
    params, _, _ = random_params()
    assert (DiagonalGaussian(params).kl() > 0).all()


def test_logvar_is_clamped_as_the_official_code():
    params = torch.cat([torch.zeros(1, 2, 1, 1), torch.tensor([-100.0, 100.0]).view(1, 2, 1, 1)], 1)
    q = DiagonalGaussian(params)
    assert q.logvar.flatten().tolist() == [-30.0, 20.0]
    assert torch.isfinite(q.var).all() and torch.isfinite(q.kl()).all()


def test_mode_is_the_mean_and_samples_have_its_mean_and_variance():
    params, mean, logvar = random_params(B=1, c=2, h=2, w=2, seed=1)
    q = DiagonalGaussian(params)
    assert torch.equal(q.mode(), mean)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([q.sample(g) for _ in range(20000)])
    # the mean of 20,000 draws is within 5 standard errors, s / sqrt(20000), of mu
    assert ((draws.mean(0) - mean).abs() < 5 * q.std / 20000 ** 0.5).all()
    torch.testing.assert_close(draws.var(0), logvar.exp(), rtol=0.05, atol=1e-4)


def test_sample_is_reparameterised():
    params, _, _ = random_params(B=2, c=2, h=3, w=3)
    params.requires_grad_(True)
    DiagonalGaussian(params).sample().sum().backward()
    # d z / d mu = 1 for every latent value
    assert torch.allclose(params.grad[:, :2], torch.ones(2, 2, 3, 3))
    assert params.grad[:, 2:].abs().sum() > 0


def test_odd_channel_count_is_one_clear_error():
    with pytest.raises(ValueError, match="2c"):
        DiagonalGaussian(torch.zeros(1, 3, 2, 2))


def test_round_trip_shapes_and_forward():
    ae = KLAutoencoder.from_preset("tiny").eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    q = ae.encode(x)
    assert isinstance(q, DiagonalGaussian)
    assert q.mode().shape == (2, 4, 8, 8) and ae.latent_size == 8 and ae.config.f == 4
    assert ae.decode(q.mode()).shape == x.shape
    x_hat, posterior = ae(x, sample_posterior=False)
    torch.testing.assert_close(x_hat, ae.decode(posterior.mode()))
    grey = KLAutoencoder.from_preset("tiny", in_channels=1, resolution=28)
    assert grey.decode(grey.encode(torch.zeros(1, 1, 28, 28)).mode()).shape == (1, 1, 28, 28)


def test_encoder_and_decoder_are_vqgans():
    ae = KLAutoencoder.from_preset("tiny")
    assert type(ae.encoder) is Encoder and type(ae.decoder) is Decoder
    # double_z: the encoder outputs mean and log-variance
    assert ae.encoder.conv_out.out_channels == 2 * ae.config.z_channels
    assert ae.quant_conv.out_channels == 2 * ae.config.embed_dim


def test_scaling_factor_makes_latent_std_one():
    from annogen.data import make_dataset
    torch.manual_seed(0)
    ae = KLAutoencoder.from_preset("tiny").eval()
    assert ae.scaling_factor == 1.0
    data = make_dataset("shapes", 32, n=64, seed=0)
    x = torch.stack([data[i]["image"] for i in range(64)])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        lam = ae.compute_scaling_factor(x, g)
        z = ae.encode(x).sample(torch.Generator().manual_seed(0)) * lam
    assert lam != 1.0
    assert z.flatten().std().item() == pytest.approx(1.0, abs=1e-4)
    # stored in the state dict, so it survives a checkpoint
    fresh = KLAutoencoder.from_preset("tiny")
    fresh.load_state_dict(ae.state_dict())
    assert fresh.scaling_factor == pytest.approx(lam)


def test_sd_preset_parameter_count():
    with torch.device("meta"):
        sd = KLAutoencoder.from_preset("sd-f8c4")
    # the official SD v1 autoencoder (autoencoder_kl_32x32x4.yaml)
    assert count_parameters(sd) == 83_653_863
    assert count_parameters(sd.encoder) == 34_163_592
    assert count_parameters(sd.decoder) == 49_490_179
    assert sd.latent_size == 32 and sd.config.f == 8


def test_unknown_preset_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown KL autoencoder preset"):
        KLAutoencoder.from_preset("sd-f16")
