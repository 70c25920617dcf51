"""VAR: the checks of the reference note, each against an independent computation."""

import math

import pytest
import torch
import torch.nn.functional as F

from annogen.var import (VAR, MultiScaleQuantizer, Phi, block_causal_mask, build_vae, build_var,
                         count_parameters, default_patch_nums, phi_index, sample_tokens)

PAPER_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PAPER_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)


pytestmark = pytest.mark.usefixtures("one_thread")


def random_var(**overrides):
    # the tiny VAR with every weight moved away from its near-identity initialisation,
    # so that the blocks, the AdaLN maps and the head all matter
    torch.manual_seed(0)
    var = build_var(**overrides)
    with torch.no_grad():
        for p in var.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return var.eval()


def quantizer(num_codes=64, dim=8, patch_nums=(1, 2, 3, 4, 6, 8), q=0.5, seed=0):
    torch.manual_seed(seed)
    quant = MultiScaleQuantizer(num_codes, dim, patch_nums, q=q)
    with torch.no_grad():
        quant.embedding.weight.normal_()
    return quant


# --- the token pyramid -------------------------------------------------------------

def test_paper_schedules_have_680_and_2240_tokens():
    assert default_patch_nums(16) == PAPER_256 and default_patch_nums(32) == PAPER_512
    assert sum(p * p for p in PAPER_256) == 680
    assert sum(p * p for p in PAPER_512) == 2240
    with torch.device("meta"):
        assert build_var("d16").config.L == 680
        assert build_var("d16", patch_nums=PAPER_512).pos_1LC.shape == (1, 2240, 1024)


def test_block_causal_mask_allows_286434_pairs_at_256px():
    mask = block_causal_mask(PAPER_256)
    assert mask.shape == (680, 680) and mask.dtype == torch.bool
    assert int(mask.sum()) == 286_434  # the reference note's count


def test_block_causal_mask_is_level_rule_entry_by_entry():
    pns = (1, 2, 3)
    level = [k for k, p in enumerate(pns) for _ in range(p * p)]
    naive = torch.tensor([[level[j] <= level[i] for j in range(14)] for i in range(14)])
    assert torch.equal(block_causal_mask(pns), naive)
    # bidirectional inside a scale: the first token of scale 3 sees the last of scale 3
    assert naive[5, 13] and not naive[4, 5]


