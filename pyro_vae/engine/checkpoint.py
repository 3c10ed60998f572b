"""Checkpoints: everything needed to continue a run exactly, written atomically by rank 0.

A checkpoint holds the networks (``state_dict``: module-local parameters and batch-norm
statistics), the torch optimizer's and learning-rate scheduler's states, every process's
random-number generator states (torch CPU and CUDA, Python, NumPy; one entry per rank), the batch
sampler's state (the same on every rank), the epoch and the step.

A checkpoint resumes on any device, whichever one wrote it (a CPU run on a GPU, a GPU run on a
CPU, ``cuda:0`` on ``cuda:1``): it is always read onto the CPU (:func:`load_checkpoint`), and
each part moves from there as torch needs it. The RNG states stay CPU tensors
(``torch.set_rng_state`` and ``torch.cuda.set_rng_state`` take only a CPU ``ByteTensor``); CUDA
states are restored for the GPUs this machine has. The networks and Adam's moments move to their
parameters' device; Adam's ``step`` counts go where torch's Adam keeps them for the optimizer's
own settings (:func:`restore_optimizer`). The batch sampler's state is a CPU generator's
(:class:`~pyro_vae.data.DeviceBatches`), the same size on every device.

Format 1 (the states of ``pyro.optim`` optimizers and Pyro's param store) holds the same networks:
``pyro_vae.load``, ``evaluate`` and ``generate`` read it, but ``--resume`` refuses it (its
optimizer state cannot continue exactly in a torch optimizer).
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
    """Restore :func:`rng_state`'s states, from CPU copies whatever device their tensors were read
    onto. The CUDA states are restored for the GPUs present (none on a CPU-only machine; a run
    that saved none, a CPU run, leaves them as seeded)."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))


def save_checkpoint(
    path: str | Path,
    *,
    vae,
    optimizer,
    scheduler,
    rng: list[dict],
    sampler_state: dict,
    epoch: int,
    step: int,
    config: dict,
    extra: dict | None = None,
) -> None:
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
        raise CheckpointError(f"no checkpoint at {path}; train first with `python -m pyro_vae.fit --out {path.parent}`")
    payload = load_weights_only(path, "cpu")  # never torch's advice to load it unsafely
    if not isinstance(payload, dict) or payload.get("format") not in READABLE_FORMATS:
        raise CheckpointError(
            f"checkpoint {path} is not a {FORMAT} file (format: "
            f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__})"
        )
    return payload


def check_resumable(payload: dict, path: str | Path, world_size: int) -> None:
    """A clear error unless this engine can continue ``payload`` exactly with ``world_size``
    processes."""
    if payload["format"] != FORMAT:
        raise CheckpointError(
            f"{path} was written by an older pyro-vae (format {payload['format']}, trained with "
            f"pyro.optim and Pyro's param store); its weights still load (pyro_vae.load, evaluate, "
            f"generate), but --resume cannot continue it: train it again with this version"
        )
    saved = len(payload["rng"])
    if saved != world_size:
        raise CheckpointError(
            f"{path} was written by a run of {saved} process(es); resume it with the same number "
            f"(--devices x --num-nodes = {saved}), not {world_size}, so that it continues exactly"
        )


# The optimizer's own implementation choices, made by build_optimizer for the device this process uses;
# a checkpoint's (made for the device that wrote it) do not replace them.
IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load ``state`` (an optimizer ``state_dict`` on any device) into ``optimizer``, keeping its
    own :data:`IMPLEMENTATION_KEYS`, and put every ``step`` count where torch's Adam keeps it for
    them: a float32 scalar on the parameter's device when fused or capturable (the kernels read it
    there), else a scalar on the CPU. A ``step`` on a GPU for a plain (foreach) Adam would cost a
    host synchronisation per parameter and step; one on the CPU for a fused Adam would fail."""
    own = [{key: group[key] for key in IMPLEMENTATION_KEYS if key in group} for group in optimizer.param_groups]
    if len(own) == len(state["param_groups"]):  # (else load_state_dict says what does not match)
        # torch places each state by the saved groups' settings: give them this optimizer's first
        state = {
            **state,
            "param_groups": [{**saved, **settings} for saved, settings in zip(state["param_groups"], own)],
        }
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        on_device = bool(group.get("fused")) or bool(group.get("capturable"))
        for param in group["params"]:
            param_state = optimizer.state.get(param, {})
            step = param_state.get("step")
            if isinstance(step, torch.Tensor):
                param_state["step"] = (
                    step.to(device=param.device, dtype=torch.float32) if on_device else step.to(device="cpu")
                )


def restore_networks(vae, payload: dict, path: str | Path = "checkpoint") -> None:
    """Load the checkpoint's network weights into ``vae``."""
    try:
        vae.load_state_dict(payload["networks"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit this model's configuration: {e}") from None
