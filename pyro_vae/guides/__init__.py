"""Guides q(z | x): the inference side of a VAE."""

from .diagonal import AmortizedDiagonalNormal
from ..registry import Registry
from ..nets import build_encoder

GUIDES: Registry = Registry("guide")


@GUIDES.register("diag")
def _diag(spec, config):
    return AmortizedDiagonalNormal(build_encoder(config.net, spec), spec.latent_dim)


__all__ = ["AmortizedDiagonalNormal", "GUIDES"]
