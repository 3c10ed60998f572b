"""Named points where the tests kill a training process (``kill -9``) to check that ``--resume``
recovers from an interruption there.

    PYRO_VAE_KILL_AT=best@3 python -m pyro_vae.fit ...   # killed while copying epoch 3's best.pt

Points: ``step@S`` (after optimizer step S, counted over the whole run: mid-epoch),
``checkpoint@E`` (epoch E's last.pt fully written to its temporary file, not yet renamed),
``best@E`` (best.pt copied to its temporary file, not yet renamed), ``metrics@E`` (before
metrics.jsonl is rewritten), ``curves@E`` (metrics.jsonl rewritten, curves.png not yet),
``pictures@E`` (after the last epoch's checkpoints, before the
pictures), ``summary@E`` (pictures written, summary.json not yet). Without the variable (always, outside
the tests) each point is one dictionary look-up. ``PYRO_VAE_KILL_SIGNAL=TERM`` sends SIGTERM (a
scheduler's stop) there instead of SIGKILL.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "PYRO_VAE_KILL_AT"
KILL_SIGNAL_ENV = "PYRO_VAE_KILL_SIGNAL"  # KILL (default) or TERM


def kill_point(name: str, count: int) -> None:
    """Send this process SIGKILL (or ``PYRO_VAE_KILL_SIGNAL``) if ``PYRO_VAE_KILL_AT`` is ``name@count``."""
    wanted = os.environ.get(KILL_ENV)
    if wanted and wanted == f"{name}@{count}":
        os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get(KILL_SIGNAL_ENV, "KILL")))


def step_hook(trainer, _loss) -> None:
    """A Trainer step hook for ``step@S`` (registered only while the variable is set)."""
    kill_point("step", trainer.step)
