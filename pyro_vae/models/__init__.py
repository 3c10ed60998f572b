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
from .conditional import CVAEModel, LabelledGaussianPrior, M2Model
from .hierarchical import GaussianLayer, HierarchicalVAEModel, build_hierarchical_model
from .priors import PRIORS, StandardNormalPrior
from .vae import VAEModel

__all__ = [
    "LIKELIHOODS", "PRIORS", "CVAEModel", "GaussianLayer", "HierarchicalVAEModel", "build_hierarchical_model", "LabelledGaussianPrior", "M2Model", "BernoulliLikelihood", "ContinuousBernoulliLikelihood",
    "DecoderScaleGaussianLikelihood", "GaussianLikelihood", "Likelihood",
    "PixelScaleGaussianLikelihood", "StandardNormalPrior", "VAEModel",
]
