"""``python -m pyro_vae.generate RUN_DIR`` (``pyro-vae generate``): images from a trained run,
written next to it.

    python -m pyro_vae.generate runs/cvae --label 7 --n 64      # a grid of 64 sevens
    python -m pyro_vae.generate runs/cvae --analogies 12         # 10 labels x 12 shared styles
    python -m pyro_vae.generate runs/mnist --n 64                # an unconditional run: p(z) samples

Each image is E[x | z, y] with z ~ p(z | y); the grid is ``generated_label<L>.png`` (or
``generated.png``) in RUN_DIR unless ``--out`` names a file. ``--analogies N`` writes
``analogies_prior.png``: row c decodes N draws of z, shared by every row, with label c.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import pyro

from ..devices import resolve_device
from ..engine.generate import generate
from .common import add_device_flags, device_options, exit_status

PROG = "python -m pyro_vae.generate"
DEVICE_FLAGS = ("accelerator",)  # one process on one device (cuda:N names a GPU)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Generate images from a trained pyro-vae run.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by python -m pyro_vae.fit")
    p.add_argument(
        "--label",
        type=int,
        default=None,
        help="the class to generate (0-9); needs a --model cvae or m2 run. Default: every "
        "class in turn (conditional runs), or none (plain VAE)",
    )
    p.add_argument("--n", type=int, default=64, help="number of images (default: 64)")
    p.add_argument(
        "--analogies",
        type=int,
        default=0,
        metavar="N",
        help="also write analogies_prior.png: 10 rows (labels) x N columns sharing z",
    )
    p.add_argument("--out", default=None, help="PNG file to write (default: in RUN_DIR)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--seed", type=int, default=0, help="seed of the latent draws (default: 0)")
    add_device_flags(p, DEVICE_FLAGS)
    return p


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    pyro.settings.set(module_local_params=True)

    def work():
        device = device_options(args, resolve_device)["accelerator"]
        generate(
            args.run_dir,
            label=args.label,
            n=args.n,
            analogies=args.analogies,
            out=args.out,
            checkpoint=args.checkpoint,
            seed=args.seed,
            device=device,
        )

    return exit_status(work)
