"""R3GAN chapter: the losses against their formulas, the penalties against closed forms
and autograd, the networks' initialisation, resampling and exact parameter counts, and
the GAN step's gradient routing."""

import math

import pytest
import torch
import torch.nn.functional as F

from annogen.r3gan import (Discriminator, Generator, R3GANConfig, ResidualBlock,
                           cosine_schedule, count_parameters, ema_decay_from_half_life,
                           gradient_penalty, ns_d_loss, ns_g_loss, rpgan_d_loss, rpgan_g_loss)
from annogen.r3gan.model import (BiasedActivation, Downsample, PlainBlock, Upsample,
                                 lowpass_kernel)

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- losses -----------------------------------------------------------------------------

def test_equal_logits_give_log_2_for_both_relativistic_losses():
    t = torch.randn(7)
    assert rpgan_d_loss(t, t).item() == pytest.approx(math.log(2), abs=1e-6)
    assert rpgan_g_loss(t, t).item() == pytest.approx(math.log(2), abs=1e-6)
    zero = torch.zeros(5)
    assert ns_d_loss(zero, zero).item() == pytest.approx(2 * math.log(2), abs=1e-6)
    assert ns_g_loss(zero, zero).item() == pytest.approx(math.log(2), abs=1e-6)


def test_losses_match_their_formulas():
    torch.manual_seed(0)
    r, f = torch.randn(16) * 3, torch.randn(16) * 3
    naive = lambda t: torch.log1p(torch.exp(-t.double()))  # f(t) = log(1 + e^-t)
    assert rpgan_d_loss(r, f).item() == pytest.approx(naive(r - f).mean().item(), rel=1e-5)
    assert rpgan_g_loss(r, f).item() == pytest.approx(naive(f - r).mean().item(), rel=1e-5)
    assert ns_d_loss(r, f).item() == pytest.approx((naive(r) + naive(-f)).mean().item(), rel=1e-5)
    assert ns_g_loss(r, f).item() == pytest.approx(naive(f).mean().item(), rel=1e-5)
    # the relativistic loss only sees differences: shifting all logits changes nothing
    assert rpgan_d_loss(r + 5, f + 5).item() == pytest.approx(rpgan_d_loss(r, f).item(), rel=1e-6)


# ---- penalties --------------------------------------------------------------------------

def test_penalty_of_a_linear_discriminator_is_the_squared_weight_norm_per_sample():
    torch.manual_seed(0)
    w, b = torch.randn(3 * 4 * 4), torch.randn(())
    x = torch.randn(6, 3, 4, 4, requires_grad=True)
    logits = x.flatten(1) @ w + b
    penalty = gradient_penalty(logits, x)
    assert penalty.shape == (6,)
    assert torch.allclose(penalty, (w ** 2).sum().expand(6), rtol=1e-5)


def test_penalty_is_per_sample_and_differentiable_in_the_weights():
    torch.manual_seed(0)
    w = torch.randn(5, requires_grad=True)
    x = torch.randn(4, 5, requires_grad=True)
    logits = (x ** 2) @ w  # D(x) = sum_j w_j x_j^2, gradient 2 w * x
    penalty = gradient_penalty(logits, x)
    expected = ((2 * w * x) ** 2).sum(1)
    assert torch.allclose(penalty, expected, rtol=1e-5)
    (grad_w,) = torch.autograd.grad(penalty.sum(), w)  # needs create_graph=True
    assert torch.allclose(grad_w, (8 * w * x ** 2).sum(0), rtol=1e-5)


def test_penalty_refuses_inputs_without_grad():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="require grad"):
        gradient_penalty(x.sum(1), x)


def test_cosine_schedule_and_ema_half_life():
    assert cosine_schedule(0, 100, 0.05, 0.005) == pytest.approx(0.05)
    assert cosine_schedule(50, 100, 0.05, 0.005) == pytest.approx(0.0275)
    assert cosine_schedule(100, 100, 0.05, 0.005) == pytest.approx(0.005)
    assert cosine_schedule(500, 100, 0.05, 0.005) == pytest.approx(0.005)
    beta = ema_decay_from_half_life(6400, 64)  # 100 steps of 64 images
    assert beta ** 100 == pytest.approx(0.5)
    assert ema_decay_from_half_life(0, 64) == 0.0


