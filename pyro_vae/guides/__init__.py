"""Guides q(z | x): the inference side of a VAE. Adding one is a class and a registry entry; a
factory receives ``(spec, config)``."""

from ..nets import build_encoder
from ..registry import Registry
from .diagonal import AmortizedDiagonalNormal
from .iaf import AmortizedIAF
from .lowrank import AmortizedLowRankNormal

GUIDES: Registry = Registry("guide")
GUIDES.register("diag")(
    lambda spec, config: AmortizedDiagonalNormal(build_encoder(config.net, spec), spec.latent_dim,
                                            num_classes=spec.cond_dim))
GUIDES.register("lowrank")(
    lambda spec, config: AmortizedLowRankNormal(build_encoder(config.net, spec), spec.latent_dim,
                                                config.guide_rank, num_classes=spec.cond_dim))
GUIDES.register("iaf")(
    lambda spec, config: AmortizedIAF(build_encoder(config.net, spec), spec.latent_dim,
                                      config.flow_layers, config.flow_hidden, num_classes=spec.cond_dim))

__all__ = ["GUIDES", "AmortizedDiagonalNormal", "AmortizedIAF", "AmortizedLowRankNormal"]
