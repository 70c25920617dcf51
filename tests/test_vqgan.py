"""VQGAN: the checks of the reference note, each against an independent computation."""

import math

import pytest
import torch

from annogen.vqgan import (GPT, LPIPS, NLayerDiscriminator, VQGANLoss, adaptive_weight,
                           build_gpt, build_vqgan, hinge_d_loss, top_k_filter, top_p_filter)
from annogen.vqgan.losses import LPIPS_TAPS
from annogen.vqgan.model import AttnBlock, Downsample, Upsample, VQGANQuantizer


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper_meta():
    # The ImageNet f16 model, built without memory or initialisation cost.
    with torch.device("meta"):
        return build_vqgan("paper")


@pytest.fixture(scope="module")
def lpips():
    torch.manual_seed(0)
    return LPIPS()


def small_vqgan():
    # f = 2: the loss tests need a decoder, not a big one
    torch.manual_seed(0)
    return build_vqgan(ch_mult=(1, 2), attn_resolutions=(16,), z_channels=32, embed_dim=32,
                       num_codes=32)


# --- the autoencoder ---------------------------------------------------------------

def test_paper_config_maps_256_image_to_16x16x256_latent(paper_meta):
    x = torch.empty(1, 3, 256, 256, device="meta")
    z_e = paper_meta.quant_conv(paper_meta.encoder(x))
    assert tuple(z_e.shape) == (1, 256, 16, 16)  # 256 tokens of dimension 256
    assert tuple(paper_meta.decoder(paper_meta.post_quant_conv(z_e)).shape) == (1, 3, 256, 256)
    assert paper_meta.latent_size ** 2 == 256


def test_paper_parameter_counts_match_official_modules(paper_meta):
    m = paper_meta
    assert n_params(m.encoder) == 29_298_176
    assert n_params(m.decoder) == 42_449_795
    assert n_params(m.quantize) + n_params(m.quant_conv) + n_params(m.post_quant_conv) == 393_728


def test_paper_attention_only_at_16_and_decoder_has_one_more_block(paper_meta):
    m = paper_meta
    assert [len(l.attn) for l in m.encoder.down] == [0, 0, 0, 0, 2]
    assert [len(l.block) for l in m.encoder.down] == [2] * 5
    assert [len(l.block) for l in m.decoder.up] == [3] * 5
    assert [len(l.attn) for l in m.decoder.up] == [0, 0, 0, 0, 3]


def test_tiny_forward_shapes_and_last_layer():
    torch.manual_seed(0)
    m = build_vqgan()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        x_hat, loss, idx = m(x)
    assert x_hat.shape == x.shape and loss.dim() == 0
    assert idx.shape == (2, 8, 8) and idx.dtype == torch.int64
    assert 0 <= idx.min() and idx.max() < m.config.num_codes
    assert m.last_layer is m.decoder.conv_out.weight
    with torch.no_grad():  # decoding the indices gives the forward pass's image (z_q = e_k)
        assert torch.allclose(m.decode_indices(idx), x_hat, atol=1e-5)
        assert build_vqgan(in_channels=1)(x[:, :1])[0].shape == (2, 1, 32, 32)


def test_codebook_starts_uniform_in_plus_minus_one_over_k():
    torch.manual_seed(0)
    K = 64
    e = VQGANQuantizer(K, 16).codebook.detach()
    assert e.abs().max() <= 1 / K
    assert e.abs().max() > 0.9 / K  # spread over the whole interval, not a narrower one


def test_downsample_pads_right_and_bottom_only():
    torch.manual_seed(0)
    down = Downsample(4)
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    assert down(x).shape == (1, 4, 4, 4)
    # output (0, 0) reads input rows/columns 0..2 (no padding at the top/left) ...
    g, = torch.autograd.grad(down(x)[0, :, 0, 0].sum(), x)
    rows, cols = g.abs().sum((0, 1, 3)).nonzero().flatten(), g.abs().sum((0, 1, 2)).nonzero().flatten()
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [0, 1, 2]
    # ... and the last output reads rows 6, 7 and one zero pad row below
    g, = torch.autograd.grad(down(x)[0, :, 3, 3].sum(), x)
    assert g.abs().sum((0, 1, 3)).nonzero().flatten().tolist() == [6, 7]


def test_upsample_is_nearest_then_conv():
    torch.manual_seed(0)
    up = Upsample(2)
    x = torch.randn(1, 2, 3, 3)
    # with a centre-only identity kernel the conv is the identity: pixels repeat 2x2
    with torch.no_grad():
        up.conv.weight.zero_()
        up.conv.bias.zero_()
        up.conv.weight[0, 0, 1, 1] = up.conv.weight[1, 1, 1, 1] = 1.0
    expected = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.equal(up(x), expected)


