"""The VAE's generative model when some pixels are missing: p(x_obs, z) = p(z) p(x_obs | z).

A mask m (1 observed, 0 missing, the image's shape (C, H, W)) comes with every image. Each image's
likelihood factorises over its values, so the missing values are integrated out by leaving their
factors out:

    log p(x_obs | z) = sum_j m_j log p(x_j | z)

:func:`observed_values` masks the per-value distribution (Pyro's ``MaskedDistribution``, the
``poutine.mask`` of one site's values): a missing value contributes exactly 0 to the log-density
and to its gradients, whatever the stored value is (the images are zero-filled as well).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from ..errors import ConfigError
from .vae import DATA_PLATE_DIM, VAEModel


def observed_values(x_dist: dist.TorchDistribution, mask: torch.Tensor) -> dist.TorchDistribution:
    """p(x | z) restricted to the observed values: ``x_dist`` is a distribution over images (event
    shape (C, H, W)) made of independent per-value distributions (``Independent``, as every
    built-in likelihood is); ``mask`` (B, C, H, W) bool. Its ``log_prob`` sums the observed values only."""
    if not isinstance(x_dist, dist.Independent):
        raise ConfigError(
            f"missing pixels need a likelihood whose image distribution is one distribution per value "
            f"made independent (.to_event(3)); this one is {type(x_dist).__name__}"
        )
    per_value = x_dist.base_dist  # batch shape (..., B, C, H, W)
    return per_value.mask(mask).to_event(x_dist.reinterpreted_batch_ndims)


class MaskedVAEModel(VAEModel):
    """p(x_obs, z) = prod_i p(z_i) prod_{j: m_ij = 1} p(x_ij | z_i): the VAE of :class:`VAEModel`
    (same prior, decoder and likelihood, same parameters) scored on the observed values of each
    image. Called as ``model(x, mask)``; without a mask every value is observed, as in :class:`VAEModel`."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:
            return super().forward(x)
        mask = mask.bool()
        with pyro.plate("data", x.shape[0], dim=DATA_PLATE_DIM):
            z = pyro.sample("z", self.prior())  # z_i ~ p(z)                            (B, D)
            x_dist = observed_values(self.likelihood(self.decoder(z)), mask)  # p(x_obs,i | z_i)
            return pyro.sample("x", x_dist, obs=x * mask)  # sum_j m_ij log p(x_ij | z_i)  (B,)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None):
        """p(x | z) of every value (batch shape (B,), event shape (C, H, W)); ``y`` is unused."""
        return super().decode(z)

    def prior_distribution(self, y: torch.Tensor | None = None):
        return super().prior_distribution()

    def mean_image(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return super().mean_image(z)
