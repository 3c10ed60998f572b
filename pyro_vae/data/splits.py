"""Train / valid / test splits of data that bring none of their own: seeded fractions.

The images are put in one seeded order (a permutation drawn with :data:`SPLIT_SEED`, the same for
every run and independent of ``--seed``, so runs with different seeds share their test set) and
the fractions cut that order into three contiguous blocks: train first, then valid, then test.
The order depends only on the number of images, so a cache written in that order serves every
``--split``, and each split is a slice (a view) of it.

Data with their own train / test split (torchvision's sets, a folder with ``train/`` and
``test/`` sub-folders, arrays under ``train_*`` / ``test_*`` keys) keep it; their validation set is
the last :data:`VALID_FRACTION_OF_TRAIN` of the training part in the same seeded order, unless
they bring a validation part too.
"""

from __future__ import annotations

import math

import torch

from pyro_vae.errors import ConfigError

SPLIT_SEED = 0
DEFAULT_SPLIT = (0.8, 0.1, 0.1)
VALID_FRACTION_OF_TRAIN = 0.1
SPLIT_NAMES = ("train", "valid", "test")
TOLERANCE = 1e-6


def parse_split(text: str | None) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` -> (0.8, 0.1, 0.1): three fractions >= 0 that sum to 1."""
    if text is None:
        return DEFAULT_SPLIT
    try:
        parts = tuple(float(p) for p in str(text).replace(" ", "").split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(math.isfinite(p) and p >= 0 for p in parts):
        raise ConfigError(f"--split {text!r}: expected three fractions train,valid,test such as 0.8,0.1,0.1")
    if abs(sum(parts) - 1) > TOLERANCE:
        raise ConfigError(f"--split {text!r}: the fractions sum to {sum(parts):g}, not 1")
    return parts


def format_split(fractions: tuple[float, float, float]) -> str:
    return ",".join(f"{f:g}" for f in fractions)


def seeded_order(n: int) -> torch.Tensor:
    """The seeded permutation of ``range(n)`` that every split of n images is cut from."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    return torch.randperm(n, generator=generator)


def split_counts(n: int, fractions: tuple[float, float, float], what: str) -> tuple[int, int, int]:
    """Sizes (train, valid, test) of n images cut by ``fractions``; an empty split is an error."""
    n_valid = round(n * fractions[1])
    n_test = round(n * fractions[2])
    counts = (n - n_valid - n_test, n_valid, n_test)
    for name, count in zip(SPLIT_NAMES, counts):
        if count < 1:
            raise ConfigError(
                f"--split {format_split(fractions)} of the {n:,} images of {what} leaves the {name} set "
                f"empty; give it a larger fraction (e.g. --split 0.8,0.1,0.1) or use more images"
            )
    return counts


def valid_count(n_train: int, what: str) -> int:
    """Images taken from an own training part of n_train images for validation."""
    n_valid = round(n_train * VALID_FRACTION_OF_TRAIN)
    if n_valid < 1 or n_valid >= n_train:
        raise ConfigError(
            f"the training part of {what} has {n_train:,} images: too few to set "
            f"{VALID_FRACTION_OF_TRAIN:.0%} aside for validation; add images, or a valid/ part"
        )
    return n_valid


def arrange(
    n: int, part_sizes: dict[str, int] | None, fractions: tuple[float, float, float] | None, what: str
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """The order in which to store ``n`` items so that train, valid and test are contiguous blocks.

    ``part_sizes`` gives the sizes of the data's own parts, in the order the items come (train,
    then valid if any, then test), or None for data without a split of their own (then
    ``fractions`` cut the seeded order). Returns ``order`` (n,) -- item ``order[i]`` is stored at
    row i -- and the (train, valid, test) sizes.
    """
    if part_sizes is None:
        return seeded_order(n), split_counts(n, fractions or DEFAULT_SPLIT, what)
    if fractions is not None:
        raise ConfigError(
            f"{what} has its own {'/'.join(part_sizes)} split; --split is for data without "
            f"one (drop --split, or put all images in one part)"
        )
    if "train" not in part_sizes or "test" not in part_sizes:
        raise ConfigError(
            f"{what} has parts {', '.join(part_sizes)}; an own split needs a train and a "
            f"test part (and may have a valid part)"
        )
    n_train, n_test = part_sizes["train"], part_sizes["test"]
    n_valid_own = part_sizes.get("valid", 0)
    for name, count in part_sizes.items():
        if count < 1:
            raise ConfigError(f"the {name} part of {what} is empty; put images in it, or remove it")
    if n_valid_own:
        order = torch.arange(n)  # train, valid, test as they come
        return order, (n_train, n_valid_own, n_test)
    n_valid = valid_count(n_train, what)
    order = torch.cat([seeded_order(n_train), torch.arange(n_train, n)])  # valid: the last block of train
    return order, (n_train - n_valid, n_valid, n_test)
