"""Checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds the networks (``state_dict``, batch-norm statistics included), this VAE's
entries of Pyro's param store, the ``pyro.optim`` optimizer and learning-rate scheduler states,
every random-number generator state (torch CPU and CUDA, Python, NumPy, and the batch sampler's),
the epoch and the step. Pyro keys param-store and optimizer entries by parameter name, which
carries the VAE's per-instance prefix (``vae3.model.decoder...``); they are saved relative to the
VAE (``model.decoder...``) so a checkpoint loads into any instance.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from .atomic import atomic_open
from .errors import CheckpointError
from .torch_files import load_weights_only

FORMAT = "pyro-vae-checkpoint/1"


def _strip(prefix: str, state: dict) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k is not None and k.startswith(prefix)}


def _add(prefix: str, state: dict) -> dict:
    return {prefix + k: v for k, v in state.items()}


def rng_state() -> dict[str, Any]:
    """All global RNG states, in types ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))


def param_store_state(prefix: str) -> dict:
    """This VAE's entries of Pyro's param store (unconstrained values), keyed relative to the VAE,
    with each constraint by name (constraint objects are not weights-only loadable). PyroModule
    registers the module's own tensors there, so on load the networks' state restores them."""
    store = pyro.get_param_store().get_state()
    return {
        "params": _strip(prefix, store["params"]),
        "constraints": {k: repr(v) for k, v in _strip(prefix, store["constraints"]).items()},
    }


def save_checkpoint(path: str | Path, *, vae, optim, sampler_state: dict, epoch: int, step: int,
                    config: dict, extra: dict | None = None) -> None:
    """Write a checkpoint to ``path`` atomically (temporary file + rename)."""
    payload = {
        "format": FORMAT,
        "config": config,
        "epoch": epoch,
        "step": step,
        "networks": vae.state_dict(),
        "param_store": param_store_state(vae.param_prefix),
        "optimizer": _strip(vae.param_prefix, optim.get_state()),
        "rng": rng_state(),
        "sampler": sampler_state,
        "extra": extra or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # in memory first: a full disk then fails in our own write, with its errno
    with atomic_open(path, "wb") as f:
        f.write(buffer.getbuffer())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint, or raise CheckpointError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}; train first with `python -m pyro_vae.fit --out {path.parent}`")
    payload = load_weights_only(path, map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} is not a {FORMAT} file (format: "
            f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__})")
    return payload


def restore_networks(vae, payload: dict, path: str | Path = "checkpoint") -> None:
    """Load the checkpoint's network weights into ``vae`` (and Pyro's param store)."""
    try:
        vae.load_state_dict(payload["networks"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{path} does not fit this model's configuration: {e}") from None
    # Keep the param store in step with the module: entries PyroModule already registered are the
    # module's own tensors (updated in place above); others are registered on first use.


def restore_training_state(vae, optim, payload: dict) -> None:
    """Restore optimizer/scheduler states and the global RNGs from a checkpoint."""
    optim.set_state(_add(vae.param_prefix, payload["optimizer"]))
    set_rng_state(payload["rng"])
