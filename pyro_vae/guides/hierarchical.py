"""The bottom-up guide of a VAE with L stochastic layers, and the builders of model and guide:

    q(z_1..z_L | x) = q(z_1 | x) prod_{l=1}^{L-1} q(z_{l+1} | z_l).

q(z_1 | x) is any amortized guide object with ``distribution(x, y)`` (diagonal, low-rank, IAF);
each q(z_{l+1} | z_l) is a :class:`~pyro_vae.models.hierarchical.GaussianLayer`. The builders live
here, not beside the model, because they make both sides and guides import models, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..errors import ConfigError
from ..models.hierarchical import (
    GaussianLayer,
    HierarchicalVAEModel,
    build_hierarchical_model,
    hidden_per_gap,
    latent_site,
)
from ..models.likelihoods import BernoulliLikelihood, Likelihood
from ..models.vae import DATA_PLATE_DIM
from ..nets import NetSpec, build_encoder, initialize_linear_layers
from ..torch_networks import TorchNetwork
from .diagonal import AmortizedDiagonalNormal

# Burda et al. (2015), appendix: stochastic layers of 100 and 50 units; two tanh layers of 100 units
# between x and z1 (encoder and decoder), two of 50 between z1 and z2 (both directions); Glorot init.
BURDA_LATENT_DIMS = (100, 50)
BURDA_HIDDEN = ((100, 100), (50, 50))


def distribution_mean(q: dist.TorchDistribution) -> torch.Tensor:
    """E[z] where torch knows it; for a flow (no closed-form mean) its base distribution's mean
    pushed through the transforms, a point of high density rather than the mean."""
    try:
        return q.mean
    except NotImplementedError:
        if not isinstance(q, torch.distributions.TransformedDistribution):
            raise
        z = q.base_dist.mean
        for transform in q.transforms:
            z = transform(z)
        return z


class HierarchicalGuide(PyroModule):
    """q(z_1 | x) prod_l q(z_{l+1} | z_l), sites ``z1``, ``z2``, ... inside the data plate, drawn
    bottom-up by reparameterization.

    ``bottom`` is q(z_1 | x): an amortized guide with ``distribution(x, y)`` (batch (B,), event
    (D_1,)); ``upward[l - 1]`` is q(z_{l+1} | z_l), a :class:`GaussianLayer` from D_l to D_{l+1}.
    """

    analytic_kl = False  # q(z_2 | z_1) depends on z_1: no closed-form KL per site
    upward = TorchNetwork()

    def __init__(self, bottom: PyroModule, upward: Sequence[GaussianLayer]):
        super().__init__()
        for level, (below, above) in enumerate(zip(upward[:-1], upward[1:]), start=2):
            if below.out_dim != above.in_dim:
                raise ConfigError(
                    f"q(z{level} | z{level - 1}) gives {below.out_dim} units but "
                    f"q(z{level + 1} | z{level}) reads {above.in_dim}"
                )
        self.bottom = bottom
        self.upward = nn.ModuleList(upward)
        self.num_classes = getattr(bottom, "num_classes", 0)

    @property
    def latent_sites(self) -> tuple[str, ...]:
        """The latent sample sites, nearest x first: ``("z1", "z2", ...)``."""
        return tuple(latent_site(level) for level in range(1, len(self.upward) + 2))

    def distribution(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.TorchDistribution:
        """q(z_1 | x): batch shape (B,), event shape (D_1,) (for encode and reconstruct)."""
        return self.bottom.distribution(x, y)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Samples every layer; returns z_1 (B, D_1), the latent the decoder reads."""
        with pyro.plate("data", x.shape[0], dim=DATA_PLATE_DIM):
            z1 = pyro.sample(latent_site(1), self.distribution(x, y))  # z1_i ~ q(z1 | x_i)   (B, D_1)
            z = z1
            for level, layer in enumerate(self.upward, start=2):
                z = pyro.sample(latent_site(level), layer(z))  # z_l ~ q(z_l | z_(l-1))   (B, D_l)
            return z1

    def posterior_means(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"z1": m_1, "z2": m_2, ...}: m_1 = E_q[z_1 | x], then m_{l+1} = E_q[z_{l+1} | z_l = m_l],
        the means propagated layer by layer (not the marginal means E_q[z_{l+1} | x])."""
        m = distribution_mean(self.distribution(x, y))  # (B, D_1)
        means = {latent_site(1): m}
        for level, layer in enumerate(self.upward, start=2):
            m = layer(m).mean  # (B, D_l)
            means[latent_site(level)] = m
        return means


def diagonal_bottom(encoder: nn.Module, latent_dim: int) -> PyroModule:
    """q(z_1 | x) = N(mu(x), diag sigma(x)^2) on the encoder's features (the default)."""
    return AmortizedDiagonalNormal(encoder, latent_dim)


