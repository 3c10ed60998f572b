"""The rules between a configuration's fields, and the defaults one field takes from others.

:class:`~pyro_vae.config.FitConfig` checks each field on its own; :func:`check` checks the fields
against each other (with the model kind's own rules, :meth:`Variant.config_problems`) and
:func:`resolve_defaults` returns the configuration with the defaults that depend on other fields
filled in, so that ``config.json`` records them. What a registered component accepts or needs is
read from its class's attributes, never from a list of names.
"""

from __future__ import annotations

import dataclasses
from functools import partial

from ..config import FitConfig, config_fields
from ..config_values import field_registry, spelled, spelled_choices, spelled_value
from ..errors import ConfigError
from ..models.likelihoods import models_pixel_values
from ..models.priors import PRIORS
from ..nets import ENCODERS
from ..objectives import ELBO_OPTIONS, ELBOS, elbo_takes
from .kinds import variant_of
from .missing import check_data_masks, missing_pixels_problems

DEFAULT_DATASET = "mnist"  # without --data or --dataset


def resolve_defaults(config: FitConfig, *, keywords: bool = False) -> FitConfig:
    """A new configuration with the defaults that depend on other fields filled in: the dataset
    (mnist, unless --data is given), the binarization (none for a likelihood of 8-bit pixel values,
    else dynamic), the prior's number of components (its class's ``default_components``), and each
    own component recorded by what rebuilds it in a fresh process (its import path). ``config``
    itself is left as it is. ``keywords``: messages name Python keyword arguments, else flags."""
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
                problems.append(f"{spelled(f.name, keywords=keywords)}: {e}")
    if problems:
        raise ConfigError("; ".join(problems))
    return dataclasses.replace(config, **changes)


def problems(config: FitConfig, *, keywords: bool = False) -> list[str]:
    """What ``config`` refuses between its fields, in messages naming the flags, or with
    ``keywords`` the Python keyword arguments (``pyro_vae.fit``)."""
    s, value = partial(spelled, keywords=keywords), partial(spelled_value, keywords=keywords)
    found = []
    if config.data is not None and config.dataset is not None:
        found.append(
            f"give {s('data')} (your own data) or {s('dataset')} (a named data set), not both: "
            f"{s('data', config.data)}, {s('dataset', config.dataset)}"
        )
    if config.binarize not in (None, "none") and models_pixel_values(config.likelihood):
        found.append(
            f"{s('likelihood', config.likelihood)} models the 256 values of 8-bit pixels; "
            f"use {s('binarize', 'none')}, not {value(config.binarize)}"
        )
    if config.split is not None and config.data is None:
        found.append(
            f"{s('split')} cuts {s('data')} without a split of its own; the named data sets have their own "
            f"(drop {s('split')})"
        )
    if (
        config.activation != FitConfig.activation
        and isinstance(config.net, str)
        and ":" not in config.net
        and not _uses_activation(config.net)
    ):
        takers = [name for name in ENCODERS.names() if _uses_activation(name)]
        found.append(
            f"{s('activation')} applies to {spelled_choices('net', takers, keywords=keywords)}; "
            f"{s('net', config.net)} has its own nonlinearities (drop {s('activation', config.activation)})"
        )
    if config.lr_schedule == "burda" and config.lr_decay != FitConfig.lr_decay:
        found.append(
            f"{s('lr_schedule', 'burda')} sets the learning rate of every pass; drop {s('lr_decay')} "
            f"(it applies to {s('lr_schedule', 'exponential')})"
        )
    found += variant_of(config).config_problems(config, keywords=keywords)
    found += missing_pixels_problems(config, variant_of(config), keywords=keywords)
    found += _elbo_option_problems(config, keywords=keywords)
    if getattr(ELBOS.resolve(config.elbo), "weighs_sites_alike", False) and (
        config.beta != 1 or config.warmup_epochs > 0
    ):
        found.append(
            f"{s('elbo', config.elbo)} is the importance-weighted bound of log p(x); it takes no "
            f"{s('beta')} or {s('warmup_epochs')} (use {s('elbo', 'trace')} for those)"
        )
    return found


def _elbo_option_problems(config: FitConfig, *, keywords: bool = False) -> list[str]:
    """An ELBO option (``--iw-bounds``, ``--ciwae-beta``) given to an ELBO that does not take it;
    ``--iw-bounds`` missing, or not dividing ``--particles``, for one that does (messages naming
    the flags, or with ``keywords`` the keyword arguments)."""
    s, found = partial(spelled, keywords=keywords), []
    for option in ELBO_OPTIONS:
        if getattr(config, option) != getattr(FitConfig, option) and not elbo_takes(config.elbo, option):
            takers = [name for name in ELBOS.names() if elbo_takes(name, option)]
            found.append(
                f"{s(option)} applies to {spelled_choices('elbo', takers, keywords=keywords)}, "
                f"not {spelled_value(config.elbo, keywords=keywords)} (drop it)"
            )
    if elbo_takes(config.elbo, "iw_bounds"):
        if config.iw_bounds is None:
            example = (", " if keywords else " ").join((s("particles", 64), s("iw_bounds", 8)))
            found.append(
                f"{s('elbo', config.elbo)} averages M importance-weighted bounds of {s('particles')} / M "
                f"samples each: give M with {s('iw_bounds')} (Rainforth et al.: {example})"
            )
        elif config.particles % config.iw_bounds:
            found.append(
                f"{s('iw_bounds', config.iw_bounds)} must divide {s('particles', config.particles)}: M groups "
                f"of equal size K, M x K = {s('particles')}"
            )
    return found


def _uses_activation(net: str) -> bool:
    """Whether the registered network ``net`` takes its nonlinearity from --activation."""
    return getattr(ENCODERS.resolve(net), "uses_activation", False)


def check(config: FitConfig, *, keywords: bool = False) -> None:
    """Raise :class:`ConfigError` listing every rule between fields that ``config`` breaks
    (``keywords``: naming Python keyword arguments, else flags)."""
    if found := problems(config, keywords=keywords):
        raise ConfigError("; ".join(found))


def checked(config: FitConfig, *, keywords: bool = False) -> FitConfig:
    """``config`` with its defaults resolved (:func:`resolve_defaults`), after :func:`check`: what
    every route to training (the CLI, ``pyro_vae.fit``, the trainer) runs on. ``keywords``: the
    messages name Python keyword arguments (``pyro_vae.fit``), else flags."""
    config = resolve_defaults(config, keywords=keywords)
    check(config, keywords=keywords)
    return config


def check_data(config: FitConfig, dataset) -> None:
    """Raise :class:`ConfigError` if ``config``'s model kind cannot train on ``dataset``, or its
    masks of missing values disagree with ``config``."""
    check_data_masks(config, dataset)
    variant_of(config).check_data(dataset, config)
