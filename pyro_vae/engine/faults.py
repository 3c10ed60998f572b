"""Named points where the tests kill a training or evaluating process (``kill -9``) to check that
``--resume`` recovers from an interruption there, and that a job of several processes reports a
process that died.

    PYRO_VAE_KILL_AT=best@3 python -m pyro_vae.fit ...   # killed while copying epoch 3's best.pt
    PYRO_VAE_KILL_AT=step@4 PYRO_VAE_KILL_RANK=1 python -m pyro_vae.fit --devices 2 ...  # rank 1 only

Points: ``step@S`` (after optimizer step S, counted over the whole run: mid-epoch),
``checkpoint@E`` (epoch E's last.pt fully written to its temporary file, not yet renamed),
``best@E`` (best.pt copied to its temporary file, not yet renamed), ``metrics@E`` (before
metrics.jsonl is rewritten), ``curves@E`` (metrics.jsonl rewritten, curves.png not yet),
``pictures@E`` (after the last epoch's checkpoints, before the
pictures), ``summary@E`` (pictures written, summary.json not yet), ``complete@E`` (rank 0 has
written summary.json: the run is complete; every process, before the barrier that ends training),
``evaluate@0`` (an evaluation, ``evaluate`` or ``--eval-k``: the model and the images loaded, no
batch scored yet).
Without the variable (always, outside the
tests) each point is one dictionary look-up. ``PYRO_VAE_KILL_SIGNAL=TERM`` sends SIGTERM (a
scheduler's stop) there instead of SIGKILL; ``PYRO_VAE_KILL_RANK=R`` kills only the process of
global rank R (default: every process that reaches the point).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from .fabric import rank_and_world

KILL_ENV = "PYRO_VAE_KILL_AT"
KILL_SIGNAL_ENV = "PYRO_VAE_KILL_SIGNAL"  # KILL (default) or TERM
KILL_RANK_ENV = "PYRO_VAE_KILL_RANK"  # a global rank; unset: every process


def kill_point(name: str, count: int, after: Path | None = None) -> None:
    """Send this process SIGKILL (or ``PYRO_VAE_KILL_SIGNAL``) if ``PYRO_VAE_KILL_AT`` is ``name@count``
    (and, with ``PYRO_VAE_KILL_RANK``, this process has that rank); with ``after``, once that file
    exists (another process writes it; at most a minute's wait)."""
    wanted = os.environ.get(KILL_ENV)
    if wanted and wanted == f"{name}@{count}":
        rank = os.environ.get(KILL_RANK_ENV)
        if rank is not None and int(rank) != rank_and_world()[0]:
            return
        waited = 0.0
        while after is not None and not after.exists() and waited < 60:
            time.sleep(0.02)
            waited += 0.02
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get(KILL_SIGNAL_ENV, "KILL")))


def step_hook(trainer, _loss) -> None:
    """A Trainer step hook for ``step@S`` (registered only while the variable is set)."""
    kill_point("step", trainer.step)
