"""Building the VAE a configuration describes, and checking that a VAE handed in is that one."""

from __future__ import annotations

import torch

from ..components import shapes, state_dict_difference
from ..config import FitConfig
from ..errors import ConfigError
from ..vae import VAE
from .checks import resolve_defaults
from .kinds import variant_of


def build_vae(
    config: FitConfig, image_shape: tuple[int, ...], num_classes: int = 10, *, prior=None, guide=None, likelihood=None
) -> VAE:
    """Build the VAE that ``config`` describes for images of shape (C, H, W) (and, for a kind
    whose networks take the label, ``num_classes`` labels): its variant builds it, from the
    configuration with its defaults resolved. ``prior``, ``guide`` and ``likelihood`` objects, if
    given, replace the ones ``config`` names."""
    config = resolve_defaults(config)
    return variant_of(config).build(config, image_shape, num_classes, prior=prior, guide=guide, likelihood=likelihood)


def check_matches_config(vae, config, image_shape, num_classes: int) -> None:
    """A VAE handed to the trainer must be the one its config describes (same tensors, same
    shapes), or the run it writes could not be reloaded: config.json is all ``load`` has."""
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the RNG as it was
        described = build_vae(config, tuple(image_shape), num_classes)
    differences = state_dict_difference(shapes(described), shapes(vae))
    if differences:
        raise ConfigError(
            f"the VAE given to the trainer is not the model its config describes (prior {config.prior}, "
            f"guide {config.guide}, likelihood {config.likelihood}, net {config.net}, latent_dim "
            f"{config.latent_dim}): against that model {'; '.join(differences)}. config.json would "
            f"not rebuild it: name your own pieces in the config by import path "
            f"(FitConfig(prior='mypackage.priors:LaplacePrior')), or pass them to pyro_vae.fit(prior=..., "
            f"guide=...), which records them"
        )
