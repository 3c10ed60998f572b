"""Priors p(z): ``PyroModule`` s whose ``forward()`` returns a distribution with event shape (D,).

The model samples ``z`` from whatever a prior returns, inside the data plate, so the ELBO and the
importance-weighted estimator work unchanged for any prior added here. Adding a prior is one
class and one registry entry; a factory (or a user's class, :mod:`pyro_vae.registry`) asks for any of
``latent_dim``, ``image_shape``, ``components``, ``spec``, ``config``, ``guide`` by parameter name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import pyro.distributions as dist
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam

from ..registry import Registry


class StandardNormalPrior(PyroModule):
    """p(z) = N(0, I_D)."""

    analytic_kl = True  # KL(diagonal Normal || this) has a closed form

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)  # batch (), event (D,)


class LearnedGaussianPrior(PyroModule):
    """p(z) = N(m, diag s^2) with m and s learned (initialised at N(0, I))."""

    analytic_kl = True

    def __init__(self, latent_dim: int):
        super().__init__()
        self.loc = PyroParam(torch.zeros(latent_dim))
        self.scale = PyroParam(torch.ones(latent_dim), constraint=constraints.positive)

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class MixtureOfGaussiansPrior(PyroModule):
    """p(z) = sum_k pi_k N(z; m_k, diag s_k^2), K learned components (means start N(0, I)-spread)."""

    analytic_kl = False

    def __init__(self, latent_dim: int, components: int):
        super().__init__()
        self.logits = PyroParam(torch.zeros(components))
        self.locs = PyroParam(torch.randn(components, latent_dim))
        self.scales = PyroParam(torch.ones(components, latent_dim), constraint=constraints.positive)

    def forward(self) -> dist.TorchDistribution:
        mixing = dist.Categorical(logits=self.logits)  # pi         batch ()
        components = dist.Normal(self.locs, self.scales).to_event(1)  # batch (K,), event (D,)
        return dist.MixtureSameFamily(mixing, components)  # batch (), event (D,)


# Tomczak & Welling's initialisation of the pseudo-inputs: u = hardtanh(w), w ~ N(0.05, 0.01^2)
# (their code's defaults, pseudoinputs_mean / pseudoinputs_std).
VAMP_INIT_MEAN = 0.05
VAMP_INIT_STD = 0.01


class _BroadcastMixture(dist.MixtureSameFamily):
    """A MixtureSameFamily that hands its components z expanded to (..., K, D) rather than
    (..., 1, D): components conditioned on K inputs (flow guides, whose transforms take the K
    pseudo-inputs' features as context) need every dimension spelled out."""

    def _pad(self, x):
        x = x.unsqueeze(-1 - self._event_ndims)  # (..., 1, D)
        lead = x.shape[: x.dim() - 1 - self._event_ndims]
        return x.expand(*lead, self._num_component, *x.shape[x.dim() - self._event_ndims:])  # (..., K, D)


class VampPrior(PyroModule):
    """p(z) = (1/K) sum_k q(z | u_k): the guide's posterior averaged over K learned pseudo-inputs
    u_k (Tomczak & Welling 2018). The guide is held by reference, not as a submodule, so its
    parameters keep their own names and are shared by model and guide."""

    analytic_kl = False

    def __init__(self, guide: PyroModule, image_shape: tuple[int, ...], components: int = 500):
        super().__init__()
        object.__setattr__(self, "_guide", guide)  # not a submodule: see the docstring
        self.pseudo_weights = PyroParam(
            torch.randn(components, *image_shape) * VAMP_INIT_STD + VAMP_INIT_MEAN)

    def pseudo_inputs(self) -> torch.Tensor:
        return F.hardtanh(self.pseudo_weights, 0.0, 1.0)  # u_k in [0, 1]   (K, C, H, W)

    def forward(self) -> dist.TorchDistribution:
        components = self._guide.distribution(self.pseudo_inputs())  # q(z | u_k): batch (K,), event (D,)
        mixing = dist.Categorical(logits=torch.zeros(components.batch_shape, device=self.pseudo_weights.device))
        return _BroadcastMixture(mixing, components)  # (1/K) sum_k q(z|u_k): batch (), event (D,)


def _prior_arguments(spec, config, guide) -> dict:
    """What a prior's constructor (or factory) may ask for, by parameter name."""
    return {"latent_dim": spec.latent_dim, "image_shape": spec.image_shape, "components": config.components,
            "spec": spec, "config": config, "guide": guide}


PRIORS: Registry[PyroModule] = Registry("prior", arguments=_prior_arguments)
PRIORS.register("standard")(lambda spec, config, guide: StandardNormalPrior(spec.latent_dim))
PRIORS.register("learned")(lambda spec, config, guide: LearnedGaussianPrior(spec.latent_dim))
PRIORS.register("mog")(
    lambda spec, config, guide: MixtureOfGaussiansPrior(spec.latent_dim, config.components))
PRIORS.register("vamp")(
    lambda spec, config, guide: VampPrior(guide, spec.image_shape, config.components))
