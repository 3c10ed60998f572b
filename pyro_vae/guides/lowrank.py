"""The amortized low-rank multivariate Normal guide q(z | x) = N(mu(x), W(x) W(x)^T + diag d(x))."""

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
from .diagonal import MIN_POSTERIOR_SCALE


class AmortizedLowRankNormal(PyroModule):
    """q(z_i | x_i) = N(mu(x_i), W(x_i) W(x_i)^T + diag d(x_i)), W of shape (D, rank): a
    posterior with correlations between latent dimensions, still reparameterizable."""

    analytic_kl = False  # torch has no closed-form KL from it to a diagonal Normal
    encoder, loc_head, diag_head, factor_head = TorchNetwork(), TorchNetwork(), TorchNetwork(), TorchNetwork()

    def __init__(self, encoder: nn.Module, latent_dim: int, rank: int, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes  # > 0: q(z | x, y), the label fed to the encoder one-hot
        self.encoder = encoder
        self.latent_dim, self.rank = latent_dim, rank
        self.loc_head = nn.Linear(encoder.feature_dim, latent_dim)
        self.diag_head = nn.Linear(encoder.feature_dim, latent_dim)
        self.factor_head = nn.Linear(encoder.feature_dim, latent_dim * rank)

    def distribution(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.TorchDistribution:
        return self.distribution_from_features(self.features(x, y))

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's features h(x[, y])  (..., B, F)."""
        return self.encoder(x, label_input(y, self.num_classes))

    def log_prob_bytes(self) -> int:
        """About the memory autograd keeps per point of ``log_prob`` (D x rank solves)."""
        return 8 * 4 * self.latent_dim * (self.rank + 2)

    def distribution_from_features(self, h: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x) from the encoder's features h(x) (B, F): batch (B,), event (D,)."""
        loc = self.loc_head(h)  # (B, D)
        cov_diag = (F.softplus(self.diag_head(h)) + MIN_POSTERIOR_SCALE) ** 2  # d(x)  (B, D)
        cov_factor = self.factor_head(h).unflatten(-1, (self.latent_dim, self.rank))  # W(x)  (B, D, R)
        return dist.LowRankMultivariateNormal(loc, cov_factor, cov_diag)  # event (D,)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0], dim=DATA_PLATE_DIM):
            return pyro.sample("z", self.distribution(x, y))