def test_attention_block_matches_naive_single_head_attention():
    torch.manual_seed(0)
    C, H, W = 32, 3, 2
    attn = AttnBlock(C).double()
    x = torch.randn(1, C, H, W, dtype=torch.float64)
    h = attn.norm(x)[0].reshape(C, H * W)  # (C, N)

    def conv1x1(conv, v):
        return conv.weight[:, :, 0, 0] @ v + conv.bias[:, None]

    q, k, v = conv1x1(attn.q, h), conv1x1(attn.k, h), conv1x1(attn.v, h)
    out = torch.zeros(C, H * W, dtype=torch.float64)
    for i in range(H * W):
        scores = torch.stack([q[:, i] @ k[:, j] / math.sqrt(C) for j in range(H * W)])
        w = scores.exp() / scores.exp().sum()
        out[:, i] = sum(w[j] * v[:, j] for j in range(H * W))
    expected = x[0] + conv1x1(attn.proj_out, out).reshape(C, H, W)
    assert torch.allclose(attn(x)[0], expected, atol=1e-10)


# --- the quantiser's legacy quirk ----------------------------------------------------

def _vq_grads(legacy):
    torch.manual_seed(0)
    vq = VQGANQuantizer(8, 4, beta=0.25, legacy=legacy).double()
    z_e = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    _, loss, idx = vq(z_e)
    g_z, g_e = torch.autograd.grad(loss, [z_e, vq.codebook])
    return loss, g_z, g_e, z_e.detach(), vq.codebook.detach(), idx


@pytest.mark.parametrize("legacy", [False, True])
def test_beta_weights_commitment_in_paper_form_and_codebook_in_legacy(legacy):
    loss, g_z, g_e, z_e, e, idx = _vq_grads(legacy)
    beta, n = 0.25, z_e.numel()
    w_codebook, w_commit = (beta, 1.0) if legacy else (1.0, beta)
    e_sel = e[idx].permute(0, 3, 1, 2)  # the chosen code at every position
    # d/dz of w * mean((z - sg e)^2) = 2 w (z - e) / n
    assert torch.allclose(g_z, 2 * w_commit * (z_e - e_sel) / n, atol=1e-12)
    # d/de_k of w * mean((sg z - e)^2): summed over the positions assigned to code k
    expected = torch.zeros_like(e)
    expected.index_add_(0, idx.flatten(), (2 * w_codebook * (e_sel - z_e) / n)
                        .permute(0, 2, 3, 1).reshape(-1, e.shape[1]))
    assert torch.allclose(g_e, expected, atol=1e-12)
    # the value is the same in both forms: (1 + beta) * mean((z - e)^2)
    assert torch.allclose(loss, (1 + beta) * ((z_e - e_sel) ** 2).mean())


# --- the losses ------------------------------------------------------------------------

def test_patchgan_gives_30x30_logits_and_2765633_parameters():
    torch.manual_seed(0)
    D = NLayerDiscriminator(3, 64, 3).eval()
    assert n_params(D) == 2_765_633
    with torch.no_grad():
        assert D(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)


def test_patchgan_initialisation():
    torch.manual_seed(0)
    D = NLayerDiscriminator()
    convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in D.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    big = convs[3].weight  # 2M weights: the sample std is 0.02 to three digits
    assert abs(big.std().item() - 0.02) < 5e-4 and abs(big.mean().item()) < 5e-4
    w = torch.cat([b.weight for b in bns])
    assert abs(w.mean().item() - 1.0) < 0.01 and 0.01 < w.std().item() < 0.03
    assert all(torch.equal(b.bias, torch.zeros_like(b.bias)) for b in bns)
    assert [c.bias is None for c in convs] == [False, True, True, True, False]


def test_hinge_d_loss_values():
    z = torch.zeros(4, 1, 30, 30)
    assert hinge_d_loss(z, z).item() == 1.0
    real = 1.0 + torch.rand(4, 1, 30, 30)
    fake = -1.0 - torch.rand(4, 1, 30, 30)
    assert hinge_d_loss(real, fake).item() == 0.0
    torch.manual_seed(0)
    real, fake = torch.randn(3, 1, 5, 5), torch.randn(3, 1, 5, 5)
    naive = 0.5 * (sum(max(0.0, 1 - r) for r in real.flatten().tolist()) / real.numel()
                   + sum(max(0.0, 1 + f) for f in fake.flatten().tolist()) / fake.numel())
    assert hinge_d_loss(real, fake).item() == pytest.approx(naive, rel=1e-6)


