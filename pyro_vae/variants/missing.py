"""Missing pixels at the level of a run: which masks a split has, what a configuration may combine
with them, and what is estimated.

A run has missing pixels when ``--missing-rate R`` > 0 (masks drawn per image from the run's seed,
:func:`pyro_vae.data.masks.drawn_masks`) or when its data came with a mask array
(``config.data_mask``, recorded by fit). Its model scores the observed values only and its guide
reads [x * m, m] (:mod:`pyro_vae.models.missing`, :mod:`pyro_vae.guides.missing`); with
``--elbo iwae`` the training objective is Mattei & Frellsen's MIWAE bound (docs/objectives.md).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import torch

from ..config_values import spelled
from ..data.masks import drawn_masks
from ..errors import ConfigError
from ..guides.missing import masked_input_shape
from ..nets import NetSpec

OBSERVED_QUANTITY = "log p(x_observed): the observed values of each image only (missing values integrated out)"


def missing_pixels_spec(spec: NetSpec) -> NetSpec:
    """The encoder's network spec when it reads the zero-filled image and its mask (2C, H, W)."""
    return dataclasses.replace(spec, image_shape=masked_input_shape(spec.image_shape))


def split_masks(config, split, n: int | None = None) -> torch.Tensor | None:
    """The masks (bool (n, C, H, W), True where observed) of the first ``n`` images (all if None)
    of ``split`` in a run of ``config``: the data's own, or drawn from ``--missing-rate`` and
    ``--seed`` by the split's name and each image's index; None when nothing is missing."""
    if not config.masked:
        return None
    n = len(split) if n is None else min(n, len(split))
    if config.data_mask:
        if split.mask is None:
            raise ConfigError(
                "the run was trained with the mask array of its --data file, and these data hold none; "
                "point --data at the file the run was trained on"
            )
        return split.mask[:n]
    return drawn_masks(config.missing_rate, config.seed, split.name, tuple(split.data.shape[1:]), n)


def missing_pixels_problems(config, variant, *, keywords: bool = False) -> list[str]:
    """A message if ``config`` asks for missing pixels where ``variant`` (its model kind) or its
    other options cannot take them (naming the flags, or with ``keywords`` the keyword arguments)."""
    if not config.masked:
        return []
    s = partial(spelled, keywords=keywords)
    rate = s("missing_rate", config.missing_rate)
    what = rate if config.missing_rate > 0 else f"a mask array in {s('data')}"
    found = []
    if not variant.takes_missing_pixels:
        found.append(
            f"{what}: missing pixels are supported by {s('model', 'vae')} (its model masks the likelihood of "
            f"the missing values, its guide reads the zero-filled image and its mask); "
            f"{s('model', config.model)} has no masked model (use {s('model', 'vae')}, or data without "
            "missing values)"
        )
    if config.jit:
        found.append(f"{what}: {s('jit')} traces the model without masks (drop {s('jit')})")
    if config.missing_rate > 0 and config.data_mask:
        found.append(
            f"{rate} draws masks, and the {s('data')} file holds its own mask "
            f"array: drop {s('missing_rate')} to use the file's mask, or remove the mask from the file"
        )
    return found


def check_data_masks(config, dataset) -> None:
    """Refuse data whose masks disagree with ``config``: a mask array in the data together with
    ``--missing-rate``, or a run recorded with a mask whose data hold none."""
    has_mask = dataset.train.mask is not None
    if has_mask and config.missing_rate > 0:
        raise ConfigError(
            f"--missing-rate {config.missing_rate} draws masks, and {dataset.name} holds its own mask array: "
            "drop --missing-rate to use the file's mask, or remove the mask from the file"
        )
    if has_mask and not config.data_mask:
        raise ConfigError(
            f"{dataset.name} holds a mask array of missing values, and the config does not say so: "
            "give data_mask=True (fit records it from the data) so the model scores the observed values only"
        )
    if config.data_mask and not has_mask:
        raise ConfigError(
            f"the run's config says its data hold a mask array (data_mask), and {dataset.name} holds none; "
            "point --data at the file the run was trained on"
        )
