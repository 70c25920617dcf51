"""DiT: zero output and identity blocks at initialisation, patchify/unpatchify, the
sin-cos positions and timestep embedding against naive formulas, adaLN-Zero against a
hand-written block, label dropout, the official CFG helper's 3-channel quirk, and the
parameter counts of the paper's four sizes."""

import math

import pytest
import torch

from annogen.dit import DiT
from annogen.dit.model import (PRESETS, DiTBlock, LabelEmbedder, TimestepEmbedder,
                               count_parameters, patchify, sincos_2d, unpatchify)


pytestmark = pytest.mark.usefixtures("one_thread")


def small(**kw):
    torch.manual_seed(0)
    base = dict(input_size=16, patch_size=4, in_channels=3, hidden_size=64, depth=3,
                num_heads=4, num_classes=5)
    return DiT.from_preset("S/2", **{**base, **kw})


def test_output_is_exactly_zero_at_initialisation():
    model = small(learn_sigma=True).eval()
    x = torch.randn(4, 3, 16, 16)
    out = model(x, torch.tensor([0.0, 10.0, 500.0, 999.0]), torch.tensor([0, 1, 4, 5]))
    assert out.shape == (4, 6, 16, 16)
    assert torch.equal(out, torch.zeros_like(out))


def test_every_block_is_the_identity_at_initialisation():
    model = small()
    tokens = torch.randn(2, 16, 64)
    c = torch.randn(2, 64)
    for block in model.blocks:
        assert torch.equal(block(tokens, c), tokens)
    # ... and not after the adaLN layer moves away from zero
    torch.nn.init.normal_(model.blocks[0].adaLN_modulation[-1].weight)
    assert not torch.allclose(model.blocks[0](tokens, c), tokens)


