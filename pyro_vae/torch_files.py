"""Reading ``.pt`` files safely, with messages a user can act on.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors, numbers, strings and
containers only, so a tampered file cannot run code. torch's own error for a refused file advises
"re-running with weights_only=False", which would run that code; that advice never reaches a
user: :func:`load_weights_only` names the file and what is wrong with it in its own words, and
:func:`code_in_file` names the Python object a refused file holds, for messages of one's own.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import warnings
from pathlib import Path

import torch

from .errors import CheckpointError

_GLOBAL = re.compile(r"unsupported GLOBAL ([\w.]+)", re.IGNORECASE)


def load_weights_only(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    what: str = "checkpoint",
    fix: str = "train again, or resume from another checkpoint",
):
    """``torch.load(path, weights_only=True)``, or :class:`CheckpointError` naming ``path``.

    ``map_location`` must already be a valid device (see :func:`pyro_vae.devices.resolve_device`):
    every failure here is blamed on the file."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # e.g. torch's note on a foreign pickle protocol
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        name = code_in_file(e, path)
        if name:
            raise CheckpointError(
                f"{what} {path} is not a pyro-vae {what}: it holds Python objects ({name}) that "
                f"a pyro-vae {what} never contains; it was not loaded and nothing in it ran; {fix}"
            ) from None
        raise CheckpointError(
            f"{what} {path} is not a pyro-vae {what} (not a readable tensor file: random or damaged bytes); {fix}"
        ) from None
    except OSError as e:
        raise CheckpointError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except Exception:  # noqa: BLE001 - a truncated or foreign file fails in many ways inside torch
        size = path.stat().st_size if path.is_file() else 0
        raise CheckpointError(
            f"{what} {path} is corrupt or truncated ({size:,} bytes) and cannot be read; {fix}"
        ) from None


def code_in_file(error: pickle.UnpicklingError, path: str | Path) -> str | None:
    """The Python object (``"posix.system"``) that made ``torch.load(path, weights_only=True)``
    refuse ``path`` with ``error``, or None when the refusal was not about such an object."""
    found = _GLOBAL.search(str(error))
    return found.group(1) if found else _first_global(Path(path))


def _first_global(path: Path, limit: int = 1 << 20) -> str | None:
    """The first Python object a plain pickle file refers to ("posix.system"), read with
    ``pickletools`` (which parses, never executes), or None."""
    try:
        data = path.read_bytes()[:limit]
        strings: list[str] = []
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "GLOBAL":
                return str(arg).replace(" ", ".")
            if opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                return f"{strings[-2]}.{strings[-1]}"
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - not a pickle, or a damaged one: no name to give
        return None
    return None
