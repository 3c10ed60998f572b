"""The plain VAE, p(x, z) = p(z) p(x | z): a batch is images, the objective Pyro's ELBO (or the
IWAE bound) of p(x), log p(x) importance-weighted, pictures of p(z) samples and the latent plane."""

from __future__ import annotations

from ..models import VAEModel
from .base import Variant


class VAEVariant(Variant):
    name = "vae"

    @classmethod
    def build_model(cls, prior, decoder, likelihood, num_classes: int):
        return VAEModel(prior, decoder, likelihood)
