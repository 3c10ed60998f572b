"""A run folder's configuration: reading ``config.json`` with errors that name the fix, checking
that a checkpoint belongs to the same run, and which options a resumed run may change."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from ..config import FitConfig
from ..errors import CheckpointError, ConfigError
from ..variants import resolve_defaults

# Options that may differ between a run's config.json and the checkpoints of that run (resuming may
# change them); every other option defines the model and its training, and must agree. The number
# of processes may not change: the checkpoint holds one RNG state per process, and the resume checks it.
RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "device",
        "accelerator",
        "devices",
        "num_nodes",
        "strategy",
        "tensorboard",
        "data_dir",
        "out",
        "eval_k",
        "data",
        "max_minutes",
    }
)
# --data may move: its content is checked against the recorded checksum


def read_run_config(run_dir: str | Path, what: str = "") -> FitConfig:
    """The :class:`FitConfig` saved in ``run_dir/config.json``, or an error that names the file and
    what is wrong with it (missing, unreadable, not JSON, not a mapping, bad values).

    ``what`` prefixes the messages, e.g. ``"--resume runs/a"``. The defaults that depend on
    other fields are resolved (:func:`pyro_vae.variants.resolve_defaults`)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    prefix = f"{what}: " if what else ""
    if not path.is_file():
        raise CheckpointError(
            f"{prefix}{run_dir}: no config.json there; is it a folder written by "
            f"`python -m pyro_vae.fit --out {run_dir}`?"
        )
    damaged = (
        "it is written by `python -m pyro_vae.fit` and rebuilds the model; restore it from a "
        "copy, or train again (the checkpoints also hold the run's configuration)"
    )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CheckpointError(f"{prefix}cannot read {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{prefix}{path} is corrupt: not valid JSON ({e}); {damaged}") from None
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{prefix}{path} is corrupt: it holds a JSON {type(data).__name__}, not a "
            f"mapping of option names to values; {damaged}"
        )
    try:
        return resolve_defaults(FitConfig.from_dict(data, source=str(path)))
    except ConfigError as e:
        if "cannot import" in str(e):  # a user's own component whose module is not on the path
            raise CheckpointError(
                f"{prefix}{path} names a component this session cannot build: {e}; "
                f"put its module on the Python path (PYTHONPATH) and try again"
            ) from None
        raise CheckpointError(f"{prefix}{e}; {damaged}") from None


def check_checkpoint_config(config: FitConfig, checkpoint_config, path: str | Path) -> None:
    """Raise :class:`CheckpointError` unless the configuration stored inside the checkpoint at
    ``path`` describes the same run as ``config`` (the run's config.json), up to the options a
    resumed run may change (:data:`RESUMABLE_CHANGES`).

    Two processes writing one folder could leave config.json from one run and the checkpoints from
    another; loading such a mix gives a model with the wrong prior or likelihood and nonsense log
    p(x). This check catches it."""
    if not isinstance(checkpoint_config, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds no configuration; it was not written by `python -m pyro_vae.fit`"
        )
    try:
        own = resolve_defaults(FitConfig.from_dict(checkpoint_config, source=f"the configuration inside {path}"))
    except ConfigError as e:
        raise CheckpointError(f"{e}; the checkpoint does not belong to this version of pyro-vae or this run") from None
    config = resolve_defaults(config)
    differ = [
        f"{f.name.replace('_', '-')} (config.json: {getattr(config, f.name)!r}, checkpoint: {getattr(own, f.name)!r})"
        for f in dataclasses.fields(FitConfig)
        if f.name not in RESUMABLE_CHANGES and getattr(config, f.name) != getattr(own, f.name)
    ]
    if differ:
        raise CheckpointError(
            f"checkpoint {path} belongs to another run than its folder's config.json: {'; '.join(differ)}. "
            f"Two runs wrote into one folder; train again into an empty --out folder"
        )
