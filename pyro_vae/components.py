"""Checks shared by every route to a trained model (the CLI, ``pyro_vae.fit``, ``Trainer``):
what differs between two models' tensors.

A user's own prior, guide, likelihood or network enters through the registries
(:mod:`pyro_vae.registry`): by import path (``--prior mypackage.priors:LaplacePrior``), by a name
registered before the options are read, or as a class or object from Python. ``config.json``
records its import path, so ``pyro_vae.load``, ``evaluate`` and ``generate`` rebuild it.
"""

from __future__ import annotations


def shapes(module) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer names of a module's state dict with their shapes."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def state_dict_difference(expected: dict, actual: dict, limit: int = 3) -> list[str]:
    """Phrases naming what differs between two {name: shape} maps (a few examples each)."""

    def some(names):
        names = sorted(names)
        return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")

    missing = expected.keys() - actual.keys()
    unexpected = actual.keys() - expected.keys()
    resized = [k for k in expected.keys() & actual.keys() if expected[k] != actual[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensor(s) are missing ({some(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} tensor(s) are extra ({some(unexpected)})")
    if resized:
        k = sorted(resized)[0]
        parts.append(
            f"{len(resized)} tensor(s) differ in shape (e.g. {k}: {actual[k]} where {expected[k]} is expected)"
        )
    return parts
