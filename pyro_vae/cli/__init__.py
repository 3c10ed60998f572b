"""The command-line tools: ``pyro-vae fit|evaluate|generate|reproduce ...`` (or ``python -m
pyro_vae.fit ...``, one module per tool). Each tool parses its flags, calls the library and turns
errors into exit statuses; :mod:`pyro_vae.cli.common` holds what they share."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# each subcommand's module (its main(argv, prog)) and one line for `pyro-vae --help`
TOOLS = {
    "fit": "train a VAE; writes config, metrics, checkpoints and pictures",
    "evaluate": "importance-weighted log p(x) of a trained run, with diagnostics",
    "generate": "images from a trained run",
    "reproduce": "a published experiment's setting, trained and evaluated as the paper did",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-vae",
        description="Variational autoencoders written as Pyro programs.",
        epilog="`pyro-vae TOOL --help` shows a tool's options.",
    )
    tools = parser.add_subparsers(dest="tool", metavar="TOOL", required=True)
    for name, summary in TOOLS.items():
        tools.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in TOOLS:
        parser.parse_args(argv)  # --help, or the usage and a list of the tools
    tool = importlib.import_module(f"{__name__}.{argv[0]}")
    return tool.main(argv[1:], prog=f"pyro-vae {argv[0]}")
