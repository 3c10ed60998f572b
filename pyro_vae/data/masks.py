"""Masks of missing pixels: 1 (True) where a value is observed, 0 (False) where it is missing, one
mask of the image's shape (C, H, W) per image.

Two sources: a user's ``mask`` array stored with the images (checked by :func:`check_mask`), or
``--missing-rate R``, which drops exactly round(R * C * H * W) values of each image, chosen
uniformly at random (:func:`drawn_masks`). A drawn mask depends only on the run's seed, the split's
name and the image's index in that split, so training in one process or several, a resumed run
and ``evaluate`` all see the same masks.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pyro_vae.errors import DataError

SPLIT_KEYS = {"train": 0, "valid": 1, "test": 2}  # mixed into the seed of each split's masks
MASK_ROWS_PER_DRAW = 1024  # images whose masks are drawn at once (bounds the float64 scratch memory)


def missing_count(rate: float, values: int) -> int:
    """Values of an image that ``--missing-rate rate`` drops: round(rate * values), at most values - 1."""
    return min(round(rate * values), values - 1)


def drawn_masks(rate: float, seed: int, split: str, image_shape: tuple[int, ...], n: int) -> torch.Tensor:
    """The masks of the first ``n`` images of ``split`` under ``--missing-rate rate`` and ``--seed
    seed``: bool (n, C, H, W), True where observed.

    Image i's mask is row i of one seeded stream of uniform numbers (numpy's PCG64, filled row by
    row), its round(rate * C*H*W) smallest values missing: the same for any ``n`` > i."""
    values = math.prod(image_shape)
    drop = missing_count(rate, values)
    sequence = np.random.SeedSequence(seed, spawn_key=(SPLIT_KEYS[split],))
    generator = np.random.Generator(np.random.PCG64(sequence))
    masks = np.ones((n, values), dtype=bool)
    for start in range(0, n, MASK_ROWS_PER_DRAW):
        rows = min(MASK_ROWS_PER_DRAW, n - start)
        u = generator.random((rows, values))  # (rows, C*H*W)
        if drop:
            missing = np.argpartition(u, drop - 1, axis=1)[:, :drop]  # the drop smallest of each row
            np.put_along_axis(masks[start : start + rows], missing, False, axis=1)
    return torch.from_numpy(masks).view(n, *image_shape)


def check_mask(mask: np.ndarray, images_shape: tuple[int, ...], where: str) -> np.ndarray:
    """A user's mask array as bool (N, C, H, W), after checking it against the images (N, C, H, W):
    the same shape (or the images' own layout before it was made (N, C, H, W)), only 0 and 1 (or
    bools), and at least one observed value in every image; else a :class:`DataError` that says
    what is wrong and where."""
    mask = np.asarray(mask)
    n = images_shape[0]
    if mask.shape != tuple(images_shape):
        if mask.ndim >= 1 and mask.shape[0] == n and math.prod(mask.shape[1:]) == math.prod(images_shape[1:]):
            hint = "; store it in the same layout as the images"
        else:
            hint = ""
        raise DataError(
            f"{where}: the mask has shape {mask.shape}, the images {tuple(images_shape)}; give one "
            f"value per image value (1 observed, 0 missing){hint}"
        )
    if mask.dtype != np.bool_:
        if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
            raise DataError(
                f"{where}: the mask holds values of type {mask.dtype}; expected 0 (missing) and 1 (observed)"
            )
        bad = ~((mask == 0) | (mask == 1))
        if bad.any():
            first = np.argwhere(bad)[0]
            raise DataError(
                f"{where}: the mask holds {int(bad.sum()):,} values other than 0 and 1 (the first "
                f"{mask[tuple(first)].item()!r}, image {int(first[0])}); expected 1 for observed, 0 for missing values"
            )
        mask = mask == 1
    empty = ~mask.reshape(n, -1).any(axis=1)
    if empty.any():
        raise DataError(
            f"{where}: {int(empty.sum()):,} images have no observed value in the mask (the first: image "
            f"{int(np.argmax(empty))}); drop them, or observe at least one value of each"
        )
    return mask
