"""The amortized diagonal Normal guide q(z | x) = N(z; mu(x), diag sigma(x)^2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import pyro
import pyro.distributions as dist
from pyro.nn import PyroModule
from torch import nn

from ..labels import label_input
from ..models.vae import DATA_PLATE_DIM
from ..torch_networks import TorchNetwork

# sigma = softplus(a) + MIN_POSTERIOR_SCALE: positive and bounded away from 0, so log q(z|x)
# and its gradients stay finite however confident the encoder becomes.
MIN_POSTERIOR_SCALE = 1e-4


class AmortizedDiagonalNormal(PyroModule):
    """q(z_i | x_i) = N(z_i; mu(x_i), diag sigma(x_i)^2), z drawn by reparameterization.

    ``encoder`` maps images to features (B, F) and has a ``feature_dim`` attribute; two linear
    heads give the mean and the (softplus-positive) standard deviation.
    """

    analytic_kl = True  # KL to a (diagonal) Normal prior has a closed form
    encoder, loc_head, scale_head = TorchNetwork(), TorchNetwork(), TorchNetwork()

    def log_prob_bytes(self) -> int:
        """About the memory autograd keeps per point of ``log_prob`` (a few (D,) tensors)."""
        return 8 * 4 * self.loc_head.out_features

    def __init__(self, encoder: nn.Module, latent_dim: int, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes  # > 0: q(z | x, y), the label fed to the encoder one-hot
        self.encoder = encoder
        self.loc_head = nn.Linear(encoder.feature_dim, latent_dim)
        self.scale_head = nn.Linear(encoder.feature_dim, latent_dim)

    def distribution(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.TorchDistribution:
        """q(z | x): batch shape (B,), event shape (D,)."""
        return self.distribution_from_features(self.features(x, y))

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's features h(x[, y])  (..., B, F)."""
        return self.encoder(x, label_input(y, self.num_classes))

    def distribution_from_features(self, h: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x) from the encoder's features h(x) (B, F): batch shape (B,), event shape (D,)."""
        loc = self.loc_head(h)  # mu(x)     (B, D)
        scale = F.softplus(self.scale_head(h)) + MIN_POSTERIOR_SCALE  # sigma(x)  (B, D)
        return dist.Normal(loc, scale).to_event(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0], dim=DATA_PLATE_DIM):
            return pyro.sample("z", self.distribution(x, y))  # z_i ~ q(z | x_i)  (B, D)
