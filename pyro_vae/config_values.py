"""Values for :class:`~pyro_vae.config.FitConfig`'s fields: conversion from JSON, YAML and the
command line to a field's type, the choices a field offers (read from its registry), and seeds.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

SEED_LIMIT = 2**32  # seeds lie in [0, 2^32): NumPy's seed range, which pyro.set_rng_seed also sets


def flag(name: str) -> str:
    """A field's command-line flag, without its dashes: ``batch_size`` -> ``batch-size``."""
    return name.replace("_", "-")


def spelled(name: str, value: Any = None, *, keywords: bool = False) -> str:
    """An option as its user wrote it: a Python keyword argument (``resume='runs/x'``,
    ``overwrite=True``, ``latent_dim``) with ``keywords``, else a flag (``--resume runs/x``,
    ``--overwrite``, ``--latent-dim``). ``value`` None: the name alone (True: a switch)."""
    if keywords:
        name = name.replace("-", "_")
        return name if value is None else f"{name}={value!r}"
    written = "--" + flag(name)
    return written if value is None or value is True else f"{written} {value}"


def spelled_choices(name: str, values, *, keywords: bool = False, joiner: str = "or") -> str:
    """Several values of one option, as its user writes them: ``elbo='iwae' or elbo='miwae'``
    with ``keywords``, else ``--elbo iwae or miwae``; ``joiner`` the word between them."""
    if keywords:
        return f" {joiner} ".join(spelled(name, value, keywords=True) for value in values)
    return spelled(name, f" {joiner} ".join(map(str, values)))


def spelled_value(value: Any, *, keywords: bool = False) -> str:
    """A value alone, as its user writes it: Python's ``'iwae'`` with ``keywords``, else ``iwae``."""
    return repr(value) if keywords else str(value)


def coerce(f: dataclasses.Field, value: Any, source: str) -> Any:
    """Convert a value from JSON/YAML/the command line to the field's type, or explain why not."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if value is None:
            if "None" in kind:
                return None
            raise ValueError("a value is required")
        if isinstance(value, (list, dict)) and "tuple" not in kind:
            raise ValueError(f"expected a single value, got a {type(value).__name__}")
        if isinstance(value, bool) and not kind.startswith("bool"):
            # YAML's `epochs: true` is Python's True == 1; never take a yes/no for a number
            raise ValueError(f"expected {'a number' if kind[:3] in ('int', 'flo') else 'text'}, got {value}")
        if kind.startswith("int | tuple"):  # one number, or several (one per layer)
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            widths = tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
            if not widths:
                raise ValueError("expected one or more whole numbers")
            return widths[0] if len(widths) == 1 else widths
        if kind.startswith("tuple"):
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            return tuple(int(v) for v in value)
        if kind.startswith("bool"):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError("expected true or false")
            return bool(value)
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected a whole number")
            if isinstance(value, str):
                value = value.strip()
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("str"):
            return str(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: bad value {value!r} for {flag(f.name)}: {e}") from None
    return value


def field_values(fields, data: Mapping[str, Any], source: str, *, keywords: bool = False) -> dict[str, Any]:
    """``data``'s values by field name, each converted by :func:`coerce`; ``data``'s keys may use
    dashes or underscores, and a key that names no field is a :class:`ConfigError` naming the
    closest known key ("did you mean epochs?"). ``keywords``: the keys are Python keyword
    arguments, and the message spells them so (``batch_size``), else as flags (``batch-size``)."""
    known = {f.name: f for f in fields}
    values = {}
    unknown = []
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            unknown.append(key)
            continue
        values[name] = coerce(known[name], value, source)
    if unknown:
        spell = (lambda n: n.replace("-", "_")) if keywords else flag
        shown = [spell(str(key)) if keywords else str(key) for key in unknown]  # as the user wrote it
        names = [spell(n) for n in known]
        hints = []
        for key, written in zip(unknown, shown):
            close = difflib.get_close_matches(str(key).replace("-", "_"), list(known), n=1)
            if close:
                hints.append(f"{written}: did you mean {spell(close[0])}?")
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(map(repr, shown))}"
            + (f" ({'; '.join(hints)})" if hints else "")
            + f"; known keys: {', '.join(names)}"
        )
    return values


def field_registry(f: dataclasses.Field):
    """The registry (or tuple) a field's ``choices="module:NAME"`` names, imported now; None for
    a field without one."""
    choices = f.metadata.get("choices")
    if not isinstance(choices, str):
        return None
    module, name = choices.split(":")
    return getattr(importlib.import_module(module), name)


def field_choices(f: dataclasses.Field) -> tuple[str, ...] | None:
    """A field's allowed values: its registry's names (``choices="module:NAME"``, read lazily, so
    a registry is the only list of a choice, and a name registered before it is read is one), or
    a literal tuple, or None. Priors, guides, likelihoods and networks also take import paths."""
    registry = field_registry(f)
    if registry is not None:
        return tuple(registry.names() if hasattr(registry, "names") else registry)
    return f.metadata.get("choices")


def choice_problem(f: dataclasses.Field, value: Any) -> str | None:
    """Why ``value`` is not one of field ``f``'s choices (None if it is, or ``f`` has none). Where
    the registry takes one's own component (priors, guides, likelihoods, networks), an import
    path ``module.sub:Name`` or (from Python) a class is one too; it is imported now, so that a
    typo is an error before training."""
    if value is None:
        return None
    registry = field_registry(f)
    if registry is not None and getattr(registry, "accepts_own", False):
        if isinstance(value, str) and ":" not in value and value not in registry:
            return (
                f"--{flag(f.name)} {value!r} is not one of: {', '.join(registry.names())} "
                f"(or the import path of your own, module.sub:Name)"
            )
        try:
            registry.resolve(value)
        except ConfigError as e:
            return f"--{flag(f.name)}: {e}"
        return None
    choices = field_choices(f)
    if choices and value not in choices:
        return f"--{flag(f.name)} {value!r} is not one of: {', '.join(choices)}"
    return None


def seed_problem(seed, flag: str) -> str | None:
    """Why ``seed`` is not a usable seed (None if it is): a whole number in [0, 2^32)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        return f"{flag} must be a whole number from 0 to {SEED_LIMIT - 1:,} (2^32 - 1), got {seed}"
    return None


def check_seed(seed, flag: str = "--seed") -> int:
    """``seed`` if it lies in [0, 2^32); :class:`ConfigError` naming ``flag`` if not."""
    if (problem := seed_problem(seed, flag)) is not None:
        raise ConfigError(problem)
    return seed
