"""Likelihoods p(x | z): turn the decoder's per-pixel parameter maps into a distribution over images.

Each likelihood is a small ``PyroModule`` chosen once, at the edge (by name from the CLI or as an
object in Python); the model never branches on a string. ``params`` has shape ``(B, P * C, H, W)``
with ``P = params_per_pixel``; the distribution has batch shape ``(B,)`` and event shape
``(C, H, W)`` (``.to_event(3)``), so ``log_prob`` is one number per image, in nats.

Data come as floats in [0, 1]; 8-bit pixels v as v / 255. Where the data are 8-bit pixels,
results are also given in bits per dimension (:meth:`Likelihood.bits_per_dim`).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.util import sum_rightmost
from pyro.nn import PyroModule, PyroParam
from torch.distributions.utils import broadcast_all

from ..errors import ConfigError
from ..registry import Registry

# Lower bound of every learned Gaussian scale. Pixel values are quantised (multiples of 1/255)
# and MNIST's background is exactly 0, so an unbounded scale can shrink to 0 and push the density
# to +infinity; 1e-2 (about 2.5 grey levels) keeps log p(x|z) finite and meaningful.
MIN_SCALE = 1e-2

IMAGE_EVENT_DIMS = 3  # (C, H, W)
PIXEL_LEVELS = 256  # values of an 8-bit pixel
CHECK_CHUNK = 256  # images checked at a time (a large or memory-mapped split is never converted whole)


class Likelihood(PyroModule):
    """Base class: ``forward(params) -> distribution`` and ``mean(params) -> images``."""

    params_per_pixel = 1
    needs_binary_data = False
    models_pixel_values = False
    # A probability mass over the pixel values (True), or a density on [0, 1] (False): a density's
    # bits per dimension are taken on the pixel scale v = 255 x, -log p(v) = -log p(x) + log 255.
    discrete = False

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x | z] as images (B, C, H, W), for pictures."""
        return self(params).mean

    def bits_per_dim(self, log_p: float, dims: int) -> float:
        """Bits per dimension of 8-bit data whose log-likelihood (or bound) is ``log_p`` nats per
        image of ``dims`` values: ``(-log_p + dims * offset) / (dims * log 2)``, offset 0 for a
        probability mass over the pixel values, log 255 for a density on [0, 1] (its value on the
        pixel scale; comparable to a discrete model's only under dequantization)."""
        offset = 0.0 if self.discrete else math.log(PIXEL_LEVELS - 1)
        return (-log_p + dims * offset) / (dims * math.log(2))

    def check_data(self, images: torch.Tensor, binarize: str) -> None:
        """Raise a ConfigError if ``images`` (after ``binarize``) cannot be scored by this likelihood.

        ``images`` are uint8 pixels or floats in [0, 1]; they are checked a chunk at a time.
        """
        if binarize != "none":
            return  # binarized pixels are 0/1, valid for every likelihood here
        eight_bit = images.dtype == torch.uint8
        top = 255 if eight_bit else 1
        lo, hi, binary, on_levels = math.inf, -math.inf, True, True
        for start in range(0, images.shape[0], CHECK_CHUNK):
            x = images[start : start + CHECK_CHUNK]
            lo, hi = min(lo, x.min().item()), max(hi, x.max().item())
            binary = binary and bool(((x == 0) | (x == top)).all())
            if self.models_pixel_values and not eight_bit and on_levels:
                v = x * (PIXEL_LEVELS - 1)
                on_levels = bool(((v - v.round()).abs() < 1e-3).all())
        if not eight_bit and (lo < 0 or hi > 1):
            raise ConfigError(f"the data has pixel values in [{lo:g}, {hi:g}], outside [0, 1]; rescale it to [0, 1]")
        if self.needs_binary_data and not binary:
            raise ConfigError(
                "the bernoulli likelihood needs binary pixels, but with --binarize none the data "
                "are intensities in [0, 1]; use --binarize dynamic (or static), or a "
                "likelihood for intensities: --likelihood continuous-bernoulli, gaussian or "
                "discretized-logistic (8-bit pixels)"
            )
        if self.models_pixel_values and not on_levels:
            raise ConfigError(
                "the discretized-logistic likelihood models the 256 values of 8-bit pixels, but these "
                "data are other floats; use --likelihood gaussian or continuous-bernoulli, or store "
                "8-bit pixels as integers 0..255"
            )


class PixelBernoulli(dist.Bernoulli):
    """Pyro's ``Bernoulli`` whose ``log_prob``, -BCE(logits, x), is negated in place: torch's own
    numbers without a second image-sized tensor. Evaluation scores (particles x images) rows at
    once, where that copy would be a fresh allocation of tens of MB per chunk."""

    def cross_entropy(self, value: torch.Tensor) -> torch.Tensor:
        """-log p(value) per pixel: torch's binary cross-entropy with logits (the value checked
        against the support when validation is on)."""
        if self._validate_args:
            self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        return F.binary_cross_entropy_with_logits(logits, value, reduction="none")

    def log_prob(self, value):
        # BCE's backward reads its inputs, not its output: negating the output in place is safe
        return self.cross_entropy(value).neg_()


