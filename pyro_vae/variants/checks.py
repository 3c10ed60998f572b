"""The rules between a configuration's fields, and the defaults one field takes from others.

:class:`~pyro_vae.config.FitConfig` checks each field on its own; :func:`check` checks the fields
against each other (with the model kind's own rules, :meth:`Variant.config_problems`) and
:func:`resolve_defaults` returns the configuration with the defaults that depend on other fields
filled in, so that ``config.json`` records them. What a registered component accepts or needs is
read from its class's attributes, never from a list of names.
"""

from __future__ import annotations

import dataclasses

from ..config import FitConfig, config_fields
from ..config_values import field_registry
from ..errors import ConfigError
from ..models.likelihoods import models_pixel_values
from ..models.priors import PRIORS
from ..nets import ENCODERS
from ..objectives import ELBO_OPTIONS, ELBOS, elbo_takes
from .kinds import variant_of
from .missing import check_data_masks, missing_pixels_problems

DEFAULT_DATASET = "mnist"  # without --data or --dataset


def resolve_defaults(config: FitConfig) -> FitConfig:
    """A new configuration with the defaults that depend on other fields filled in: the dataset
    (mnist, unless --data is given), the binarization (none for a likelihood of 8-bit pixel values,
    else dynamic), the prior's number of components (its class's ``default_components``), and each
    own component recorded by what rebuilds it in a fresh process (its import path). ``config``
    itself is left as it is."""
    changes, problems = {}, []
    if config.data is None and config.dataset is None:
        changes["dataset"] = DEFAULT_DATASET
    if config.binarize is None:
        changes["binarize"] = "none" if models_pixel_values(config.likelihood) else "dynamic"
    if config.prior_components is None:
        changes["prior_components"] = getattr(PRIORS.resolve(config.prior), "default_components", None)
    for f in config_fields():
        registry, value = field_registry(f), getattr(config, f.name)
        if value is not None and getattr(registry, "accepts_own", False):
            try:
                changes[f.name] = registry.record(value)
            except ConfigError as e:
                problems.append(f"--{f.name.replace('_', '-')}: {e}")
    if problems:
        raise ConfigError("; ".join(problems))
    return dataclasses.replace(config, **changes)


def problems(config: FitConfig) -> list[str]:
    """What ``config`` refuses between its fields, in messages naming the flags."""
    found = []
    if config.data is not None and config.dataset is not None:
        found.append(
            f"give --data (your own data) or --dataset (a named data set), not both: "
            f"--data {config.data}, --dataset {config.dataset}"
        )
    if config.binarize not in (None, "none") and models_pixel_values(config.likelihood):
        found.append(
            f"--likelihood {config.likelihood} models the 256 values of 8-bit pixels; "
            f"use --binarize none, not {config.binarize}"
        )
    if config.split is not None and config.data is None:
        found.append(
            "--split cuts --data without a split of its own; the named data sets have their own (drop --split)"
        )
    if (
        config.activation != FitConfig.activation
        and isinstance(config.net, str)
        and ":" not in config.net
        and not _uses_activation(config.net)
    ):
        takers = " or ".join(name for name in ENCODERS.names() if _uses_activation(name))
        found.append(
            f"--activation applies to --net {takers}; --net {config.net} has its own "
            f"nonlinearities (drop --activation {config.activation})"
        )
    if config.lr_schedule == "burda" and config.lr_decay != FitConfig.lr_decay:
        found.append(
            "--lr-schedule burda sets the learning rate of every pass; drop --lr-decay "
            "(it applies to --lr-schedule exponential)"
        )
    found += variant_of(config).config_problems(config)
    found += missing_pixels_problems(config, variant_of(config))
    found += _elbo_option_problems(config)
    if getattr(ELBOS.resolve(config.elbo), "weighs_sites_alike", False) and (
        config.beta != 1 or config.warmup_epochs > 0
    ):
        found.append(
            f"--elbo {config.elbo} is the importance-weighted bound of log p(x); it takes no "
            "--beta or --warmup-epochs (use --elbo trace for those)"
        )
    return found


def _elbo_option_problems(config: FitConfig) -> list[str]:
    """An ELBO option (``--iw-bounds``, ``--ciwae-beta``) given to an ELBO that does not take it;
    ``--iw-bounds`` missing, or not dividing ``--particles``, for one that does."""
    found = []
    for option in ELBO_OPTIONS:
        if getattr(config, option) != getattr(FitConfig, option) and not elbo_takes(config.elbo, option):
            takers = " or ".join(name for name in ELBOS.names() if elbo_takes(name, option))
            found.append(f"--{option.replace('_', '-')} applies to --elbo {takers}, not {config.elbo} (drop it)")
    if elbo_takes(config.elbo, "iw_bounds"):
        if config.iw_bounds is None:
            found.append(
                f"--elbo {config.elbo} averages M importance-weighted bounds of --particles / M samples "
                f"each: give M with --iw-bounds (Rainforth et al.: --particles 64 --iw-bounds 8)"
            )
        elif config.particles % config.iw_bounds:
            found.append(
                f"--iw-bounds {config.iw_bounds} must divide --particles {config.particles}: M groups of "
                f"equal size K, M x K = --particles"
            )
    return found


def _uses_activation(net: str) -> bool:
    """Whether the registered network ``net`` takes its nonlinearity from --activation."""
    return getattr(ENCODERS.resolve(net), "uses_activation", False)


def check(config: FitConfig) -> None:
    """Raise :class:`ConfigError` listing every rule between fields that ``config`` breaks."""
    if found := problems(config):
        raise ConfigError("; ".join(found))


def checked(config: FitConfig) -> FitConfig:
    """``config`` with its defaults resolved (:func:`resolve_defaults`), after :func:`check`: what
    every route to training (the CLI, ``pyro_vae.fit``, the trainer) runs on."""
    config = resolve_defaults(config)
    check(config)
    return config


def check_data(config: FitConfig, dataset) -> None:
    """Raise :class:`ConfigError` if ``config``'s model kind cannot train on ``dataset``, or its
    masks of missing values disagree with ``config``."""
    check_data_masks(config, dataset)
    variant_of(config).check_data(dataset, config)
