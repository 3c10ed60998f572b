"""Training that diverged, told clearly: a non-finite loss, non-finite parameters, or a
distribution that refused the NaN / infinite arguments overflowing networks gave it. Each is a
:class:`~pyro_vae.errors.TrainingDiverged` naming where it happened, which checkpoint is kept and
what to try; every process raises it (the losses are reduced and the parameters are the same on
every process), and rank 0 alone reports it.

The functions take the running :class:`~pyro_vae.engine.loop.Trainer`: its step, epoch, run
folder and learning rate make the message.
"""

from __future__ import annotations

import re

import torch

from ..errors import TrainingDiverged
from .fabric import all_reduce

# torch's argument check of a distribution: "Expected parameter loc (Tensor of shape ...) of
# distribution Normal(...) to satisfy the constraint Real(), but found invalid values"
INVALID_ARGUMENT = re.compile(
    r"Expected parameter (?P<name>\w+) .*?of distribution (?P<dist>\w+).*?"
    r"but found invalid values",
    re.DOTALL,
)


def _kept(trainer) -> str:
    if trainer.epoch > 0:
        return f"the last good checkpoint, {trainer.out_dir / 'last.pt'} (epoch {trainer.epoch}), is kept"
    return "no checkpoint was written yet"


def _advice(trainer) -> str:
    return f"Try a lower --lr (now {trainer.config.lr:g}), --optimizer clipped-adam, or KL warm-up (--warmup-epochs 5)"


def summed_finite_losses(trainer, losses: list[torch.Tensor], epoch: int, last_index: int) -> torch.Tensor:
    """The pending step losses averaged over the processes (each is already an estimate of the
    whole set's loss) and summed; TrainingDiverged, on every process, at the first one that is
    not finite. ``last_index`` is the epoch's index of the last of them."""
    stacked = all_reduce(trainer.fabric, torch.stack(losses).double(), reduce_op="mean")
    finite = torch.isfinite(stacked)
    if bool(finite.all()):
        return stacked.sum()
    first = int((~finite).nonzero()[0])
    batch = last_index - len(losses) + 1 + first
    step = trainer.step - len(losses) + first + 1
    error = TrainingDiverged(
        f"the loss became {float(stacked[first])} at epoch {epoch}, step {step} (batch {batch + 1} of "
        f"{len(trainer.variant)}); training stopped and {_kept(trainer)}. {_advice(trainer)}"
    )
    error.on_every_rank = True  # every process raises it: rank 0 alone reports it
    raise error


def non_finite_parameters(module: torch.nn.Module) -> list[str]:
    """The names of ``module``'s parameters holding NaN or infinity (one device sync)."""
    named = list(module.named_parameters())
    finite = torch.stack([torch.isfinite(p).all() for _, p in named]).tolist()
    return [name for (name, _), ok in zip(named, finite) if not ok]


def check_parameters(trainer, epoch: int) -> None:
    """After an epoch, before its checkpoint: every parameter finite, or TrainingDiverged."""
    bad = non_finite_parameters(trainer.vae)
    if bad:
        raise diverged(trainer, epoch, None, bad)


def diverged(trainer, epoch: int, error: ValueError | None, bad: list[str] | None = None) -> Exception:
    """TrainingDiverged when the parameters are no longer finite (``bad``: their names, looked up
    if not given), or when a distribution refused the invalid (NaN, infinite) arguments that
    overflowing networks gave it: torch's argument check raises that ValueError inside a step,
    before any loss can be read. (The data were checked before training.) Any other ``error`` is
    returned as it is."""
    bad = non_finite_parameters(trainer.vae) if bad is None else bad
    refused = None if error is None else INVALID_ARGUMENT.search(str(error))
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        cause = f"the parameters became NaN or infinite ({shown})"
    elif refused:
        cause = (
            f"the networks' outputs overflowed: the {refused['name']} of a {refused['dist']} "
            f"distribution became NaN or infinite"
        )
    else:
        return error
    steps = len(trainer.variant)
    batch = trainer.step - (epoch - 1) * steps  # optimizer steps done in this epoch
    where = (
        f"epoch {epoch}, after step {trainer.step} (batch {batch} of {steps})"
        if batch < steps
        else f"the end of epoch {epoch}"
    )
    error = TrainingDiverged(
        f"training diverged at {where}: {cause}; training stopped and {_kept(trainer)}. {_advice(trainer)}"
    )
    error.on_every_rank = True  # the parameters are the same on every process
    return error
