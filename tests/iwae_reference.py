"""A differentiable IWAE bound written as one tiled call, for tests that compare Pyro's own
estimators (RenyiELBO) with the per-image bound on the same samples. The library's estimator is
:func:`pyro_vae.evaluation.importance_weighted_log_px` (chunked, seeded, no gradients); the
training objective is :class:`pyro_vae.objectives.IWAE_ELBO`."""

import math

import pyro.poutine as poutine
import torch

from pyro_vae.evaluation import model_log_joint
from pyro_vae.objectives import sample_sites, trace_log_density


def _as_trace(latents: dict[str, torch.Tensor]) -> poutine.Trace:
    """A trace holding the given values as unobserved sample sites, for poutine.replay."""
    trace = poutine.Trace()
    for name, value in latents.items():
        trace.add_node(name, name=name, type="sample", value=value, is_observed=False, infer={})
    return trace


def log_importance_weights(
    model,
    guide,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    k: int,
    latents: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """log w_k = log p(x, z_k) - log q(z_k|x) for all K particles in one tiled call, shape (K, B).

    Differentiable (reparameterised sites carry gradients), drawn from the global RNG with one
    guide call on the batch tiled to (K * B, ...), row k * B + b. ``latents`` (name -> (K * B, ...)
    tensors) replays given samples instead of drawing new ones.
    """
    batch = x.shape[0]
    x_t = x.repeat(k, *([1] * (x.dim() - 1)))  # (K*B, ...)
    y_t = None if y is None else y.repeat(k, *([1] * (y.dim() - 1)))
    guide_fn = guide if latents is None else poutine.replay(guide, trace=_as_trace(latents))
    guide_trace = poutine.trace(guide_fn).get_trace(x_t, y_t)
    log_q = trace_log_density(guide_trace, shape=(k * batch,), who="guide")  # (K*B,)
    unobserved = list(sample_sites(guide_trace, observed=False))
    tiled = {name: site["value"] for name, site in unobserved}
    infer = {name: site["infer"] for name, site in unobserved}
    log_p = model_log_joint(model, x_t, y_t, tiled, infer)  # (K*B,)
    return (log_p - log_q).view(k, batch)  # (K, B)


def iwae_bound(model, guide, x: torch.Tensor, y: torch.Tensor | None = None, *, k: int) -> torch.Tensor:
    """The IWAE bound per image, logsumexp_k log w_k - log K, differentiable, shape (B,)."""
    log_w = log_importance_weights(model, guide, x, y, k=k)  # (K, B)
    return torch.logsumexp(log_w, 0) - math.log(k)
