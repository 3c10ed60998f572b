"""A VAE with L stochastic layers (Burda et al. 2015, "Importance Weighted Autoencoders", appendix):

    p(x, z_1..z_L) = p(z_L) prod_{l=1}^{L-1} p(z_l | z_{l+1}) p(x | z_1),

z_1 nearest the image. p(z_L) is N(0, I) (or any prior module); each p(z_l | z_{l+1}) is a
:class:`GaussianLayer`, a diagonal Normal whose mean and scale an MLP computes from z_{l+1}; p(x | z_1)
is the likelihood object applied to the decoder's output. Every site sits inside the data plate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import nn

from ..errors import ConfigError
from ..nets import ACTIVATIONS, NetSpec, build_decoder
from ..torch_networks import TorchNetwork
from .likelihoods import Likelihood
from .priors import StandardNormalPrior
from .vae import DATA_PLATE_DIM

# sigma = softplus(a) + MIN_LAYER_SCALE, as the amortized guides' MIN_POSTERIOR_SCALE: positive and
# bounded away from 0, so the conditional densities and their gradients stay finite.
MIN_LAYER_SCALE = 1e-4


def latent_site(level: int) -> str:
    """The sample site of the stochastic layer ``level`` (1 nearest x): ``z1``, ``z2``, ..."""
    return f"z{level}"


class GaussianLayer(nn.Module):
    """N(z_out; mu(z_in), diag sigma(z_in)^2): [Linear, activation] * len(hidden), then two linear
    heads for the mean and the scale. The scale is softplus(a) + MIN_LAYER_SCALE, as in the
    repository's guides (Burda et al. output a log-variance and take exp; softplus grows linearly
    instead of exponentially, which keeps early training stable). A plain torch module whose forward
    returns the distribution: batch shape (..., B), event shape (out_dim,)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "tanh"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
        self.in_dim, self.out_dim, self.hidden = in_dim, out_dim, tuple(hidden)
        layers: list[nn.Module] = []
        for w_in, w_out in zip((in_dim, *hidden), hidden):
            layers += [nn.Linear(w_in, w_out), ACTIVATIONS[activation]()]
        self.body = nn.Sequential(*layers)  # h(z_in)   (..., B, H)
        features = hidden[-1] if hidden else in_dim
        self.loc_head = nn.Linear(features, out_dim)
        self.scale_head = nn.Linear(features, out_dim)

    def forward(self, z_in: torch.Tensor) -> dist.TorchDistribution:
        h = self.body(z_in)  # (..., B, H)
        loc = self.loc_head(h)  # mu(z_in)      (..., B, D_out)
        scale = F.softplus(self.scale_head(h)) + MIN_LAYER_SCALE  # sigma(z_in)   (..., B, D_out)
        return dist.Normal(loc, scale).to_event(1)


def _data_plate(x: torch.Tensor | None):
    """The data plate over the images of ``x``; none for x None (the caller's plate of n samples)."""
    if x is None:
        return contextlib.nullcontext()
    return pyro.plate("data", x.shape[0], dim=DATA_PLATE_DIM)


