"""The amortized low-rank multivariate Normal guide q(z | x) = N(mu(x), W(x) W(x)^T + diag d(x))."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ..models.priors import diagonal_normal_log_densities
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
        """About the memory autograd keeps per (z, pseudo-input) pair of :meth:`pair_log_prob`
        (a few float64 (rank,) rows and the (n, c) matrices)."""
        return 8 * 4 * (self.rank + 4)

    def pair_log_prob(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """log q(z_n | h_k) for every pair: z (n, D) against the features h (c, F) -> (n, c).

        With Sigma_k = W_k W_k^T + diag d_k and L_k the Cholesky factor of I + W_k^T diag(d_k)^-1
        W_k (Woodbury), once per pseudo-input:
        (z - m)^T Sigma^-1 (z - m) = (z - m)^T diag(d)^-1 (z - m) - |A (z - m)|^2 with
        A = L^-1 W^T diag(d)^-1, and log det Sigma = sum log d + 2 sum log diag L. The first term is
        the diagonal Normal's (N, K) matrix (:func:`diagonal_normal_log_densities`), the second two
        matrix products, so no (n, c, D) tensor is formed. Equal to
        ``distribution_from_features(h).log_prob(z[:, None])`` in value and gradient."""
        q = self.distribution_from_features(h)  # batch (c,), event (D,)
        wide = torch.float32 if z.device.type == "mps" else torch.float64
        loc, factor, diag = q.loc, q.cov_factor, q.cov_diag  # (c, D), (c, D, R), (c, D)
        diagonal = diagonal_normal_log_densities(z, loc, diag.sqrt()).to(wide)  # (n, c)
        scaled = (factor / diag.unsqueeze(-1)).mT.to(wide)  # W^T diag(d)^-1   (c, R, D)
        capacitance = scaled @ factor.to(wide) + torch.eye(self.rank, dtype=wide, device=z.device)
        tril = torch.linalg.cholesky(capacitance)  # L_k   (c, R, R)
        whitened = torch.linalg.solve_triangular(tril, scaled, upper=False)  # A_k   (c, R, D)
        projected = torch.einsum("nd,crd->ncr", z.to(wide), whitened)  # A_k z   (n, c, R)
        centre = (whitened @ loc.to(wide).unsqueeze(-1)).squeeze(-1)  # A_k m_k   (c, R)
        correction = 0.5 * (projected - centre).square().sum(-1)  # 0.5 |A (z - m)|^2   (n, c)
        log_det = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # 0.5 log det(I + W^T D^-1 W)   (c,)
        return (diagonal + correction - log_det).to(z.dtype)

    def distribution_from_features(self, h: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x) from the encoder's features h(x) (B, F): batch (B,), event (D,)."""
        loc = self.loc_head(h)  # (B, D)
        cov_diag = positive_scale(self.diag_head(h)) ** 2  # d(x)  (B, D)
        cov_factor = self.factor_head(h).unflatten(-1, (self.latent_dim, self.rank))  # W(x)  (B, D, R)
        return dist.LowRankMultivariateNormal(loc, cov_factor, cov_diag)  # event (D,)
