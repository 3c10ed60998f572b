"""A user's own model pieces, defined outside pyro_vae (docs/extending.md shows this module):
a Laplace prior, a full-covariance Normal guide, a likelihood and a pair of networks.

Nothing here is registered: the tests use them by import path
(``--prior extensions_example:LaplacePrior`` with this folder on PYTHONPATH), as classes from
Python, and under a registered name.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from torch import nn

from pyro_vae.models.likelihoods import Likelihood
from pyro_vae.torch_networks import TorchNetwork


class LaplacePrior(PyroModule):
    """p(z) = prod_d Laplace(z_d; 0, b_d), the scales b learned (start: variance 1)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.scale = PyroParam(torch.full((latent_dim,), 1 / math.sqrt(2)), constraint=constraints.positive)

    def forward(self) -> dist.TorchDistribution:
        return dist.Laplace(self.loc, self.scale).to_event(1)  # batch (), event (D,)


class FullCovarianceGuide(PyroModule):
    """q(z | x) = N(mu(x), L(x) L(x)^T), L lower triangular with a positive diagonal."""

    encoder, loc_head, tril_head = TorchNetwork(), TorchNetwork(), TorchNetwork()  # plain torch nets

    def __init__(self, encoder: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder = encoder  # a fresh encoder of --net, with its feature_dim
        self.latent_dim = latent_dim
        self.loc_head = nn.Linear(encoder.feature_dim, latent_dim)
        self.tril_head = nn.Linear(encoder.feature_dim, latent_dim * (latent_dim + 1) // 2)
        self.register_buffer("rows", torch.tril_indices(latent_dim, latent_dim)[0], persistent=False)
        self.register_buffer("cols", torch.tril_indices(latent_dim, latent_dim)[1], persistent=False)

    def distribution(self, x: torch.Tensor, y=None) -> dist.TorchDistribution:
        h = self.encoder(x)  # (B, F)
        loc = self.loc_head(h)  # (B, D)
        entries = self.tril_head(h)  # (B, D(D+1)/2)
        tril = loc.new_zeros(*loc.shape, self.latent_dim)  # (B, D, D)
        tril[..., self.rows, self.cols] = entries
        diagonal = F.softplus(tril.diagonal(dim1=-2, dim2=-1)) + 1e-4  # positive   (B, D)
        tril = tril.tril(-1) + torch.diag_embed(diagonal)
        return dist.MultivariateNormal(loc, scale_tril=tril)  # batch (B,), event (D,)

    def forward(self, x: torch.Tensor, y=None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("z", self.distribution(x))  # z_i ~ q(z | x_i)   (B, D)


class StudentTPrior(PyroModule):
    """p(z) = prod_d StudentT(z_d; nu=3): no closed-form KL from a Normal guide."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.StudentT(3.0, self.loc, torch.ones_like(self.loc)).to_event(1)


class GlobalScaleGaussian(Likelihood):
    """x_ij ~ N(sigmoid(a_ij), s^2) with one learned scale s >= 0.01 for every pixel (intensities)."""

    def __init__(self):
        super().__init__()
        self.scale = PyroParam(torch.tensor(0.1), constraint=constraints.greater_than(0.01))

    def forward(self, params: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(torch.sigmoid(params), self.scale).to_event(3)  # event (C, H, W)


class TinyEncoder(nn.Module):
    """x (B, C, H, W) -> features (B, 16): one hidden layer of 16 units."""

    def __init__(self, image_shape: tuple[int, ...], cond_dim: int = 0):
        super().__init__()
        self.feature_dim = 16
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(image_shape), 16), nn.ReLU())

    def forward(self, x: torch.Tensor, cond=None) -> torch.Tensor:
        return self.net(x)


class TinyDecoder(nn.Module):
    """z (..., D) -> parameter maps (..., P * C, H, W) through 16 hidden units."""

    def __init__(self, image_shape: tuple[int, ...], latent_dim: int, params_per_pixel: int):
        super().__init__()
        c, h, w = image_shape
        self.out_shape = (params_per_pixel * c, h, w)
        self.net = nn.Sequential(nn.Linear(latent_dim, 16), nn.ReLU(), nn.Linear(16, math.prod(self.out_shape)))

    def forward(self, z: torch.Tensor, cond=None) -> torch.Tensor:
        return self.net(z).unflatten(-1, self.out_shape)


class TinyNets:
    """A network choice: --net extensions_example:TinyNets (an encoder and a decoder)."""

    encoder = TinyEncoder
    decoder = TinyDecoder
