"""``VAE``: a model and its guide under one uniquely named ``PyroModule``, plus the user-facing
methods ``encode``, ``decode``, ``sample`` and ``reconstruct``.

Pyro's SVI keeps parameters in the global param store, keyed by name. Every ``VAE`` gets its own
name prefix (``vae1``, ``vae2``, ...), so two models in one process (a notebook comparing priors)
never share or overwrite each other's parameters.
"""

from __future__ import annotations

import itertools

import torch
from pyro.nn import PyroModule

from .config import FitConfig
from .errors import ConfigError
from .guides import GUIDES
from .models import LIKELIHOODS, PRIORS, VAEModel
from .nets import NetSpec, build_decoder

_instance_numbers = itertools.count(1)


class VAE(PyroModule):
    """A VAE: ``model(x)`` is p(x, z), ``guide(x)`` is q(z | x); both are Pyro programs."""

    def __init__(self, model: VAEModel, guide: PyroModule, name: str | None = None):
        super().__init__(name or f"vae{next(_instance_numbers)}")
        self.model = model
        self.guide = guide
        self.config: FitConfig | None = None  # set by build_vae / pyro_vae.load

    @property
    def param_prefix(self) -> str:
        """The prefix of this VAE's names in Pyro's param store, e.g. ``'vae1.'``."""
        return self._pyro_name + "."

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """q(z | x) as a distribution (batch shape (B,), event shape (D,))."""
        return self.guide.distribution(x, y)

    @torch.no_grad()
    def decode(self, z: torch.Tensor):
        """p(x | z) as a distribution (batch shape (B,), event shape (C, H, W))."""
        return self.model.decode(z)

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """n images E[x | z] with z ~ p(z): shape (n, C, H, W)."""
        z = self.model.prior().sample((n,))  # (n, D)
        return self.model.likelihood.mean(self.model.decoder(z))

    @torch.no_grad()
    def posterior_mean(self, x: torch.Tensor, y: torch.Tensor | None = None,
                       samples: int = 64) -> torch.Tensor:
        """E_q[z | x] (B, D): analytic where q has a mean, else the average of ``samples`` draws
        (flows)."""
        q = self.encode(x, y)
        try:
            return q.mean
        except NotImplementedError:
            return q.sample((samples,)).mean(0)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z] at z = E_q[z | x]."""
        return self.model.likelihood.mean(self.model.decoder(self.posterior_mean(x, y)))


def build_vae(config: FitConfig, image_shape: tuple[int, ...]) -> VAE:
    """Build the VAE that ``config`` describes for images of shape (C, H, W)."""
    spec = NetSpec(image_shape=tuple(image_shape), latent_dim=config.latent_dim, hidden=tuple(config.hidden))
    likelihood = LIKELIHOODS.build(config.likelihood, tuple(image_shape), config)
    guide = GUIDES.build(config.guide, spec, config)
    prior = PRIORS.build(config.prior, spec, config, guide)  # VampPrior reuses the guide's encoder
    if config.elbo == "meanfield" and not (prior.analytic_kl and guide.analytic_kl):
        raise ConfigError(
            f"--elbo meanfield needs the KL from q(z|x) to p(z) in closed form, which --guide "
            f"{config.guide} with --prior {config.prior} does not have; use --elbo trace (its "
            f"Monte-Carlo KL works for every pair)")
    decoder = build_decoder(config.net, spec, likelihood.params_per_pixel)
    model = VAEModel(prior, decoder, likelihood)
    vae = VAE(model, guide)
    vae.config = config
    return vae
