"""Binarization of grey-scale images for Bernoulli likelihoods.

Modes:
  - ``dynamic``: every time an image is drawn, each pixel is resampled x ~ Bernoulli(intensity)
    (what the literature's MNIST log-likelihoods train on: Burda et al. 2015);
  - ``static``: one fixed, seeded binarization of each split, the same in every epoch;
  - ``none``: the intensities in [0, 1] themselves.
Models are evaluated on one fixed binarization seeded 0 for every run (dynamic, static) or on the
intensities (none); :func:`evaluation_images` returns it with a description to print and store.
The validation split draws its fixed binarization from a stream of its own (:func:`split_seed`), so
it shares no uniforms with the test split's.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import torch

from pyro_vae.errors import ConfigError

if TYPE_CHECKING:
    from pyro_vae.data.types import Split

DYNAMIC, STATIC, NONE = "dynamic", "static", "none"
BINARIZATION_MODES = (DYNAMIC, STATIC, NONE)
# The seed of the one fixed binarization every model is evaluated on (validation and test sets, and
# `python -m pyro_vae.evaluate` on any split): the same for every run, whatever its training seed.
EVALUATION_SEED = 0
# Splits whose fixed binarization is drawn with the seed itself: the test split (its binarization,
# and so every published test number, is seed 0's draw) and the training split (under static, the
# draw training saw). Any other split, the validation split, draws with a seed derived from its name.
SPLITS_ON_THE_SEED_ITSELF = ("test", "train")


def check_binarization(mode: str) -> str:
    """Return ``mode`` if it is a binarization mode; :class:`ConfigError` listing them if not."""
    if mode not in BINARIZATION_MODES:
        raise ConfigError(f"unknown binarization {mode!r}; choose one of: {', '.join(BINARIZATION_MODES)}.")
    return mode


def binarize_fixed(images: torch.Tensor, seed: int) -> torch.Tensor:
    """One Bernoulli(intensity) draw per pixel, fixed by ``seed``: values exactly 0 or 1.

    Uses its own generator on the images' device, so the global RNG neither affects nor is
    affected by it. The draw depends on the device (CPU and CUDA generators differ).
    """
    generator = torch.Generator(device=images.device)
    generator.manual_seed(seed)
    return torch.bernoulli(images, generator=generator)


def split_seed(seed: int, split_name: str) -> int:
    """The seed of ``split_name``'s fixed binarization under ``seed``: ``seed`` itself for the test
    and training splits; for any other split ``seed`` plus the CRC-32 of its name (below 2^63).

    Same-shaped splits binarized with one seed would share their uniforms: wherever a validation
    and a test pixel have the same intensity they would get the same 0 or 1, tying the validation
    ELBO's noise to the test ELBO's. A seed per name draws them independently.
    """
    if split_name in SPLITS_ON_THE_SEED_ITSELF:
        return seed
    return (seed + zlib.crc32(split_name.encode())) % 2**63


def evaluation_images(
    split: Split, mode: str, seed: int = EVALUATION_SEED, limit: int | None = None
) -> tuple[torch.Tensor, str]:
    """The images a model is evaluated on for ``mode`` (the first ``limit`` of them if given), and
    a short description of them.

    ``dynamic`` and ``static`` give one fixed Bernoulli binarization of the whole split,
    ``binarize_fixed(images, split_seed(seed, split.name))``, with ``seed`` 0 whatever the run's
    training seed, so that every run is scored on the same images; the validation split draws
    from its own stream, independent of the test split's. The one exception is the training split
    under ``static``: the trainer passes its training seed there, so the training ELBO is measured
    on exactly the images training saw. ``none`` gives the intensities, converting only the images
    asked for.
    """
    if check_binarization(mode) == NONE:
        what = "8-bit pixels / 255" if split.bits else "values"
        return split.head(limit), f"{split.name} set: {what} in [0, 1], not binarized"
    if mode == STATIC and split.name == "train":
        which = "its static Bernoulli binarization (as in training)"
    else:
        which = "one fixed Bernoulli binarization"
    own_seed = split_seed(seed, split.name)
    stream = "" if own_seed == seed else f" (seed {seed}'s stream for {split.name!r})"
    return binarize_fixed(split.images, own_seed)[:limit], f"{split.name} set: {which}, seed {own_seed}{stream}"
