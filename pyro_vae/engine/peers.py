"""When one process of a job of several ends before the others (``kill -9``, out of memory, a
failure of its own): recognising it, naming it, and the one message that says what to do.

A process that ends breaks the collectives of the others: gloo raises a ``RuntimeError``
("Connection closed by peer", "Connection reset by peer") on their next one, NCCL (with its
asynchronous error handling) a ``DistBackendError``. Every step of training holds a collective, so
the others meet the loss within a step. :func:`lost_peer` recognises those errors;
:func:`ended_ranks` names the processes of this machine that have ended, from the process ids that
:func:`~pyro_vae.engine.fabric.job_processes` gathered at the start; :func:`process_lost` is the
error each process raises, whose message rank 0 says: :func:`lost_process_message` for training,
:func:`lost_evaluation_message` for an evaluation.

An evaluation holds no collective while each process scores its share of the images, for minutes
at a time; Lightning's launcher kills every process, rank 0 included and without a word, within
5 seconds of a process it started ending with an error. There :class:`PeerWatch` speaks first:
rank 0 watches the other processes of its machine and reports the moment one ends.
:func:`lost_processes_reported` puts both together around the part of a job that needs every process.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import ProcessLost
from .fabric import LAUNCHER_PID
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
    head = _ended_during(processes, ended, "the run")
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


def lost_evaluation_message(
    processes: list[tuple[str, int]], ended: list[int], run_dir: str | Path, rerun: str | None = None
) -> str:
    """Rank 0's message when a process of the job ended while it evaluated the run in ``run_dir``:
    which one, that nothing of the run was changed (rank 0 writes eval.json and the pictures only
    once every process's results are gathered, and eval.json atomically), and how to evaluate
    again (``rerun``: the command; None: say to run the same one)."""
    run_dir = Path(run_dir)
    if (run_dir / "eval.json").is_file():
        kept = "its checkpoints and eval.json are untouched"
    else:
        kept = "its checkpoints are untouched and no eval.json was written"
    again = f"evaluate again with: {rerun}" if rerun else "run the same evaluation again"
    head = _ended_during(processes, ended, "the evaluation")
    return f"{head}, before its results were written: nothing in {run_dir} was changed ({kept}); {again}"


def _ended_during(processes: list[tuple[str, int]], ended: list[int], what: str) -> str:
    return f"{describe_ended(processes, ended)} of this {len(processes)}-process job ended during {what}"


LostMessage = Callable[[list[int]], str]  # rank 0's message, given the ranks that ended


def process_lost(processes: list[tuple[str, int]], rank: int, message: LostMessage) -> ProcessLost:
    """The error of a job that lost a process, for this process (``rank``) to raise: rank 0's is
    ``message`` of the ranks that ended; the other ranks end without a word (rank 0 speaks), at
    once where Fabric started them from rank 0."""
    if rank > 0:
        if os.environ.get(LAUNCHER_PID):  # nothing of this process's own script can go on without rank 0
            sys.stdout.flush()
            os._exit(2)
        return ProcessLost(f"rank {rank}: another process of the job ended")
    return ProcessLost(message(ended_ranks(processes, rank)))


# how often the watch looks again where the kernel cannot wake it when a process ends (no pidfd:
# not Linux), and how soon it notices that it was stopped
WATCH_INTERVAL_S = 0.05


class PeerWatch:
    """Rank 0's watch, in a thread, over the other processes of its machine (``processes``: (host,
    pid) in rank order) while each works on its own: the moment one ends, this process says
    ``error: <message(ended ranks)>`` on stderr and ends with exit status 2, as the command-line
    tools end on a :class:`~pyro_vae.errors.ProcessLost`; ``bar``: a progress bar may stand
    unfinished on stderr's last line, so the message starts on a new one. :meth:`stop` it before
    the collective that ends the solitary work: a process that ends once every process is in the
    collective fails the collective instead, and one that ends after it has ended normally."""

    def __init__(self, processes: list[tuple[str, int]], message: LostMessage, bar: bool = False) -> None:
        host = socket.gethostname()
        self._pids = {r: pid for r, (h, pid) in enumerate(processes) if h == host and r > 0}
        self._message = message
        self._bar = bar
        self._stopped = threading.Event()
        self._reporting = threading.Lock()  # a report and a stop do not cross: one of them comes first
        self._thread = threading.Thread(target=self._watch, daemon=True, name="pyro-vae-peer-watch")
        self._thread.start()

    def stop(self) -> None:
        """Stop watching: from now on a process that ends is not reported by the watch."""
        with self._reporting:
            self._stopped.set()

    def _watch(self) -> None:
        poller = select.poll()
        descriptors = []
        for pid in self._pids.values():  # a pidfd becomes readable when its process ends
            try:
                descriptors.append(os.pidfd_open(pid))
            except (AttributeError, OSError):  # no pidfds, or the process has ended: looked at below
                continue
            poller.register(descriptors[-1], select.POLLIN)
        try:
            while not self._stopped.is_set():
                ended = [r for r, pid in self._pids.items() if _ended(pid)]
                if ended:
                    with self._reporting:
                        if not self._stopped.is_set():  # stopped: the job is past the work it watched
                            self._report(ended)
                poller.poll(WATCH_INTERVAL_S * 1000)
        finally:
            for descriptor in descriptors:
                os.close(descriptor)

    def _report(self, ended: list[int]) -> None:
        """Say which processes ended and end this one (the others end with it: Fabric's
        processes by their watchdog, torchrun's by its agent)."""
        print(("\n" if self._bar else "") + f"error: {self._message(ended)}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(2)


@contextlib.contextmanager
def lost_processes_reported(
    processes: list[tuple[str, int]] | None, rank: int, message: LostMessage, bar: bool = False
) -> Iterator[Callable[[], None]]:
    """Around the part of a job that needs every process: a process that ends during it is
    reported with ``message`` of the ranks that ended, by rank 0's :class:`PeerWatch` while the
    processes work alone, or as the :func:`process_lost` error of the collective it breaks. Yields
    the function that stops the watch (call it as the processes enter their last collective of
    the block). ``bar``: rank 0 shows a progress bar meanwhile. ``processes`` None or one process:
    nothing is watched."""
    if processes is None or len(processes) < 2:
        yield lambda: None
        return
    watch = PeerWatch(processes, message, bar) if rank == 0 else None
    stop = watch.stop if watch is not None else (lambda: None)
    try:
        yield stop
    except Exception as e:
        stop()  # the error says it from here: the watch does not say it a second time
        if lost_peer(e):
            raise process_lost(processes, rank, message) from None
        raise
    finally:
        stop()