class BernoulliImages(dist.Independent):
    """``PixelBernoulli(logits).to_event(d)`` whose ``log_prob`` negates each image's summed
    cross-entropy instead of every pixel's: the same numbers bit for bit (negation is exact and
    the sum runs in the same order), without a pass over every pixel of a (particles x images)
    evaluation chunk."""

    def log_prob(self, value):
        # in place, as PixelBernoulli's: a sum's backward does not read its output
        return sum_rightmost(self.base_dist.cross_entropy(value), self.reinterpreted_batch_ndims).neg_()


class BernoulliLikelihood(Likelihood):
    """x_ij ~ Bernoulli(sigmoid(logits_ij)): binary pixels."""

    needs_binary_data = True
    discrete = True

    def forward(self, params):
        return BernoulliImages(PixelBernoulli(logits=params), IMAGE_EVENT_DIMS)


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
            torch.full(tuple(image_shape), float(init_scale)), constraint=constraints.greater_than(MIN_SCALE)
        )

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


class DiscretizedLogistic(dist.TorchDistribution):
    """A logistic distribution discretized to the 256 values v / 255 of an 8-bit pixel (Salimans et
    al. 2017, PixelCNN++; Kingma et al. 2016, IAF), on the pixel scale mapped to [-1, 1]:

        P(v) = sigma((y + 1/255 - loc) / scale) - sigma((y - 1/255 - loc) / scale),  y = 2 v / 255 - 1,

    with the lowest value taking all mass below its bin and the highest all mass above, so the
    256 probabilities sum to one. ``x`` (= v / 255) and the batch of (loc, scale) broadcast.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(scale))
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
        super(DiscretizedLogistic, new).__init__(torch.Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(x)
        half_bin = 1.0 / (PIXEL_LEVELS - 1)  # half the bin width on the [-1, 1] scale
        centred = 2 * x - 1 - self.loc
        upper = (centred + half_bin) / self.scale  # a
        lower = (centred - half_bin) / self.scale  # b < a
        log_cdf_upper = -F.softplus(-upper)  # log sigma(a): the lowest value's mass
        log_sf_lower = -F.softplus(lower)  # log (1 - sigma(b)): the highest value's mass
        # sigma(a) - sigma(b) = sigma(a) (1 - sigma(b)) (1 - e^-(a - b)), stable for any a, b
        log_middle = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(-(2 * half_bin) / self.scale))
        level = torch.round(x * (PIXEL_LEVELS - 1))
        return torch.where(level <= 0, log_cdf_upper, torch.where(level >= PIXEL_LEVELS - 1, log_sf_lower, log_middle))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp_(1e-6, 1 - 1e-6)
            y = self.loc.expand(shape) + self.scale.expand(shape) * (torch.log(u) - torch.log1p(-u))
            level = torch.round((y + 1) / 2 * (PIXEL_LEVELS - 1)).clamp_(0, PIXEL_LEVELS - 1)
            return level / (PIXEL_LEVELS - 1)

    @property
    def mean(self) -> torch.Tensor:
        """The logistic's location on the [0, 1] scale, clipped (its median; for pictures)."""
        return ((self.loc + 1) / 2).clamp(0, 1)


# Lower bound of the discretized logistic's scale on the [-1, 1] pixel scale: e^-7 as PixelCNN++.
MIN_LOGISTIC_SCALE = math.exp(-7)


class DiscretizedLogisticLikelihood(Likelihood):
    """v_ij ~ DiscretizedLogistic(loc_ij, s_ij) over the 256 values of 8-bit pixels; the decoder
    outputs loc and s = softplus(b_ij) + e^-7."""

    params_per_pixel = 2
    models_pixel_values = True
    discrete = True

    def forward(self, params):
        loc, scale_raw = params.chunk(2, dim=-3)  # each (B, C, H, W)
        return DiscretizedLogistic(loc, F.softplus(scale_raw) + MIN_LOGISTIC_SCALE).to_event(IMAGE_EVENT_DIMS)


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


@LIKELIHOODS.register("discretized-logistic")
def _discretized_logistic(image_shape, config):
    return DiscretizedLogisticLikelihood()


_discretized_logistic.likelihood_class = DiscretizedLogisticLikelihood


def models_pixel_values(choice) -> bool:
    """Whether the likelihood ``choice`` (a registered name, an import path or a class) is a
    probability mass over the 256 values of 8-bit pixels: its class's ``models_pixel_values``
    (its data are not binarized: the config's default ``--binarize`` is then ``none``)."""
    factory = LIKELIHOODS.resolve(choice)
    return bool(getattr(getattr(factory, "likelihood_class", factory), "models_pixel_values", False))