def test_patchify_then_unpatchify_is_the_identity():
    x = torch.randn(3, 5, 12, 12)
    for p in (1, 2, 3, 4):
        tokens = patchify(x, p)
        assert tokens.shape == (3, (12 // p) ** 2, p * p * 5)
        assert torch.equal(unpatchify(tokens, 5, p), x)
    # token i is the patch at row i // w, column i % w, pixels in (row, column, channel) order
    tokens = patchify(x, 4)
    patch = x[1, :, 4:8, 8:12]  # row 1, column 2 of the 3x3 grid
    assert torch.equal(tokens[1, 1 * 3 + 2], patch.permute(1, 2, 0).reshape(-1))


def test_patch_embedding_is_a_linear_map_of_each_patch():
    model = small()
    x = torch.randn(2, 3, 16, 16)
    tokens = model.x_embedder(x)
    W = model.x_embedder.proj.weight  # (C, 3, p, p)
    b = model.x_embedder.proj.bias
    patches = patchify(x, 4)  # (N, T, p p c) in (p, q, c) order
    W_flat = W.permute(0, 2, 3, 1).reshape(64, -1)
    assert torch.allclose(tokens, patches @ W_flat.T + b, atol=1e-5)


def test_sincos_positions_follow_the_formula_column_first():
    C, G = 16, 4
    table = sincos_2d(C, G)
    D = C // 2

    def pe(m):
        omega = [1 / 10000 ** (2 * k / D) for k in range(D // 2)]
        return [math.sin(m * w) for w in omega] + [math.cos(m * w) for w in omega]

    for t in range(G * G):
        i, j = divmod(t, G)
        expected = torch.tensor(pe(j) + pe(i), dtype=torch.float32)
        assert torch.allclose(table[t], expected, atol=1e-6)
    model = small()
    assert not model.pos_embed.requires_grad
    assert torch.allclose(model.pos_embed[0], sincos_2d(64, 4))


def test_timestep_embedding_is_cosines_then_sines_of_256_frequencies():
    t = torch.tensor([0.0, 3.0, 999.0])
    emb = TimestepEmbedder.timestep_embedding(t, 256)
    assert emb.shape == (3, 256)
    for n, tv in enumerate(t.tolist()):
        for k in (0, 5, 127):
            f = math.exp(-math.log(10000) * k / 128)
            assert emb[n, k].item() == pytest.approx(math.cos(tv * f), abs=1e-4)
            assert emb[n, 128 + k].item() == pytest.approx(math.sin(tv * f), abs=1e-4)


def test_adaln_zero_block_matches_a_hand_written_block():
    torch.manual_seed(1)
    block = DiTBlock(32, 4)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, c = torch.randn(2, 5, 32), torch.randn(2, 32)
    m = torch.nn.functional.silu(c) @ block.adaLN_modulation[1].weight.T + block.adaLN_modulation[1].bias
    shift1, scale1, gate1, shift2, scale2, gate2 = m.chunk(6, dim=1)

    def ln(z):
        mu = z.mean(-1, keepdim=True)
        var = z.var(-1, unbiased=False, keepdim=True)
        return (z - mu) / torch.sqrt(var + 1e-6)

    def attn(z):
        qkv = z @ block.attn.qkv.weight.T + block.attn.qkv.bias
        q, k, v = qkv.split(32, dim=-1)
        heads = []
        for h in range(4):
            sl = slice(8 * h, 8 * h + 8)
            a = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(8), dim=-1)
            heads.append(a @ v[..., sl])
        return torch.cat(heads, -1) @ block.attn.proj.weight.T + block.attn.proj.bias

    def mlp(z):
        h = z @ block.mlp.fc1.weight.T + block.mlp.fc1.bias
        h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
        return h @ block.mlp.fc2.weight.T + block.mlp.fc2.bias

    y = x + gate1[:, None] * attn(ln(x) * (1 + scale1[:, None]) + shift1[:, None])
    y = y + gate2[:, None] * mlp(ln(y) * (1 + scale2[:, None]) + shift2[:, None])
    assert torch.allclose(block(x, c), y, atol=1e-5)


def test_labels_drop_to_the_null_class_in_training_only():
    emb = LabelEmbedder(10, 8, 0.1)
    assert emb.embedding_table.num_embeddings == 11
    labels = torch.randint(0, 10, (20000,))
    torch.manual_seed(0)
    dropped = emb.token_drop(labels)
    frac = (dropped == 10).float().mean().item()
    assert 0.09 < frac < 0.11
    assert torch.equal(dropped[dropped != 10], labels[dropped != 10])
    assert torch.equal(emb(labels[:5], train=False), emb.embedding_table.weight[labels[:5]])
    forced = emb(labels[:3], train=False, force_drop_ids=torch.tensor([1, 0, 1]))
    assert torch.equal(forced[0], emb.embedding_table.weight[10])
    assert torch.equal(forced[1], emb.embedding_table.weight[labels[1]])


def test_official_cfg_helper_guides_only_the_first_three_channels():
    model = small(in_channels=4, learn_sigma=True)
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    model.eval()
    half = torch.randn(2, 4, 16, 16)
    x = torch.cat([half, half])
    t = torch.tensor([300.0, 300.0, 300.0, 300.0])
    y = torch.tensor([1, 2, 5, 5])  # labels, then the null class
    out = model(x, t, y)
    cond, uncond = out[:2], out[2:]
    guided = model.forward_with_cfg(x, t, y, 4.0)
    expected = uncond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3])
    assert torch.allclose(guided[:2, :3], expected, atol=1e-5)
    assert torch.allclose(guided[2:, :3], expected, atol=1e-5)
    # the fourth noise channel and the variance channels pass through unguided
    assert torch.allclose(guided[:, 3:], out[:, 3:])
    full = model.forward_with_cfg(x, t, y, 4.0, channels=None)
    assert torch.allclose(full[:2], uncond + 4.0 * (cond - uncond), atol=1e-5)


# (all parameters incl. the frozen position table, trainable) of the official models
OFFICIAL = {"S/2": (32_963_360, 32_865_056), "B/2": (130_512_416, 130_315_808),
            "L/2": (458_102_816, 457_840_672), "XL/2": (675_129_632, 674_834_720)}


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_parameter_counts_match_the_official_models(name):
    with torch.device("meta"):
        model = DiT.from_preset(name)
    assert (count_parameters(model), count_parameters(model, trainable_only=True)) == OFFICIAL[name]
    c = model.config
    assert (c.input_size, c.in_channels, c.num_classes, c.learn_sigma) == (32, 4, 1000, True)
    assert model.out_channels == 8 and c.num_patches == 256


def test_xl2_is_within_one_percent_of_the_papers_675m():
    with torch.device("meta"):
        model = DiT.from_preset("XL/2")
    assert abs(count_parameters(model) / 675e6 - 1) < 0.01


def test_patch_variants_and_overrides():
    assert {"S/4", "B/8", "XL/4", "tiny"} <= set(PRESETS)
    with torch.device("meta"):
        model = DiT.from_preset("B/4", num_classes=10, learn_sigma=False)
    assert model.config.num_patches == 64 and model.y_embedder.embedding_table.num_embeddings == 11
    assert model.out_channels == 4
    with pytest.raises(ValueError):
        DiT.from_preset("XXL/2")


def test_forward_shapes_and_gradients_reach_every_trainable_parameter():
    model = small(learn_sigma=False)
    for p in model.parameters():  # move off the zero initialisation
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(3, 3, 16, 16)
    out = model(x, torch.rand(3) * 1000, torch.tensor([0, 2, 5]))
    assert out.shape == x.shape
    out.pow(2).sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
