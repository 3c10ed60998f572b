"""Training a run end to end, below the command line: the output folder's lock, the processes,
the data, the memory check, the loop, the final line, and with ``--eval-k`` the evaluation.
``resume_config`` is the rule for what a continued run may change."""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path

import pyro

from ..config import FitConfig
from ..config_values import spelled
from ..data import data_record, load_data
from ..errors import ConfigError, ProcessLost
from ..run_lock import ensure_writable_folder
from ..variants import build_vae, check_data, checked
from .evaluate import evaluate_run
from .fabric import fabric_for, job_processes, launch
from .loop import Trainer, say
from .memory import check_training_memory
from .peers import describe_ended, ended_ranks, lost_peer, lost_process_message, process_lost, resume_command
from .run_config import RESUMABLE_CHANGES, read_run_config
from .run_folder import claim
from .training_data import rows_used

# why training ended before --epochs, as the final line says it
STOPPED_NOTES = {
    "epochs": "",
    "max-minutes": "stopped by --max-minutes; ",
    "early-stopping": "stopped early (--early-stopping); ",
}


def resume_config(requested: dict, run_dir: str | Path, *, keywords: bool = False) -> FitConfig:
    """The configuration of the run in ``run_dir`` continued with ``requested`` (field names with
    underscores): its saved config.json updated by the requested options, which may change only
    :data:`~pyro_vae.engine.run_config.RESUMABLE_CHANGES`; the run continues in its own folder.
    ``keywords``: messages name Python keyword arguments (``pyro_vae.fit``), else flags."""
    run_dir = Path(run_dir)
    resume = spelled("resume", str(run_dir), keywords=keywords)
    saved = read_run_config(run_dir, resume)
    requested = {"out": str(run_dir), **requested}
    source = "pyro_vae.fit options" if keywords else "options"
    wanted = checked(
        FitConfig.from_dict({**saved.to_dict(), **requested}, source=source, keywords=keywords), keywords=keywords
    )
    name = (lambda n: n) if keywords else (lambda n: n.replace("_", "-"))
    conflicts = [
        f"{name(f.name)} (run: {getattr(saved, f.name)!r}, given: {getattr(wanted, f.name)!r})"
        for f in dataclasses.fields(FitConfig)
        if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(wanted, f.name)
    ]
    if conflicts:
        raise ConfigError(
            f"{resume}: these options differ from the run's config.json: "
            f"{'; '.join(conflicts)}. Drop them to continue the run, or start a new run "
            f"with a different {spelled('out', keywords=keywords)}"
        )
    if Path(wanted.out).resolve() != run_dir.resolve():
        raise ConfigError(f"{resume} continues that run in place; drop {spelled('out', wanted.out, keywords=keywords)}")
    return wanted


def run(
    config: FitConfig,
    resume: str | None = None,
    fabric=None,
    overwrite: bool = False,
    pieces: dict | None = None,
    keywords: bool = False,
) -> dict:
    """Train (or continue) the run ``config`` describes, in as many processes as it asks for:
    ``--devices 2`` starts the second process here; under torchrun or SLURM each process runs
    this. ``pieces``: prior / guide / likelihood objects to build the VAE with (``pyro_vae.fit``;
    config names their classes). Returns rank 0's summary (an empty dict on the other ranks).

    Rank 0 holds the output folder's lock for the whole run (a second ``fit`` on it is refused);
    a folder that already holds a run is refused unless ``resume`` or ``overwrite`` is given.
    ``keywords``: the messages name Python keyword arguments (``pyro_vae.fit``), else flags."""
    pyro.settings.set(module_local_params=True)  # parameters live in the modules
    config = checked(config, keywords=keywords)  # every bad combination is refused before training
    world = config.world_size
    if world and config.batch_size % world:  # before any process starts (the variant checks it again)
        batch = partial(spelled, "batch_size", keywords=keywords)
        raise ConfigError(
            f"{batch(config.batch_size)} (the global batch) is split evenly across "
            f"{world} processes, so it must be divisible by {world}; e.g. "
            f"{batch(max(world, config.batch_size // world * world))}"
        )
    if fabric is None or fabric.is_global_zero:
        ensure_writable_folder(config.out, "--out")  # before the data and the model: fail in a second
    if fabric is None:
        fabric = fabric_for(config)
        processes = launch(fabric, log=say)
    else:
        processes = job_processes(fabric)
    # after the launch: the processes Fabric starts run this too, and only rank 0 owns the folder
    claimed = dict(resume=resume is not None, overwrite=overwrite, log=say, keywords=keywords)
    lock = claim(config.out, **claimed) if fabric.is_global_zero else None
    try:
        return _run(config, resume, fabric, processes, pieces, keywords)
    except Exception as e:
        if fabric.world_size > 1 and lost_peer(e):
            raise _process_lost(processes, fabric.global_rank, config.out, keywords) from None
        raise
    finally:
        if lock is not None:
            lock.release()


