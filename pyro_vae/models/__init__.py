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
from .conditional import CVAEModel, M2Model
from .priors import PRIORS, LabelledGaussianPrior, StandardNormalPrior
from .vae import VAEModel

__all__ = [
    "LIKELIHOODS", "PRIORS", "CVAEModel", "LabelledGaussianPrior", "M2Model", "BernoulliLikelihood", "ContinuousBernoulliLikelihood",
    "DecoderScaleGaussianLikelihood", "GaussianLikelihood", "Likelihood",
    "PixelScaleGaussianLikelihood", "StandardNormalPrior", "VAEModel",
]