def test_adaptive_weight_is_ratio_of_gradient_norms_closed_form():
    torch.manual_seed(0)
    W = torch.randn(5, 3, requires_grad=True)
    A, B = torch.randn(5, 3), torch.randn(5, 3)
    rec = (W * A).sum()  # gradient A
    g = (W ** 2 * B).sum()  # gradient 2 W B
    lam = adaptive_weight(rec, g, W)
    expected = A.norm() / ((2 * W.detach() * B).norm() + 1e-4)
    assert torch.allclose(lam, expected) and not lam.requires_grad
    # clamped to [0, 1e4]: a vanishing adversarial gradient gives 1e4
    assert adaptive_weight((W * A).sum(), (W * 0).sum(), W).item() == pytest.approx(1e4)


def test_adaptive_weight_on_the_decoder_matches_autograd(lpips):
    torch.manual_seed(0)
    model, crit = small_vqgan(), VQGANLoss(disc_start=0, lpips=lpips)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    x_hat, _, _ = model(x)
    rec = (x - x_hat).abs().mean() + lpips(x, x_hat).mean()
    g = -crit.discriminator(x_hat).mean()
    gr = torch.autograd.grad(rec, model.decoder.conv_out.weight, retain_graph=True)[0]
    gg = torch.autograd.grad(g, model.decoder.conv_out.weight, retain_graph=True)[0]
    lam = adaptive_weight(rec, g, model.last_layer)
    assert torch.allclose(lam, gr.norm() / (gg.norm() + 1e-4), rtol=1e-5)


def test_lpips_is_zero_on_equal_inputs_nonnegative_and_symmetric(lpips):
    torch.manual_seed(1)
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(lpips(x, x), torch.zeros(2))
    d = lpips(x, y)
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(d, lpips(y, x))
    assert (lpips(x, x + 0.01 * torch.randn_like(x)) < d).all()  # closer images, smaller distance
    assert not any(p.requires_grad for p in lpips.parameters())


def test_lpips_reads_vgg16_relu1_2_to_relu5_3(lpips):
    # torchvision's vgg16().features: conv layers at these indices, ReLUs after them
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert [i for i, m in enumerate(lpips.features) if isinstance(m, torch.nn.Conv2d)] == convs
    assert LPIPS_TAPS == (3, 8, 15, 22, 29)
    feats = lpips.vgg(torch.zeros(1, 3, 32, 32))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8),
                                                   (512, 4, 4), (512, 2, 2)]


def test_lpips_matches_formula_written_out(lpips):
    torch.manual_seed(2)
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    hx, hy, total = (x - shift) / scale, (y - shift) / scale, torch.zeros(2)
    for i, layer in enumerate(lpips.features):
        hx, hy = layer(hx), layer(hy)
        if i in (3, 8, 15, 22, 29):
            w = lpips.lins[LPIPS_TAPS.index(i)].weight.flatten()
            nx = hx / (hx.norm(dim=1, keepdim=True) + 1e-10)
            ny = hy / (hy.norm(dim=1, keepdim=True) + 1e-10)
            total += torch.einsum("c,bchw->b", w, (nx - ny) ** 2) / (hx.shape[2] * hx.shape[3])
    assert torch.allclose(lpips(x, y), total, rtol=1e-4)


def test_lpips_loads_torchvision_and_lpips_state_dicts_from_local_files(tmp_path):
    torch.manual_seed(0)
    shapes = [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128), (256, 256), (256, 256),
              (512, 256), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    vgg = {}
    for i, (o, c) in zip([0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28], shapes):
        vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"] = torch.randn(o, c, 3, 3), torch.randn(o)
    vgg["classifier.0.weight"] = torch.randn(4, 4)  # ignored
    lin = {f"lin{l}.model.1.weight": torch.rand(1, c, 1, 1)
           for l, c in enumerate([64, 128, 256, 512, 512])}
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(lin, tmp_path / "vgg.pth")
    m = LPIPS()
    m.load_pretrained(tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    assert torch.equal(m.features[28].weight, vgg["features.28.weight"])
    assert torch.equal(m.lins[4].weight, lin["lin4.model.1.weight"])
    with pytest.raises(KeyError):
        LPIPS().load_pretrained(tmp_path / "vgg16.pth")  # no lin weights: refuse


def test_total_loss_before_disc_start_is_reconstruction_plus_codebook(lpips):
    torch.manual_seed(0)
    model, crit = small_vqgan(), VQGANLoss(disc_start=100, lpips=lpips)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    x_hat, cb, _ = model(x)
    loss, logs = crit.autoencoder_loss(x, x_hat, cb, step=99, last_layer=model.last_layer)
    rec = (x - x_hat).abs().mean() + lpips(x, x_hat).mean()
    assert torch.equal(loss, rec + cb)
    # from disc_start on, the adversarial term is added with weight 0.8 * lambda
    loss, logs = crit.autoencoder_loss(x, x_hat, cb, step=100, last_layer=model.last_layer)
    g = -crit.discriminator(x_hat).mean()
    gr = torch.autograd.grad(rec, model.last_layer, retain_graph=True)[0]
    gg = torch.autograd.grad(g, model.last_layer, retain_graph=True)[0]
    lam = (gr.norm() / (gg.norm() + 1e-4)).clamp(0, 1e4)
    assert torch.allclose(loss, rec + cb + 0.8 * lam * g, rtol=1e-5)
    assert logs["lambda"] == pytest.approx(0.8 * lam.item(), rel=1e-5)


def test_discriminator_loss_trains_only_d_and_is_off_before_disc_start():
    torch.manual_seed(0)
    crit = VQGANLoss(disc_start=10, perceptual_weight=0.0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    x_hat = torch.rand(2, 3, 32, 32, requires_grad=True)
    d0, _ = crit.discriminator_loss(x, x_hat, step=9)
    assert d0.item() == 0.0
    d1, logs = crit.discriminator_loss(x, x_hat, step=10)
    d1.backward()
    assert x_hat.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in crit.discriminator.parameters())


# --- the transformer -------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    return build_gpt(num_codes=16, num_classes=3, block_size=12, n_layer=2, n_head=2,
                     n_embd=32).double().eval()


