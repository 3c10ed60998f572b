"""Diagnostics of importance sampling per image, and the result objects of an evaluation.

* Effective sample size of the normalised weights, ESS = (sum_k w_k)^2 / sum_k w_k^2, in log space.
* Pareto k-hat of each image's log-weights (PSIS, Vehtari et al. 2024, via ``arviz.psislw``):
  k-hat < 0.5 the estimate is reliable, 0.5-0.7 it converges slowly, > 0.7 it is not to be trusted.
* The verdict (:func:`estimate_verdict`): one sentence when k-hat or ESS say the estimate is weak
  (at least :data:`VERDICT_SHARE` of the images past a k-hat threshold, or a mean ESS below
  :data:`ESS_LOW_FRACTION` of K), saying what log p_K(x) still is and what to do.
* Active units (Burda et al. 2015): latent dimension d is active when Cov_x(E_q[z_d | x]) > 0.01;
  counted per latent site (per stochastic layer, as Burda et al. report them) when there are several.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

KHAT_GOOD = 0.5  # below: PSIS / IS estimate reliable
KHAT_BAD = 0.7  # above: the importance-sampling estimate is not to be trusted
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2015)
VERDICT_SHARE = 0.01  # the verdict speaks of k-hat when at least this share of images is past a threshold
ESS_LOW_FRACTION = 0.1  # ... and of ESS when its mean is below this share of K
TABLE_WIDTH = 100  # the table's verdict is wrapped to this many characters


def log_effective_sample_size(log_weights: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log ESS = 2 logsumexp(log w) - logsumexp(2 log w) along ``dim`` (unnormalised weights)."""
    return 2 * torch.logsumexp(log_weights, dim) - torch.logsumexp(2 * log_weights, dim)


