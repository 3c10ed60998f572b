"""Atomic file writes: write to a temporary file in the same folder, then rename.

An interrupted write therefore never leaves a half-written file under the final name, so a
later run can trust whatever file it finds there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import DiskFull, OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    A full disk raises :class:`~pyro_vae.errors.DiskFull` ("no space left on device") and a folder
    that cannot be written :class:`~pyro_vae.errors.OutputError`; either way the file previously at
    ``path`` is kept unchanged and the temporary file is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise output_error(e, path) from None
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        raise output_error(e, path) from None
    except RuntimeError as e:  # torch's file writer reports a failed write without its errno
        if _torch_write_failed(e) and _nearly_full(tmp_path):
            raise DiskFull(_disk_full_message(path)) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


TMP_SUFFIX = ".tmp"
LOW_SPACE_BYTES = 64 * 2**20  # a torch write failure with less free space than this: a full disk


def output_error(error: OSError, path: Path) -> Exception:
    """The clear error for an OSError met while writing ``path``: DiskFull, OutputError, or the
    error itself when it is none of the user-fixable kinds."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(_disk_full_message(path))
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(
            f"cannot write {path}: {error.strerror} ({_blocked_at(error, path)}); choose a "
            f"folder you can write to, or change its permissions"
        )
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        return OutputError(
            f"cannot write {path}: {_file_in_the_way(path)} is a file, not a folder; "
            f"choose another path, or move that file away"
        )
    if error.errno == errno.EISDIR:
        return OutputError(f"cannot write {path}: it is a folder; give a file name")
    return error


def _disk_full_message(path: Path) -> str:
    return (
        f"no space left on device while writing {path}; the file that was there before (if any) is "
        f"kept unchanged, and the partial file was removed. Free some space on that disk and run the "
        f"command again (a training run continues from its last checkpoint with --resume)"
    )


def _blocked_at(error: OSError, path: Path) -> str:
    return str(error.filename) if error.filename else str(path.parent)


def _file_in_the_way(path: Path) -> Path:
    """The first ancestor of ``path`` (or ``path`` itself) that exists and is not a folder."""
    for candidate in reversed([path, *path.parents]):
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return path.parent


def _torch_write_failed(error: RuntimeError) -> bool:
    text = str(error)
    return "file write failed" in text or "unexpected pos" in text


def _nearly_full(tmp_path: Path) -> bool:
    try:
        return shutil.disk_usage(tmp_path.parent).free < LOW_SPACE_BYTES
    except OSError:
        return False


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only when the block succeeds."""
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str | os.PathLike, obj, **kwargs) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, **kwargs)
        f.write("\n")