def test_kv_cached_generation_gives_the_full_forward_logits_at_every_step(gpt):
    g = torch.Generator().manual_seed(0)
    codes, step_logits = gpt.generate(3, torch.tensor([0, 1, 2]), generator=g, return_logits=True)
    assert codes.shape == (3, 12) and step_logits.shape == (3, 12, 16)
    with torch.no_grad():
        full = gpt(codes, torch.tensor([0, 1, 2]))
    assert torch.allclose(step_logits, full, rtol=0, atol=1e-12)


def test_changing_a_later_token_does_not_change_earlier_logits(gpt):
    torch.manual_seed(0)
    codes, labels = torch.randint(0, 16, (2, 12)), torch.tensor([0, 2])
    with torch.no_grad():
        before = gpt(codes, labels)
        changed = codes.clone()
        changed[:, 7] = (changed[:, 7] + 5) % 16
        after = gpt(changed, labels)
    # logits at position i predict code i, from the class and codes < i
    assert torch.equal(before[:, :8], after[:, :8])
    assert not torch.allclose(before[:, 8:], after[:, 8:])
    with torch.no_grad():  # and the class token reaches every position
        other = gpt(codes, torch.tensor([1, 1]))
    assert not torch.allclose(before[:, 0], other[:, 0])


def test_loss_is_mean_negative_log_likelihood(gpt):
    torch.manual_seed(0)
    codes, labels = torch.randint(0, 16, (2, 3, 4)), torch.tensor([1, 2])  # a 3x4 grid
    with torch.no_grad():
        logits = gpt(codes, labels)
        flat = codes.flatten(1)
        nll = -sum(torch.log_softmax(logits[b, i], -1)[flat[b, i]] for b in range(2) for i in range(12))
        assert torch.allclose(gpt.loss(codes, labels), nll / 24)


def test_top_k_keeps_exactly_the_k_largest():
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    out = top_k_filter(logits, 7)
    for row, o in zip(logits, out):
        kept = set(torch.isfinite(o).nonzero().flatten().tolist())
        naive = set(sorted(range(50), key=lambda i: -row[i].item())[:7])
        assert kept == naive
        assert torch.equal(o[list(kept)], row[list(kept)])


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 0.999])
def test_top_p_keeps_smallest_prefix_reaching_p(p):
    torch.manual_seed(0)
    logits = torch.randn(6, 40, dtype=torch.float64) * 2
    out = top_p_filter(logits, p)
    for row, o in zip(logits, out):
        probs = torch.softmax(row, -1).tolist()
        order, kept, mass = sorted(range(40), key=lambda i: -probs[i]), [], 0.0
        for i in order:  # add tokens until their mass reaches p
            kept.append(i)
            mass += probs[i]
            if mass >= p:
                break
        assert set(torch.isfinite(o).nonzero().flatten().tolist()) == set(kept)


def test_generate_with_top_k_1_is_greedy(gpt):
    codes = gpt.generate(2, 1, top_k=1)
    with torch.no_grad():
        full = gpt(codes, torch.tensor([1, 1]))
    assert torch.equal(codes, full.argmax(-1))
    assert torch.equal(codes, gpt.generate(2, 1, top_p=1e-9))  # the nucleus of one token


def test_gpt_block_size_is_the_code_grid():
    m = GPT()
    assert m.config.block_size == build_vqgan().latent_size ** 2
    assert m.config.num_codes == build_vqgan().config.num_codes
