"""Sana chapter: linear attention against the naive formula, where position enters (only
the Mix-FFN convolution), the DC-AE shortcuts against their definition, exact parameter
counts of the paper models, the caption norm at 0.01, the text encoder, and the
reference note's checks on tokens, shift and the flow-matching identities."""

import pytest
import torch
import torch.nn.functional as F

from annogen.flow.flow import euler_sample, interpolate, predict_x0, shift_sigma, velocity_target
from annogen.sana import (DCAE, LinearAttention, MixFFN, Sana, SanaBlock, TextEncoder,
                          channel_to_space_duplicate, linear_attention, space_to_channel_average,
                          tokenize)
from annogen.sana.dcae import DownBlock, UpBlock
from annogen.sana.experiment import pack, unpack

pytestmark = pytest.mark.usefixtures("one_thread")


def count(module):
    return sum(p.numel() for p in module.parameters())


# ---- linear attention ----------------------------------------------------------------

def naive_linear_attention(q, k, v, eps=1e-8):
    """O_i = sum_j relu(q_i).relu(k_j) v_j / (sum_j relu(q_i).relu(k_j) + eps), term by term."""
    B, H, N, d = q.shape
    out = torch.empty_like(v, dtype=torch.float64)
    q, k, v = F.relu(q).double(), F.relu(k).double(), v.double()
    for i in range(N):
        w = (q[:, :, i:i + 1, :] * k).sum(-1)           # (B, H, N): relu(q_i) . relu(k_j)
        out[:, :, i] = (w[..., None] * v).sum(2) / (w.sum(-1)[..., None] + eps)
    return out