# ---- networks ---------------------------------------------------------------------------

def test_cifar10_parameter_counts_are_the_official_ones():
    with torch.device("meta"):
        G, D = Generator.from_preset("cifar10"), Discriminator.from_preset("cifar10")
    assert count_parameters(G) == 20_781_952
    assert count_parameters(D) == 21_280_512
    z, y = torch.randn(3, 64, device="meta"), torch.zeros(3, dtype=torch.long, device="meta")
    x = G(z, y)
    assert x.shape == (3, 3, 32, 32)
    assert D(x, y).shape == (3,)


def test_every_residual_block_is_the_identity_at_init():
    torch.manual_seed(0)
    G, D = Generator(), Discriminator()
    blocks = [m for net in (G, D) for m in net.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 2 * G.config.num_blocks
    for block in blocks:
        c = block.conv1.in_channels
        h = torch.randn(2, c, 4, 4)
        assert torch.equal(block(h), h)
        assert not torch.any(block.conv3.weight)


def test_fixup_initialisation_scales_by_L_to_the_minus_quarter():
    torch.manual_seed(0)
    L = 8
    assert L ** (-1 / 4) == pytest.approx(0.5946, abs=1e-4)
    block = ResidualBlock(64, 8, 2, 3, num_blocks=L)
    expected = math.sqrt(2 / 1.04) * L ** (-1 / 4) / math.sqrt(64)  # fan-in of conv1: 64
    assert block.conv1.weight.std().item() == pytest.approx(expected, rel=0.03)
    expected2 = math.sqrt(2 / 1.04) * L ** (-1 / 4) / math.sqrt(16 * 9)  # 128/8 per group, 3x3
    assert block.conv2.weight.std().item() == pytest.approx(expected2, rel=0.03)


def test_biased_activation_adds_the_bias_then_leaky_relu():
    act = BiasedActivation(3)
    with torch.no_grad():
        act.bias.copy_(torch.tensor([1.0, -2.0, 0.5]))
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(act(x), F.leaky_relu(x + act.bias.view(1, 3, 1, 1), 0.2))


def test_lowpass_kernel_is_the_normalised_outer_product_of_1_3_3_1():
    a = torch.tensor([1.0, 3.0, 3.0, 1.0])
    assert torch.allclose(lowpass_kernel((1, 2, 1)), torch.outer(a, a) / 64)


def test_upsampling_equals_the_official_transposed_convolution():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, 8)
    k = 4 * lowpass_kernel()[None, None]
    reference = F.conv_transpose2d(x.reshape(10, 1, 8, 8), k, stride=2, padding=1).view(2, 5, 16, 16)
    assert torch.allclose(Upsample()(x), reference, atol=1e-6)


def test_downsampling_is_a_strided_filter():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 8, 8)
    k = lowpass_kernel()
    padded = F.pad(x, (1, 1, 1, 1))
    naive = torch.stack([torch.stack([(padded[0, :, 2 * i:2 * i + 4, 2 * j:2 * j + 4] * k).sum((1, 2))
                                      for j in range(4)], -1) for i in range(4)], -2)
    assert torch.allclose(Downsample()(x)[0], naive, atol=1e-6)


def test_resampling_keeps_a_constant_image():
    x = torch.full((1, 3, 8, 8), 0.7)
    up, down = Upsample()(x), Downsample()(x)
    assert up.shape == (1, 3, 16, 16) and down.shape == (1, 3, 4, 4)
    assert torch.allclose(up[..., 1:-1, 1:-1], torch.tensor(0.7), atol=1e-6)
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.tensor(0.7), atol=1e-6)
    # at the border the zero padding of the official code shows
    assert up[0, 0, 0, 0] < 0.7 and down[0, 0, 0, 0] < 0.7


def test_tiny_networks_map_shapes_and_check_their_inputs():
    torch.manual_seed(0)
    G, D = Generator(), Discriminator()
    z, y = torch.randn(4, 64), torch.tensor([0, 5, 20, 3])
    x = G(z, y)
    assert x.shape == (4, 3, 32, 32)
    assert D(x, y).shape == (4,)
    with pytest.raises(ValueError, match="z must have shape"):
        G(torch.randn(4, 10), y)
    with pytest.raises(ValueError, match="pass labels"):
        D(x)
    with pytest.raises(ValueError, match="images must have shape"):
        D(torch.randn(4, 3, 16, 16), y)


