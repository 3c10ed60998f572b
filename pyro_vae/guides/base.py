"""What the amortized guides share: q(z | x) = q(z; phi(h(x))), one encoder h for every image.

A guide holds an ``encoder`` (images, and the one-hot label for q(z | x, y), to features (B, F))
and builds its distribution from the features in :meth:`AmortizedGuide.distribution_from_features`;
``forward`` draws z inside the data plate. The VampPrior reuses a guide's encoder and heads
through ``features`` and ``distribution_from_features``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

from ..labels import label_input
from ..models.vae import DATA_PLATE_DIM
from ..torch_networks import TorchNetwork

# sigma = softplus(a) + MIN_POSTERIOR_SCALE: positive and bounded away from 0, so log q(z|x)
# and its gradients stay finite however confident the encoder becomes.
MIN_POSTERIOR_SCALE = 1e-4


def positive_scale(raw: torch.Tensor) -> torch.Tensor:
    """A standard deviation from a head's unconstrained output: softplus(a) + MIN_POSTERIOR_SCALE."""
    return F.softplus(raw) + MIN_POSTERIOR_SCALE


class AmortizedGuide(PyroModule):
    """Base class of the amortized guides q(z | x) (q(z | x, y) when ``num_classes`` > 0).

    Subclasses add their heads after calling ``__init__`` and define
    :meth:`distribution_from_features` (batch shape (B,), event shape (D,)) and
    ``log_prob_bytes`` (the memory autograd keeps per point of ``log_prob``).
    """

    analytic_kl = False  # whether KL(q || a diagonal Normal prior) has a closed form
    encoder = TorchNetwork()

    def __init__(self, encoder: nn.Module, num_classes: int = 0):
        super().__init__()
        self.num_classes = num_classes  # > 0: q(z | x, y), the label fed to the encoder one-hot
        self.encoder = encoder

    def features(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's features h(x[, y])  (..., B, F)."""
        return self.encoder(x, label_input(y, self.num_classes))

    def distribution(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.TorchDistribution:
        """q(z | x): batch shape (B,), event shape (D,)."""
        return self.distribution_from_features(self.features(x, y))

    def distribution_from_features(self, h: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x) from the encoder's features h(x) (B, F)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0], dim=DATA_PLATE_DIM):
            return pyro.sample("z", self.distribution(x, y))  # z_i ~ q(z | x_i)  (B, D)