def test_phi_mapping_is_the_official_one():
    assert [phi_index(k, 10) for k in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    quant = MultiScaleQuantizer(16, 4, PAPER_256)
    assert len(quant.phis) == 4
    assert [list(quant.phis).index(quant.phi(k)) for k in range(10)] == \
        [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]


def test_phi_is_half_input_half_convolution():
    torch.manual_seed(0)
    phi = Phi(4, 0.5)
    h = torch.randn(2, 4, 5, 5)
    expected = 0.5 * h + 0.5 * F.conv2d(h, phi.weight, phi.bias, padding=1)
    assert torch.allclose(phi(h), expected, atol=1e-6)


def naive_encode(quant, f):
    # the residual loop of the paper, written out with explicit distances
    H = f.shape[-1]
    f_rest, f_hat, idxs = f.clone(), torch.zeros_like(f), []
    e = quant.embedding.weight
    K = len(quant.patch_nums)
    for k, p in enumerate(quant.patch_nums):
        z = F.interpolate(f_rest, size=(p, p), mode="area") if p != H else f_rest
        z = z.permute(0, 2, 3, 1)
        d = ((z[..., None, :] - e) ** 2).sum(-1)
        r = d.argmin(-1)
        h = e[r].permute(0, 3, 1, 2)
        if p != H:
            h = F.interpolate(h, size=(H, H), mode="bicubic")
        h = quant.phis[phi_index(k, K)](h)
        f_hat, f_rest = f_hat + h, f_rest - h
        idxs.append(r)
    return idxs, f_hat


def test_encoding_matches_the_residual_loop_and_decoding_inverts_it():
    quant = quantizer()
    f = torch.randn(3, 8, 8, 8)
    idxs = quant.f_to_idxs(f)
    ref_idxs, ref_f_hat = naive_encode(quant, f)
    assert [tuple(r.shape) for r in idxs] == [(3, p, p) for p in quant.patch_nums]
    assert all(r.dtype == torch.int64 for r in idxs)
    assert all(torch.equal(a, b) for a, b in zip(idxs, ref_idxs))
    with torch.no_grad():
        f_hat = quant.idxs_to_fhat(idxs)
        assert torch.allclose(f_hat, quant.encode(f)[1], atol=1e-6)
        assert torch.allclose(f_hat, ref_f_hat, atol=1e-5)


def test_fhat_error_falls_as_scales_are_added():
    # phi = identity and a rich codebook: each scale codes part of what is left
    quant = quantizer(num_codes=1024, dim=4, patch_nums=PAPER_256, q=0.0)
    torch.manual_seed(1)
    f = F.interpolate(torch.randn(4, 4, 4, 4) * 2, size=(16, 16), mode="bicubic") \
        + 0.3 * torch.randn(4, 4, 16, 16)
    idxs = quant.f_to_idxs(f)
    with torch.no_grad():
        errors = [(quant.idxs_to_fhat(idxs[:k]) - f).pow(2).mean().item() for k in range(1, 11)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.05 * errors[0]


def test_quantiser_loss_and_straight_through_gradient():
    quant = quantizer()
    f = torch.randn(2, 8, 8, 8, requires_grad=True)
    f_st, loss, idxs = quant(f)
    with torch.no_grad():
        partial = [quant.idxs_to_fhat(idxs[:k]) for k in range(1, 7)]
    assert torch.allclose(f_st, partial[-1], atol=1e-5)
    # value: mean over scales of beta*|sg(f_hat_k) - f|^2 + |f_hat_k - sg(f)|^2
    naive = sum(1.25 * (p - f.detach()).pow(2).mean() for p in partial) / 6
    assert loss.item() == pytest.approx(naive.item(), rel=1e-5)
    # straight-through: d(sum(w * f_st))/df = w
    w = torch.randn_like(f)
    (g,) = torch.autograd.grad((w * f_st).sum(), f)
    assert torch.allclose(g, w)
    # the encoder's share of the loss gradient is beta * 2 (f - f_hat_k) / n per scale
    (g,) = torch.autograd.grad(loss, f)
    expected = sum(0.25 * 2 * (f.detach() - p) / f.numel() for p in partial) / 6
    assert torch.allclose(g, expected, atol=1e-7)


def test_teacher_inputs_are_downsampled_partial_sums():
    quant = quantizer()
    idxs = quant.f_to_idxs(torch.randn(2, 8, 8, 8))
    x_in = quant.teacher_inputs(idxs)
    assert x_in.shape == (2, 130 - 1, 8)
    with torch.no_grad():
        f3 = quant.idxs_to_fhat(idxs[:3])  # after scales 1..3: the input of scale 4 (4x4)
    expected = F.interpolate(f3, size=(4, 4), mode="area").flatten(2).transpose(1, 2)
    start = 4 + 9  # the inputs of scales 2 and 3 precede those of scale 4
    assert torch.allclose(x_in[:, start:start + 16], expected, atol=1e-6)


# --- the transformer ---------------------------------------------------------------

@pytest.mark.parametrize("preset,official", [("d16", 310_283_520), ("d20", 600_917_136),
                                             ("d24", 1_033_399_360), ("d30", 2_010_020_356)])
def test_paper_transformer_parameter_counts(preset, official):
    with torch.device("meta"):
        var = build_var(preset)
    d = int(preset[1:])
    assert (var.config.width, var.config.num_heads) == (64 * d, d)
    assert count_parameters(var) == pytest.approx(official, rel=0.005)


def test_paper_autoencoder_parameter_count_and_latent():
    with torch.device("meta"):
        vae = build_vae("paper")
        f = vae.features(torch.empty(1, 3, 256, 256))
    assert tuple(f.shape) == (1, 32, 16, 16)
    assert count_parameters(vae) == pytest.approx(108_948_355, rel=0.005)
    assert vae.quantize.patch_nums == PAPER_256 and vae.quantize.num_codes == 4096


def test_initialisation_follows_the_official_rules():
    torch.manual_seed(0)
    var = build_var(depth=4, width=256, num_heads=4)
    C, sigma = 256, math.sqrt(1 / (3 * 256))
    assert var.word_embed.weight.std().item() == pytest.approx(sigma, rel=0.05)
    assert var.class_emb.weight.std().item() == pytest.approx(sigma, rel=0.05)
    assert var.head.weight.std().item() == pytest.approx(0.02 * sigma, rel=0.05)
    for block in var.blocks:
        ada = block.ada_lin[-1].weight
        assert ada[:2 * C].std().item() == pytest.approx(1e-5 * sigma, rel=0.05)
        assert ada[2 * C:].std().item() == pytest.approx(0.5 * sigma, rel=0.05)
        assert block.attn.proj.weight.std().item() == pytest.approx(sigma / math.sqrt(8), rel=0.05)
        assert block.ffn.fc2.weight.std().item() == pytest.approx(sigma / math.sqrt(8), rel=0.05)
        assert torch.allclose(block.attn.scale_mul.exp(), torch.full((1, 4, 1, 1), 4.0))
        assert not block.ln_wo_grad.elementwise_affine
        assert block.attn.mat_qkv.bias is None


def test_attention_is_cosine_times_capped_temperature_under_the_mask():
    torch.manual_seed(0)
    var = random_var()
    attn = var.blocks[0].attn
    with torch.no_grad():
        attn.scale_mul.fill_(math.log(1000.0))  # capped at 100
    x = torch.randn(2, 14, 128)
    mask = block_causal_mask((1, 2, 3))
    W = attn.mat_qkv.weight
    q = (x @ W[:128].t() + attn.q_bias).view(2, 14, 2, 64).transpose(1, 2)
    k = (x @ W[128:256].t()).view(2, 14, 2, 64).transpose(1, 2)
    v = (x @ W[256:].t() + attn.v_bias).view(2, 14, 2, 64).transpose(1, 2)
    cos = (q / q.norm(dim=-1, keepdim=True)) @ (k / k.norm(dim=-1, keepdim=True)).transpose(-1, -2)
    a = (100.0 * cos).masked_fill(~mask, -1e30).softmax(-1)
    expected = attn.proj((a @ v).transpose(1, 2).reshape(2, 14, 128))
    assert torch.allclose(attn(x, mask), expected, atol=1e-5)


def test_adaln_block_computes_the_gated_residual_formula():
    var = random_var()
    block = var.blocks[1]
    x, cond = torch.randn(2, 5, 128), torch.randn(2, 128)
    g1, g2, s1, s2, b1, b2 = (F.silu(cond) @ block.ada_lin[1].weight.t()
                              + block.ada_lin[1].bias).chunk(6, dim=-1)
    ln = lambda t: F.layer_norm(t, (128,), eps=1e-6)
    h = x + g1[:, None] * block.attn(ln(x) * (1 + s1[:, None]) + b1[:, None])
    h = h + g2[:, None] * block.ffn(ln(h) * (1 + s2[:, None]) + b2[:, None])
    assert torch.allclose(block(x, cond), h, atol=1e-5)


def test_loss_is_mean_cross_entropy_over_all_tokens():
    var, quant = random_var(), quantizer(num_codes=256, dim=32)
    idxs = quant.f_to_idxs(torch.randn(3, 32, 8, 8))
    labels = torch.tensor([0, 7, 20])
    logits = var(labels, quant.teacher_inputs(idxs))
    target = torch.cat([r.flatten(1) for r in idxs], 1)
    logp = logits.log_softmax(-1)
    naive = -sum(logp[b, i, target[b, i]] for b in range(3) for i in range(130)) / (3 * 130)
    assert var.loss(quant, idxs, labels).item() == pytest.approx(naive.item(), rel=1e-5)


def test_label_dropout_to_the_null_class_in_training_only():
    var, quant = random_var(drop_path_rate=0.0, cond_drop_rate=1.0), quantizer(256, 32)
    x_in = quant.teacher_inputs(quant.f_to_idxs(torch.randn(2, 32, 8, 8)))
    labels = torch.tensor([3, 4])
    with torch.no_grad():
        var.train()
        dropped = var(labels, x_in)
        var.eval()
        null = var(torch.full_like(labels, 21), x_in)
        kept = var(labels, x_in)
    assert torch.allclose(dropped, null, atol=1e-6) and not torch.allclose(kept, null, atol=1e-3)


def test_kv_cached_logits_equal_the_full_masked_forward():
    var, quant = random_var(), quantizer(256, 32)
    labels = torch.tensor([0, 5, 20])
    g = torch.Generator().manual_seed(0)
    idxs, logits = var.generate(quant, labels, cfg=1.5, top_k=50, generator=g, return_logits=True)
    x_in = quant.teacher_inputs(idxs)
    with torch.no_grad():
        cond = var(labels, x_in)
        uncond = var(torch.full_like(labels, 21), x_in)
    assert logits.shape == (6, 130, 256)
    assert torch.allclose(logits[:3], cond, atol=1e-5)
    assert torch.allclose(logits[3:], uncond, atol=1e-5)
    # and the reference path without a cache draws the same pyramid
    g = torch.Generator().manual_seed(0)
    ref = var.generate(quant, labels, cfg=1.5, top_k=50, generator=g, use_cache=False)
    assert all(torch.equal(a, b) for a, b in zip(idxs, ref))


def test_guidance_grows_linearly_from_zero_at_the_first_scale():
    var, quant = random_var(), quantizer(256, 32)
    labels = torch.tensor([1, 2])
    seen = {}

    def greedy(k, logits):
        seen[k] = logits
        return logits.argmax(-1)

    idxs, raw = var.generate(quant, labels, cfg=2.0, choose=greedy, return_logits=True)
    start = 0
    for k, p in enumerate(quant.patch_nums):
        t = 2.0 * k / 5
        c, u = raw[:2, start:start + p * p], raw[2:, start:start + p * p]
        assert torch.allclose(seen[k], (1 + t) * c - t * u, atol=1e-5)
        start += p * p
    assert torch.equal(seen[0], raw[:2, :1])  # t = 0: the conditional logits alone


def test_top_k_one_is_greedy_and_top_p_keeps_the_nucleus():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 50)
    assert torch.equal(sample_tokens(logits, top_k=1), logits.argmax(-1))
    # a row with one token of probability > p: top-p alone always draws it
    peaked = torch.zeros(1, 100, 10)
    peaked[..., 3] = 10.0
    assert (sample_tokens(peaked, top_p=0.9) == 3).all()


def test_tiny_tokenizer_round_trip_shapes():
    torch.manual_seed(0)
    vae = build_vae()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        x_hat, loss, tokens = vae(x)
        idxs = vae.img_to_idxs(x)
        assert torch.allclose(vae.idxs_to_img(idxs), x_hat, atol=1e-5)
    assert x_hat.shape == x.shape and tokens.shape == (2, 130) and loss.dim() == 0
    assert vae.quantize.patch_nums == (1, 2, 3, 4, 6, 8)
    assert isinstance(build_var(), VAR) and build_var().config.L == 130


# --- the official ticks, the official checkpoint names --------------------------------

@pytest.mark.parametrize("num_phis,num_scales", [(4, 10), (4, 6), (2, 10), (3, 10), (6, 6), (10, 10)])
def test_phi_ticks_follow_the_official_rule_for_any_number_of_convolutions(num_phis, num_scales):
    np = pytest.importorskip("numpy")
    n = num_phis
    # the official PhiPartiallyShared / PhiNonShared: 1/(3n) margins for n = 4, else 1/(2n)
    ticks = np.linspace(1 / 3 / n, 1 - 1 / 3 / n, n) if n == 4 else np.linspace(1 / 2 / n, 1 - 1 / 2 / n, n)
    expected = [int(np.argmin(np.abs(ticks - k / (num_scales - 1)))) for k in range(num_scales)]
    assert [phi_index(k, num_scales, n) for k in range(num_scales)] == expected
    # and the four ticks are 3/36, 13/36, 23/36, 33/36: the ties at k = 2 and k = 7 are real
    t4 = np.linspace(1 / 12, 11 / 12, 4)
    assert np.allclose(t4 * 36, [3, 13, 23, 33])
    assert abs(abs(t4[0] - 2 / 9) - abs(t4[1] - 2 / 9)) < 1e-12


def test_an_official_state_dict_loads_after_renaming():
    from annogen.var import from_official_state_dict
    var = random_var()
    ours = var.state_dict()
    # the official names: scale_mul_1H11, and three saved buffers we do not keep
    official = {k.replace("attn.scale_mul", "attn.scale_mul_1H11"): v.clone() for k, v in ours.items()}
    L = var.config.L
    official["lvl_1L"] = var.lvl[None].clone()
    official["attn_bias_for_masking"] = torch.zeros(1, 1, L, L).masked_fill(~var.mask, float("-inf"))
    for i in range(var.config.depth):
        official[f"blocks.{i}.attn.zero_k_bias"] = torch.zeros(var.config.width)
    fresh = build_var()
    fresh.load_state_dict(from_official_state_dict(official))  # strict: every key matches
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), ours.values()))


