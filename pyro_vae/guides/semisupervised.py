"""The guide of the semi-supervised M2 model: q(y, z | x) = q(y | x) q(z | x, y).

q(y | x) is a classifier (an encoder and a linear head giving C logits); q(z | x, y) is any
label-conditioned guide of this package (diagonal Normal, low-rank, IAF). For an unlabelled
image the site ``y`` is sampled from the classifier, which ``TraceEnum_ELBO`` (with
``config_enumerate``) replaces by all C values at once, weighting each by q(y | x); a labelled
image skips ``y`` and conditions q(z | x, y) on its label.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..models.vae import DATA_PLATE_DIM
from ..torch_networks import TorchNetwork


class LabelClassifier(nn.Module):
    """x (B, C, H, W) -> logits of q(y | x) (B, num_classes): a plain torch network."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class M2Guide(PyroModule):
    """q(y_i, z_i | x_i) = q(y_i | x_i) q(z_i | x_i, y_i); y_i skipped where it is observed."""

    analytic_kl = False  # the label's KL is a sum, handled by enumeration
    classifier = TorchNetwork()

    def __init__(self, classifier: LabelClassifier, z_guide: PyroModule, num_classes: int):
        super().__init__()
        self.classifier = classifier
        self.z_guide = z_guide
        self.num_classes = num_classes

    def label_distribution(self, x: torch.Tensor) -> dist.TorchDistribution:
        """q(y | x): batch shape (B,), support 0..C-1."""
        return dist.Categorical(logits=self.classifier(x))

    def distribution(self, x: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        """q(z | x, y): batch shape broadcast(y.shape, (B,)), event shape (D,)."""
        return self.z_guide.distribution(x, y)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0], dim=DATA_PLATE_DIM):
            if y is None:
                y = pyro.sample("y", self.label_distribution(x))  # y_i ~ q(y | x_i)   (B,) or (C, 1)
            return pyro.sample("z", self.distribution(x, y))  # z_i ~ q(z | x_i, y_i)
