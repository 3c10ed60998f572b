"""A run folder before training starts: owned by one process, never silently replaced, and
cleared of what an interrupted run left.

    lock = claim(out, resume=False, overwrite=False, log=say)   # rank 0 only, after launch
    ...train...
    lock.release()

:func:`claim` takes the folder's lock (:class:`pyro_vae.run_lock.RunLock`: a second ``fit`` on
the same ``--out`` is refused while the first runs; the lock of a killed process is taken over
with a message), then refuses to start a new run over an existing one unless ``--overwrite``
(which removes the old run's files first) or ``--resume`` is given, and removes the temporary
files (``.NAME.XXXX.tmp``) that an interrupted atomic write left behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from ..atomic import TMP_SUFFIX
from ..config_values import spelled
from ..errors import ConfigError
from ..run_lock import LOCK_NAME, RunLock

# What `fit` (and `evaluate`, `generate` in a run folder) write: --overwrite removes these. A folder
# holding any of the markers holds a run that completed at least one epoch; a config.json alone is
# a run stopped in its first epoch (nothing to resume), which a new run simply replaces.
RUN_MARKERS = ("metrics.jsonl", "last.pt", "best.pt", "summary.json")
RUN_FILES = ("config.json", *RUN_MARKERS, "eval.json", "labelled_indices.json")
RUN_PATTERNS = (
    "samples.png",
    "reconstructions.png",
    "interpolation.png",
    "curves.png",
    "latent_*.png",
    "analogies*.png",
    "confusion_matrix.png",
    "khat_*.png",
    "log_px_vs_k_*.png",
    "generated*.png",
)
RUN_FOLDERS = ("tensorboard",)


def holds_run(out: Path) -> list[str]:
    """The names of the files that show ``out`` holds a run (empty: it does not)."""
    return [name for name in RUN_MARKERS if (out / name).is_file()]


def run_files(out: Path) -> list[Path]:
    """Every file and folder of a run in ``out`` (other files are left alone)."""
    found = [out / name for name in RUN_FILES if (out / name).is_file()]
    for pattern in RUN_PATTERNS:
        found += sorted(p for p in out.glob(pattern) if p.is_file())
    found += [out / name for name in RUN_FOLDERS if (out / name).is_dir()]
    return found


def temporary_files(out: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes (:mod:`pyro_vae.atomic`): ``.NAME.XXXX.tmp``."""
    return sorted(p for p in out.glob(f".*{TMP_SUFFIX}") if p.is_file() and p.name != LOCK_NAME)


def remove_temporary_files(out: Path, log: Callable[[str], object]) -> list[Path]:
    """Remove what interrupted writes left (call it holding the folder's lock: no write is under way)."""
    leftovers = temporary_files(out)
    for path in leftovers:
        path.unlink(missing_ok=True)
    if leftovers:
        log(
            f"{out}: removed {len(leftovers)} temporary file(s) left by an interrupted write "
            f"({', '.join(p.name for p in leftovers)})"
        )
    return leftovers


def check_new_run(out: Path, overwrite: bool, log: Callable[[str], object], keywords: bool = False) -> None:
    """A new run (no --resume) in ``out``: refuse to replace a run there unless ``overwrite``;
    with it, remove the old run's files first. ``keywords``: the message names Python keyword
    arguments (``pyro_vae.fit``), else flags."""
    found = holds_run(out)
    if not found:
        return
    if not overwrite:
        k = keywords
        raise ConfigError(
            f"{spelled('out', str(out), keywords=k)} already holds a run ({', '.join(found)}); continue it with "
            f"`{spelled('resume', str(out), keywords=k)}` (it finishes an interrupted run, or trains on with "
            f"{'epochs=N' if k else '--epochs N'}), replace it with "
            f"{spelled('overwrite', True, keywords=k)} (which deletes that run's files first), or choose "
            f"another {spelled('out', keywords=k)}"
        )
    old = run_files(out)
    for path in old:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    log(f"--overwrite: removed the earlier run's {len(old)} file(s) from {out} ({', '.join(p.name for p in old)})")


def claim(
    out: str | Path, *, resume: bool, overwrite: bool, log: Callable[[str], object], keywords: bool = False
) -> RunLock:
    """Take ``out`` for this run (rank 0 only): the lock, then the checks above; returns the held
    lock, which the caller releases when the run is done (the kernel releases it if the process dies).
    ``keywords``: messages name Python keyword arguments, else flags."""
    out = Path(out)
    if resume and overwrite:
        raise ConfigError(
            f"{spelled('overwrite', keywords=keywords)} starts the run again from nothing and "
            f"{spelled('resume', keywords=keywords)} continues it; give one of them"
        )
    lock = RunLock(out, log=log).acquire()
    try:
        remove_temporary_files(out, log)
        if not resume:
            check_new_run(out, overwrite, log, keywords)
    except BaseException:
        lock.release()
        raise
    return lock
