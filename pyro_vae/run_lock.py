"""One process per run folder: the output folder's lock, and the check that the folder can be written.

    ensure_writable_folder(Path("runs/a"), "--out")   # creates it; a clear error if it cannot be
    with RunLock(Path("runs/a")):                      # a second process on runs/a is refused
        ...train...

The lock is ``OUT/.pyro-vae.lock``, locked with ``fcntl.flock``: the kernel releases it when its
process ends in any way (``kill -9`` included), so a lock is never stale while its file says who
held it last. The holder writes its pid, host, start time and command into the file; a second
process is refused with those. A process that acquires a lock whose file still names an earlier
holder (which ended without releasing it: killed or crashed) says that it takes it over. On a file
system without ``flock`` the lock is the file itself, created with ``O_EXCL``; a file left by a
dead process on this host is then taken over, with the same message.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .atomic import output_error
from .errors import OutputError, PyroVAEError

LOCK_NAME = ".pyro-vae.lock"


class RunFolderBusy(PyroVAEError):
    """Another process holds the run folder's lock."""


def ensure_writable_folder(folder: str | os.PathLike, flag: str = "--out") -> Path:
    """Create ``folder`` (and its parents) if needed and check that files can be created in it, or
    raise :class:`OutputError` naming ``flag``: an existing file, a folder under a file, no
    permission, a read-only file system, a full disk."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {folder} is an existing file, not a folder; choose another {flag}")
    blocking = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputError(
            f"{flag} {folder} lies under {blocking}, which is a file, not a folder; choose another {flag}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".pyro-vae-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        error = output_error(e, folder / "probe")
        if isinstance(error, OutputError):
            raise type(error)(
                f"{flag} {folder} cannot be written: {e.strerror or e}; choose a folder you "
                f"can write to (or free space, or change its permissions)"
            ) from None
        raise
    return folder


def _holder_record() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(sys.argv),
    }


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    text = f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"
    if holder.get("started"):
        text += f" (since {holder['started']}"
        text += f": {holder['command']})" if holder.get("command") else ")"
    return text


def _parse(text: str) -> dict:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


class RunLock:
    """Exclusive ownership of ``folder`` by this process, until :meth:`release` or exit."""

    def __init__(self, folder: str | os.PathLike, log: Callable[[str], object] = print):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.log = log
        self._fd: int | None = None
        self._exclusive_file = False  # True on the O_EXCL fallback

    # -- acquiring -------------------------------------------------------------------------------
    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunFolderBusy` naming the process that holds it."""
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _parse(os.read(fd, 1 << 16).decode(errors="replace"))
            os.close(fd)
            raise RunFolderBusy(self._busy_message(holder)) from None
        except (ImportError, OSError) as e:  # no flock here (some network file systems)
            os.close(fd)
            if isinstance(e, OSError) and e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            if created:  # the empty file just made here is no one's lock
                self.path.unlink(missing_ok=True)
            return self._acquire_exclusive_file()
        previous = _parse(os.read(fd, 1 << 16).decode(errors="replace"))
        if previous:
            self.log(
                f"{self.folder}: taking over the lock of {_describe(previous)}, which ended without "
                f"releasing it (killed or crashed)"
            )
        self._write(fd)
        self._fd = fd
        return self

    def _acquire_exclusive_file(self) -> RunLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _parse(self.path.read_text(errors="replace")) if self.path.exists() else {}
                if not holder or self._alive(holder):
                    # an empty file is a lock being written right now, or one whose holder we cannot check
                    raise RunFolderBusy(self._busy_message(holder)) from None
                self.log(
                    f"{self.folder}: taking over the lock of {_describe(holder)}, which ended without "
                    f"releasing it (killed or crashed)"
                )
                self.path.unlink(missing_ok=True)
                continue
            self._write(fd)
            self._fd, self._exclusive_file = fd, True
            return self
        raise RunFolderBusy(self._busy_message({}))

    @staticmethod
    def _alive(holder: dict) -> bool:
        """Whether the holder may still run: always True for another host (we cannot tell)."""
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return True
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _busy_message(self, holder: dict) -> str:
        return (
            f"{self.folder} is in use by {_describe(holder)}: one run folder is written by one process "
            f"at a time. Wait for it to finish (or stop it), or choose another --out"
        )

    def _write(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(_holder_record(), sort_keys=True) + "\n").encode())
        os.fsync(fd)

    # -- releasing -------------------------------------------------------------------------------
    def release(self) -> None:
        """Give the folder up: the file is emptied (flock) or removed (O_EXCL), then unlocked."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._exclusive_file:
                self.path.unlink(missing_ok=True)
            else:
                os.ftruncate(fd, 0)  # an empty file: released cleanly, nobody to take over from
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
