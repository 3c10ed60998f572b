"""``python -m pyro_vae.fit`` (``pyro-vae fit``): train a VAE and write config, metrics,
checkpoints and pictures.

Every option is a field of :class:`pyro_vae.config.FitConfig`; ``--config FILE`` (YAML or JSON)
supplies any of them and flags given on the command line win. ``--resume DIR`` continues the run
in DIR from its ``last.pt`` up to ``--epochs``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..config import GROUPS, FitConfig, config_fields
from ..devices import check_accelerator_name
from ..engine.train import resume_config, run
from ..interruptions import sigterm_as_interrupt
from ..variants import checked
from .common import add_field_flag, exit_status, load_config_file, resolve_accelerator

PROG = "python -m pyro_vae.fit"
INTERRUPTED = "interrupted: the last completed epoch's checkpoint (last.pt) is intact; continue with --resume"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train a variational autoencoder, written as a Pyro model and guide, on Pyro's ELBO "
        "with one torch optimizer, in one process or many (Lightning Fabric).",
        epilog="Writes to --out: config.json, metrics.jsonl, last.pt, best.pt, summary.json and "
        "pictures (samples.png, reconstructions.png, curves.png, latent_map.png, interpolation.png; "
        "--model cvae / m2: analogies.png, and for m2 confusion_matrix.png and labelled_indices.json).",
    )
    groups = {name: parser.add_argument_group(f"{name} options", description) for name, description in GROUPS.items()}
    for f in config_fields():
        add_field_flag(groups[f.metadata["group"]], f)
    output = groups["output"]
    output.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON file of options (same keys as "
        "the flags, dashes or underscores); flags given here override it",
    )
    output.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR from its last.pt up to "
        "--epochs, or finish what an interruption left (best.pt, pictures, summary); other "
        "options must match the run's config.json",
    )
    output.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an --out folder that "
        "holds one, deleting that run's files first (without it, fit refuses such a folder)",
    )
    return parser


def resolve_config(given: dict, config_file: str | None, resume: str | None) -> FitConfig:
    """The run's configuration: saved config (when resuming) < --config FILE < flags."""
    requested = dict(load_config_file(config_file)) if config_file else {}
    requested.update(given)
    requested = {k.replace("-", "_"): v for k, v in requested.items()}
    requested = resolve_accelerator(requested, check_accelerator_name)
    if resume is None:
        return checked(FitConfig.from_dict(requested, source="options"))
    return resume_config(requested, resume)


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    args = vars(build_parser(prog).parse_args(argv))
    config_file, resume, overwrite = args.pop("config"), args.pop("resume"), args.pop("overwrite")

    def work():
        config = resolve_config(args, config_file, resume)
        with sigterm_as_interrupt():  # a scheduler's stop ends the run as Ctrl-C does
            run(config, resume, overwrite=overwrite)

    return exit_status(work, interrupted=INTERRUPTED)
