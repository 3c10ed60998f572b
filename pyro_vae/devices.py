"""Device names from the command line and the API -> ``torch.device``, with clear errors.

    resolve_device("auto")      # cuda if PyTorch sees a GPU, else cpu
    resolve_device("cuda:1")    # that GPU, if it exists
    resolve_device("gpu")       # ConfigError: --device 'gpu' is not a device; use auto, cpu, cuda ...

Every tool and ``pyro_vae.load`` go through :func:`resolve_device`, so a misspelt or absent device
is reported once, in words, before any file is read (torch's own messages, e.g. a checkpoint
"corrupt" because its map_location named no device, never reach the user).
"""

from __future__ import annotations

import torch

from .errors import ConfigError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N (N a GPU index)"


def resolve_device(name: str | torch.device, flag: str = "--device") -> torch.device:
    """``auto`` -> cuda if available else cpu; any other name must be a device that exists here."""
    if isinstance(name, torch.device):
        device = name
    elif not isinstance(name, str):
        raise ConfigError(f"{flag} must be a device name ({DEVICE_CHOICES}), got {name!r}")
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"{flag} {name!r} is not a device; use {DEVICE_CHOICES}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ConfigError(f"{flag} {name}: pyro-vae runs on cpu or cuda; use {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        raise ConfigError(f"{flag} {name} was given but PyTorch sees no CUDA GPU here; use {flag} cpu "
                          "(or auto), or install a CUDA build of PyTorch on a machine with a GPU")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{flag} {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                          f"numbered 0 to {torch.cuda.device_count() - 1}")
    return device
