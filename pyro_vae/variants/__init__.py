"""Model kinds, each a small variant found by name: :class:`~pyro_vae.variants.base.Variant`
says how a kind is built, what a batch is, its objective, metrics, log p(x) and pictures;
:func:`check` and :func:`resolve_defaults` hold the rules between a configuration's fields."""

from .base import EVAL_BATCH_SIZE, EVAL_SEED, EvalSet, Variant, mean_elbo_terms
from .build import build_vae, check_matches_config
from .checks import check, check_data, checked, resolve_defaults
from .kinds import VARIANTS, variant_of

__all__ = [
    "EVAL_BATCH_SIZE",
    "EVAL_SEED",
    "EvalSet",
    "VARIANTS",
    "Variant",
    "build_vae",
    "check",
    "check_data",
    "check_matches_config",
    "checked",
    "mean_elbo_terms",
    "resolve_defaults",
    "variant_of",
]