def _process_lost(processes: list, rank: int, out: str, keywords: bool) -> ProcessLost:
    """The error of a run whose job lost a process: rank 0's says which and how to continue; the
    other ranks end without a word (rank 0 speaks), at once where Fabric started them from ours."""
    return process_lost(processes, rank, lambda ended: lost_process_message(processes, ended, out, keywords))


def _run(
    config: FitConfig, resume: str | None, fabric, processes: list, pieces: dict | None = None, keywords: bool = False
) -> dict:
    with fabric.rank_zero_first():  # rank 0 decodes a --data folder into its cache; the others reuse it
        dataset = load_data(config, log=say if fabric.is_global_zero else (lambda _line: None), rows=rows_used(config))
    config = config.replace(**data_record(dataset, config))  # config.json records the data (and its mask)
    check_data(config, dataset)  # e.g. a kind that takes labels needs labelled data
    check_training_memory(config, dataset, fabric.device)  # refuse a run that cannot fit, with the fix
    vae = None
    if pieces:
        pyro.set_rng_seed(config.seed)
        vae = build_vae(config, dataset.image_shape, dataset.num_classes, **pieces)
    trainer = Trainer(config, dataset, Path(config.out), fabric=fabric, vae=vae)
    if resume is not None:
        trainer.restore(Path(resume) / "last.pt")
        resumed = spelled("resume", str(resume), keywords=keywords)
        more = "epochs=N" if keywords else "--epochs N"
        if trainer.epoch > config.epochs:
            raise ConfigError(
                f"{resumed}: the run already has {trainer.epoch} epochs, more than "
                f"{spelled('epochs', config.epochs, keywords=keywords)}; ask for more with {more} "
                f"(N > {trainer.epoch})"
            )
        if trainer.epoch == config.epochs:
            missing = fabric.broadcast(unfinished(trainer) if fabric.is_global_zero else None, src=0)
            if not missing:
                raise ConfigError(
                    f"{resumed}: the run already has {trainer.epoch} epochs and is "
                    f"complete; ask for more with {more} (N > {trainer.epoch})"
                )
            if fabric.is_global_zero:
                say(
                    f"--resume {resume}: its {trainer.epoch} epochs are done; finishing what an interruption "
                    f"left: {', '.join(missing)}"
                )
    summary = trainer.fit()
    if trainer.lost_peer:  # rank 0 after a complete run whose other processes did not wait for it
        ended = describe_ended(processes, ended_ranks(processes, 0))
        say(f"note: {ended} of this job ended after the run was complete; nothing is lost")
        if config.eval_k:  # the evaluation needs every process: --resume does it
            raise _process_lost(processes, 0, config.out, keywords)
    if fabric.is_global_zero:
        final = summary["final"]
        say(
            f"done: {summary['epochs']} epochs in {summary['seconds'] / 60:.1f} min on {summary['device']}; "
            f"test ELBO {final['test_elbo']:.2f} nats/image ({summary['test_binarization']}); "
            + (f"{final['test_bits_per_dim']:.3f} bits/dim; " if "test_bits_per_dim" in final else "")
            + (f"test accuracy of q(y|x) {final['test_accuracy']:.2%}; " if "test_accuracy" in final else "")
            + f"best validation ELBO at epoch {summary['best_epoch']}; "
            + STOPPED_NOTES[summary["stopped"]]
            + f"everything is in {config.out}/"
        )
    if config.eval_k:
        limit = min(config.eval_size, len(dataset.test)) if config.eval_size else None
        again = resume_command(config.out, keywords)  # --resume runs only the evaluation
        entry = evaluate_run(
            config.out, k=config.eval_k, limit=limit, fabric=fabric, processes=processes, log=say, rerun=again
        )
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
