"""Priors p(z): ``PyroModule`` s whose ``forward()`` returns a distribution with event shape (D,).

The model samples ``z`` from whatever a prior returns, inside the data plate, so the ELBO and the
importance-weighted estimator work unchanged for any prior added here. Adding a prior is one
class and one registry entry.
"""

from __future__ import annotations

import torch
import pyro.distributions as dist
from pyro.nn import PyroModule

from ..registry import Registry


class StandardNormalPrior(PyroModule):
    """p(z) = N(0, I_D)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)  # batch (), event (D,)


PRIORS: Registry[PyroModule] = Registry("prior")
PRIORS.register("standard")(lambda latent_dim, config: StandardNormalPrior(latent_dim))
