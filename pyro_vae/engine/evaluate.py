"""A trained run's importance-weighted log p(x), with diagnostics, written next to the run
(``eval.json``, ``khat_<split>.png``, ``log_px_vs_k_<split>.png``):

    log p_K(x) = logsumexp_k [log p(x, z_k) - log q(z_k|x)] - log K,   z_k ~ q(z|x)

The images are shared out over the processes of a Lightning Fabric and gathered; the numbers
equal one process's.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import torch

from ..atomic import write_json
from ..config_values import check_seed
from ..data import evaluation_images, load_data
from ..errors import ConfigError
from ..evaluation import DEFAULT_KS, evaluate_log_px
from ..evaluation.iwae import DEFAULT_MEMORY_BUDGET_MB
from ..plots import plot_khat_histogram, plot_log_px_against_k
from ..variants import variant_of
from ..variants.missing import OBSERVED_QUANTITY, split_masks
from .fabric import build_fabric, gather_objects, launch
from .faults import kill_point
from .load import load
from .loop import say
from .peers import lost_evaluation_message, lost_processes_reported

SPLITS = ("train", "valid", "test")
DEFAULT_K = 5000
DEFAULT_BATCH_SIZE = 200
DEFAULT_CURVE_IMAGES = 500
# the library's budget: larger chunks gain nothing, since the allocator maps and unmaps their large
# tensors at every chunk (docs/performance.md compares chunk sizes)
DEFAULT_MEMORY_MB = DEFAULT_MEMORY_BUDGET_MB


def _check_options(
    *,
    k: int,
    batch_size: int,
    split: str,
    limit: int | None,
    k_chunk: int | None,
    memory_mb: float,
    curve_images: int,
    seed: int,
) -> None:
    """Refuse, naming the option, any value :func:`evaluate_run` cannot use."""
    if k < 1:
        raise ConfigError(f"--k must be at least 1, got {k}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r} does not exist; choose one of: {', '.join(SPLITS)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    if k_chunk is not None and k_chunk < 1:
        raise ConfigError(f"--k-chunk must be at least 1, got {k_chunk} (or leave it out: --memory-mb sizes it)")
    if not (math.isfinite(memory_mb) and memory_mb > 0):
        raise ConfigError(f"--memory-mb must be a positive number of megabytes, got {memory_mb:g}")
    if curve_images < 0:
        raise ConfigError(f"--curve-images must be >= 0 (0 skips the picture), got {curve_images}")
    check_seed(seed)


def _pictures(result, entry: dict, run_dir: Path, *, split: str, k: int, curve_images: int, draw: bool) -> list[str]:
    """The k-hat histogram and (for ``curve_images`` > 0) the log p_K(x)-against-K curve, drawn into
    ``run_dir`` when ``draw`` (rank 0); adds the curve's summary to ``entry``; returns the files' names."""
    pictures = [f"khat_{split}.png"]
    if draw:
        plot_khat_histogram(
            result.khat,
            run_dir / f"khat_{split}.png",
            title=f"Pareto k-hat of the importance weights, {split} set, K = {k}",
        )
    if curve_images > 0:
        curve = result.curve
        if draw:
            plot_log_px_against_k(
                curve,
                run_dir / f"log_px_vs_k_{split}.png",
                title=f"log p_K(x) against K, first {curve_images} {split} images",
            )
        entry["log_px_against_k"] = curve.summary()
        pictures.append(f"log_px_vs_k_{split}.png")
    return pictures


def evaluate_run(
    run_dir: str | Path,
    *,
    k: int = DEFAULT_K,
    split: str = "test",
    batch_size: int = DEFAULT_BATCH_SIZE,
    k_chunk: int | None = None,
    memory_mb: float = DEFAULT_MEMORY_MB,
    limit: int | None = None,
    curve_images: int = DEFAULT_CURVE_IMAGES,
    checkpoint: str = "best",
    seed: int = 0,
    accelerator: str = "auto",
    devices: str | int = 1,
    num_nodes: int = 1,
    strategy: str = "auto",
    fabric=None,
    processes: list[tuple[str, int]] | None = None,
    progress: bool = True,
    log=say,
    data: str | None = None,
    rerun: str | None = None,
) -> dict:
    """Evaluate a run and write eval.json and the pictures into it; returns the split's entry.

    The images are split across the processes of ``fabric`` (or of a Fabric made from
    ``accelerator``, ``devices``, ...), batch by
    batch, and gathered: the numbers equal one process's. Rank 0 writes the files. The run's data
    are rebuilt from its config.json (checked against the recorded checksum); ``data`` says where
    a run's ``--data`` lie now if they moved.

    A process of the job that ends before the results are gathered ends the job with one
    message of rank 0 (:func:`~pyro_vae.engine.peers.lost_evaluation_message`): which process,
    that the run is unchanged, and ``rerun``, the command that evaluates again. With a ``fabric``
    given, ``processes`` are its processes' (host, pid) in rank order (without them its owner
    reports a loss: the error of the collective it breaks)."""
    # long: one pass from a run folder to eval.json (check, load, read the data, estimate,
    # write), each step one call whose keyword arguments stand one per line
    _check_options(
        k=k,
        batch_size=batch_size,
        split=split,
        limit=limit,
        k_chunk=k_chunk,
        memory_mb=memory_mb,
        curve_images=curve_images,
        seed=seed,
    )
    run_dir = Path(run_dir)
    if fabric is None:
        fabric = build_fabric(accelerator, devices, num_nodes, strategy)
        processes = launch(fabric, log=log)  # rank 0 names the processes: '2 processes connected (gloo): ...'
    main = fabric.is_global_zero
    log = log if main else (lambda _line: None)
    dev = fabric.device
    vae = load(run_dir, checkpoint=checkpoint, device=dev)
    config = vae.config
    label_passes = vae.num_classes if variant_of(config).sums_over_labels else 1
    kept_mb = batch_size * k * label_passes * 8 / 2**20
    if kept_mb > memory_mb:  # the (batch, K) float64 log-weights kept for Pareto k-hat
        fits = max(1, int(memory_mb * batch_size / kept_mb))
        raise ConfigError(
            f"--batch-size {batch_size} with --k {k} keeps {kept_mb:,.0f} MB of log-weights per "
            f"batch (for Pareto k-hat), more than --memory-mb {memory_mb:g}; use --batch-size "
            f"{fits} or less, or a larger --memory-mb"
        )
    lost = partial(lost_evaluation_message, processes, run_dir=run_dir, rerun=rerun)  # given the ranks that ended
    with lost_processes_reported(processes, fabric.global_rank, lost, bar=progress) as stop_watch:

        def gather(obj):  # the one collective after the images are scored: a loss now fails it
            stop_watch()
            return gather_objects(fabric, obj)

        with fabric.rank_zero_first():  # rank 0 decodes a --data folder into its cache; the others reuse it
            # the run's data, checked against its checksum; of an array file, only the images evaluated
            rows = {name: limit if name == split else 0 for name in SPLITS}
            dataset = load_data(config, log=log, data=data, rows=rows)
        part = getattr(dataset, split)
        images, description = evaluation_images(part, config.binarize, limit=limit)  # seed 0 for every run
        labels = part.labels[:limit]
        # the variant says what is estimated: log p(x); CVAE: log p(x | y) given the true labels;
        # M2: log p(x) = log sum_y p(x, y), y summed exactly
        label_args, quantity = variant_of(config).log_px_inputs(labels, vae.num_classes)
        masks = split_masks(config, part, images.shape[0])  # missing pixels: each image's observed values
        if masks is not None:  # the masked model takes them where it takes labels: log p(x_observed)
            label_args, quantity = {"labels": masks}, OBSERVED_QUANTITY
        progress = progress and main
        log(
            f"evaluate: {run_dir} ({checkpoint}.pt), {images.shape[0]:,} images, K = {k}; {quantity}; {description}"
            + (f"; {fabric.world_size} processes" if fabric.world_size > 1 else "")
        )
        # the log p_K(x)-against-K curve on the first curve_images images comes from the same pass
        ks = sorted({kk for kk in DEFAULT_KS if kk <= k} | {k})
        kill_point("evaluate", 0)  # (tests only: a process of the job ends before it scores a batch)
        result = evaluate_log_px(
            vae.model,
            vae.guide,
            images,
            k=k,
            batch_size=batch_size,
            k_chunk=k_chunk,
            seed=seed,
            progress=progress,
            memory_budget_mb=memory_mb,
            split=split,
            device=dev,
            curve_ks=ks,
            curve_images=curve_images,
            shard=(fabric.global_rank, fabric.world_size),
            gather=gather,
            **label_args,
        )
    log(result.table())
    if masks is not None:
        log(f"  log p_K(x) above is {OBSERVED_QUANTITY}; {1 - float(masks.float().mean()):.1%} of the values missing")
    entry = {
        **result.summary(),
        "quantity": quantity,
        **({"missing_fraction": 1 - float(masks.float().mean())} if masks is not None else {}),
        "checkpoint": checkpoint,
        "binarization": description,
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "processes": fabric.world_size,
    }
    # 8-bit pixels scored as they are (bits per dimension count every value: not for missing pixels)
    if dataset.bits == 8 and config.binarize == "none" and masks is None:
        bits = vae.model.likelihood.bits_per_dim
        entry["bits_per_dim"] = bits(entry["log_px_mean"], dataset.dims)
        entry["elbo_bits_per_dim"] = bits(entry["elbo_mean"], dataset.dims)
        log(
            f"  bits/dim: log p_K(x) {entry['bits_per_dim']:.4f}, ELBO {entry['elbo_bits_per_dim']:.4f} "
            f"({dataset.dims:,} 8-bit values per image)"
        )
    entry["pictures"] = pictures = _pictures(
        result, entry, run_dir, split=split, k=k, curve_images=min(curve_images, images.shape[0]), draw=main
    )
    if main:
        path = run_dir / "eval.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        write_json(path, {**previous, split: entry}, allow_nan=False)
        log(f"wrote {path} and {', '.join(pictures)}")
    return entry
