"""When one process of a job of several ends before the others (``kill -9``, out of memory, a
failure of its own): recognising it, naming it, and the one message that says what to do.

A process that ends breaks the collectives of the others: gloo raises a ``RuntimeError``
("Connection closed by peer", "Connection reset by peer") on their next one, NCCL (with its
asynchronous error handling) a ``DistBackendError``. Every step of training holds a collective, so
the others meet the loss within a step. :func:`lost_peer` recognises those errors;
:func:`ended_ranks` names the processes of this machine that have ended, from the process ids that
:func:`~pyro_vae.engine.fabric.job_processes` gathered at the start; :func:`lost_process_message`
is what rank 0 says.
"""

from __future__ import annotations

import os
import shlex
import socket
import time
from pathlib import Path

from .records import read_metrics

# what gloo's errors say when the process at the other end of a connection has ended
LOST_CONNECTION_WORDS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another process of the job ended."""
    import torch.distributed as dist

    if isinstance(error, getattr(dist, "DistBackendError", ())):
        return True
    return isinstance(error, RuntimeError) and any(words in str(error) for words in LOST_CONNECTION_WORDS)


def _ended(pid: int) -> bool:
    """Whether process ``pid`` of this machine has ended (gone, or a zombie not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except (OSError, IndexError):  # no /proc (macOS): ask the kernel whether it exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def ended_ranks(processes: list[tuple[str, int]], rank: int, wait_s: float = 1.0) -> list[int]:
    """The ranks, among ``processes`` ((host, pid) in rank order) on this machine and other than
    ``rank``, whose process has ended; a process dying as the error arrives gets up to ``wait_s``
    to finish dying. Empty when none of this machine's has (the one that ended ran elsewhere)."""
    host = socket.gethostname()
    mine = [(r, pid) for r, (h, pid) in enumerate(processes) if h == host and r != rank]
    deadline = time.monotonic() + wait_s
    while True:
        ended = [r for r, pid in mine if _ended(pid)]
        if ended or time.monotonic() >= deadline:
            return ended
        time.sleep(0.02)


def describe_ended(processes: list[tuple[str, int]], ended: list[int]) -> str:
    """'rank 1 (pid 4242)', 'rank 1 (pid 4242) and rank 2 (pid 4243)', or 'another process' when unknown."""
    if not ended:
        return "another process"
    names = [f"rank {r} (pid {processes[r][1]})" for r in ended]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def resume_command(out: str | Path, keywords: bool = False) -> str:
    """How to continue the run in ``out``: the command line, or the Python call (``keywords``)."""
    if keywords:
        return f"pyro_vae.fit(resume={str(out)!r})"
    return f"python -m pyro_vae.fit --resume {shlex.quote(str(out))}"


def lost_process_message(
    processes: list[tuple[str, int]], ended: list[int], out: str | Path, keywords: bool = False
) -> str:
    """Rank 0's message when a process of the job ended during a run in ``out``: which one, that
    the last completed epoch's checkpoint is intact, and how to continue."""
    out = Path(out)
    who = describe_ended(processes, ended)
    head = f"{who} of this {len(processes)}-process job ended during the run"
    try:
        epochs = read_metrics(out / "metrics.jsonl")
    except (OSError, ValueError):
        epochs = []
    if not (out / "last.pt").is_file():
        return f"{head}, before its first epoch was complete: nothing to resume; run the same command again"
    done = f", epoch {epochs[-1]['epoch']}" if epochs and "epoch" in epochs[-1] else ""
    return (
        f"{head}; the last completed epoch's checkpoint ({out / 'last.pt'}{done}) is intact; "
        f"continue with: {resume_command(out, keywords)}"
    )