@pytest.mark.parametrize("N", [1, 7, 64, 300])
def test_linear_attention_equals_the_naive_formula(N):
    g = torch.Generator().manual_seed(N)
    q, k, v = torch.randn(3, 2, 3, N, 32, generator=g).unbind(0)
    out = linear_attention(q, k, v)
    assert out.shape == (2, 3, N, 32) and out.dtype == torch.float32
    assert torch.allclose(out.double(), naive_linear_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_linear_attention_is_computed_in_fp32_and_returns_the_input_dtype():
    q, k, v = torch.randn(3, 1, 2, 50, 32).to(torch.bfloat16).unbind(0)
    out = linear_attention(q, k, v)
    assert out.dtype == torch.bfloat16
    ref = naive_linear_attention(q.float(), k.float(), v.float())
    assert torch.allclose(out.double(), ref, atol=2e-2)


def test_all_negative_keys_give_zero_not_nan():
    # every ReLU(k) is zero: numerator and denominator vanish, eps keeps the output finite
    q = torch.randn(1, 1, 5, 32)
    out = linear_attention(q, -torch.rand(1, 1, 5, 32), torch.randn(1, 1, 5, 32))
    assert torch.isfinite(out).all() and out.abs().max() == 0


def test_linear_attention_module_heads_of_32_and_biases():
    attn = LinearAttention(128)
    assert attn.heads == 4 and attn.qkv.bias is None and attn.proj.bias is not None
    x = torch.randn(2, 10, 128)
    q, k, v = F.linear(x, attn.qkv.weight).reshape(2, 10, 3, 4, 32).permute(2, 0, 3, 1, 4)
    ref = naive_linear_attention(q, k, v).float().transpose(1, 2).reshape(2, 10, 128)
    assert torch.allclose(attn(x), attn.proj(ref), atol=1e-5)


def test_linear_attention_is_permutation_equivariant_but_a_block_is_not():
    torch.manual_seed(0)
    perm = torch.randperm(16)
    x = torch.randn(2, 16, 64)
    attn = LinearAttention(64)
    assert torch.allclose(attn(x)[:, perm], attn(x[:, perm]), atol=1e-5)

    block = SanaBlock(64, 2).eval()
    y, t = torch.randn(2, 5, 64), torch.randn(2, 6 * 64)
    out = block(x, y, t, None, (4, 4))
    assert not torch.allclose(out[:, perm], block(x[:, perm], y, t, None, (4, 4)), atol=1e-3)
    # The 3x3 depthwise convolution is the only place position enters: keep only the
    # centre tap of its kernel and the block becomes permutation-equivariant too.
    with torch.no_grad():
        kernel = block.mlp.depth_conv.weight
        centre = kernel[:, :, 1, 1].clone()
        kernel.zero_()
        kernel[:, :, 1, 1] = centre
    out = block(x, y, t, None, (4, 4))
    assert torch.allclose(out[:, perm], block(x[:, perm], y, t, None, (4, 4)), atol=1e-5)


def test_mix_ffn_is_the_glu_of_a_depthwise_conv():
    torch.manual_seed(0)
    ffn = MixFFN(8, 20)
    x = torch.randn(2, 12, 8)
    img = x.transpose(1, 2).reshape(2, 8, 3, 4)
    h = F.silu(F.conv2d(img, ffn.inverted_conv.weight, ffn.inverted_conv.bias))
    h = F.conv2d(h, ffn.depth_conv.weight, ffn.depth_conv.bias, padding=1, groups=40)
    a, g = h[:, :20], h[:, 20:]
    ref = F.conv2d(a * F.silu(g), ffn.point_conv.weight).flatten(2).transpose(1, 2)
    assert torch.allclose(ffn(x, (3, 4)), ref, atol=1e-6)
    assert ffn.point_conv.bias is None and ffn.depth_conv.bias is not None


# ---- the model -------------------------------------------------------------------------

def test_tiny_forward_shape_any_resolution_and_the_padding_mask():
    torch.manual_seed(0)
    model = Sana.from_preset("tiny").eval()
    assert not hasattr(model, "pos_embed")
    text, mask = torch.randn(2, 9, 128), torch.tensor([[1] * 9, [1] * 4 + [0] * 5])
    for side in (4, 8):  # trained size and twice it: no positional embedding to outgrow
        x = torch.randn(2, 16, side, side)
        assert model(x, torch.tensor([10.0, 900.0]), text, mask).shape == x.shape
    x = torch.randn(2, 16, 4, 4)
    out = model(x, torch.tensor([10.0, 900.0]), text, mask)
    other = text.clone()
    other[1, 4:] = torch.randn(5, 128) * 10  # change only the padded tokens
    assert torch.allclose(out, model(x, torch.tensor([10.0, 900.0]), other, mask), atol=1e-5)
    other[1, 0] += 1  # a real token does matter
    assert not torch.allclose(out[1], model(x, torch.tensor([10.0, 900.0]), other, mask)[1])


def test_caption_norm_output_rms_is_0_01_at_initialisation():
    torch.manual_seed(0)
    model = Sana.from_preset("tiny", caption_channels=64).eval()
    y = model.embed_text(torch.randn(3, 7, 64) * 50)
    rms = y.pow(2).mean(-1).sqrt()
    assert torch.allclose(rms, torch.full_like(rms, 0.01), rtol=1e-3)
    assert torch.allclose(model.attention_y_norm.weight, torch.full((128,), 0.01))


def test_adaln_single_one_t_block_and_a_table_per_block():
    model = Sana.from_preset("tiny")
    assert model.t_block[1].out_features == 6 * 128
    for block in model.blocks:
        assert block.scale_shift_table.shape == (6, 128)
        assert not any("adaLN" in name for name, _ in block.named_parameters())


# The reference figures (NVlabs/Sana SanaMS_600M_P1_D28 / SanaMS_1600M_P1_D20 and
# dc-ae-f32c32-sana-1.0, counted with sum(p.numel())).
@pytest.mark.parametrize("name,block,caption,total", [
    ("0.6B", 20_646_144, 3_983_616, 591_747_872),
    ("1.6B", 77_920_640, 10_183_040, 1_604_462_752),
])
def test_paper_presets_match_the_official_parameter_counts(name, block, caption, total):
    with torch.device("meta"):
        model = Sana.from_preset(name)
    h = model.config.hidden_size
    m = int(2.5 * h)
    assert count(model.blocks[0]) == block == 8 * h * h + 11 * h + 3 * m * h + 22 * m
    assert count(model.y_embedder) == caption
    assert count(model) == total
    assert model.blocks[0].attn.heads == h // 32


def test_dcae_f32c32_matches_the_official_parameter_counts():
    with torch.device("meta"):
        ae = DCAE.from_preset("f32c32")
    assert (count(ae.encoder), count(ae.decoder), count(ae)) == \
        (153_027_104, 159_223_171, 312_250_275)
    assert ae.config.f == 32 and ae.config.scaling_factor == 0.41407


@pytest.mark.parametrize("side,tokens", [(1024, 1024), (512, 256)])
def test_f32_with_patch_1_gives_the_note_token_counts(side, tokens):
    with torch.device("meta"):
        ae = DCAE.from_preset("f32c32")
        z = ae.encode(torch.empty(1, 3, side, side))
    assert z.shape == (1, 32, side // 32, side // 32)
    assert z.shape[-1] * z.shape[-2] == tokens  # patch 1: one token per latent position


# ---- DC-AE shortcuts -------------------------------------------------------------------

def test_down_shortcut_is_unshuffle_then_group_mean():
    x = torch.randn(2, 6, 8, 8)
    out = space_to_channel_average(x, 12)   # 4 * 6 = 24 channels averaged in pairs
    # independently: channel c*4 + (2 i + j) of pixel_unshuffle is x[c, 2 y + i, 2 x + j]
    unshuffled = torch.stack([x[:, c, i::2, j::2] for c in range(6) for i in range(2)
                              for j in range(2)], dim=1)
    ref = torch.stack([unshuffled[:, 2 * k:2 * k + 2].mean(1) for k in range(12)], dim=1)
    assert torch.allclose(out, ref, atol=1e-6)


def test_up_shortcut_is_repeat_then_shuffle():
    z = torch.randn(2, 12, 4, 4)
    out = channel_to_space_duplicate(z, 6)  # repeat each channel twice: 24, shuffle to 6
    rep = torch.stack([z[:, k // 2] for k in range(24)], dim=1)
    ref = torch.empty(2, 6, 8, 8)
    for c in range(6):
        for i in range(2):
            for j in range(2):
                ref[:, c, i::2, j::2] = rep[:, 4 * c + 2 * i + j]
    assert torch.equal(out, ref)


def test_a_constant_image_passes_down_then_up_unchanged():
    c = torch.randn(3, 5)[..., None, None].expand(3, 5, 8, 8)
    for wide in (10, 20):
        assert torch.allclose(channel_to_space_duplicate(space_to_channel_average(c, wide), 5), c)


def test_stage_blocks_add_the_shortcut_and_plain_ones_do_not():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 8, 8)
    down, plain = DownBlock(8, 16), DownBlock(8, 16, shortcut=False)
    plain.load_state_dict(down.state_dict())
    assert torch.allclose(down(x) - plain(x), space_to_channel_average(x, 16), atol=1e-6)
    up = UpBlock(16, 8)
    z = torch.randn(1, 16, 4, 4)
    with torch.no_grad():
        up.conv.weight.zero_()
        up.conv.bias.zero_()
    assert torch.equal(up(z), channel_to_space_duplicate(z, 8))


def test_tiny_dcae_is_f8_and_its_zero_network_is_the_shortcut_path():
    ae = DCAE.from_preset("tiny")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert ae.encode(x).shape == (2, 16, 4, 4) and ae(x).shape == x.shape
    assert count(DCAE.from_preset("tiny", shortcut=False)) == count(ae)


# ---- text ------------------------------------------------------------------------------

def test_tokenizer_bos_eos_padding_and_unknown_words():
    ids, mask = tokenize(["a red circle in the centre", ""], max_length=10)
    assert ids[0, 0] == 1 and ids[0, 7] == 2 and mask[0].tolist() == [1] * 8 + [0] * 2
    assert ids[1, :2].tolist() == [1, 2] and mask[1].sum() == 2
    with pytest.raises(ValueError, match="unknown word 'dog'"):
        tokenize(["a red dog"])


def test_text_encoder_is_causal_and_its_loss_ignores_padding():
    torch.manual_seed(0)
    enc = TextEncoder(dim=32, depth=1, heads=2)
    a, _ = enc.encode(["a small red circle in the centre"])
    b, _ = enc.encode(["a small red circle in the top left"])
    assert torch.allclose(a[0, :7], b[0, :7], atol=1e-6) and not torch.allclose(a[0, 7], b[0, 7])
    ids, _ = tokenize(["a red circle"], max_length=8)
    logits = enc(ids[:, :-1])
    ref = F.cross_entropy(logits[0, :4], ids[0, 1:5])  # BOS a red circle EOS: 4 targets
    assert torch.allclose(enc.loss(ids), ref, atol=1e-6)


def test_pack_and_unpack_are_inverse():
    text, mask = torch.randn(2, 5, 7), torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    t, m = unpack(pack(text, mask))
    assert torch.equal(t, text) and torch.equal(m, mask.bool())


# ---- the reference note's flow-matching checks -----------------------------------------

def test_shift_three_maps_one_half_to_three_quarters():
    assert shift_sigma(0.5, 3.0) == pytest.approx(0.75)


def test_x0_from_velocity_and_one_euler_step_from_pure_noise():
    x_0, eps = torch.randn(1, 16, 4, 4), torch.randn(1, 16, 4, 4)
    sigma = torch.tensor([0.37])
    x_t = interpolate(x_0, eps, sigma)
    v = velocity_target(x_0, eps)
    assert torch.allclose(predict_x0(x_t, v, sigma), x_0, atol=1e-6)
    # a single data point: the exact velocity field is (x - x_0) / sigma; from sigma = 1
    # one step lands on x_0
    out = euler_sample(lambda x, s: (x - x_0) / s.reshape(-1, 1, 1, 1), eps,
                       torch.tensor([1.0, 0.0]))
    assert torch.allclose(out, x_0, atol=1e-6)
