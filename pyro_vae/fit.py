"""``python -m pyro_vae.fit``: train a VAE and write config, metrics, checkpoints and pictures.

Every option is a field of :class:`pyro_vae.config.FitConfig`; ``--config FILE`` (YAML or JSON)
supplies any of them and flags given on the command line win. ``--resume DIR`` continues the run
in DIR from its ``last.pt`` up to ``--epochs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
from pathlib import Path
from typing import Sequence

import pyro

from .config import GROUPS, FitConfig, config_fields, field_choices, load_config_file
from .data import data_record, load_data
from .engine import Trainer, fabric_for, launch, say
from .engine.fabric import fail
from .engine.run_config import RESUMABLE_CHANGES, read_run_config
from .engine.run_folder import claim
from .errors import ConfigError, PyroVAEError, user_error
from .interruptions import sigterm_as_interrupt
from .memory import check_training_memory
from .run_lock import ensure_writable_folder
from .variants import build_vae, check_data, checked

# why training ended before --epochs, as the final line says it
STOPPED_NOTES = {"epochs": "", "max-minutes": "stopped by --max-minutes; ",
                 "early-stopping": "stopped early (--early-stopping); "}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pyro_vae.fit",
        description="Train a variational autoencoder, written as a Pyro model and guide, on Pyro's ELBO "
                    "with one torch optimizer, in one process or many (Lightning Fabric).",
        epilog="Writes to --out: config.json, metrics.jsonl, last.pt, best.pt, summary.json and "
               "pictures (samples.png, reconstructions.png, curves.png, latent_map.png, interpolation.png; "
               "--model cvae / m2: analogies.png, and for m2 confusion_matrix.png and labelled_indices.json).",
    )
    groups = {name: parser.add_argument_group(f"{name} options", description)
              for name, description in GROUPS.items()}
    for f in config_fields():
        group = groups[f.metadata["group"]]
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, tuple):
            default = ",".join(map(str, default))
        help_text = f.metadata["help"]
        if "default:" not in help_text:  # some fields describe their default themselves
            help_text += f" (default: {default})"
        choices = field_choices(f)
        if choices:
            help_text = f"{{{','.join(choices)}}} " + help_text
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                               help=help_text)
        else:
            group.add_argument(flag, default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text)
    output = groups["output"]
    output.add_argument("--config", metavar="FILE", help="YAML or JSON file of options (same keys as "
                        "the flags, dashes or underscores); flags given here override it")
    output.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last.pt up to "
                        "--epochs, or finish what an interruption left (best.pt, pictures, summary); other "
                        "options must match the run's config.json")
    output.add_argument("--overwrite", action="store_true", help="start a new run in an --out folder that "
                        "holds one, deleting that run's files first (without it, fit refuses such a folder)")
    return parser


def resolve_config(given: dict, config_file: str | None, resume: str | None) -> FitConfig:
    """The run's configuration: saved config (when resuming) < --config FILE < flags."""
    requested = dict(load_config_file(config_file)) if config_file else {}
    requested.update(given)
    requested = {k.replace("-", "_"): v for k, v in requested.items()}
    if resume is None:
        return checked(FitConfig.from_dict(requested, source="options"))
    run_dir = Path(resume)
    saved = read_run_config(run_dir, f"--resume {run_dir}")
    requested.setdefault("out", str(run_dir))
    wanted = checked(FitConfig.from_dict({**saved.to_dict(), **requested}, source="options"))
    conflicts = [
        f"{f.name.replace('_', '-')} (run: {getattr(saved, f.name)!r}, given: {getattr(wanted, f.name)!r})"
        for f in dataclasses.fields(FitConfig)
        if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(wanted, f.name)
    ]
    if conflicts:
        raise ConfigError(f"--resume {run_dir}: these options differ from the run's config.json: "
                          f"{'; '.join(conflicts)}. Drop them to continue the run, or start a new run "
                          f"with a different --out")
    if Path(wanted.out).resolve() != run_dir.resolve():
        raise ConfigError(f"--resume {run_dir} continues that run in place; drop --out {wanted.out}")
    return wanted


def run(config: FitConfig, resume: str | None = None, fabric=None, overwrite: bool = False,
        pieces: dict | None = None) -> dict:
    """Train (or continue) the run ``config`` describes, in as many processes as it asks for:
    ``--devices 2`` starts the second process here; under torchrun or SLURM each process runs
    this. ``pieces``: prior / guide / likelihood objects to build the VAE with (``pyro_vae.fit``;
    config names their classes). Returns rank 0's summary (an empty dict on the other ranks).

    Rank 0 holds the output folder's lock for the whole run (a second ``fit`` on it is refused);
    a folder that already holds a run is refused unless ``resume`` or ``overwrite`` is given."""
    pyro.settings.set(module_local_params=True)  # parameters live in the modules
    config = checked(config)  # every bad combination is refused before training
    world = config.world_size
    if world and config.batch_size % world:  # before any process starts (the variant checks it again)
        raise ConfigError(f"--batch-size {config.batch_size} (the global batch) is split evenly across "
                          f"{world} processes, so it must be divisible by {world}; e.g. --batch-size "
                          f"{max(world, config.batch_size // world * world)}")
    if fabric is None or fabric.is_global_zero:
        ensure_writable_folder(config.out, "--out")  # before the data and the model: fail in a second
    if fabric is None:
        fabric = fabric_for(config)
        launch(fabric)
    # after the launch: the processes Fabric starts run this too, and only rank 0 owns the folder
    lock = claim(config.out, resume=resume is not None, overwrite=overwrite, log=say) if fabric.is_global_zero else None
    try:
        return _run(config, resume, fabric, pieces)
    finally:
        if lock is not None:
            lock.release()


