"""The registry of model kinds: ``--model NAME`` is a name registered here."""

from ..registry import Registry
from .base import Variant
from .cvae import CVAEVariant
from .m2 import M2Variant
from .vae import VAEVariant

VARIANTS: Registry[type[Variant]] = Registry("model")
for _variant in (VAEVariant, CVAEVariant, M2Variant):
    VARIANTS.register(_variant.name)(_variant)


def variant_of(config) -> type[Variant]:
    """The variant class of ``config.model``."""
    return VARIANTS.get(config.model)
