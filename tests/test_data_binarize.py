"""Binarization: dynamic draws are unbiased and fresh, fixed ones reproducible, all exactly 0/1."""

import pytest
import torch

from pyro_vae.data import DeviceBatches, Split, binarize_fixed, evaluation_images, split_seed
from pyro_vae.errors import ConfigError

pytest_plugins = ["data_fixtures"]

NUM_IMAGES = 64
NUM_EPOCHS = 400
# Per pixel, the mean of K Bernoulli(p) draws has standard error sqrt(p (1 - p) / K). We check all
# 64 x 784 = 50,176 pixels at once; at 6 standard errors a Normal tail has probability 2e-9 per
# pixel, 1e-4 for the lot (the draws are seeded, so the test is deterministic either way).
PER_PIXEL_STANDARD_ERRORS = 6
# The mean over all pixels is one average of 64 x 784 x 400 draws: 4 standard errors.
OVERALL_STANDARD_ERRORS = 4


@pytest.fixture
def few_images(mnist_dataset):
    return mnist_dataset.test.subset(NUM_IMAGES)


def draw_epochs(split, binarization, epochs, seed=0):
    """Every epoch's images in index order, stacked: (epochs, N, 1, 28, 28)."""
    batches = DeviceBatches(
        split.images, split.labels, 16, binarization=binarization, seed=seed, device="cpu", shuffle=False
    )
    return torch.stack([torch.cat([x for x, _ in batches]) for _ in range(epochs)])


def test_mean_of_dynamic_draws_matches_the_intensities(few_images):
    draws = draw_epochs(few_images, "dynamic", NUM_EPOCHS)
    p = few_images.images
    per_pixel_se = (p * (1 - p) / NUM_EPOCHS).sqrt()
    deviation = (draws.mean(0) - p).abs()
    assert (deviation <= PER_PIXEL_STANDARD_ERRORS * per_pixel_se + 1e-7).all()
    overall_se = ((p * (1 - p)).sum().double() / NUM_EPOCHS).sqrt() / p.numel()
    assert (draws.double().mean() - p.double().mean()).abs() <= OVERALL_STANDARD_ERRORS * overall_se


def test_dynamic_draws_differ_between_epochs_and_are_exactly_0_or_1(few_images):
    first, second = draw_epochs(few_images, "dynamic", 2)
    assert not torch.equal(first, second)
    assert set(first.unique().tolist()) == {0.0, 1.0}


def test_static_binarization_is_the_same_every_epoch_and_equals_the_evaluation_one(few_images):
    train = Split("train", few_images.images, few_images.labels)
    first, second = draw_epochs(train, "static", 2, seed=3)
    assert torch.equal(first, second)
    images, description = evaluation_images(train, "static", seed=3)
    assert torch.equal(first, images)
    assert description == "train set: its static Bernoulli binarization (as in training), seed 3"
    # a held-out split under static is scored on the one binarization every run uses, seed 0
    images, description = evaluation_images(few_images, "static")
    assert torch.equal(images, binarize_fixed(few_images.images, 0))
    assert description == "test set: one fixed Bernoulli binarization, seed 0"


def test_fixed_binarization_is_reproducible_differs_across_seeds_and_ignores_global_rng(few_images):
    torch.manual_seed(1)
    a = binarize_fixed(few_images.images, seed=0)
    torch.manual_seed(2)
    b = binarize_fixed(few_images.images, seed=0)
    c = binarize_fixed(few_images.images, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) == {0.0, 1.0} and a.dtype == torch.float32


def test_binarize_fixed_leaves_the_global_rng_alone(few_images):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    binarize_fixed(few_images.images, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_evaluation_images_for_dynamic_is_one_fixed_binarization(few_images):
    images, description = evaluation_images(few_images, "dynamic", seed=0)
    assert torch.equal(images, binarize_fixed(few_images.images, 0))
    assert description == "test set: one fixed Bernoulli binarization, seed 0"


def test_evaluation_images_for_none_are_the_intensities(few_images):
    images, description = evaluation_images(few_images, "none", seed=0)
    assert torch.equal(images, few_images.images) and images.dtype == torch.float32
    assert torch.equal(images * 255, few_images.data.float())  # the uint8 pixels / 255
    first, _ = evaluation_images(few_images, "none", seed=0, limit=3)
    assert torch.equal(first, few_images.images[:3])
    assert description == "test set: 8-bit pixels / 255 in [0, 1], not binarized"


def test_unknown_binarization_lists_the_modes():
    split = Split("test", torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ConfigError, match=r"unknown binarization 'stochastic'; choose one of: dynamic, static, none"):
        evaluation_images(split, "stochastic", seed=0)


# Today's test-set binarization of GRADED (below), pinned: the number of ones and the sum of their
# flat indices. The test split's draw must never move (published test numbers rest on it).
PINNED_TEST_ONES, PINNED_TEST_INDEX_SUM = 1518, 2409461
GRADED = (torch.arange(4 * 784) % 256).reshape(4, 1, 28, 28).float() / 255  # every intensity, 12 times


def _split(name):
    return Split(name, GRADED, torch.zeros(len(GRADED), dtype=torch.int64))


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_validation_and_test_binarizations_are_drawn_independently(mode):
    test, test_description = evaluation_images(_split("test"), mode)
    valid, valid_description = evaluation_images(_split("valid"), mode)
    # the same intensities in the same places: shared uniforms would give the same pixels
    agree = (test == valid).double().mean().item()
    middle = (GRADED > 0.3) & (GRADED < 0.7)  # where two independent draws disagree half the time or so
    assert not torch.equal(test, valid)
    assert (test[middle] != valid[middle]).double().mean().item() > 0.4, agree
    flat = test.flatten().double()
    assert int(flat.sum()) == PINNED_TEST_ONES
    assert int((flat * torch.arange(flat.numel())).sum()) == PINNED_TEST_INDEX_SUM
    assert test_description.endswith("binarization, seed 0")
    assert valid_description.endswith(f"seed {split_seed(0, 'valid')} (seed 0's stream for 'valid')")


def test_split_seed_keeps_the_test_and_training_seeds_and_derives_the_validation_one():
    assert split_seed(0, "test") == 0 and split_seed(7, "train") == 7
    assert split_seed(0, "valid") not in (0, split_seed(1, "valid"))
    assert 0 <= split_seed(2**63 - 1, "valid") < 2**63
