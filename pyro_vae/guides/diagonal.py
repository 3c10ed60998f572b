"""The amortized diagonal Normal guide q(z | x) = N(z; mu(x), diag sigma(x)^2)."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ..torch_networks import TorchNetwork
from .base import AmortizedGuide, positive_scale


class AmortizedDiagonalNormal(AmortizedGuide):
    """q(z_i | x_i) = N(z_i; mu(x_i), diag sigma(x_i)^2), z drawn by reparameterization.

    ``encoder`` maps images to features (B, F) and has a ``feature_dim`` attribute; two linear
    heads give the mean and the (softplus-positive) standard deviation.
    """

    analytic_kl = True  # KL to a (diagonal) Normal prior has a closed form
    loc_head, scale_head = TorchNetwork(), TorchNetwork()

    def log_prob_bytes(self) -> int:
        """About the memory autograd keeps per point of ``log_prob`` (a few (D,) tensors)."""
        return 8 * 4 * self.loc_head.out_features

    def __init__(self, encoder: nn.Module, latent_dim: int, num_classes: int = 0):
        super().__init__(encoder, num_classes)
        self.loc_head = nn.Linear(encoder.feature_dim, latent_dim)
        self.scale_head = nn.Linear(encoder.feature_dim, latent_dim)

    def distribution_from_features(self, h: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x) from the encoder's features h(x) (B, F): batch shape (B,), event shape (D,)."""
        loc = self.loc_head(h)  # mu(x)     (B, D)
        scale = positive_scale(self.scale_head(h))  # sigma(x)  (B, D)
        return dist.Normal(loc, scale).to_event(1)
