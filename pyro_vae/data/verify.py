"""Verification of the four raw files of a data set: every load checks what it reads.

Every load (:func:`read_verified_files`) reads each raw file once, checks its header and size,
computes the sha256 of the bytes read and compares it with the canonical one, then hands on those
very bytes, so the images a model sees are the canonical ones, whatever happened to the file since
(an edit that kept its size and modification time included). Hashing is a small part of a cached
load (docs/performance.md).

Files fetched from a source are verified in a staging folder before they are moved into place
(:func:`verify_raw_files`). A small JSON stamp beside the files records where they came from
(shown as the data set's provenance) and their sha256; it is a record, not a shortcut: no check is
skipped because of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pyro_vae.atomic import write_json
from pyro_vae.data.idx import IdxFile, read_idx_bytes, refetch_hint
from pyro_vae.errors import DataError, PyroVAEError

STAMP_NAME = ".pyro-vae-verified.json"


def read_stamp(raw_dir: Path) -> dict:
    """The stamp written by the last successful verification, or ``{}`` if none is readable."""
    try:
        stamp = json.loads((raw_dir / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def verify_raw_files(
    raw_dir: Path, title: str, known_sha256: Mapping[str, str], source: str, raw_files: tuple[IdxFile, ...]
) -> str:
    """Check the four raw files fetched into the staging folder ``raw_dir`` (header, size, sha256)
    and write the stamp naming ``source`` beside them; returns ``source``.
    Raises :class:`DataError` for a missing, truncated or corrupt file or a sha256 mismatch.
    """
    files = read_verified_files(raw_dir, title, known_sha256, raw_files)
    write_json(raw_dir / STAMP_NAME, _stamp(source, known_sha256, files))
    return source


def _check_all_present(raw_dir: Path, title: str, raw_files: tuple[IdxFile, ...]) -> None:
    missing = [spec.name for spec in raw_files if not (raw_dir / spec.name).is_file()]
    if missing:
        raise DataError(
            f"{title}: missing {', '.join(missing)} in {raw_dir} (expected all four uncompressed "
            f"IDX files: {', '.join(spec.name for spec in raw_files)}). Place the missing file(s) "
            f"there, or delete the others so that pyro-vae fetches all four."
        )


def _check_sha256(path: Path, actual: str, expected: str, title: str) -> None:
    if actual != expected:
        raise DataError(
            f"{path}: sha256 {actual} differs from the canonical {title} file's sha256 "
            f"{expected}. Its header and size are right, so its content differs from the "
            f"canonical {title} data (edited, or another data set). {refetch_hint(path)}"
        )


def content_sha256(data: np.ndarray) -> str:
    """The sha256 of bytes held in a contiguous uint8 array, as 64 hex digits."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(data))).hexdigest()


def read_verified_files(
    raw_dir: Path, title: str, known_sha256: Mapping[str, str], raw_files: tuple[IdxFile, ...]
) -> dict[str, np.ndarray]:
    """Read the four raw files of ``raw_dir`` once each: header, size and the sha256 of the bytes
    read checked against the canonical ones. Returns each file's bytes (header included), which
    are exactly the bytes that were hashed. Raises :class:`DataError` naming a bad file."""
    _check_all_present(raw_dir, title, raw_files)
    contents = {}
    for spec in raw_files:
        path = raw_dir / spec.name
        data = read_idx_bytes(path, spec)
        _check_sha256(path, content_sha256(data), known_sha256[spec.name], title)
        contents[spec.name] = data
    return contents


def record_stamp(
    raw_dir: Path, source: str, known_sha256: Mapping[str, str], contents: Mapping[str, np.ndarray]
) -> None:
    """Write the provenance stamp beside files verified for the first time. Best effort: a read-only
    data dir is fine (the stamp is a record, and every load verifies the files anyway)."""
    try:
        write_json(raw_dir / STAMP_NAME, _stamp(source, known_sha256, contents))
    except (OSError, PyroVAEError):
        pass


def _stamp(source: str, known_sha256: Mapping[str, str], contents: Mapping[str, np.ndarray]) -> dict:
    files = {name: {"size": int(data.size), "sha256": known_sha256[name]} for name, data in contents.items()}
    return {"source": source, "files": files}