def effective_sample_size(log_weights: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """ESS = (sum w)^2 / sum w^2 along ``dim``, computed from log-weights; between 1 and K."""
    return log_effective_sample_size(log_weights, dim).exp()


def pareto_khat(log_weights, reff: float = 1.0, *, constant_rtol: float = 1e-6) -> np.ndarray:
    """Pareto k-hat of each row of ``log_weights`` (..., K), via ``arviz.psislw``; shape (...).

    Special values:

    * NaN where k-hat cannot be estimated: K too small for a tail of more than 4 samples
      (K < 25 at reff=1), or a row with no finite weight.
    * -inf where the weights are constant to working precision (max - min of the log-weights
      <= constant_rtol * max(1, |max|)): a point mass, the ideal proposal (the exact posterior).
      arviz would return +inf there (an empty tail).
    * +inf from arviz where 4 or fewer weights stand above the tail cutoff: a few weights
      dominate, as bad as k-hat > 0.7.
    """
    lw = np.asarray(log_weights, dtype=np.float64)
    n_samples = lw.shape[-1]
    tail = math.ceil(min(n_samples / 5.0, 3 * math.sqrt(n_samples / reff)))
    khat = np.full(lw.shape[:-1], np.nan)
    if tail <= 4:
        return khat
    top = lw.max(-1)
    finite = np.isfinite(top)
    constant = finite & (top - lw.min(-1) <= constant_rtol * np.maximum(1.0, np.abs(top)))
    fit = finite & ~constant
    if fit.any():
        _, fitted = _arviz().psislw(lw[fit], reff=reff)
        khat[fit] = np.asarray(fitted, dtype=np.float64)
    khat[constant] = -np.inf
    return khat


def estimate_verdict(summary: dict) -> str | None:
    """The verdict on an evaluation's :meth:`EvaluationResult.summary` numbers: None when k-hat and
    ESS are within their thresholds, else what is weak, what log p_K(x) still is, and what to do.

    k-hat (PSIS, Vehtari et al. 2024) above 0.7 for at least :data:`VERDICT_SHARE` of the images:
    their estimates are unreliable; else 0.5-0.7 for that share: they converge slowly in K. A mean
    ESS below :data:`ESS_LOW_FRACTION` of K: a few of the K samples carry each estimate."""
    weak = []
    above_bad, above_good = summary["khat_share_above_0.7"], summary["khat_share_above_0.5"]
    if above_bad is not None and above_bad >= VERDICT_SHARE:
        weak.append(
            f"k-hat > 0.7 for {_pct(above_bad)} of images (median {_fmt(summary['khat_median'], 2)}): "
            f"PSIS (Vehtari et al.) deems their estimates unreliable"
        )
    elif above_good is not None and above_good >= VERDICT_SHARE:
        weak.append(
            f"k-hat between 0.5 and 0.7 for {_pct(above_good)} of images: their estimate converges slowly as K grows"
        )
    ess_fraction = summary["ess_fraction_mean"]
    if ess_fraction is not None and ess_fraction < ESS_LOW_FRACTION:
        weak.append(
            f"ESS {_fmt(summary['ess_mean'], 1)} of K = {summary['k']} on average ({_pct(ess_fraction)}): "
            f"a few of the K samples carry each image's estimate"
            + (" (k-hat needs K >= 25)" if summary["khat_undefined"] == summary["n_images"] else "")
        )
    if not weak:
        return None
    return (
        f"weak estimate: {'; '.join(weak)}. log p_K(x) is still a stochastic lower bound on log p(x), "
        f"but its gap to log p(x) may be large. To tighten it, raise K (slow to help where k-hat > 0.7), "
        f"or train with a richer guide (--guide iaf or --guide lowrank), whose q(z|x) is nearer the posterior."
    )


def active_unit_variances(z_mean) -> np.ndarray:
    """Cov_x(E_q[z_d | x]) per latent dimension d: the variance over images of the posterior mean."""
    z_mean = np.asarray(z_mean, dtype=np.float64)  # (N, D)
    return z_mean.var(axis=0)  # (D,)


def active_units(z_mean, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of latent dimensions with Cov_x(E_q[z_d | x]) > threshold (Burda et al. 2015)."""
    return int((active_unit_variances(z_mean) > threshold).sum())


def _arviz():
    """Import arviz lazily, without its once-a-day FutureWarning about its refactor.

    The warning is raised at import time by arviz 0.23 and says nothing about our use of
    ``psislw``; the project's pytest runs with warnings as errors, so it is filtered here, narrowly.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning)
        import arviz

    return arviz


# ----------------------------------------------------------------------------------------------
# Results


@dataclass
class EvaluationResult:
    """Per-image results of :func:`pyro_vae.evaluation.evaluate_log_px` on one split.

    Arrays are float64 numpy arrays with one row per image, in the order of the input.
    """

    log_px: np.ndarray  # (N,)  log p_K(x)
    elbo: np.ndarray  # (N,)  ELBO estimate on the same samples
    log_ess: np.ndarray  # (N,)  log effective sample size
    khat: np.ndarray  # (N,)  Pareto k-hat (NaN: not computed / undefined; -inf: constant weights)
    z_mean: np.ndarray | None  # (N, D)  E_q[z | x]; None if the guide has no latent site
    z_mean_source: str  # "analytic", "samples" or "none"
    k: int
    seed: int
    batch_size: int
    k_chunk: int  # particles per model call (the first batch's, when chosen automatically)
    seconds: float
    split: str | None = None
    active_threshold: float = ACTIVE_UNIT_THRESHOLD
    curve: LogPxCurve | None = None  # log p_k(x) against k from the same samples, if asked
    # E_q[site | x] (N, D_site) per latent site; None for a discrete site (no active units)
    site_means: dict[str, np.ndarray | None] = field(default_factory=dict)
    site_mean_sources: dict[str, str] = field(default_factory=dict)  # "analytic" or "samples"

    @property
    def n_images(self) -> int:
        return int(self.log_px.shape[0])

    @property
    def ess(self) -> np.ndarray:
        """Effective sample size per image (N,)."""
        return np.exp(self.log_ess)

    @property
    def gap(self) -> np.ndarray:
        """log p_K(x) - ELBO per image (N,)."""
        return self.log_px - self.elbo

    @property
    def verdict(self) -> str | None:
        """None when k-hat and ESS are within their thresholds, else a sentence saying that the
        estimate is weak and what to do (:func:`estimate_verdict`)."""
        return self.summary()["verdict"]

    def mean_log_px(self) -> float:
        return float(self.log_px.mean())

    def stderr_log_px(self) -> float:
        """Standard error of the mean log p_K(x): std over images / sqrt(n) (NaN for n = 1)."""
        return _stderr(self.log_px)

    def khat_share_above(self, threshold: float) -> float:
        """Share of the images with a defined k-hat whose k-hat exceeds ``threshold``."""
        defined = ~np.isnan(self.khat)
        if not defined.any():
            return math.nan
        return float((self.khat[defined] > threshold).mean())

    def active_units(self) -> int | None:
        """Latent dimensions with Cov_x(E_q[z_d|x]) > active_threshold; None without z_mean."""
        if self.z_mean is None:
            return None
        return active_units(self.z_mean, self.active_threshold)

    def active_units_per_site(self) -> dict[str, int | None]:
        """Active units of each latent site (None for a discrete site), in the guide's order."""
        return {
            name: None if mean is None else active_units(mean, self.active_threshold)
            for name, mean in self.site_means.items()
        }

    def latent_dim_per_site(self) -> dict[str, int | None]:
        """Dimensions of each latent site's E_q[site | x] (None for a discrete site)."""
        return {name: None if mean is None else int(mean.shape[1]) for name, mean in self.site_means.items()}

    @property
    def reports_sites(self) -> bool:
        """Whether the per-site numbers say more than ``active_units``: several latent sites, or
        one that is not the site of ``z_mean``. (A one-site model's summary stays as it was.)"""
        return len(self.site_means) > 1 or (len(self.site_means) == 1 and self.z_mean is None)

    def summary(self) -> dict:
        """The split's numbers as a JSON-serialisable dict (non-finite numbers become None).

        With several latent sites (:attr:`reports_sites`) it also holds ``active_units_per_site``,
        ``latent_dim_per_site`` (site name -> int, None for a discrete site) and
        ``mean_source_per_site`` (site name -> "analytic" or "samples"). ``verdict`` is None when
        k-hat and ESS are within their thresholds, else a sentence (:func:`estimate_verdict`)."""
        defined = self.khat[~np.isnan(self.khat)]
        ess = self.ess
        numbers = {
            "split": self.split,
            "n_images": self.n_images,
            "k": self.k,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "k_chunk": self.k_chunk,
            "log_px_mean": _num(self.mean_log_px()),
            "log_px_stderr": _num(self.stderr_log_px()),
            "elbo_mean": _num(self.elbo.mean()),
            "elbo_stderr": _num(_stderr(self.elbo)),
            "gap_mean": _num(self.gap.mean()),
            "ess_mean": _num(ess.mean()),
            "ess_min": _num(ess.min()),
            "ess_fraction_mean": _num(ess.mean() / self.k),
            "ess_fraction_min": _num(ess.min() / self.k),
            "khat_share_above_0.7": _num(self.khat_share_above(KHAT_BAD)),
            "khat_share_above_0.5": _num(self.khat_share_above(KHAT_GOOD)),
            "khat_median": _num(np.median(defined)) if defined.size else None,
            "khat_max": _num(defined.max()) if defined.size else None,
            "khat_undefined": int(np.isnan(self.khat).sum()),
            "active_units": self.active_units(),
            "latent_dim": None if self.z_mean is None else int(self.z_mean.shape[1]),
            "z_mean_source": self.z_mean_source,
            **(
                {
                    "active_units_per_site": self.active_units_per_site(),
                    "latent_dim_per_site": self.latent_dim_per_site(),
                    "mean_source_per_site": dict(self.site_mean_sources),
                }
                if self.reports_sites
                else {}
            ),
            "seconds": _num(self.seconds),
            "image_particles_per_second": _num(self.n_images * self.k / self.seconds) if self.seconds > 0 else None,
        }
        return {**numbers, "verdict": estimate_verdict(numbers)}

    def table(self) -> str:
        """The summary as aligned text for a terminal."""
        s = self.summary()
        rows = [
            ("log p_K(x)", f"{_fmt(s['log_px_mean'])} ± {_fmt(s['log_px_stderr'])} nats"),
            ("ELBO (same samples)", f"{_fmt(s['elbo_mean'])} ± {_fmt(s['elbo_stderr'])} nats"),
            ("gap log p_K - ELBO", f"{_fmt(s['gap_mean'])} nats"),
            (
                "ESS mean / min",
                f"{_fmt(s['ess_mean'], 1)} / {_fmt(s['ess_min'], 1)}  "
                f"({_pct(s['ess_fraction_mean'])} / {_pct(s['ess_fraction_min'])} of K)",
            ),
            (
                "k-hat > 0.7",
                f"{_pct(s['khat_share_above_0.7'])} of images  "
                f"(> 0.5: {_pct(s['khat_share_above_0.5'])}; median "
                f"{_fmt(s['khat_median'], 2)}; undefined {s['khat_undefined']})",
            ),
            *(
                []
                if s["active_units"] is None and self.reports_sites
                else [
                    (
                        "active units",
                        "n/a"
                        if s["active_units"] is None
                        else f"{s['active_units']} / {s['latent_dim']}  (Cov_x E_q[z|x] > "
                        f"{self.active_threshold:g}; mean from {s['z_mean_source']})",
                    )
                ]
            ),
            *(
                [
                    (
                        "active units per site",
                        ", ".join(
                            f"{name} "
                            + ("n/a (discrete)" if units is None else f"{units} / {s['latent_dim_per_site'][name]}")
                            for name, units in s["active_units_per_site"].items()
                        ),
                    )
                ]
                if self.reports_sites
                else []
            ),
            ("time", f"{_fmt(s['seconds'], 1)} s  ({_fmt(s['image_particles_per_second'], 0)} images*K per s)"),
            *([("verdict", s["verdict"])] if s["verdict"] else []),
        ]
        head = (
            f"split {self.split}: " if self.split else ""
        ) + f"{self.n_images} images, K = {self.k}, seed {self.seed}"
        width = max(len(label) for label, _ in rows)
        lines = [head]
        for label, value in rows:
            first = f"  {label:<{width}}  "
            lines.append(
                textwrap.fill(value, TABLE_WIDTH, initial_indent=first, subsequent_indent=" " * len(first))
                if label == "verdict"
                else first + value
            )
        return "\n".join(lines)


@dataclass
class LogPxCurve:
    """log p_K(x) against K on a set of images, from nested prefixes of the same K_max samples."""

    ks: tuple[int, ...]
    log_px: np.ndarray  # (N, len(ks))  log p_k(x) of image n from its first k particles
    seed: int = 0
    split: str | None = None

    def mean(self) -> np.ndarray:
        """Mean over images of log p_k(x), one per k (len(ks),)."""
        return self.log_px.mean(axis=0)

    def stderr(self) -> np.ndarray:
        """Standard error over images, one per k (len(ks),)."""
        return np.array([_stderr(col) for col in self.log_px.T])

    def summary(self) -> dict:
        """JSON-serialisable: ks, means and standard errors."""
        return {
            "split": self.split,
            "n_images": int(self.log_px.shape[0]),
            "seed": self.seed,
            "ks": list(self.ks),
            "log_px_mean": [_num(v) for v in self.mean()],
            "log_px_stderr": [_num(v) for v in self.stderr()],
        }


def _stderr(values: np.ndarray) -> float:
    """std (ddof=1) / sqrt(n); NaN for fewer than two values."""
    if values.shape[0] < 2:
        return math.nan
    return float(values.std(ddof=1) / math.sqrt(values.shape[0]))


def _num(value) -> float | None:
    """A plain float, or None when not finite (JSON has no NaN or inf)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
