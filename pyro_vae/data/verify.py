"""Verification of the four raw files of a data set, with a stamp that makes cached loads fast.

Every load checks each file's header and size (cheap). The sha256 of a file is compared with the
canonical one only when the file is new or changed: after a file passes, its size, modification
time and sha256 are recorded in a small JSON stamp beside it, and a later load re-hashes only
when size or modification time differ from the stamp.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from pyro_vae.atomic import write_json
from pyro_vae.data.idx import IdxFile, check_idx_file, refetch_hint
from pyro_vae.errors import DataError

STAMP_NAME = ".pyro-vae-verified.json"
HASH_CHUNK_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, as 64 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def read_stamp(raw_dir: Path) -> dict:
    """The stamp written by the last successful verification, or ``{}`` if none is readable."""
    try:
        stamp = json.loads((raw_dir / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def verify_raw_files(raw_dir: Path, title: str, known_sha256: Mapping[str, str], source: str,
                     raw_files: tuple[IdxFile, ...]) -> str:
    """Check the four raw files in ``raw_dir``; record them in the stamp; return their provenance.

    ``source`` says where the files came from; it is recorded in the stamp unless the stamp
    already names one (files verified before keep their original provenance).
    Raises :class:`DataError` for a missing, truncated or corrupt file or a sha256 mismatch.
    """
    _check_all_present(raw_dir, title, raw_files)
    stamp = read_stamp(raw_dir)
    recorded = stamp.get("files", {})
    files = {}
    for spec in raw_files:
        path = raw_dir / spec.name
        check_idx_file(path, spec)
        files[spec.name] = _verified_entry(path, known_sha256[spec.name], recorded.get(spec.name), title)
    provenance = stamp.get("source", source)
    if files != recorded or provenance != stamp.get("source"):
        write_json(raw_dir / STAMP_NAME, {"source": provenance, "files": files})
    return provenance


def _check_all_present(raw_dir: Path, title: str, raw_files: tuple[IdxFile, ...]) -> None:
    missing = [spec.name for spec in raw_files if not (raw_dir / spec.name).is_file()]
    if missing:
        raise DataError(
            f"{title}: missing {', '.join(missing)} in {raw_dir} (expected all four uncompressed "
            f"IDX files: {', '.join(spec.name for spec in raw_files)}). Place the missing file(s) "
            f"there, or delete the others so that pyro-vae fetches all four."
        )


def _verified_entry(path: Path, expected_sha256: str, recorded: dict | None, title: str) -> dict:
    """The stamp entry of a file whose sha256 is the canonical one; hashes only if it changed."""
    status = path.stat()
    entry = {"size": status.st_size, "mtime_ns": status.st_mtime_ns, "sha256": expected_sha256}
    if recorded == entry:
        return entry  # unchanged since it was verified
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise DataError(
            f"{path}: sha256 {actual} differs from the canonical {title} file's sha256 "
            f"{expected_sha256}. Its header and size are right, so its content differs from the "
            f"canonical {title} data (edited, or another data set). {refetch_hint(path)}"
        )
    return entry
