"""Properties of annogen.metrics: each value checked against an independent computation."""

import math

import numpy as np
import pytest
import torch

from annogen import metrics
from annogen.data import COLOUR_NAMES, SHAPES, make_dataset
from annogen.metrics import (FeatureNet, attribute_accuracy, codebook_perplexity, codebook_usage,
                             feature_net_path, frechet_distance, load_feature_net, psnr,
                             score_labels, toy_fid, train_feature_net)


pytestmark = pytest.mark.usefixtures("one_thread")


# --- PSNR -------------------------------------------------------------------------------

def test_psnr_matches_manual_formula_per_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 8, 8, generator=g) * 2 - 1
    y = (x + 0.1 * torch.randn(5, 3, 8, 8, generator=g)).clamp(-1, 1)
    got = psnr(x, y)
    assert got.shape == (5,)
    for i in range(5):
        a, b = x[i].flatten().tolist(), y[i].flatten().tolist()
        mse = sum((p - q) ** 2 for p, q in zip(a, b)) / len(a)
        assert got[i].item() == pytest.approx(10 * math.log10(4.0 / mse), rel=1e-5)


def test_psnr_constant_offset_is_20_log10_range_over_offset():
    x = torch.rand(2, 3, 4, 4) * 1.5 - 1
    delta = 2 / 255
    got = psnr(x, x + delta)
    assert torch.allclose(got, torch.full((2,), 20 * math.log10(2 / delta)), atol=1e-3)
    assert got[0].item() == pytest.approx(48.13, abs=0.01)  # one grey level in 255 steps
    # data_range enters as R^2: halving R lowers PSNR by 20 log10 2.
    assert psnr(x, x + delta, data_range=1.0)[0].item() == pytest.approx(
        got[0].item() - 20 * math.log10(2), abs=1e-3)


def test_psnr_identical_images_are_infinite_and_single_image_gives_scalar():
    x = torch.rand(3, 3, 4, 4)
    y = x.clone()
    y[1] += 0.5
    got = psnr(x, y)
    assert math.isinf(got[0].item()) and got[0].item() > 0 and math.isinf(got[2].item())
    assert math.isfinite(got[1].item())
    single = psnr(x[1], y[1])
    assert single.dim() == 0 and single.item() == pytest.approx(got[1].item())


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        psnr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))


# --- codebook usage and perplexity -----------------------------------------------------

def test_usage_fraction_is_exact():
    idx = torch.tensor([[0, 3, 3], [7, 0, 9]])  # codes {0, 3, 7, 9} of 16
    assert codebook_usage(idx, 16) == 4 / 16
    assert codebook_usage(torch.arange(10), 10) == 1.0


def test_perplexity_uniform_is_K_and_single_code_is_one():
    K = 12
    uniform = torch.arange(K).repeat(5)
    assert codebook_perplexity(uniform, K) == pytest.approx(K, rel=1e-12)
    assert codebook_perplexity(torch.full((100,), 4), K) == pytest.approx(1.0, abs=1e-12)
    # uniform over m of the K codes gives m
    assert codebook_perplexity(torch.tensor([1, 5, 9] * 7), K) == pytest.approx(3.0, rel=1e-12)


def test_perplexity_matches_entropy_and_lies_between_one_and_used_codes():
    g = torch.Generator().manual_seed(1)
    K = 32
    for _ in range(5):
        logits = torch.randn(K, generator=g) * 2
        idx = torch.multinomial(logits.softmax(0), 500, replacement=True, generator=g)
        counts = np.bincount(idx.numpy(), minlength=K)
        p = counts[counts > 0] / counts.sum()
        expected = math.exp(-sum(pi * math.log(pi) for pi in p))
        ppl = codebook_perplexity(idx, K)
        assert ppl == pytest.approx(expected, rel=1e-10)
        assert 1.0 <= ppl <= (counts > 0).sum() <= K


def test_codebook_statistics_reject_out_of_range_indices():
    with pytest.raises(ValueError):
        codebook_usage(torch.tensor([0, 8]), 8)
    with pytest.raises(ValueError):
        codebook_perplexity(torch.tensor([-1, 2]), 8)


# --- Fréchet distance ------------------------------------------------------------------

def random_cov(D, rng, rank=None):
    A = rng.standard_normal((D, rank or D))
    return A @ A.T / (rank or D) + 0.01 * np.eye(D)


def test_frechet_distance_of_a_gaussian_to_itself_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(16), random_cov(16, rng)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_is_symmetric():
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(10), random_cov(10, rng))
    b = (rng.standard_normal(10), random_cov(10, rng))
    assert frechet_distance(*a, *b) == pytest.approx(frechet_distance(*b, *a), rel=1e-10)


