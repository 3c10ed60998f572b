"""Checkpoints: everything needed to continue a run exactly, written atomically by rank 0.

A checkpoint holds the networks (``state_dict``: module-local parameters and batch-norm
statistics), the torch optimizer's and learning-rate scheduler's states, every process's
random-number generator states (torch CPU and CUDA, Python, NumPy; one entry per rank), the batch
sampler's state (the same on every rank), the epoch and the step. It is loaded onto the CPU and
moved from there, so RNG states stay CPU tensors whatever the device.

Format 1 (pyro-vae before the Fabric engine: ``pyro.optim`` optimizers, Pyro's param store) holds
the same networks: ``pyro_vae.load``, ``evaluate`` and ``generate`` still read it, but ``--resume``
refuses it (its optimizer state cannot continue exactly in a torch optimizer).
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_open
from ..errors import CheckpointError
from ..torch_files import load_weights_only
from .faults import kill_point

FORMAT = "pyro-vae-checkpoint/2"
READABLE_FORMATS = (FORMAT, "pyro-vae-checkpoint/1")  # networks readable; only FORMAT resumes


def rng_state() -> dict[str, Any]:
    """This process's global RNG states, in types ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))


def save_checkpoint(path: str | Path, *, vae, optimizer, scheduler, rng: list[dict], sampler_state: dict,
                    epoch: int, step: int, config: dict, extra: dict | None = None) -> None:
    """Write a checkpoint to ``path`` atomically (temporary file + rename); ``rng`` has one
    entry per process, in rank order. A full disk raises :class:`~pyro_vae.errors.DiskFull` and
    keeps the previous file at ``path``."""
    payload = {
        "format": FORMAT,
        "config": config,
        "epoch": epoch,
        "step": step,
        "networks": vae.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng,
        "sampler": sampler_state,
        "extra": extra or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # in memory first: a full disk then fails in our own write, with its errno
    with atomic_open(path, "wb") as f:
        f.write(buffer.getbuffer())
        kill_point("checkpoint", epoch)  # (tests only: an interruption before the rename)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint onto the CPU, or raise CheckpointError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}; train first with `python -m pyro_vae.fit --out {path.parent}`")
    payload = load_weights_only(path, "cpu")  # never torch's advice to load it unsafely
    if not isinstance(payload, dict) or payload.get("format") not in READABLE_FORMATS:
        raise CheckpointError(
            f"checkpoint {path} is not a {FORMAT} file (format: "
            f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__})")
    return payload


def check_resumable(payload: dict, path: str | Path, world_size: int) -> None:
    """A clear error unless this engine can continue ``payload`` exactly with ``world_size``
    processes."""
    if payload["format"] != FORMAT:
        raise CheckpointError(
            f"{path} was written by an older pyro-vae (format {payload['format']}, trained with "
            f"pyro.optim and Pyro's param store); its weights still load (pyro_vae.load, evaluate, "
            f"generate), but --resume cannot continue it: train it again with this version")
    saved = len(payload["rng"])
    if saved != world_size:
        raise CheckpointError(
            f"{path} was written by a run of {saved} process(es); resume it with the same number "
            f"(--devices x --num-nodes = {saved}), not {world_size}, so that it continues exactly")


def restore_networks(vae, payload: dict, path: str | Path = "checkpoint") -> None:
    """Load the checkpoint's network weights into ``vae``."""
    try:
        vae.load_state_dict(payload["networks"])
    except RuntimeError as e:
        raise CheckpointError(
            f"{path} does not fit this model's configuration: {e}") from None
