"""Model kinds, each a small variant found by name: :class:`~pyro_vae.variants.base.Variant`
says how a kind is built, what a batch is, its objective, metrics, log p(x) and pictures."""

from ..registry import Registry
from .base import EVAL_BATCH_SIZE, EVAL_SEED, EvalSet, Variant, mean_elbo_terms
from .cvae import CVAEVariant
from .m2 import M2Variant
from .vae import VAEVariant

VARIANTS: Registry[type[Variant]] = Registry("model")
for _variant in (VAEVariant, CVAEVariant, M2Variant):
    VARIANTS.register(_variant.name)(_variant)


def variant_of(config) -> type[Variant]:
    """The variant class of ``config.model``."""
    return VARIANTS.get(config.model)


__all__ = ["EVAL_BATCH_SIZE", "EVAL_SEED", "EvalSet", "VARIANTS", "Variant", "mean_elbo_terms", "variant_of"]