def test_frechet_distance_diagonal_covariances_closed_form():
    rng = np.random.default_rng(2)
    D = 8
    mu1, mu2 = rng.standard_normal(D), rng.standard_normal(D)
    s1, s2 = rng.uniform(0.1, 3, D), rng.uniform(0.1, 3, D)  # variances
    expected = sum((mu1 - mu2) ** 2) + sum((math.sqrt(a) - math.sqrt(b)) ** 2 for a, b in zip(s1, s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_eigenvalues_of_the_nonsymmetric_product():
    rng = np.random.default_rng(3)
    for D in (3, 10, 40):
        mu1, mu2 = rng.standard_normal(D), rng.standard_normal(D)
        s1, s2 = random_cov(D, rng), random_cov(D, rng)
        lam = np.linalg.eig(s1 @ s2)[0]  # general (non-symmetric) eigensolver
        tr_sqrt = np.sqrt(np.clip(lam.real, 0, None)).sum()
        expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_handles_singular_covariances():
    rng = np.random.default_rng(4)
    D = 12
    A = rng.standard_normal((D, 3))
    s1 = A @ A.T  # rank 3
    assert frechet_distance(np.zeros(D), s1, np.zeros(D), s1) == pytest.approx(0.0, abs=1e-7)
    s2 = random_cov(D, rng)
    lam = np.linalg.eig(s1 @ s2)[0]
    expected = np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(lam.real, 0, None)).sum()
    assert frechet_distance(np.zeros(D), s1, np.zeros(D), s2) == pytest.approx(expected, rel=1e-7)


def test_translating_one_mean_by_c_adds_norm_c_squared():
    rng = np.random.default_rng(5)
    D = 6
    mu = rng.standard_normal(D)
    s1, s2 = random_cov(D, rng), random_cov(D, rng)
    c = rng.standard_normal(D)
    base = frechet_distance(mu, s1, mu, s2)
    assert frechet_distance(mu, s1, mu + c, s2) == pytest.approx(base + c @ c, rel=1e-10)
    # translating both means leaves it unchanged
    mu2 = rng.standard_normal(D)
    assert frechet_distance(mu + c, s1, mu2 + c, s2) == pytest.approx(
        frechet_distance(mu, s1, mu2, s2), rel=1e-10)


def test_frechet_distance_accepts_tensors_and_checks_shapes():
    mu, s = torch.zeros(3), torch.eye(3)
    assert frechet_distance(mu, s, mu + 1, 4 * s) == pytest.approx(3 + 3 * 1.0)
    with pytest.raises(ValueError):
        frechet_distance(mu, s, torch.zeros(4), torch.eye(4))


# --- toy FID ---------------------------------------------------------------------------

class Identity:
    """A stand-in feature net: the features are the flattened input."""
    def features(self, x):
        return x.flatten(1)


def test_toy_fid_same_gaussian_is_small_and_grows_with_mean_shift():
    g = torch.Generator().manual_seed(0)
    D, N = 4, 4000
    L = torch.randn(D, D, generator=g)

    def sample():
        return (torch.randn(N, D, generator=g) @ L.T).reshape(N, D, 1, 1)

    real, fake = sample(), sample()
    same = toy_fid(real, fake, Identity())
    assert 0 <= same < 0.05
    # Shifting the fake features by c moves only the mean term:
    # ||mu_r - mu_f - c||^2 = ||mu_r - mu_f||^2 + ||c||^2 - 2 c.(mu_r - mu_f).
    d = (real.flatten(1).double().mean(0) - fake.flatten(1).double().mean(0)).numpy()
    fids = []
    for s in (0.5, 1.0, 2.0, 4.0):
        c = np.full(D, s)
        fid = toy_fid(real, fake + s, Identity())
        assert fid == pytest.approx(same + c @ c - 2 * c @ d, rel=1e-6)
        fids.append(fid)
    assert fids == sorted(fids) and fids[0] > 10 * same


def test_toy_fid_computes_sample_statistics_with_n_minus_one():
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randn(50, 3, 1, 1, generator=g), torch.randn(60, 3, 1, 1, generator=g) + 1
    a, b = real.flatten(1).double().numpy(), fake.flatten(1).double().numpy()
    expected = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert toy_fid(real, fake, Identity(), batch_size=7) == pytest.approx(expected, rel=1e-10)


def test_toy_fid_rejects_images_of_another_size():
    net = FeatureNet(channels=3, num_classes=4, dim=8, size=16)
    with pytest.raises(ValueError):
        toy_fid(torch.zeros(4, 3, 32, 32), torch.zeros(4, 3, 32, 32), net)


# --- FeatureNet training and cache -----------------------------------------------------

class FakeDataset(torch.utils.data.Dataset):
    """Colour says the class: class c is a flat image of brightness level c."""
    channels, num_classes, class_names = 3, 3, ["dark", "grey", "bright"]

    def __init__(self, size, n, seed):
        self.size, self.n, self.seed = size, n, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1000 + i)
        c = i % 3
        img = torch.full((3, self.size, self.size), c - 1.0) + 0.05 * torch.randn(3, self.size, self.size, generator=g)
        return {"image": img.clamp(-1, 1), "label": torch.tensor(c), "caption": ""}


