"""The generative side of a VAE: model, priors and likelihoods."""

from .conditional import CVAEModel, M2Model
from .hierarchical import GaussianLayer, HierarchicalVAEModel, build_hierarchical_model
from .likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    DecoderScaleGaussianLikelihood,
    GaussianLikelihood,
    Likelihood,
    PixelScaleGaussianLikelihood,
)
from .priors import PRIORS, LabelledGaussianPrior, StandardNormalPrior
from .vae import VAEModel

__all__ = [
    "LIKELIHOODS",
    "PRIORS",
    "CVAEModel",
    "GaussianLayer",
    "HierarchicalVAEModel",
    "build_hierarchical_model",
    "LabelledGaussianPrior",
    "M2Model",
    "BernoulliLikelihood",
    "ContinuousBernoulliLikelihood",
    "DecoderScaleGaussianLikelihood",
    "GaussianLikelihood",
    "Likelihood",
    "PixelScaleGaussianLikelihood",
    "StandardNormalPrior",
    "VAEModel",
]