# --- the two-pass sampler ------------------------------------------------------------

def test_checkerboard_halves_and_training_reveals():
    from annogen.var import checkerboard, reveal_half
    assert checkerboard(3).tolist() == [True, False, True, False, True, False, True, False, True]
    quant = quantizer(num_codes=256, dim=32)
    tokens = quant.flatten_idxs(quant.f_to_idxs(torch.randn(64, 32, 8, 8)))
    codes, where, counted = reveal_half(quant, tokens, generator=torch.Generator().manual_seed(0))
    assert torch.equal(counted, ~where)
    start = 0
    for p in quant.patch_nums:
        w = where[:, start:start + p * p]
        if p == 1:
            assert not w.any()  # a one-token scale has no second half
        else:
            shown = w.any(1)
            # a scale is revealed whole-checkerboard or not at all, about half the time
            assert torch.equal(w[shown], checkerboard(p)[None].expand(int(shown.sum()), -1))
            assert 10 < int(shown.sum()) < 54
        start += p * p
    assert torch.equal(codes[where], quant.embedding(tokens)[where])
    assert (codes[~where] == 0).all()


def test_two_pass_sampler_matches_its_reference_path_and_uses_the_revealed_half():
    quant = quantizer(256, 32)
    var = random_var(two_pass=True)
    labels = torch.tensor([0, 5, 20])
    kw = dict(cfg=1.5, top_k=50, return_logits=True, two_pass=True)
    a, la = var.generate(quant, labels, generator=torch.Generator().manual_seed(0), **kw)
    b, lb = var.generate(quant, labels, generator=torch.Generator().manual_seed(0), use_cache=False, **kw)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert torch.allclose(la, lb, atol=1e-5)
    # the second pass's logits are the masked forward pass with the A half of every scale revealed
    from annogen.var import checkerboard
    tokens = quant.flatten_idxs(a)
    where = torch.cat([checkerboard(p) if p > 1 else torch.zeros(1, dtype=torch.bool)
                       for p in quant.patch_nums])[None].expand(3, -1)
    codes = quant.embedding(tokens) * where[..., None]
    with torch.no_grad():
        cond = var(labels, quant.teacher_inputs(a), (codes, where))
        plain = var(labels, quant.teacher_inputs(a))
    assert torch.allclose(la[:3], cond, atol=1e-5)
    assert not torch.allclose(cond[:, 1:], plain[:, 1:], atol=1e-3)  # the reveal is read
    # with nothing revealed the model is an ordinary VAR: one pass equals the plain model
    plain_var = build_var()
    plain_var.load_state_dict({k: v for k, v in var.state_dict().items() if "reveal" not in k})
    one = var.generate(quant, labels, generator=torch.Generator().manual_seed(0))
    ref = plain_var.eval().generate(quant, labels, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(one, ref))
    with pytest.raises(ValueError, match="two_pass"):
        plain_var.generate(quant, labels, two_pass=True)


