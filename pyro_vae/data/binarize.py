"""Binarization of grey-scale images for Bernoulli likelihoods.

Modes:
  - ``dynamic``: every time an image is drawn, each pixel is resampled x ~ Bernoulli(intensity)
    (what the literature's MNIST log-likelihoods train on: Burda et al. 2015);
  - ``static``: one fixed, seeded binarization of each split, the same in every epoch;
  - ``none``: the intensities in [0, 1] themselves.
Models are evaluated on one fixed binarization seeded 0 for every run (dynamic, static) or on the
intensities (none); :func:`evaluation_images` returns it with a description to print and store.
"""

from __future__ import annotations

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


def evaluation_images(
    split: Split, mode: str, seed: int = EVALUATION_SEED, limit: int | None = None
) -> tuple[torch.Tensor, str]:
    """The images a model is evaluated on for ``mode`` (the first ``limit`` of them if given), and
    a short description of them.

    ``dynamic`` and ``static`` give one fixed Bernoulli binarization of the whole split,
    ``binarize_fixed(images, seed)``, with ``seed`` 0 whatever the run's training seed, so that
    every run is scored on the same images. The one exception is the training split under
    ``static``: the trainer passes its training seed there, so the training ELBO is measured on
    exactly the images training saw. ``none`` gives the intensities, converting only the images
    asked for.
    """
    if check_binarization(mode) == NONE:
        what = "8-bit pixels / 255" if split.bits else "values"
        return split.head(limit), f"{split.name} set: {what} in [0, 1], not binarized"
    if mode == STATIC and split.name == "train":
        which = "its static Bernoulli binarization (as in training)"
    else:
        which = "one fixed Bernoulli binarization"
    return binarize_fixed(split.images, seed)[:limit], f"{split.name} set: {which}, seed {seed}"
