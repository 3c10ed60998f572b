"""The generative side of a VAE: model, priors and likelihoods."""

from .likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    DecoderScaleGaussianLikelihood,
    GaussianLikelihood,
    Likelihood,
    PixelScaleGaussianLikelihood,
)
from .priors import PRIORS, StandardNormalPrior
from .vae import VAEModel

__all__ = [
    "LIKELIHOODS", "PRIORS", "BernoulliLikelihood", "ContinuousBernoulliLikelihood",
    "DecoderScaleGaussianLikelihood", "GaussianLikelihood", "Likelihood",
    "PixelScaleGaussianLikelihood", "StandardNormalPrior", "VAEModel",
]
