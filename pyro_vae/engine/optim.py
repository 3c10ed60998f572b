"""One ``torch.optim.Adam`` over every parameter of the loss module (fused where the device
supports it; betas and eps from the config), gradient clipping for ``--optimizer clipped-adam``,
and the learning-rate schedule, a torch scheduler stepped once per epoch and saved in every
checkpoint (``--lr-schedule``: :data:`LR_SCHEDULES`)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..registry import Registry
from ..schedules import burda_lr_factor

CLIP_VALUE = 10.0  # clipped-adam: each gradient element clipped to [-10, 10], as pyro.optim.ClippedAdam

# name -> the value every gradient element is clipped to before the step (None: no clipping)
OPTIMIZERS: Registry[float | None] = Registry("optimizer")
OPTIMIZERS.register("adam")(lambda: None)
OPTIMIZERS.register("clipped-adam")(lambda: CLIP_VALUE)


def _fusable(params: list[torch.Tensor]) -> bool:
    """torch's fused Adam takes floating-point tensors on CPU, CUDA (and a few other) devices."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda", "mps") for p in params)


def build_optimizer(
    params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
) -> torch.optim.Adam:
    """``torch.optim.Adam(params, lr, betas, eps)``, fused when every parameter's device supports
    it, else foreach (one kernel per step for all parameters, not one optimizer per parameter)."""
    params = [p for p in params if p.requires_grad]
    kind = {"fused": True} if _fusable(params) else {"foreach": True}
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, **kind)


def clip_value(name: str) -> float | None:
    """The gradient clip of ``--optimizer name`` (None: none)."""
    return OPTIMIZERS.build(name)


# --lr-schedule: name -> scheduler(optimizer, config), stepped after each epoch
LR_SCHEDULES: Registry[torch.optim.lr_scheduler.LRScheduler] = Registry("learning-rate schedule")
LR_SCHEDULES.register("exponential")(  # lr * lr_decay^epochs
    lambda optimizer, config: torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
)
LR_SCHEDULES.register("burda")(  # Burda et al.: lr * 10^(-i/7) in stage i (3^i passes); a module-level
    # function, so the scheduler's state_dict holds only numbers and resumes exactly
    lambda optimizer, config: torch.optim.lr_scheduler.LambdaLR(optimizer, burda_lr_factor)
)


def build_scheduler(optimizer: torch.optim.Optimizer, config):
    """``config.lr_schedule``'s scheduler of ``optimizer``."""
    return LR_SCHEDULES.build(config.lr_schedule, optimizer, config)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
