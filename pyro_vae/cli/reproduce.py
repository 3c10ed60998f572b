"""``python -m pyro_vae.reproduce NAME`` (``pyro-vae reproduce``): a published experiment's
setting (:mod:`pyro_vae.engine.reproduce`), trained and evaluated as the paper did, within a time
budget, resumable toward the full schedule.

    python -m pyro_vae.reproduce --list
    python -m pyro_vae.reproduce burda2015-vae-k1 --budget-minutes 90 --out runs/burda2015-vae-k1
    python -m pyro_vae.reproduce --resume runs/burda2015-vae-k1 --budget-minutes 60
    python -m pyro_vae.reproduce --resume runs/tomczak2018-vamp --budget-minutes 30 --eval-size all
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from ..devices import check_accelerator_name
from ..engine.reproduce import (
    ALL_IMAGES,
    CURVE_PICTURE,
    RESULTS,
    SETTINGS,
    K,
    list_settings,
    load_results,
    run,
)
from ..errors import ConfigError
from ..interruptions import sigterm_as_interrupt
from .common import add_device_flags, device_options, exit_status

PROG = "python -m pyro_vae.reproduce"
DEVICE_FLAGS = ("accelerator",)  # where to train and evaluate; the settings run in one process
INTERRUPTED = "interrupted: the last completed pass's checkpoint is intact; continue with --resume"


def _eval_size(text: str) -> int | str:
    """--eval-size: a number of test images, or 'all'."""
    if text == ALL_IMAGES:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of images or '{ALL_IMAGES}', got {text!r}") from None


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Run a published experiment's setting end to end: training within a time budget, "
        "then the paper's evaluation; resumable toward the full schedule.",
        epilog=f"Writes to --out: the run folder of python -m pyro_vae.fit, eval.json, {RESULTS} and {CURVE_PICTURE}.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help=f"one of: {', '.join(SETTINGS)}")
    p.add_argument("--list", action="store_true", help="list the settings with their paper, target and cost")
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=60.0,
        help="minutes of training in this invocation before the evaluation (default: 60)",
    )
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/reproduce/NAME)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR toward the full schedule")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start the setting again in an --out folder that holds a run, deleting that run's files",
    )
    p.add_argument(
        "--data-dir", default=None, metavar="DIR", help="data folder (default: $PYRO_VAE_DATA or ~/.cache/pyro-vae)"
    )
    p.add_argument(
        "--dataset",
        default=None,
        choices=("mnist", "fashion-mnist"),
        help="run the setting on another data set (no published number: a first reference)",
    )
    p.add_argument(
        "--binarize",
        default=None,
        choices=("static", "dynamic"),
        help="train on MNIST binarized the other way than the paper's table (a recorded deviation: "
        "Burda et al. and M2 use dynamic, Tomczak & Welling's targets static)",
    )
    p.add_argument("--k", type=int, default=K, help=f"importance samples of log p(x) (default: {K}, as the papers)")
    p.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="train on the first N images only (a quick check, not the paper's setting)",
    )
    p.add_argument(
        "--eval-size",
        type=_eval_size,
        default=None,
        help="evaluate on the first N images only (a quick check, not the paper's setting); with "
        "--resume, a new N or 'all' replaces the run's (it decides only the final evaluation)",
    )
    p.add_argument("--max-passes", type=int, default=None, help="stop after this many passes in all")
    add_device_flags(p, DEVICE_FLAGS)
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(argv)
    if args.list:
        print(list_settings())
        return 0

    def work():
        accelerator = device_options(args, check_accelerator_name)["accelerator"]
        if args.name is None and args.resume is None:
            raise ConfigError("give a setting NAME (see --list), or --resume DIR")
        if args.resume is not None:
            out = Path(args.resume)
            name = args.name or load_results(out)["name"]
            if args.out is not None and Path(args.out).resolve() != out.resolve():
                raise ConfigError(f"--resume {out} continues that run in place; drop --out {args.out}")
        else:
            name = args.name
            out = Path(args.out or f"runs/reproduce/{name}")
        for flag in ("k", "train_size", "eval_size", "max_passes"):
            value = getattr(args, flag)
            if value is not None and value != ALL_IMAGES and value < 1:
                raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
        with sigterm_as_interrupt():  # a scheduler's stop ends the run as Ctrl-C does
            run(
                name,
                out,
                budget_minutes=args.budget_minutes,
                resume=args.resume is not None,
                overwrite=args.overwrite,
                device=accelerator,
                dataset=args.dataset,
                binarize=args.binarize,
                k=args.k,
                train_size=args.train_size,
                eval_size=args.eval_size,
                max_passes=args.max_passes,
                data_dir=args.data_dir,
                command=f"{prog} {shlex.join(argv)}",
            )

    return exit_status(work, interrupted=INTERRUPTED)
