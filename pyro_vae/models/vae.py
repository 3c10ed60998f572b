"""The generative model of a VAE as a Pyro program: p(x, z) = p(z) p(x | z)."""

from __future__ import annotations

import pyro
import torch
from pyro.nn import PyroModule
from torch import nn

from ..torch_networks import TorchNetwork
from .likelihoods import Likelihood

DATA_PLATE_DIM = -1  # the only plate: images are independent given the parameters


class VAEModel(PyroModule):
    """p(x, z) = prod_i p(z_i) p(x_i | z_i)  with p(x_i | z_i) = likelihood(decoder(z_i)).

    ``prior()`` returns p(z) (event shape (D,)); ``decoder`` is a plain torch network;
    ``likelihood`` maps the decoder's output to a distribution over images (event shape (C, H, W)).
    """

    num_classes = 0  # unconditional: labels are ignored
    decoder = TorchNetwork()

    def __init__(self, prior: PyroModule, decoder: nn.Module, likelihood: Likelihood):
        super().__init__()
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0], dim=DATA_PLATE_DIM):
            z = pyro.sample("z", self.prior())  # z_i ~ p(z)                      (B, D)
            x_dist = self.likelihood(self.decoder(z))  # p(x_i | z_i), event (C, H, W)
            return pyro.sample("x", x_dist, obs=x)  # log p(x_i | z_i)            (B,)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None):
        """p(x | z) for latents ``z`` of shape (B, D): batch shape (B,), event shape (C, H, W)."""
        return self.likelihood(self.decoder(z))

    def prior_distribution(self, y: torch.Tensor | None = None):
        """p(z)."""
        return self.prior()

    def mean_image(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z] (..., C, H, W)."""
        return self.likelihood.mean(self.decoder(z))