def build_hierarchical_guide(
    image_shape: Sequence[int],
    latent_dims: Sequence[int],
    hidden: Sequence[int] | Sequence[Sequence[int]],
    activation: str = "tanh",
    net: str = "mlp",
    bottom: Callable[[nn.Module, int], PyroModule] = diagonal_bottom,
) -> HierarchicalGuide:
    """q(z_1..z_L | x): ``bottom(encoder, D_1)`` on a ``net`` encoder of widths
    ``hidden_per_gap(...)[0]``, then a GaussianLayer q(z_{l+1} | z_l) per gap above."""
    latent_dims = tuple(int(d) for d in latent_dims)
    gaps = hidden_per_gap(hidden, len(latent_dims))
    encoder = build_encoder(net, NetSpec(tuple(image_shape), latent_dims[0], gaps[0], activation=activation))
    upward = [
        GaussianLayer(latent_dims[level - 1], gaps[level], latent_dims[level], activation)
        for level in range(1, len(latent_dims))
    ]
    return HierarchicalGuide(bottom(encoder, latent_dims[0]), upward)


def build_hierarchical_vae(
    image_shape: Sequence[int],
    latent_dims: Sequence[int],
    hidden: Sequence[int] | Sequence[Sequence[int]],
    likelihood: Likelihood,
    activation: str = "tanh",
    net: str = "mlp",
    bottom: Callable[[nn.Module, int], PyroModule] = diagonal_bottom,
    top_prior: PyroModule | None = None,
    init: str = "torch",
) -> tuple[HierarchicalVAEModel, HierarchicalGuide]:
    """The model p(x, z_1..z_L) and guide q(z_1..z_L | x) for images ``image_shape`` (C, H, W).

    ``latent_dims`` (D_1, ..., D_L), z_1 nearest x; ``hidden`` one tuple of widths per gap or the
    widths between x and z_1, halved at each gap up (:func:`hidden_per_gap`): latent dims (16, 8)
    with hidden (32, 32) give x -32-32- z1 -16-16- z2 in both directions. ``init`` re-initializes
    every linear layer (``glorot`` as Burda et al., ``he``, or ``torch`` to keep PyTorch's default).
    """
    if len(tuple(latent_dims)) < 1 or any(int(d) < 1 for d in latent_dims):
        raise ConfigError(f"latent_dims must be one or more positive widths such as (100, 50), got {latent_dims!r}")
    model = build_hierarchical_model(image_shape, latent_dims, hidden, likelihood, activation, net, top_prior)
    guide = build_hierarchical_guide(image_shape, latent_dims, hidden, activation, net, bottom)
    initialize_linear_layers(model, init)
    initialize_linear_layers(guide, init)
    return model, guide


def build_burda_two_layer(
    image_shape: Sequence[int],
    likelihood: Likelihood | None = None,
    bottom: Callable[[nn.Module, int], PyroModule] = diagonal_bottom,
    init: str = "glorot",
) -> tuple[HierarchicalVAEModel, HierarchicalGuide]:
    """Burda et al.'s two-stochastic-layer VAE: z1 of 100 and z2 of 50 units, tanh layers
    x -100-100- z1 -50-50- z2 in the guide and the reverse in the model, Bernoulli pixels by default,
    Glorot initialization. The scales are softplus(a) + 1e-4 (the paper: exp of a log-variance)."""
    likelihood = BernoulliLikelihood() if likelihood is None else likelihood
    return build_hierarchical_vae(
        image_shape, BURDA_LATENT_DIMS, BURDA_HIDDEN, likelihood, activation="tanh", bottom=bottom, init=init
    )