def _run(config: FitConfig, resume: str | None, fabric, pieces: dict | None = None) -> dict:
    with fabric.rank_zero_first():  # rank 0 decodes a --data folder into its cache; the others reuse it
        dataset = load_data(config, log=say if fabric.is_global_zero else (lambda _line: None))
    check_data(config, dataset)  # e.g. a kind that takes labels needs labelled data
    config = config.replace(**data_record(dataset, config))  # config.json records the data
    check_training_memory(config, dataset, fabric.device)  # refuse a run that cannot fit, with the fix
    vae = None
    if pieces:
        pyro.set_rng_seed(config.seed)
        vae = build_vae(config, dataset.image_shape, dataset.num_classes, **pieces)
    trainer = Trainer(config, dataset, Path(config.out), fabric=fabric, vae=vae)
    if resume is not None:
        trainer.restore(Path(resume) / "last.pt")
        if trainer.epoch > config.epochs:
            raise ConfigError(f"--resume {resume}: the run already has {trainer.epoch} epochs, more than "
                              f"--epochs {config.epochs}; ask for more with --epochs N (N > {trainer.epoch})")
        if trainer.epoch == config.epochs:
            missing = fabric.broadcast(unfinished(trainer) if fabric.is_global_zero else None, src=0)
            if not missing:
                raise ConfigError(f"--resume {resume}: the run already has {trainer.epoch} epochs and is "
                                  f"complete; ask for more with --epochs N (N > {trainer.epoch})")
            if fabric.is_global_zero:
                say(f"--resume {resume}: its {trainer.epoch} epochs are done; finishing what an interruption "
                    f"left: {', '.join(missing)}")
    summary = trainer.fit()
    if fabric.is_global_zero:
        final = summary["final"]
        say(f"done: {summary['epochs']} epochs in {summary['seconds'] / 60:.1f} min on {summary['device']}; "
            f"test ELBO {final['test_elbo']:.2f} nats/image ({summary['test_binarization']}); "
            + (f"{final['test_bits_per_dim']:.3f} bits/dim; " if "test_bits_per_dim" in final else "")
            + (f"test accuracy of q(y|x) {final['test_accuracy']:.2%}; " if "test_accuracy" in final else "") +
            f"best validation ELBO at epoch {summary['best_epoch']}; " + STOPPED_NOTES[summary["stopped"]] +
            f"everything is in {config.out}/")
    if config.eval_k:
        from .evaluate import evaluate_run

        limit = min(config.eval_size, len(dataset.test)) if config.eval_size else None
        entry = evaluate_run(config.out, k=config.eval_k, limit=limit, fabric=fabric, log=say)
        if fabric.is_global_zero:
            summary["eval"] = entry
    return summary


def unfinished(trainer) -> list[str]:
    """What a run whose epochs are all done still lacks (an interruption after its last
    checkpoint): what ``restore`` mended (best.pt, metrics.jsonl), the pictures, summary.json, and
    with --eval-k the evaluation."""
    out = trainer.out_dir
    missing = list(trainer.repaired)
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        summary = None
    if not isinstance(summary, dict) or summary.get("epochs") != trainer.epoch:
        missing += ["pictures", "summary.json"]
    else:
        missing += [name for name in summary.get("pictures", []) if not (out / name).is_file()]
    if trainer.config.eval_k:  # --eval-k: the evaluation after training, into eval.json
        try:
            evaluated = "test" in json.loads((out / "eval.json").read_text())
        except (OSError, ValueError, TypeError):
            evaluated = False
        if not evaluated:
            missing.append("eval.json")
    return missing


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    config_file, resume, overwrite = args.pop("config"), args.pop("resume"), args.pop("overwrite")
    try:
        config = resolve_config(args, config_file, resume)
        with sigterm_as_interrupt():  # a scheduler's stop ends the run as Ctrl-C does
            run(config, resume, overwrite=overwrite)
    except (PyroVAEError, OSError) as e:
        shown = user_error(e)  # a full disk as a message; any other OSError is a bug: its traceback shows
        if shown is None:
            raise
        # a bad option or a divergence is the same on every rank: rank 0 reports it; other
        # errors (a file or data set missing on one machine) come from the rank that hit them
        same_everywhere = isinstance(shown, ConfigError) or getattr(shown, "on_every_rank", False)
        return fail(f"error: {shown}", 2, every_rank=not same_everywhere)
    except KeyboardInterrupt:
        return fail("interrupted: the last completed epoch's checkpoint (last.pt) is intact; continue "
                     "with --resume", 130, every_rank=False)
    return 0


class _CallableModule(types.ModuleType):
    """Importing this module (``from pyro_vae.fit import main``, as the tests and scripts do) sets
    the package attribute ``pyro_vae.fit`` to it, in place of the function
    :func:`pyro_vae.api.fit`; calling the module calls that function, so ``pyro_vae.fit(...)``
    works either way."""

    def __call__(self, *args, **kwargs):
        from .api import fit

        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
