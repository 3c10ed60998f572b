"""Likelihoods p(x | z): turn the decoder's per-pixel parameter maps into a distribution over images.

Each likelihood is a small ``PyroModule`` chosen once, at the edge (by name from the CLI or as an
object in Python); the model never branches on a string. ``params`` has shape ``(B, P * C, H, W)``
with ``P = params_per_pixel``; the distribution has batch shape ``(B,)`` and event shape
``(C, H, W)`` (``.to_event(3)``), so ``log_prob`` is one number per image, in nats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import pyro.distributions as dist
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from ..errors import ConfigError
from ..registry import Registry

# Lower bound of every learned Gaussian scale. Pixel values are quantised (multiples of 1/255)
# and MNIST's background is exactly 0, so an unbounded scale can shrink to 0 and push the density
# to +infinity; 1e-2 (about 2.5 grey levels) keeps log p(x|z) finite and meaningful.
MIN_SCALE = 1e-2

IMAGE_EVENT_DIMS = 3  # (C, H, W)


class Likelihood(PyroModule):
    """Base class: ``forward(params) -> distribution`` and ``mean(params) -> images``."""

    params_per_pixel = 1
    needs_binary_data = False

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x | z] as images (B, C, H, W), for pictures."""
        return self(params).mean

    def check_data(self, images: torch.Tensor, binarize: str) -> None:
        """Raise a ConfigError if ``images`` (after ``binarize``) cannot be scored by this likelihood."""
        if binarize != "none":
            return  # binarized pixels are 0/1, valid for every likelihood here
        lo, hi = images.min().item(), images.max().item()
        if lo < 0 or hi > 1:
            raise ConfigError(
                f"the data has pixel values in [{lo:g}, {hi:g}], outside [0, 1]; rescale it to [0, 1]")
        if self.needs_binary_data and not bool(((images == 0) | (images == 1)).all()):
            raise ConfigError(
                "the bernoulli likelihood needs binary pixels, but with --binarize none the data "
                "are grey-scale intensities in [0, 1]; use --binarize dynamic (or static), or a "
                "likelihood for intensities: --likelihood continuous-bernoulli or gaussian")


class BernoulliLikelihood(Likelihood):
    """x_ij ~ Bernoulli(sigmoid(logits_ij)): binary pixels."""

    needs_binary_data = True

    def forward(self, params):
        return dist.Bernoulli(logits=params).to_event(IMAGE_EVENT_DIMS)


class GaussianLikelihood(Likelihood):
    """x_ij ~ N(sigmoid(a_ij), scale^2) with a fixed scale: the 'MSE VAE' of the tutorials."""

    def __init__(self, scale: float = 0.1):
        super().__init__()
        self.scale = float(scale)

    def forward(self, params):
        return dist.Normal(torch.sigmoid(params), self.scale).to_event(IMAGE_EVENT_DIMS)


class PixelScaleGaussianLikelihood(Likelihood):
    """x_ij ~ N(sigmoid(a_ij), s_ij^2) with one learned scale s_ij >= MIN_SCALE per pixel."""

    def __init__(self, image_shape: tuple[int, ...], init_scale: float = 0.1):
        super().__init__()
        self.scale = PyroParam(
            torch.full(tuple(image_shape), float(init_scale)),
            constraint=constraints.greater_than(MIN_SCALE))

    def forward(self, params):
        return dist.Normal(torch.sigmoid(params), self.scale).to_event(IMAGE_EVENT_DIMS)


class DecoderScaleGaussianLikelihood(Likelihood):
    """x_ij ~ N(sigmoid(a_ij), s_ij^2), s_ij = softplus(b_ij) + MIN_SCALE output by the decoder
    (Kingma & Welling's Gaussian decoder)."""

    params_per_pixel = 2

    def forward(self, params):
        loc_raw, scale_raw = params.chunk(2, dim=-3)  # each (B, C, H, W)
        scale = F.softplus(scale_raw) + MIN_SCALE
        return dist.Normal(torch.sigmoid(loc_raw), scale).to_event(IMAGE_EVENT_DIMS)


class ContinuousBernoulliLikelihood(Likelihood):
    """x_ij ~ ContinuousBernoulli(logits_ij) on [0, 1] (Loaiza-Ganem & Cunningham 2019)."""

    def forward(self, params):
        return dist.ContinuousBernoulli(logits=params).to_event(IMAGE_EVENT_DIMS)


def _likelihood_arguments(image_shape, config) -> dict:
    """What a likelihood's constructor (or factory) may ask for, by parameter name."""
    return {"image_shape": tuple(image_shape), "config": config}


LIKELIHOODS: Registry[Likelihood] = Registry("likelihood", arguments=_likelihood_arguments)


@LIKELIHOODS.register("bernoulli")
def _bernoulli(image_shape, config):
    return BernoulliLikelihood()


@LIKELIHOODS.register("gaussian")
def _gaussian(image_shape, config):
    return GaussianLikelihood(scale=config.gaussian_scale)


@LIKELIHOODS.register("gaussian-pixel-scale")
def _gaussian_pixel(image_shape, config):
    return PixelScaleGaussianLikelihood(image_shape, init_scale=config.gaussian_scale)


@LIKELIHOODS.register("gaussian-decoder-scale")
def _gaussian_decoder(image_shape, config):
    return DecoderScaleGaussianLikelihood()


@LIKELIHOODS.register("continuous-bernoulli")
def _continuous_bernoulli(image_shape, config):
    return ContinuousBernoulliLikelihood()