def fake_factory(calls):
    def make(spec, size, n=None, seed=0):
        calls.append((spec, size, n, seed))
        return FakeDataset(size, min(n or 40, 40), seed)
    return make


def test_train_feature_net_writes_cache_that_reloads_weights_only_to_identical_features(
        tmp_path, monkeypatch):
    monkeypatch.setenv("ANNOGEN_CACHE", str(tmp_path / "cache"))
    calls = []
    monkeypatch.setattr(metrics, "_make_dataset", fake_factory(calls))
    state = torch.random.get_rng_state()
    net = train_feature_net("shapes", 8, steps=3, seed=0, batch_size=8, device="cpu")
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG untouched
    assert calls[0][:2] == ("shapes", 8)
    path = tmp_path / "cache" / "featurenet-shapes-8.pt"
    assert feature_net_path("shapes", 8) == path and path.exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["meta"]["steps"] == 3 and 0 <= ckpt["meta"]["accuracy"] <= 1
    loaded = load_feature_net("shapes", 8, train_if_missing=False)
    x = torch.rand(5, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net.features(x), loaded.features(x))
    assert net.features(x).shape == (5, 64)
    # the weights moved away from their initialisation: it did train
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        init = FeatureNet(3, 3, size=8)
    assert not torch.equal(init.head.weight, loaded.head.weight)


