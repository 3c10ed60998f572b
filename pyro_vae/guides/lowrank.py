"""The amortized low-rank multivariate Normal guide q(z | x) = N(mu(x), W(x) W(x)^T + diag d(x))."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ..torch_networks import TorchNetwork
from .base import AmortizedGuide, positive_scale


class AmortizedLowRankNormal(AmortizedGuide):
    """q(z_i | x_i) = N(mu(x_i), W(x_i) W(x_i)^T + diag d(x_i)), W of shape (D, rank): a
    posterior with correlations between latent dimensions, still reparameterizable."""

    analytic_kl = False  # torch has no closed-form KL from it to a diagonal Normal
    loc_head, diag_head, factor_head = TorchNetwork(), TorchNetwork(), TorchNetwork()

    def __init__(self, encoder: nn.Module, latent_dim: int, rank: int, num_classes: int = 0):
        super().__init__(encoder, num_classes)
        self.latent_dim, self.rank = latent_dim, rank
        self.loc_head = nn.Linear(encoder.feature_dim, latent_dim)
        self.diag_head = nn.Linear(encoder.feature_dim, latent_dim)
        self.factor_head = nn.Linear(encoder.feature_dim, latent_dim * rank)

    def log_prob_bytes(self) -> int:
        """About the memory autograd keeps per point of ``log_prob`` (D x rank solves)."""
        return 8 * 4 * self.latent_dim * (self.rank + 2)

    def distribution_from_features(self, h: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x) from the encoder's features h(x) (B, F): batch (B,), event (D,)."""
        loc = self.loc_head(h)  # (B, D)
        cov_diag = positive_scale(self.diag_head(h)) ** 2  # d(x)  (B, D)
        cov_factor = self.factor_head(h).unflatten(-1, (self.latent_dim, self.rank))  # W(x)  (B, D, R)
        return dist.LowRankMultivariateNormal(loc, cov_factor, cov_diag)  # event (D,)
