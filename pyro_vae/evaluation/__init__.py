"""Evaluation of pyro-vae models: importance-weighted log p(x) per image, and its diagnostics.

* :func:`importance_weighted_log_px`: one batch, K samples per image, chunked, seeded.
* :func:`evaluate_log_px`: a whole split in batches -> :class:`EvaluationResult`
  (``summary()`` dict, ``table()`` text, ``verdict``: a sentence when k-hat or ESS say the
  estimate is weak; :func:`estimate_verdict`).
* :func:`log_px_against_k`: log p_K(x) for several K from nested samples -> :class:`LogPxCurve`.

Their pictures (the k-hat histogram, log p_K(x) against K) are drawn by :mod:`pyro_vae.plots`.
"""

from .diagnostics import (
    EvaluationResult,
    LogPxCurve,
    active_unit_variances,
    active_units,
    effective_sample_size,
    estimate_verdict,
    log_effective_sample_size,
    pareto_khat,
)
from .drivers import DEFAULT_KS, evaluate_log_px, log_px_against_k
from .iwae import (
    ImportanceWeightedEstimate,
    auto_k_chunk,
    eval_mode,
    importance_weighted_log_px,
    label_summed_log_px,
    model_log_joint,
    particle_seed,
)

__all__ = [
    "DEFAULT_KS",
    "EvaluationResult",
    "ImportanceWeightedEstimate",
    "LogPxCurve",
    "active_unit_variances",
    "active_units",
    "auto_k_chunk",
    "effective_sample_size",
    "estimate_verdict",
    "eval_mode",
    "evaluate_log_px",
    "importance_weighted_log_px",
    "label_summed_log_px",
    "log_effective_sample_size",
    "log_px_against_k",
    "model_log_joint",
    "pareto_khat",
    "particle_seed",
]