def test_train_feature_net_learns_the_fake_task(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNOGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(metrics, "_make_dataset", fake_factory([]))
    net = train_feature_net("shapes", 8, steps=40, batch_size=16, lr=3e-3, device="cpu")
    assert net.meta["accuracy"] == 1.0  # three flat brightness levels are trivially separable


def test_load_feature_net_without_cache_raises_or_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNOGEN_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train-featurenet"):
        load_feature_net("digits", 8, train_if_missing=False)
    trained = []

    def fake_train(data, size):
        trained.append((data, size))
        return "net"
    monkeypatch.setattr(metrics, "train_feature_net", fake_train)
    assert load_feature_net("digits", 8) == "net" and trained == [("digits", 8)]


def test_unlabelled_data_trains_on_rotations(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNOGEN_CACHE", str(tmp_path))

    class Unlabelled(FakeDataset):
        num_classes = 0
    monkeypatch.setattr(metrics, "_make_dataset", lambda spec, size, n=None, seed=0: Unlabelled(size, 16, seed))
    net = train_feature_net(str(tmp_path / "my images"), 8, steps=2, batch_size=8, device="cpu")
    assert net.meta["objective"] == "rotation" and net.head.out_features == 4
    assert feature_net_path(str(tmp_path / "my images"), 8).name.startswith("featurenet-my-images-")


def test_cli_rejects_bad_flags_with_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        metrics.main(["train-featurenet", "--steps", "many"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err and "--steps" in err


def test_cli_trains_and_caches(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANNOGEN_CACHE", str(tmp_path))
    monkeypatch.setattr(metrics, "_make_dataset", fake_factory([]))
    assert metrics.main(["train-featurenet", "--data", "shapes", "--image-size", "8",
                         "--steps", "2", "--device", "cpu"]) == 0
    assert (tmp_path / "featurenet-shapes-8.pt").exists()
    assert str(tmp_path / "featurenet-shapes-8.pt") in capsys.readouterr().out


# --- attribute accuracy ----------------------------------------------------------------

def shape(shape, colour, size, position):
    return dict(shape=shape, colour=colour, size=size, position=position)


def test_attribute_accuracy_exact_fractions(monkeypatch):
    targets = [
        [shape("circle", "red", "small", "top left")],
        [shape("square", "blue", "large", "centre"), shape("triangle", "green", "small", "bottom right")],
        [shape("circle", "cyan", "large", "top right")],
        [shape("square", "yellow", "small", "bottom left")],
    ]
    found = [
        # 0: fully correct
        [shape("circle", "red", "small", "top left")],
        # 1: the square right, the triangle has the wrong colour (found in reverse order)
        [shape("triangle", "magenta", "small", "bottom right"), shape("square", "blue", "large", "centre")],
        # 2: right shape in the wrong place: wrong on every attribute
        [shape("circle", "cyan", "large", "bottom left")],
        # 3: correct shape, plus an extra one: attributes right, image not fully correct
        [shape("square", "yellow", "small", "bottom left"), shape("circle", "red", "small", "centre")],
    ]
    images = torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 3, 2, 2)
    seen = []

    def fake_read_shapes(image):
        i = int(image[0, 0, 0])
        seen.append(i)
        return [dict(f) for f in found[i]]
    monkeypatch.setattr(metrics, "_read_shapes", fake_read_shapes)
    acc = attribute_accuracy(images, targets)
    assert seen == [0, 1, 2, 3]
    # 5 target shapes: matched by position are #0, square, triangle, #3 -> 4 of 5
    assert acc["position"] == 4 / 5
    assert acc["shape"] == 4 / 5
    assert acc["size"] == 4 / 5
    assert acc["colour"] == 3 / 5  # the triangle's colour is wrong
    assert acc["all"] == 1 / 4
    assert acc["count"] == 3 / 4


def test_attribute_accuracy_missing_shape_is_wrong_everywhere(monkeypatch):
    monkeypatch.setattr(metrics, "_read_shapes", lambda image: [])
    acc = attribute_accuracy(torch.zeros(2, 3, 4, 4), [[shape("circle", "red", "small", "centre")]] * 2)
    assert acc == {"shape": 0.0, "colour": 0.0, "size": 0.0, "position": 0.0, "all": 0.0, "count": 0.0}


def test_attribute_accuracy_uses_the_data_modules_checker(monkeypatch):
    """Without monkeypatching, attribute_accuracy calls annogen.data.read_shapes."""
    import sys
    import types
    fake = types.ModuleType("annogen.data")
    fake.read_shapes = lambda image: [shape("circle", "red", "small", "centre")]
    monkeypatch.setitem(sys.modules, "annogen.data", fake)
    acc = attribute_accuracy(torch.zeros(1, 3, 4, 4), [[shape("circle", "red", "large", "centre")]])
    assert acc["shape"] == 1.0 and acc["size"] == 0.0 and acc["all"] == 0.0


# --- on the real data (slow: trains the real feature net, about a minute) ---------------

@pytest.mark.slow
def test_real_feature_net_learns_shapes_and_toy_fid_separates_distributions(tmp_path, monkeypatch):
    from annogen.data import Shapes
    monkeypatch.setenv("ANNOGEN_CACHE", str(tmp_path))
    net = train_feature_net("shapes", 32)
    assert net.meta["accuracy"] > 0.9

    def images(seed, n=1000, max_shapes=2):
        ds = Shapes(n=n, size=32, seed=seed, max_shapes=max_shapes)
        return torch.stack([ds[i]["image"] for i in range(n)])
    real, other = images(10), images(11)
    floor = toy_fid(real, other, net)
    assert toy_fid(real, images(12, max_shapes=1), net) > 2 * floor
    assert toy_fid(real, torch.rand_like(other) * 2 - 1, net) > 20 * floor
    assert toy_fid(real[:200], other[:200], net) > floor  # the small-sample bias


# --- class labels of samples -------------------------------------------------------

def test_sample_scoring_reads_the_labels_back_from_real_images():
    data = make_dataset("shapes", 32, n=60, seed=3)
    x = torch.stack([data[i]["image"] for i in range(60)])
    labels = torch.stack([data[i]["label"] for i in range(60)])
    # the label names the first shape (in reading order) of the generated layout
    first = [data.attributes(i)[0] for i in range(60)]
    assert labels.tolist() == [SHAPES.index(a["shape"]) * 7 + COLOUR_NAMES.index(a["colour"])
                               for a in first]
    scores = score_labels(x, labels)
    assert scores["shape_accuracy"] == scores["colour_accuracy"] == scores["class_accuracy"] == 1.0
    assert scores["attribute_accuracy"] == 1.0 and scores["valid"] == 1.0
    # the next colour, same shape: colour always wrong, shape always right
    shifted = labels - labels % 7 + (labels % 7 + 1) % 7
    scores = score_labels(x, shifted)
    assert scores["colour_accuracy"] == 0.0 and scores["shape_accuracy"] == 1.0
    assert scores["attribute_accuracy"] == 0.5 and scores["class_accuracy"] == 0.0
    # black images: no shape found, wrong on both
    assert score_labels(-torch.ones(4, 3, 32, 32), labels[:4])["attribute_accuracy"] == 0.0
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        score_labels(x[:4], labels[:3])
