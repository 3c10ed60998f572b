"""Checks shared by every route to a trained model (the CLI, ``pyro_vae.fit``, ``Trainer``):
which objective a prior and guide allow, and what differs between two models' tensors.

A user's own prior, guide, likelihood or network enters through the registries
(:mod:`pyro_vae.registry`): by import path (``--prior mypackage.priors:LaplacePrior``), by a name
registered before the options are read, or as a class or object from Python. ``config.json``
records its import path, so ``pyro_vae.load``, ``evaluate`` and ``generate`` rebuild it.
"""

from __future__ import annotations

from .errors import ConfigError
from .objectives import ELBOS


def _declares_analytic_kl(component) -> bool:
    return getattr(component, "analytic_kl", False) is True


def objective_problem(config, prior, guide) -> str | None:
    """Why ``config.elbo`` cannot train this prior and guide, or None.

    ``--elbo meanfield`` (``TraceMeanField_ELBO``) needs the KL from q(z|x) to p(z) in closed
    form: both must declare ``analytic_kl = True`` (a class attribute; the diagonal Normal guide
    and the Normal priors do). Pyro would otherwise fall back to a Monte-Carlo KL without a
    word, which is ``--elbo trace`` under another name."""
    if not getattr(ELBOS.resolve(config.elbo), "needs_analytic_kl", False):
        return None
    missing = [f"{role} {type(obj).__name__}" for role, obj in (("guide", guide), ("prior", prior))
               if not _declares_analytic_kl(obj)]
    if not missing:
        return None
    return (f"--elbo {config.elbo} needs the KL from q(z|x) to p(z) in closed form, which --guide "
            f"{config.guide} with --prior {config.prior} does not have (no analytic_kl = True on the "
            f"{' and the '.join(missing)}); use --elbo trace (its Monte-Carlo KL works for every pair), "
            f"or declare analytic_kl = True on a class whose KL torch.distributions.kl_divergence knows")


def check_objective(config, prior, guide) -> None:
    """Raise :class:`ConfigError` with :func:`objective_problem`'s message, if any."""
    problem = objective_problem(config, prior, guide)
    if problem:
        raise ConfigError(problem)


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
        parts.append(f"{len(resized)} tensor(s) differ in shape (e.g. {k}: {actual[k]} where "
                     f"{expected[k]} is expected)")
    return parts
