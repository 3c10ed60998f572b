"""Device names from the command line and the API -> accelerators and ``torch.device``s, with clear errors.

    check_accelerator("auto")   # "auto": for Lightning Fabric (--accelerator of fit and evaluate)
    resolve_device("auto")      # cuda if PyTorch sees a GPU, else mps, else cpu
    resolve_device("cuda:1")    # that GPU, if it exists
    resolve_device("gpu")       # ConfigError: --accelerator 'gpu' is not a device; use auto, cpu, ...

This is the one place where a device name is checked, and where ``--device``, an alias of
``--accelerator``, is resolved: the engine's Fabric, the command-line tools, ``generate`` and
``pyro_vae.load`` all go through it, so a misspelt or absent device
is reported once, in words, before any file is read (torch's own messages, e.g. a checkpoint
"corrupt" because its map_location named no device, never reach the user).
"""

from __future__ import annotations

import torch

from .errors import ConfigError

ACCELERATORS = ("auto", "cpu", "cuda", "mps")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N (N a GPU index) or mps"


def accelerator_alias(accelerator: str | None, device: str | None) -> tuple[str | None, str]:
    """``--device`` is an alias of ``--accelerator``: the accelerator asked for (None: neither
    given) and the flag that named it, for the messages of later checks. Both given, and
    different, is refused."""
    if device is None:
        return accelerator, "--accelerator"
    if accelerator not in (None, "auto", device):
        raise ConfigError(
            f"--device is the old name of --accelerator; give only --accelerator "
            f"(got --device {device} and --accelerator {accelerator})"
        )
    return device, "--device"


def check_accelerator_name(name: str, flag: str = "--accelerator") -> str:
    """``name`` if it is one of :data:`ACCELERATORS`; a clear error otherwise."""
    if name not in ACCELERATORS:
        raise ConfigError(f"{flag} {name!r} is not one of: {', '.join(ACCELERATORS)}")
    return name


def check_accelerator(name: str, flag: str = "--accelerator") -> str:
    """``name`` (one of :data:`ACCELERATORS`) if this machine has it; a clear error otherwise."""
    check_accelerator_name(name, flag)
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{flag} cuda was given but PyTorch sees no CUDA GPU here; use {flag} cpu "
            "(or auto), or install a CUDA build of PyTorch on a machine with a GPU"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{flag} mps was given but this PyTorch has no Apple MPS device; use {flag} cpu")
    return name


def resolve_device(name: str | torch.device, flag: str = "--accelerator") -> torch.device:
    """One device for a single-process tool: ``auto`` -> cuda, else mps, else cpu; ``cuda:N`` a GPU
    that exists; a ``torch.device`` is checked the same way."""
    if isinstance(name, torch.device):
        device = name
    elif not isinstance(name, str):
        raise ConfigError(f"{flag} must be a device name ({DEVICE_CHOICES}), got {name!r}")
    elif name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"{flag} {name!r} is not a device; use {DEVICE_CHOICES}") from None
        if device.type not in ACCELERATORS:
            raise ConfigError(f"{flag} {name!r} is not a device pyro-vae runs on; use {DEVICE_CHOICES}")
    check_accelerator(device.type, flag)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"{flag} {name}: this machine has {torch.cuda.device_count()} GPU(s), "
            f"numbered 0 to {torch.cuda.device_count() - 1}"
        )
    return device
