"""One ``torch.optim.Adam`` over every parameter of the loss module (fused where the device
supports it), gradient clipping for ``--optimizer clipped-adam``, and the learning-rate schedule
(``torch.optim.lr_scheduler.ExponentialLR``, stepped once per epoch)."""

from __future__ import annotations

from typing import Iterable

import torch

from ..registry import Registry

CLIP_VALUE = 10.0  # clipped-adam: each gradient element clipped to [-10, 10], as pyro.optim.ClippedAdam

# name -> the value every gradient element is clipped to before the step (None: no clipping)
OPTIMIZERS: Registry[float | None] = Registry("optimizer")
OPTIMIZERS.register("adam")(lambda: None)
OPTIMIZERS.register("clipped-adam")(lambda: CLIP_VALUE)


def _fusable(params: list[torch.Tensor]) -> bool:
    """torch's fused Adam takes floating-point tensors on CPU, CUDA (and a few other) devices."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda", "mps")
                                for p in params)


def build_optimizer(params: Iterable[torch.Tensor], lr: float) -> torch.optim.Adam:
    """``torch.optim.Adam(params, lr)``, fused when every parameter's device supports it, else
    foreach (one kernel per step for all parameters, not one optimizer per parameter)."""
    params = [p for p in params if p.requires_grad]
    if _fusable(params):
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr, foreach=True)


def clip_value(name: str) -> float | None:
    """The gradient clip of ``--optimizer name`` (None: none)."""
    return OPTIMIZERS.build(name)


def build_scheduler(optimizer: torch.optim.Optimizer, lr_decay: float):
    """The learning rate multiplied by ``lr_decay`` after each epoch."""
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
