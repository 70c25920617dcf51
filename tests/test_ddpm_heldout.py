"""Held-out sets of the DDPM, DiT and latent-diffusion chapters: run each place that builds
one (the command lines and the DDPM benchmark) with a non-default data seed, record every
dataset it makes, and check that no item of a held-out set is drawn from the random
stream of any training item (nor of the other held-out set). A chapter that seeded its
held-out set with a fixed number, or the data module seeding item i with seed + i, fails
here."""

from unittest import mock

import numpy as np
import pytest

from annogen import data

pytestmark = pytest.mark.usefixtures("one_thread")


def fingerprints(dataset) -> list:
    """Where each item's random stream starts, recorded while the dataset lays it out."""
    made = []
    real = data.item_rng

    def recording(seed, i):
        rng = real(seed, i)
        state = rng.bit_generator.state["state"]
        made.append((state["state"], state["inc"]))
        return rng

    with mock.patch.object(data, "item_rng", recording):
        for i in range(len(dataset)):
            dataset.layout(i)
    return made


def record_datasets(modules):
    """Patch make_dataset in annogen.data and in each chapter module; return the list
    that receives every dataset made."""
    made, real = [], data.make_dataset

    def recording(*args, **kwargs):
        ds = real(*args, **kwargs)
        made.append(ds)
        return ds

    patches = [mock.patch.object(data, "make_dataset", recording)]
    patches += [mock.patch.object(m, "make_dataset", recording) for m in modules
                if hasattr(m, "make_dataset")]
    return made, patches


def check_disjoint(made, n_train):
    train = [d for d in made if len(d) == n_train]
    others = [d for d in made if len(d) != n_train]
    assert train and others, [(d.seed, len(d)) for d in made]
    train_fp = set().union(*(fingerprints(d) for d in train))
    held = [set(fingerprints(d)) for d in others]
    for h, d in zip(held, others):
        assert not h & train_fp, f"held-out set (seed {d.seed}, n {len(d)}) overlaps training"
    # two held-out draws (samples' reference, FID floor) are apart from each other too
    for a in range(len(held)):
        for b in range(a + 1, len(held)):
            if others[a].seed != others[b].seed:
                assert not held[a] & held[b]


def run_with_patches(patches, fn):
    for p in patches:
        p.start()
    try:
        fn()
    finally:
        for p in reversed(patches):
            p.stop()


def test_ddpm_cli_held_out_set(tmp_path):
    import annogen.ddpm.__main__ as cli
    made, patches = record_datasets([cli])
    # the held-out set is made for 28 and 32 px, where a feature net exists
    args = ["--data-seed", "3", "--data-size", "200", "--image-size", "32", "--steps", "1",
            "--batch-size", "8", "--eval-samples", "8", "--sampling-steps", "1",
            "--sample-every", "100", "--out", str(tmp_path), "--threads", "1"]
    with mock.patch("annogen.metrics.load_feature_net", return_value=None):
        run_with_patches(patches, lambda: cli.main(args))
    check_disjoint(made, 200)


def test_ddpm_benchmark_held_out_sets(tmp_path):
    import annogen.ddpm.experiment as exp
    made, patches = record_datasets([exp])
    with mock.patch.object(exp, "load_feature_net", return_value=None), \
            mock.patch.object(exp, "toy_fid", return_value=0.0):
        run_with_patches(patches, lambda: exp.benchmark(
            0, tmp_path, seed=3, samplers=(("ddim", 1),), n_eval=8, data_size=200))
    check_disjoint(made, 200)


def test_dit_cli_held_out_set(tmp_path):
    import annogen.dit.__main__ as cli
    made, patches = record_datasets([cli])
    args = ["--space", "pixel", "--data-seed", "3", "--data-size", "200", "--image-size", "16",
            "--steps", "1", "--batch-size", "8", "--eval-samples", "8", "--sampling-steps", "1",
            "--width", "32", "--depth", "1", "--sample-every", "100", "--fid",
            "--out", str(tmp_path)]
    with mock.patch("annogen.metrics.load_feature_net", return_value=None):
        run_with_patches(patches, lambda: cli.main(args))
    check_disjoint(made, 200)


def test_ldm_cli_held_out_set(tmp_path):
    import annogen.ldm.__main__ as cli
    made, patches = record_datasets([cli])
    args = ["--data-seed", "3", "--data-size", "200", "--image-size", "16", "--steps", "1",
            "--batch-size", "8", "--eval-samples", "8", "--sample-every", "100",
            "--out", str(tmp_path)]
    run_with_patches(patches, lambda: cli.main(args))
    check_disjoint(made, 200)


def test_the_check_sees_a_held_out_set_that_is_the_training_set_shifted(tmp_path):
    # the slip the check guards against: item i seeded with seed + i
    import annogen.ldm.__main__ as cli
    made, patches = record_datasets([cli])
    args = ["--data-seed", "3", "--data-size", "200", "--image-size", "16", "--steps", "1",
            "--batch-size", "8", "--eval-samples", "8", "--sample-every", "100",
            "--out", str(tmp_path)]
    with mock.patch.object(data, "item_rng", lambda seed, i: np.random.default_rng(seed + i)):
        run_with_patches(patches, lambda: cli.main(args))
        with pytest.raises(AssertionError, match="overlaps training"):
            check_disjoint(made, 200)
