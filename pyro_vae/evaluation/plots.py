"""The evaluation's two pictures, written as PNG files atomically.

matplotlib is imported inside the functions (it is slow to import and only these need it), and
figures are drawn on an Agg canvas directly, without pyplot, so no global backend is changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from .diagnostics import KHAT_BAD, KHAT_GOOD, LogPxCurve


def plot_khat_histogram(khat, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Histogram of per-image Pareto k-hat with the 0.5 and 0.7 lines; returns the PNG's path.

    Non-finite values (NaN: undefined, -inf: constant weights, +inf: a few weights dominate)
    cannot be binned; they are counted in the legend instead.
    """
    khat = np.asarray(khat, dtype=np.float64)
    finite = khat[np.isfinite(khat)]
    fig, ax = _figure()
    bins = np.linspace(min(finite.min(initial=0.0), 0.0) - 0.05,
                       max(finite.max(initial=1.0), 1.0) + 0.05, 41)
    ax.hist(finite, bins=bins, color="0.55", edgecolor="white")
    ax.axvline(KHAT_GOOD, color="tab:orange", linestyle="--", label=f"k = {KHAT_GOOD}")
    ax.axvline(KHAT_BAD, color="tab:red", linestyle="--", label=f"k = {KHAT_BAD}")
    share = np.mean(khat[~np.isnan(khat)] > KHAT_BAD) if (~np.isnan(khat)).any() else np.nan
    extra = (f"{int(np.isnan(khat).sum())} undefined, {int(np.isneginf(khat).sum())} constant, "
             f"{int(np.isposinf(khat).sum())} infinite")
    ax.plot([], [], " ", label=extra)
    ax.set_xlabel("Pareto k-hat of the importance weights (per image)")
    ax.set_ylabel("images")
    ax.set_title(title or f"PSIS k-hat: {100 * share:.1f}% of {khat.size} images above {KHAT_BAD}")
    ax.legend(loc="upper right", fontsize="small")
    return _save(fig, path)


def plot_log_px_against_k(curve: LogPxCurve, path: str | os.PathLike, *,
                          exact: float | None = None, title: str | None = None) -> Path:
    """Mean log p_K(x) ± standard error against K (log axis); returns the PNG's path.

    ``exact``: a known mean log p(x) to draw as a line (e.g. a linear-Gaussian model's).
    """
    fig, ax = _figure()
    ks = np.asarray(curve.ks)
    ax.errorbar(ks, curve.mean(), yerr=np.nan_to_num(curve.stderr()), marker="o", capsize=3,
                label=f"log p_K(x), {curve.log_px.shape[0]} images")
    if exact is not None:
        ax.axhline(exact, color="tab:green", linestyle="--", label="exact log p(x)")
    ax.set_xscale("log")
    ax.set_xlabel("K (importance samples, nested)")
    ax.set_ylabel("mean log p_K(x) [nats]")
    ax.set_title(title or "Importance-weighted estimate of log p(x) against K")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def _figure():
    """A matplotlib Figure on an Agg canvas, and its single Axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (a temporary file beside it, then a rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
