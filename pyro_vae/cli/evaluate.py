"""``python -m pyro_vae.evaluate RUN_DIR`` (``pyro-vae evaluate``): importance-weighted log p(x)
of a trained run, with diagnostics, written next to the run.

    log p_K(x) = logsumexp_k [log p(x, z_k) - log q(z_k|x)] - log K,   z_k ~ q(z|x)

Prints a table, and writes ``eval.json`` (one entry per split evaluated, merged with earlier
ones), ``khat_<split>.png`` (Pareto k-hat histogram) and ``log_px_vs_k_<split>.png``
(log p_K(x) against K on a subset of images) into RUN_DIR.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

import pyro

from ..devices import check_accelerator
from ..engine.evaluate import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CURVE_IMAGES,
    DEFAULT_K,
    DEFAULT_MEMORY_MB,
    SPLITS,
    evaluate_run,
)
from ..engine.loop import say
from .common import add_device_flags, device_options, exit_status

PROG = "python -m pyro_vae.evaluate"
DEVICE_FLAGS = ("accelerator", "devices", "num_nodes", "strategy")  # the evaluation runs in float32
READING = (  # how to read the table's diagnostics, at the end of --help
    "ESS: how many of the K samples effectively carry an image's estimate (1 to K; a small share of K: "
    "a few samples decide it). k-hat (PSIS, Vehtari et al.): below 0.5 reliable, 0.5-0.7 slow to "
    "converge, above 0.7 unreliable; past either threshold the table ends with a verdict saying what to do."
)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Importance-weighted log p(x) of a trained pyro-vae run (Burda et al. 2015), "
        "with its standard error, the ELBO gap, effective sample size, Pareto k-hat "
        "(PSIS, via arviz) and active units. The defaults (K = 5000 on all 10,000 test "
        "images) took 23.5 min on a 2-core x86-64 CPU (about 35,000 images x K per "
        "second); --limit 1000 or --k 500 gives a first look in a few minutes. With "
        "--devices N each process scores its share of the images; the numbers equal "
        "one process's.",
        epilog="Prints a table and writes into RUN_DIR: eval.json (one entry per split, merged with "
        "earlier ones: log p_K(x) with its standard error, the ELBO on the same samples, ESS, "
        "k-hat shares, active units, time), khat_SPLIT.png (histogram of the per-image Pareto "
        "k-hat) and log_px_vs_k_SPLIT.png (log p_K(x) against K on the first --curve-images "
        "images). Nothing else is changed. " + READING,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by python -m pyro_vae.fit")
    p.add_argument(
        "--k",
        type=int,
        default=DEFAULT_K,
        help=f"importance samples per image (default: {DEFAULT_K}, as Burda et al.; the cost "
        "grows linearly in K and in the number of images)",
    )
    p.add_argument("--split", default="test", help=f"one of {', '.join(SPLITS)} (default: test)")
    p.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"images per batch (default: {DEFAULT_BATCH_SIZE})"
    )
    p.add_argument(
        "--k-chunk", type=int, default=None, help="particles per model call (default: as many as --memory-mb allows)"
    )
    p.add_argument(
        "--memory-mb",
        type=float,
        default=DEFAULT_MEMORY_MB,
        help=f"memory budget for one chunk and one batch's log-weights (default: {DEFAULT_MEMORY_MB:g})",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images of the split")
    p.add_argument(
        "--curve-images",
        type=int,
        default=DEFAULT_CURVE_IMAGES,
        help=f"images for the log p_K against K picture (default: {DEFAULT_CURVE_IMAGES}; 0: skip)",
    )
    p.add_argument(
        "--checkpoint", default="best", choices=("best", "last"), help="which checkpoint to evaluate (default: best)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--data",
        default=None,
        metavar="PATH",
        help="where the run's --data now lie, if they moved (their content must match the "
        "checksum in the run's config.json)",
    )
    add_device_flags(p, DEVICE_FLAGS)
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    pyro.settings.set(module_local_params=True)

    def work():
        devices = device_options(args, check_accelerator)
        evaluate_run(
            args.run_dir,
            k=args.k,
            split=args.split,
            batch_size=args.batch_size,
            k_chunk=args.k_chunk,
            memory_mb=args.memory_mb,
            limit=args.limit,
            curve_images=args.curve_images,
            checkpoint=args.checkpoint,
            seed=args.seed,
            progress=not args.no_progress,
            log=say,
            data=args.data,
            rerun=f"{prog} {shlex.join(argv)}",  # named when a process of the job ends
            **devices,
        )

    return exit_status(work)
