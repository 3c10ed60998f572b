"""Label-aware generative models: the conditional VAE and the semi-supervised M2 model.

CVAE (Sohn et al. 2015; Kingma et al. 2014's conditional generator), the label observed:
    p(x, z | y) = p(z | y) p(x | z, y)
M2 (Kingma, Rezende, Mohamed & Welling 2014), the label a latent variable:
    p(x, y, z) = p(y) p(z) p(x | z, y),   p(y) = Categorical(1/C)
observed (``obs=y``) for labelled images; for unlabelled ones the guide's q(y | x) is enumerated
by ``TraceEnum_ELBO``, so the ELBO sums over the C labels exactly.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..errors import ConfigError
from ..labels import one_hot
from ..torch_networks import TorchNetwork
from .likelihoods import Likelihood
from .vae import DATA_PLATE_DIM


class _LabelledDecoding(PyroModule):
    """Shared by both models: a prior, a decoder that takes z and the one-hot label, a likelihood."""

    decoder = TorchNetwork()

    def __init__(self, prior: PyroModule, decoder: nn.Module, likelihood: Likelihood, num_classes: int):
        super().__init__()
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        self.num_classes = num_classes

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> dist.TorchDistribution:
        """p(x | z, y): batch shape z.shape[:-1], event shape (C, H, W)."""
        return self.likelihood(self.decoder(z, one_hot(y, self.num_classes)))

    def mean_image(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """E[x | z, y] (..., C, H, W)."""
        return self.likelihood.mean(self.decoder(z, one_hot(y, self.num_classes)))


class CVAEModel(_LabelledDecoding):
    """p(x, z | y) = prod_i p(z_i | y_i) p(x_i | z_i, y_i), the labels given (not sampled)."""

    def prior_distribution(self, y: torch.Tensor) -> dist.TorchDistribution:
        """p(z | y): the per-label prior, or a label-free one (standard Normal) used for every y."""
        return self.prior(y) if getattr(self.prior, "label_conditional", False) else self.prior()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise ConfigError("the conditional VAE (--model cvae) models p(x | y): pass the labels y with the images")
        with pyro.plate("data", x.shape[0], dim=DATA_PLATE_DIM):
            z = pyro.sample("z", self.prior_distribution(y))  # z_i ~ p(z | y_i)         (B, D)
            return pyro.sample("x", self.decode(z, y), obs=x)  # log p(x_i | z_i, y_i)   (B,)


class M2Model(_LabelledDecoding):
    """p(x, y, z) = prod_i p(y_i) p(z_i) p(x_i | z_i, y_i), y observed when given, else latent."""

    def __init__(self, prior: PyroModule, decoder: nn.Module, likelihood: Likelihood, num_classes: int):
        super().__init__(prior, decoder, likelihood, num_classes)
        self.register_buffer("label_logits", torch.zeros(num_classes))  # p(y) = 1/C each

    def prior_distribution(self, y: torch.Tensor | None = None) -> dist.TorchDistribution:
        """p(z), the same for every label."""
        return self.prior()

    def label_prior(self) -> dist.TorchDistribution:
        return dist.Categorical(logits=self.label_logits)  # p(y) = Categorical(1/C), batch ()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0], dim=DATA_PLATE_DIM):
            y = pyro.sample("y", self.label_prior(), obs=y)  # log p(y_i) if observed, else latent
            z = pyro.sample("z", self.prior())  # z_i ~ p(z)                                (B, D)
            return pyro.sample("x", self.decode(z, y), obs=x)  # log p(x_i | z_i, y_i)  ([C,] B)
