"""The registry of model kinds: ``--model NAME`` is a name registered here, or the import path
of a model of one's own (``mypackage.models:TwoLayerVAE``, :mod:`pyro_vae.variants.program`)."""

from ..registry import Registry
from .base import Variant
from .cvae import CVAEVariant
from .hvae import HVAEVariant
from .m2 import M2Variant
from .program import ProgramVariant
from .vae import VAEVariant

VARIANTS: Registry[type[Variant]] = Registry("model", accepts_own=True)
for _variant in (VAEVariant, CVAEVariant, M2Variant, HVAEVariant):
    VARIANTS.register(_variant.name)(_variant)


def variant_of(config) -> type[Variant]:
    """The variant class of ``config.model``: a registered kind, or the kind of one's own model
    and guide (a class or factory of the protocol in :mod:`pyro_vae.variants.program`)."""
    kind = VARIANTS.get(config.model)
    if isinstance(kind, type) and issubclass(kind, Variant):
        return kind
    return ProgramVariant.of(kind)