def test_projection_discriminator_depends_on_the_label_through_an_inner_product():
    torch.manual_seed(0)
    D = Discriminator()
    x = torch.randn(2, 3, 32, 32)
    h = x
    h = D.from_rgb(h)
    for stage in D.stages:
        h = stage(h)
    for label in (0, 7):
        y = torch.tensor([label, label])
        assert torch.allclose(D(x, y), h @ D.embedding.weight[label], atol=1e-6)


def test_plain_block_of_config_B_has_no_skip():
    torch.manual_seed(0)
    block = PlainBlock(8, 1, 2, 3, 4)
    h = torch.randn(1, 8, 4, 4)
    assert torch.allclose(block(h), F.leaky_relu(F.conv2d(h, block.conv.weight, padding=1), 0.2))


def test_bad_config_is_one_clear_error():
    with pytest.raises(ValueError, match="one entry per stage"):
        R3GANConfig(widths=(8, 8), cardinalities=(1,), blocks=(1, 1))
    with pytest.raises(ValueError, match="groups"):
        R3GANConfig(widths=(8,), cardinalities=(3,), blocks=(1,))


# ---- the GAN step -----------------------------------------------------------------------

class RecordingLoop:
    """Stands in for annogen.train.Loop: records which networks got gradients from
    each optimizer's loss, then steps that optimizer."""

    def __init__(self, exp, cfg):
        self.exp, self.cfg, self.ema, self.seen = exp, cfg, {"g": None}, {}

    def backward_step(self, loss, name):
        for m in self.exp.modules.values():
            m.zero_grad(set_to_none=True)
        loss.backward()
        self.seen[name] = {n: any(p.grad is not None for p in m.parameters())
                           for n, m in self.exp.modules.items()}
        self.exp.optimizers[name].step()


def test_gan_step_routes_gradients_D_then_G_and_R2_never_reaches_G():
    from annogen.data import make_dataset
    from annogen.r3gan.experiment import R3GANExperiment
    from annogen.train import TrainConfig
    torch.manual_seed(0)
    dataset = make_dataset("shapes", 32, n=8, seed=0)
    exp = R3GANExperiment(config="E")
    exp.cfg, exp.dataset = TrainConfig(steps=10, batch_size=4, device="cpu"), dataset
    exp.configure(torch.device("cpu"))
    batch = {"image": torch.stack([dataset[i]["image"] for i in range(4)]),
             "label": torch.tensor([dataset[i]["label"] for i in range(4)])}
    loop = RecordingLoop(exp, exp.cfg)
    logs = exp.training_step(batch, 1, loop)
    assert loop.seen["d"] == {"g": False, "d": True}  # D's loss, R1 and R2 included
    assert loop.seen["g"] == {"g": True, "d": False}
    assert logs["r1"] > 0 and logs["r2"] > 0
    assert logs["gamma"] == pytest.approx(0.05)
    assert all(p.requires_grad for p in exp.D.parameters())  # unfrozen after the G half
    # the schedules were written into the optimizers
    assert exp.optimizers["g"].param_groups[0]["betas"] == (0.0, pytest.approx(0.9))
    assert exp.optimizers["d"].param_groups[0]["lr"] == pytest.approx(exp.cfg.lr)


def test_config_B_uses_the_classic_loss_and_no_R2():
    from annogen.r3gan.experiment import R3GANExperiment
    exp = R3GANExperiment(config="B")
    assert (exp.loss, exp.r1, exp.r2, exp.overrides["block"]) == ("ns", True, False, "plain")
    exp = R3GANExperiment(config="E", r2=False)
    assert (exp.loss, exp.r1, exp.r2, exp.overrides["block"]) == ("rpgan", True, False, "resnext")
    with pytest.raises(ValueError, match="roadmap config"):
        R3GANExperiment(config="Z")


def test_unconditional_networks_need_no_labels():
    torch.manual_seed(0)
    G = Generator.from_preset("tiny", num_classes=0, channels=1)
    D = Discriminator.from_preset("tiny", num_classes=0, channels=1)
    x = G(torch.randn(3, 64))
    assert x.shape == (3, 1, 32, 32) and D(x).shape == (3,)
    assert not hasattr(G, "embedding") and not hasattr(D, "embedding")
