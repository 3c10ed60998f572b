"""Guides q(z | x): the inference side of a VAE. Adding one is a class and a registry entry; a
factory (or a user's class, :mod:`pyro_vae.registry`) asks for any of ``encoder`` (a fresh
encoder of ``--net``), ``latent_dim``, ``num_classes`` (> 0: the guide is q(z | x, y)),
``image_shape``, ``spec``, ``config`` by parameter name."""

from ..models.priors import PRIORS
from ..nets import build_encoder
from ..registry import Lazy, Registry
from .base import AmortizedGuide
from .diagonal import AmortizedDiagonalNormal
from .hierarchical import HierarchicalGuide, build_burda_two_layer, build_hierarchical_guide, build_hierarchical_vae
from .iaf import AmortizedIAF
from .lowrank import AmortizedLowRankNormal
from .maf import AmortizedMAF


def _guide_arguments(spec, config) -> dict:
    """What a guide's constructor (or factory) may ask for, by parameter name."""
    return {
        "encoder": Lazy(lambda: build_encoder(config.net, spec)),
        "latent_dim": spec.latent_dim,
        "num_classes": spec.cond_dim,
        "image_shape": spec.image_shape,
        "spec": spec,
        "config": config,
    }


def flows_see_x(config) -> bool:
    """Whether the IAF/MAF transforms are conditioned on x: ``--flow-context``; by default not for
    a prior that scores the guide at inputs of its own (``shares_guide_flows``: the VampPrior),
    whose log p(z) then inverts each z once instead of once per input."""
    if config.flow_context is not None:
        return config.flow_context == "x"
    return not getattr(PRIORS.resolve(config.prior), "shares_guide_flows", False)


GUIDES: Registry = Registry("guide", arguments=_guide_arguments)
GUIDES.register("diag")(
    lambda spec, config: AmortizedDiagonalNormal(
        build_encoder(config.net, spec), spec.latent_dim, num_classes=spec.cond_dim
    )
)
GUIDES.register("lowrank")(
    lambda spec, config: AmortizedLowRankNormal(
        build_encoder(config.net, spec), spec.latent_dim, config.guide_rank, num_classes=spec.cond_dim
    )
)


def _flow_guide(cls):
    """The factory of a flow guide (IAF, MAF) from the run's options."""
    return lambda spec, config: cls(
        build_encoder(config.net, spec),
        spec.latent_dim,
        config.flow_layers,
        config.flow_hidden,
        num_classes=spec.cond_dim,
        conditioned=flows_see_x(config),
    )


GUIDES.register("iaf")(_flow_guide(AmortizedIAF))
GUIDES.register("maf")(_flow_guide(AmortizedMAF))

__all__ = [
    "GUIDES",
    "AmortizedDiagonalNormal",
    "AmortizedGuide",
    "AmortizedIAF",
    "AmortizedLowRankNormal",
    "AmortizedMAF",
    "HierarchicalGuide",
    "build_burda_two_layer",
    "build_hierarchical_guide",
    "build_hierarchical_vae",
    "flows_see_x",
]
