"""SIGTERM ends a long command as Ctrl-C does.

A batch scheduler stops a job with SIGTERM before it kills it (SLURM at preemption or at the time
limit, ``kill`` without a signal, torchrun stopping the other workers). Python's default for that
signal ends the process at once with no word; inside :func:`sigterm_as_interrupt` it raises
``KeyboardInterrupt`` instead, so ``fit`` and ``reproduce`` say what Ctrl-C makes them say: the
last completed epoch's checkpoint is intact, continue with ``--resume``. (A background job whose
shell ignored SIGINT keeps ignoring it; SIGTERM still reaches it.)
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside, SIGTERM raises ``KeyboardInterrupt`` in the main thread; the previous handler is put
    back on leaving (signals can only be handled there: elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
