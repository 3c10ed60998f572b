"""What the framework reads from any model and guide written as Pyro programs, without knowing
their latent structure: samples of images, reconstructions and posterior means per latent site.

A model is ``model(x, y=None)`` with every sample site inside ``pyro.plate("data", B, dim=-1)``
and the images observed at the site ``x``; a guide is ``guide(x, y=None)`` over the model's latent
sites (those not enumerated in the model). Pyro's handlers do the work from outside:

    samples          x ~ p(x) = sum_z p(z) p(x | z): the model run on n placeholder images with
                     ``poutine.uncondition``, so that every latent site is drawn once per sample
                     and x is drawn too; E[x | z] is the mean of the site ``x``'s distribution
    reconstructions  E[x | z] at z = the guide's mean, site by site (a later site given the means
                     of the earlier ones), replayed into the model
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

OBSERVED_SITE = "x"  # the site that holds the images


def distribution_mean(fn: dist.Distribution) -> torch.Tensor:
    """The mean of ``fn``; for a discrete distribution its most likely value; for one without a
    closed-form mean (a flow) the average of 64 draws."""
    base = fn
    while isinstance(base, dist.Independent):
        base = base.base_dist
    if isinstance(base, dist.Categorical) and not isinstance(base, dist.OneHotCategorical):
        return base.probs.argmax(-1)
    try:
        return fn.mean
    except NotImplementedError:
        return fn.sample((64,)).mean(0)


class _AtTheMean(Messenger):
    """Every latent sample site takes its distribution's mean (:func:`distribution_mean`) instead
    of a draw, so that later sites are computed from the means of the earlier ones."""

    def _pyro_sample(self, msg):
        if msg["is_observed"] or site_is_subsample(msg):
            return
        msg["value"] = distribution_mean(msg["fn"])
        msg["done"] = True


def _observed_mean(trace: poutine.Trace, site: str) -> torch.Tensor:
    if site not in trace.nodes:
        raise KeyError(
            f"the model has no sample site {site!r}: its images must be observed at pyro.sample({site!r}, ..., obs=x)"
        )
    return distribution_mean(trace.nodes[site]["fn"])


@torch.no_grad()
def sample_images(
    model: Callable,
    n: int,
    image_shape: tuple[int, ...],
    y: torch.Tensor | None = None,
    *,
    like: torch.Tensor | None = None,
    site: str = OBSERVED_SITE,
) -> torch.Tensor:
    """n images E[x | z] (n, C, H, W), every latent site of ``model`` drawn once per image from
    the prior (the model run on n placeholder images, unconditioned). ``like``: a tensor whose
    device and dtype the placeholder takes."""
    like = like if like is not None else torch.zeros(())
    placeholder = like.new_zeros((n, *image_shape))  # sets the data plate's size; never scored
    trace = poutine.trace(poutine.uncondition(model)).get_trace(placeholder, y)
    return _observed_mean(trace, site)


@torch.no_grad()
def posterior_means(guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """E_q[z | x] of every latent site of ``guide`` (each later site given the means of the
    earlier ones), by site name: {"z1": (B, D1), "z2": (B, D2), ...}."""
    with _AtTheMean():
        trace = poutine.trace(guide).get_trace(x, y)
    return {
        name: site["value"]
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


@torch.no_grad()
def reconstruct_images(
    model: Callable, guide: Callable, x: torch.Tensor, y: torch.Tensor | None = None, *, site: str = OBSERVED_SITE
) -> torch.Tensor:
    """E[x | z] with z the guide's means (:func:`posterior_means`), replayed into the model:
    (B, C, H, W)."""
    with _AtTheMean():
        guide_trace = poutine.trace(guide).get_trace(x, y)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    return _observed_mean(trace, site)