class HierarchicalVAEModel(PyroModule):
    """p(x, z_1..z_L) = p(z_L) prod_l p(z_l | z_{l+1}) p(x | z_1), sites ``z{L}``, ..., ``z1``, ``x``.

    ``latent_dims`` are the widths (D_1, ..., D_L), z_1 nearest x; ``conditionals[l - 1]`` is
    p(z_l | z_{l+1}) for l = 1..L-1 (a :class:`GaussianLayer` from D_{l+1} to D_l); ``decoder`` maps
    z_1 (B, D_1) to the likelihood's parameter maps; ``top_prior()`` returns p(z_L), event (D_L,)
    (default N(0, I)). ``forward(x)`` scores the images x; ``forward(None)`` samples x as well, so
    under ``pyro.plate("data", n, dim=-1)`` it draws every layer and the image once per sample.
    """

    num_classes = 0  # unconditional: labels are ignored
    decoder, conditionals = TorchNetwork(), TorchNetwork()

    def __init__(
        self,
        latent_dims: Sequence[int],
        decoder: nn.Module,
        likelihood: Likelihood,
        conditionals: Sequence[GaussianLayer],
        top_prior: PyroModule | None = None,
    ):
        super().__init__()
        self.latent_dims = tuple(int(d) for d in latent_dims)
        if len(conditionals) != len(self.latent_dims) - 1:
            raise ConfigError(
                f"{len(self.latent_dims)} stochastic layers need {len(self.latent_dims) - 1} "
                f"conditionals p(z_l | z_(l+1)), got {len(conditionals)}"
            )
        for level, layer in enumerate(conditionals, start=1):
            if (layer.in_dim, layer.out_dim) != (self.latent_dims[level], self.latent_dims[level - 1]):
                raise ConfigError(
                    f"p(z{level} | z{level + 1}) must map {self.latent_dims[level]} to "
                    f"{self.latent_dims[level - 1]} units, got {layer.in_dim} -> {layer.out_dim}"
                )
        self.decoder = decoder
        self.likelihood = likelihood
        self.conditionals = nn.ModuleList(conditionals)
        self.top_prior = StandardNormalPrior(self.latent_dims[-1]) if top_prior is None else top_prior

    @property
    def latent_sites(self) -> tuple[str, ...]:
        """The latent sample sites, nearest x first: ``("z1", "z2", ...)``."""
        return tuple(latent_site(level) for level in range(1, len(self.latent_dims) + 1))

    def _top_down(self) -> dict[str, torch.Tensor]:
        """z_L ~ p(z_L), then z_l ~ p(z_l | z_{l+1}) down to z_1, in the caller's plates."""
        levels = len(self.latent_dims)
        z = pyro.sample(latent_site(levels), self.top_prior())  # z_L ~ p(z_L)              (B, D_L)
        latents = {latent_site(levels): z}
        for level in range(levels - 1, 0, -1):
            z = pyro.sample(latent_site(level), self.conditionals[level - 1](z))  # z_l ~ p(z_l | z_l+1)  (B, D_l)
            latents[latent_site(level)] = z
        return latents

    def forward(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        with _data_plate(x):
            z1 = self._top_down()[latent_site(1)]  # (B, D_1)
            x_dist = self.likelihood(self.decoder(z1))  # p(x_i | z1_i), event (C, H, W)
            return pyro.sample("x", x_dist, obs=x)  # log p(x_i | z1_i)   (B,)

    def sample_latents(self, n: int) -> dict[str, torch.Tensor]:
        """n draws of the top-down chain, every layer drawn per sample: {"z1": (n, D_1), ...}."""
        with pyro.plate("data", n, dim=DATA_PLATE_DIM):
            return self._top_down()

    def decode(self, z1: torch.Tensor, y: torch.Tensor | None = None):
        """p(x | z_1) for latents ``z1`` (B, D_1): batch shape (B,), event shape (C, H, W)."""
        return self.likelihood(self.decoder(z1))

    def mean_image(self, z1: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z_1] (..., C, H, W)."""
        return self.likelihood.mean(self.decoder(z1))


def hidden_per_gap(hidden: Sequence[int] | Sequence[Sequence[int]], levels: int) -> tuple[tuple[int, ...], ...]:
    """The deterministic widths of each gap: x <-> z_1, z_1 <-> z_2, ..., z_{L-1} <-> z_L.

    ``hidden`` is one tuple per gap (``((100, 100), (50, 50))``, Burda et al.'s two layers), or the
    widths between x and z_1 alone, halved at each gap up (``(32, 32)`` -> ``(32, 32), (16, 16)``;
    at least 1 unit): Burda et al.'s two-layer net has this ratio, 100 units below z_1 and 50 above.
    """
    hidden = tuple(hidden)
    if hidden and all(isinstance(h, (tuple, list)) for h in hidden):
        gaps = tuple(tuple(int(w) for w in h) for h in hidden)
        if len(gaps) != levels:
            raise ConfigError(
                f"{levels} stochastic layers have {levels} gaps (x <-> z1 and one per pair "
                f"of layers), but hidden gives widths for {len(gaps)}"
            )
        if not gaps[0]:
            raise ConfigError("the net between x and z1 needs at least one hidden layer")
        return gaps
    if not hidden or not all(isinstance(h, int) for h in hidden):
        raise ConfigError(f"hidden must be widths such as (100, 100) or one tuple per gap, got {hidden!r}")
    return tuple(tuple(max(1, w // 2**gap) for w in hidden) for gap in range(levels))


def build_hierarchical_model(
    image_shape: Sequence[int],
    latent_dims: Sequence[int],
    hidden: Sequence[int] | Sequence[Sequence[int]],
    likelihood: Likelihood,
    activation: str = "tanh",
    net: str = "mlp",
    top_prior: PyroModule | None = None,
) -> HierarchicalVAEModel:
    """p(x, z_1..z_L) with a ``net`` decoder from z_1 (hidden widths ``hidden_per_gap(...)[0]``)
    and a GaussianLayer p(z_l | z_{l+1}) per gap above (its hidden widths reversed, as the decoder's)."""
    latent_dims = tuple(int(d) for d in latent_dims)
    gaps = hidden_per_gap(hidden, len(latent_dims))
    spec = NetSpec(tuple(image_shape), latent_dims[0], gaps[0], activation=activation)
    decoder = build_decoder(net, spec, likelihood.params_per_pixel)
    conditionals = [
        GaussianLayer(latent_dims[level], tuple(reversed(gaps[level])), latent_dims[level - 1], activation)
        for level in range(1, len(latent_dims))
    ]
    return HierarchicalVAEModel(latent_dims, decoder, likelihood, conditionals, top_prior)
