"""Which objective a prior and guide allow: ``--elbo meanfield`` needs every KL in closed form."""

from __future__ import annotations

from ..errors import ConfigError
from ..objectives import ELBOS


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
    missing = [
        f"{role} {type(obj).__name__}"
        for role, obj in (("guide", guide), ("prior", prior))
        if not _declares_analytic_kl(obj)
    ]
    if not missing:
        return None
    return (
        f"--elbo {config.elbo} needs the KL from q(z|x) to p(z) in closed form, which --guide "
        f"{config.guide} with --prior {config.prior} does not have (no analytic_kl = True on the "
        f"{' and the '.join(missing)}); use --elbo trace (its Monte-Carlo KL works for every pair), "
        f"or declare analytic_kl = True on a class whose KL torch.distributions.kl_divergence knows"
    )


def check_objective(config, prior, guide) -> None:
    """Raise :class:`ConfigError` with :func:`objective_problem`'s message, if any."""
    problem = objective_problem(config, prior, guide)
    if problem:
        raise ConfigError(problem)
