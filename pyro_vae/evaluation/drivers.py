"""Batch drivers over a whole split: per-image log p_K(x) with diagnostics, and log p_K against K.

Memory is bounded by the batch size and the chunk size, not by the number of images or K:
scoring takes about ``memory_budget_mb`` (through ``k_chunk``), and the log-weights kept for
one batch's Pareto k-hat take ``batch_size * k * 8`` bytes; they are dropped after each batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import PyroVAEError
from .diagnostics import EvaluationResult, LogPxCurve, pareto_khat
from .iwae import DEFAULT_MEMORY_BUDGET_MB, _check_positive_int, importance_weighted_log_px, label_summed_log_px

DEFAULT_KS = (1, 10, 100, 1000, 5000)


def evaluate_log_px(
    model: Callable,
    guide: Callable,
    images,
    labels=None,
    *,
    k: int,
    batch_size: int,
    k_chunk: int | None = None,
    seed: int = 0,
    progress: bool = True,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    khat: bool = True,
    latent_site: str = "z",
    split: str | None = None,
    device: torch.device | str | None = None,
    sum_over_labels: int = 0,
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[object], list] | None = None,
    curve_ks: Sequence[int] = (),
    curve_images: int = 0,
) -> EvaluationResult:
    """log p_K(x), the ELBO, ESS, Pareto k-hat and E_q[z|x] of every image of a split.

    The model may have any number of latent sites: the guide's, importance-sampled together, and
    discrete sites marked ``infer={"enumerate": "parallel"}``, summed out exactly. E_q[site | x]
    of every continuous guide site is kept (``result.site_means``, active units per site).

    :param images: (N, ...) tensor or array; batches are moved to ``device`` (default: the
        model's parameters' device, else the images').
    :param labels: optional (N, ...) labels passed to model and guide as ``y``.
    :param k: importance samples per image. :param batch_size: images per batch.
    :param k_chunk: particles per model call; None chooses it from ``memory_budget_mb``.
    :param seed: batch b uses particle seeds derived from (seed, b): same seed and batch size
        -> identical numbers.
    :param khat: compute Pareto k-hat (keeps one batch's (batch_size, k) log-weights).
    :param progress: a tqdm bar over images on stderr.
    :param sum_over_labels: L > 0: the model's label ``y`` is latent (M2); log p(x) sums it
        over the L labels exactly (:func:`label_summed_log_px`); ``labels`` must be None.
    :param shard: (rank, processes): this process scores batches rank, rank + processes, ...
        (their seeds depend on the batch index only, so the numbers do not depend on the layout).
    :param gather: collects one object from every process (rank order); every process then
        returns the whole split's result.
    :param curve_ks, curve_images: also log p_k(x) for each k <= K in ``curve_ks`` on the first
        ``curve_images`` images, from the first k of the same K samples (``result.curve``, a
        :class:`LogPxCurve`): the curve costs no second pass over the images.
    """
    # long: one loop over a split's batches (shard, estimate, gather, accumulate) whose steps
    # share the per-batch state; the arguments of its calls stand one per line
    curve_ks = _check_ks(curve_ks) if curve_images > 0 else []
    if curve_ks and curve_ks[-1] > k:
        raise PyroVAEError(f"the curve's largest k ({curve_ks[-1]}) exceeds the K of the estimate ({k})")
    images, labels = _check_inputs(images, labels, k, batch_size, sum_over_labels)
    _check_pixels(model, images)
    if khat:
        _check_weights_fit(batch_size, k * max(1, sum_over_labels), memory_budget_mb)
    device = _device(model, images, device)
    batches: list[tuple[int, dict]] = []  # (batch index, this batch's per-image arrays)
    start = time.perf_counter()
    with tqdm(
        total=_shard_images(images.shape[0], batch_size, shard),
        unit="img",
        disable=not progress,
        desc=f"log p(x), K={k}",
    ) as bar:
        for index, x, y in _batches(images, labels, batch_size, device, shard):
            in_curve = max(0, min(x.shape[0], curve_images - index * batch_size)) if curve_ks else 0
            est = _estimate(
                model,
                guide,
                x,
                y,
                sum_over_labels,
                k=k,
                k_chunk=k_chunk,
                seed=seed,
                batch_index=index,
                memory_budget_mb=memory_budget_mb,
                return_log_weights=khat or in_curve > 0,
                latent_site=latent_site,
            )
            n = x.shape[0]
            batches.append(
                (
                    index,
                    {
                        "curve": (
                            _curve_columns(est.log_weights[:in_curve], est.labels_summed, curve_ks)
                            if in_curve
                            else np.zeros((0, len(curve_ks)))
                        ),
                        "log_px": est.log_px.numpy(),
                        "elbo": est.elbo.numpy(),
                        "log_ess": est.log_ess.numpy(),
                        "khat": pareto_khat(est.log_weights.numpy()) if khat else np.full(n, np.nan),
                        "z_mean": None if est.z_mean is None else est.z_mean.numpy(),
                        "source": est.z_mean_source,
                        "k_chunk": est.k_chunk,
                        "site_means": {
                            name: None if mean is None else mean.numpy() for name, mean in est.site_means.items()
                        },
                        "site_sources": est.site_mean_sources,
                    },
                )
            )
            bar.update(n)
    seconds = time.perf_counter() - start
    batches = _gathered(batches, gather)
    parts = {key: [b[key] for _, b in batches] for key in batches[0][1]}
    has_z = parts["z_mean"][0] is not None
    site_means = {
        name: None if mean is None else np.concatenate([b[name] for b in parts["site_means"]])
        for name, mean in parts["site_means"][0].items()
    }  # (N, D_site) per site
    return EvaluationResult(
        log_px=np.concatenate(parts["log_px"]),
        elbo=np.concatenate(parts["elbo"]),
        log_ess=np.concatenate(parts["log_ess"]),
        khat=np.concatenate(parts["khat"]),
        z_mean=np.concatenate(parts["z_mean"]) if has_z else None,
        z_mean_source=parts["source"][0] if has_z else "none",
        k=k,
        seed=seed,
        batch_size=batch_size,
        k_chunk=parts["k_chunk"][0],
        seconds=seconds,
        split=split,
        curve=LogPxCurve(ks=tuple(curve_ks), log_px=np.concatenate(parts["curve"]), seed=seed, split=split)
        if curve_ks
        else None,
        site_means=site_means,
        site_mean_sources=parts["site_sources"][0],
    )


def _curve_columns(log_weights: torch.Tensor, per: int, ks: Sequence[int]) -> np.ndarray:
    """log p_k(x) = logsumexp_{j<k} log w_j - log k for each k (rows, len(ks)), from the
    particle-major log-weights (rows, K * per) (``per`` labels of each particle j)."""
    return torch.stack([torch.logsumexp(log_weights[:, : kk * per], 1) - np.log(kk) for kk in ks], 1).numpy()


def log_px_against_k(
    model: Callable,
    guide: Callable,
    images,
    labels=None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int,
    k_chunk: int | None = None,
    seed: int = 0,
    progress: bool = False,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    split: str | None = None,
    device: torch.device | str | None = None,
    sum_over_labels: int = 0,
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[object], list] | None = None,
) -> LogPxCurve:
    """log p_k(x) for each k in ``ks`` on ``images`` (pass a subset), from nested samples.

    Every image gets max(ks) particles; log p_k(x) uses the first k of them, so the curve is
    non-decreasing in expectation and its points are not independent noise. The value at k
    equals :func:`importance_weighted_log_px` with that k and the same seed and batches.
    ``shard`` and ``gather`` split the batches over processes as in :func:`evaluate_log_px`.
    """
    ks = _check_ks(ks)
    k_max = ks[-1]
    images, labels = _check_inputs(images, labels, k_max, batch_size, sum_over_labels)
    _check_pixels(model, images)
    _check_weights_fit(batch_size, k_max * max(1, sum_over_labels), memory_budget_mb)
    device = _device(model, images, device)
    rows = []
    with tqdm(
        total=_shard_images(images.shape[0], batch_size, shard),
        unit="img",
        disable=not progress,
        desc=f"log p(x) against K <= {k_max}",
    ) as bar:
        for index, x, y in _batches(images, labels, batch_size, device, shard):
            est = _estimate(
                model,
                guide,
                x,
                y,
                sum_over_labels,
                k=k_max,
                k_chunk=k_chunk,
                seed=seed,
                batch_index=index,
                memory_budget_mb=memory_budget_mb,
                return_log_weights=True,
                latent_site="",
                all_sites=False,
            )
            # log p_k(x) = logsumexp_{j<k} log w_j - log k   (B, len(ks))   (all L labels of each j)
            rows.append((index, _curve_columns(est.log_weights, est.labels_summed, ks)))
            bar.update(x.shape[0])
    rows = [r for _, r in _gathered(rows, gather)]
    return LogPxCurve(ks=tuple(ks), log_px=np.concatenate(rows), seed=seed, split=split)


def _estimate(model, guide, x, y, sum_over_labels: int, **kwargs):
    """One batch: label-summed (M2) or plain importance-weighted log p(x [| y])."""
    if sum_over_labels:
        return label_summed_log_px(model, guide, x, num_classes=sum_over_labels, **kwargs)
    return importance_weighted_log_px(model, guide, x, y, **kwargs)


def _batches(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    batch_size: int,
    device: torch.device,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """(batch index, x, y) over consecutive slices of ``batch_size`` images, moved to ``device``;
    of these, only the batches of this process's ``shard`` (rank, processes)."""
    rank, world = shard
    for index, start in enumerate(range(0, images.shape[0], batch_size)):
        if index % world != rank:
            continue
        x = images[start : start + batch_size].to(device)
        y = None if labels is None else labels[start : start + batch_size].to(device)
        yield index, x, y


def _shard_images(n: int, batch_size: int, shard: tuple[int, int]) -> int:
    """Images in this process's batches."""
    rank, world = shard
    return sum(
        min(batch_size, n - start) for index, start in enumerate(range(0, n, batch_size)) if index % world == rank
    )


def _gathered(batches: list[tuple[int, object]], gather) -> list[tuple[int, object]]:
    """Every process's (batch index, result) pairs, in batch order."""
    if gather is not None:
        batches = [b for part in gather(batches) for b in part]
    return sorted(batches, key=lambda b: b[0])


def _check_inputs(images, labels, k: int, batch_size: int, sum_over_labels: int = 0):
    """Tensors from arrays, and clear errors for empty data, mismatched labels, bad k / sizes."""
    _check_positive_int("k", k)
    if sum_over_labels and labels is not None:
        raise PyroVAEError("sum_over_labels sums log p(x, y) over every label: pass labels=None")
    _check_positive_int("batch_size", batch_size)
    images = torch.as_tensor(images)
    if images.dim() < 1 or images.shape[0] == 0:
        raise PyroVAEError("no images to evaluate (the first dimension of images is 0)")
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.shape[0] != images.shape[0]:
            raise PyroVAEError(f"{labels.shape[0]} labels for {images.shape[0]} images")
    return images, labels


def _check_pixels(model, images: torch.Tensor) -> None:
    """Grey-scale intensities where the model's likelihood scores binary pixels: say how to
    binarize them (rather than Pyro's support error from deep inside the trace)."""
    likelihood = getattr(model, "likelihood", None)
    if getattr(likelihood, "needs_binary_data", False) and not bool(((images == 0) | (images == 1)).all()):
        raise PyroVAEError(
            f"the images hold grey-scale intensities, but the model's likelihood ({type(likelihood).__name__}) "
            f"scores binary pixels (0 or 1): binarize them first, e.g. pyro_vae.data.evaluation_images(split, "
            f"'dynamic', seed) or binarize_fixed(images, seed), or call vae.log_px(x, binarize='sample')"
        )


def _check_weights_fit(batch_size: int, k: int, memory_budget_mb: float) -> None:
    """The (batch_size, k) float64 log-weights kept for k-hat must fit the memory budget."""
    need_mb = batch_size * k * 8 / 2**20
    if need_mb > memory_budget_mb:
        fits = max(1, int(memory_budget_mb * 2**20 // (8 * k)))
        raise PyroVAEError(
            f"batch_size={batch_size} with K={k} keeps {need_mb:.0f} MB of log-weights per batch "
            f"for Pareto k-hat, over memory_budget_mb={memory_budget_mb:g}; use batch_size <= "
            f"{fits}, a larger memory_budget_mb, or khat=False"
        )


def _check_ks(ks: Sequence[int]) -> list[int]:
    """Sorted distinct positive ints."""
    ks = list(ks)
    if not ks:
        raise PyroVAEError("ks is empty; give the numbers of samples to plot, e.g. (1, 10, 100)")
    for kk in ks:
        _check_positive_int("every k in ks", kk)
    return sorted(set(int(kk) for kk in ks))


def _device(model: Callable, images: torch.Tensor, device) -> torch.device:
    """The requested device, else the model's parameters' device, else the images'."""
    if device is not None:
        return torch.device(device)
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return images.device