def test_two_pass_keeps_the_first_half_of_pass_one():
    quant = quantizer(256, 32)
    var = random_var(two_pass=True)
    labels = torch.tensor([1, 2])
    drawn = []

    def choose(k, logits):  # record each draw; the first call of a scale is pass 1
        r = sample_tokens(logits, None, None, g)
        drawn.append((k, r))
        return r
    g = torch.Generator().manual_seed(3)
    idxs = var.generate(quant, labels, choose=choose, two_pass=True)
    from annogen.var import checkerboard
    for k, p in enumerate(quant.patch_nums):
        calls = [r for kk, r in drawn if kk == k]
        assert len(calls) == (2 if p > 1 else 1)
        A = checkerboard(p)
        got = idxs[k].reshape(2, -1)
        assert torch.equal(got[:, A], calls[0][:, A])
        if p > 1:
            assert torch.equal(got[:, ~A], calls[1][:, ~A])


# --- the experiments' measures --------------------------------------------------------

def test_pyramid_energy_is_the_residual_of_the_partial_sums():
    quant = quantizer(256, 32)
    f = torch.randn(4, 32, 8, 8)
    pyr = quant.pyramid(f)
    for k in range(quant.num_scales):
        part = quant.idxs_to_fhat(pyr["idxs"][:k + 1])
        assert torch.allclose(pyr["f_hat"][k], part, atol=1e-5)
        naive = ((f - part) ** 2).sum() / (f ** 2).sum()
        assert pyr["energy_left"][k] == pytest.approx(naive.item(), rel=1e-4)
        assert pyr["energy_of_h"][k] == pytest.approx(
            (pyr["h"][k] ** 2).sum().item() / (f ** 2).sum().item(), rel=1e-4)


def test_neighbour_pairs_and_mutual_information():
    from annogen.var.experiments import mutual_information, neighbour_pairs
    r = torch.arange(9).view(1, 3, 3)
    a, b = neighbour_pairs(r)
    assert len(a) == 2 * 3 * 2
    assert set(zip(a.tolist(), b.tolist())) == {(0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8),
                                                (0, 3), (3, 6), (1, 4), (4, 7), (2, 5), (5, 8)}
    g = torch.Generator().manual_seed(0)
    x = torch.randint(4, (20000,), generator=g)
    y = torch.randint(4, (20000,), generator=g)
    assert abs(mutual_information(x, y, 4)) < 2e-3            # independent: about 0
    # a copy of a uniform variable over 4 values: log 4, less the bias term 9 / 2N
    assert mutual_information(x, x, 4) == pytest.approx(math.log(4) - 9 / 40000, abs=2e-3)
