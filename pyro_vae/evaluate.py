"""``python -m pyro_vae.evaluate RUN_DIR``: importance-weighted log p(x) of a trained run, with
diagnostics, written next to the run.

    log p_K(x) = logsumexp_k [log p(x, z_k) - log q(z_k|x)] - log K,   z_k ~ q(z|x)

Prints a table, and writes ``eval.json`` (one entry per split evaluated, merged with earlier
ones), ``khat_<split>.png`` (Pareto k-hat histogram) and ``log_px_vs_k_<split>.png``
(log p_K(x) against K on a subset of images) into RUN_DIR.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import pyro
import torch

from .api import load
from .atomic import write_json
from .data import evaluation_images, load_data
from .config import check_seed
from .engine import build_fabric, launch, say
from .engine.fabric import ACCELERATORS, STRATEGIES, check_accelerator, fail, gather_objects
from .errors import ConfigError, PyroVAEError, user_error
from .evaluation import DEFAULT_KS, evaluate_log_px
from .evaluation.iwae import DEFAULT_MEMORY_BUDGET_MB
from .plots import plot_khat_histogram, plot_log_px_against_k
from .variants import variant_of

SPLITS = ("train", "valid", "test")
DEFAULT_K = 5000
DEFAULT_BATCH_SIZE = 200
DEFAULT_CURVE_IMAGES = 500
# the library's budget: on this project's CPU, 256 MB chunks (56 particles x 200 images of the
# default model) scored 13% faster than 1024 MB ones, whose large tensors the allocator maps and
# unmaps at every chunk (docs/performance.md)
DEFAULT_MEMORY_MB = DEFAULT_MEMORY_BUDGET_MB


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pyro_vae.evaluate",
        description="Importance-weighted log p(x) of a trained pyro-vae run (Burda et al. 2015), "
                    "with its standard error, the ELBO gap, effective sample size, Pareto k-hat "
                    "(PSIS, via arviz) and active units. The defaults (K = 5000 on all 10,000 test "
                    "images) took 23.5 min on a 2-core x86-64 CPU (about 35,000 images x K per "
                    "second); --limit 1000 or --k 500 gives a first look in a few minutes.",
        epilog="Prints a table and writes into RUN_DIR: eval.json (one entry per split, merged with "
               "earlier ones: log p_K(x) with its standard error, the ELBO on the same samples, ESS, "
               "k-hat shares, active units, time), khat_SPLIT.png (histogram of the per-image Pareto "
               "k-hat) and log_px_vs_k_SPLIT.png (log p_K(x) against K on the first --curve-images "
               "images). Nothing else is changed.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by python -m pyro_vae.fit")
    p.add_argument("--k", type=int, default=DEFAULT_K,
                   help=f"importance samples per image (default: {DEFAULT_K}, as Burda et al.; the cost "
                        "grows linearly in K and in the number of images)")
    p.add_argument("--split", default="test", help=f"one of {', '.join(SPLITS)} (default: test)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"images per batch (default: {DEFAULT_BATCH_SIZE})")
    p.add_argument("--k-chunk", type=int, default=None,
                   help="particles per model call (default: as many as --memory-mb allows)")
    p.add_argument("--memory-mb", type=float, default=DEFAULT_MEMORY_MB,
                   help=f"memory budget for one chunk and one batch's log-weights (default: {DEFAULT_MEMORY_MB:g})")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of the split")
    p.add_argument("--curve-images", type=int, default=DEFAULT_CURVE_IMAGES,
                   help=f"images for the log p_K against K picture (default: {DEFAULT_CURVE_IMAGES}; 0: skip)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"),
                   help="which checkpoint to evaluate (default: best)")
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples (default: 0)")
    p.add_argument("--accelerator", default="auto", metavar="{" + ",".join(ACCELERATORS) + "}",
                   help="auto (cuda, else mps, else cpu), cpu, cuda or mps (default: auto)")
    p.add_argument("--devices", default="1", help="processes per node, each scoring its share of the "
                   "images; the numbers equal one process's (default: 1)")
    p.add_argument("--num-nodes", type=int, default=1, help="machines taking part (default: 1)")
    p.add_argument("--strategy", default="auto", choices=STRATEGIES, help="(default: auto)")
    p.add_argument("--device", default=None, metavar="{" + ",".join(ACCELERATORS) + "}",
                   help="old name of --accelerator")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--data", default=None, metavar="PATH",
                   help="where the run's --data now lie, if they moved (their content must match the "
                        "checksum in the run's config.json)")
    return p


def evaluate_run(run_dir: str | Path, *, k: int = DEFAULT_K, split: str = "test",
                 batch_size: int = DEFAULT_BATCH_SIZE, k_chunk: int | None = None,
                 memory_mb: float = DEFAULT_MEMORY_MB, limit: int | None = None,
                 curve_images: int = DEFAULT_CURVE_IMAGES, checkpoint: str = "best", seed: int = 0,
                 device: str | None = None, accelerator: str = "auto", devices: str | int = 1,
                 num_nodes: int = 1, strategy: str = "auto", fabric=None, progress: bool = True,
                 log=say, data: str | None = None) -> dict:
    """Evaluate a run and write eval.json and the pictures into it; returns the split's entry.

    The images are split across the processes of ``fabric`` (or of a Fabric made from
    ``accelerator``, ``devices``, ...; ``device`` is the old name of ``accelerator``), batch by
    batch, and gathered: the numbers equal one process's. Rank 0 writes the files. The run's data
    are rebuilt from its config.json (checked against the recorded checksum); ``data`` says where
    a run's ``--data`` lie now if they moved."""
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
    run_dir = Path(run_dir)
    if fabric is None:
        if device is not None:
            check_accelerator(device, "--device")
            if accelerator not in ("auto", device):
                raise ConfigError("--device is the old name of --accelerator; give only --accelerator")
            accelerator = device
        fabric = build_fabric(accelerator, devices, num_nodes, strategy)
        launch(fabric)
    main = fabric.is_global_zero
    log = log if main else (lambda _line: None)
    dev = fabric.device
    shard = {"shard": (fabric.global_rank, fabric.world_size),
             "gather": lambda obj: gather_objects(fabric, obj)}
    vae = load(run_dir, checkpoint=checkpoint, device=dev)
    config = vae.config
    label_passes = vae.num_classes if variant_of(config).sums_over_labels else 1
    kept_mb = batch_size * k * label_passes * 8 / 2**20
    if kept_mb > memory_mb:  # the (batch, K) float64 log-weights kept for Pareto k-hat
        fits = max(1, int(memory_mb * batch_size / kept_mb))
        raise ConfigError(f"--batch-size {batch_size} with --k {k} keeps {kept_mb:,.0f} MB of log-weights per "
                          f"batch (for Pareto k-hat), more than --memory-mb {memory_mb:g}; use --batch-size "
                          f"{fits} or less, or a larger --memory-mb")
    with fabric.rank_zero_first():  # rank 0 decodes a --data folder into its cache; the others reuse it
        dataset = load_data(config, log=log, data=data)  # the run's data, checked against its checksum
    part = getattr(dataset, split)
    images, description = evaluation_images(part, config.binarize, limit=limit)  # seed 0 for every run
    labels = part.labels[:limit]
    # the variant says what is estimated: log p(x); CVAE: log p(x | y) given the true labels;
    # M2: log p(x) = log sum_y p(x, y), y summed exactly
    label_args, quantity = variant_of(config).log_px_inputs(labels, vae.num_classes)
    progress = progress and main
    log(f"evaluate: {run_dir} ({checkpoint}.pt), {images.shape[0]:,} images, K = {k}; {quantity}; {description}"
        + (f"; {fabric.world_size} processes" if fabric.world_size > 1 else ""))
    # the log p_K(x)-against-K curve on the first curve_images images comes from the same pass
    ks = sorted({kk for kk in DEFAULT_KS if kk <= k} | {k})
    result = evaluate_log_px(vae.model, vae.guide, images, k=k, batch_size=batch_size, k_chunk=k_chunk,
                             seed=seed, progress=progress, memory_budget_mb=memory_mb, split=split,
                             device=dev, curve_ks=ks, curve_images=curve_images, **label_args, **shard)
    log(result.table())
    entry = {**result.summary(), "quantity": quantity, "checkpoint": checkpoint, "binarization": description,
             "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
             "processes": fabric.world_size}
    if dataset.bits == 8 and config.binarize == "none":  # 8-bit pixels scored as they are
        bits = vae.model.likelihood.bits_per_dim
        entry["bits_per_dim"] = bits(entry["log_px_mean"], dataset.dims)
        entry["elbo_bits_per_dim"] = bits(entry["elbo_mean"], dataset.dims)
        log(f"  bits/dim: log p_K(x) {entry['bits_per_dim']:.4f}, ELBO {entry['elbo_bits_per_dim']:.4f} "
            f"({dataset.dims:,} 8-bit values per image)")
    pictures = [f"khat_{split}.png"]
    if main:
        plot_khat_histogram(result.khat, run_dir / f"khat_{split}.png",
                            title=f"Pareto k-hat of the importance weights, {split} set, K = {k}")
    if curve_images > 0:
        n = min(curve_images, images.shape[0])
        curve = result.curve
        if main:
            plot_log_px_against_k(curve, run_dir / f"log_px_vs_k_{split}.png",
                                  title=f"log p_K(x) against K, first {n} {split} images")
        entry["log_px_against_k"] = curve.summary()
        pictures.append(f"log_px_vs_k_{split}.png")
    entry["pictures"] = pictures
    if main:
        path = run_dir / "eval.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        write_json(path, {**previous, split: entry}, allow_nan=False)
        log(f"wrote {path} and {', '.join(pictures)}")
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pyro.settings.set(module_local_params=True)
    try:
        evaluate_run(
            args.run_dir, k=args.k, split=args.split, batch_size=args.batch_size, k_chunk=args.k_chunk,
            memory_mb=args.memory_mb, limit=args.limit, curve_images=args.curve_images,
            checkpoint=args.checkpoint, seed=args.seed, device=args.device, accelerator=args.accelerator,
            devices=args.devices, num_nodes=args.num_nodes, strategy=args.strategy,
            progress=not args.no_progress, log=say, data=args.data)
    except (PyroVAEError, OSError) as e:
        shown = user_error(e)  # a full disk as a message; any other OSError is a bug: its traceback shows
        if shown is None:
            raise
        return fail(f"error: {shown}", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
