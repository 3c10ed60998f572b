"""Making sure the four raw files of a data set lie, verified, in the data dir.

Files already there (the user's own, or cached by an earlier load) are verified and used. If
there are none, the sources are tried in order; each one writes into a staging folder that is
verified before its files are renamed into place, so the data dir never holds unverified data.
A source may fail in any way (no network, a missing tool, a damaged download): each failure is
recorded, and if no source delivers, one :class:`DataError` lists them all with the fixes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pyro_vae.data.cache import DATA_DIR_ENV
from pyro_vae.data.idx import RAW_FILE_NAMES
from pyro_vae.data.sources import SOURCE_KINDS, TORCHVISION, SourceUnavailable, sources_in_order
from pyro_vae.data.types import IdxEntry, Provenance, Source
from pyro_vae.data.verify import STAMP_NAME, read_stamp, read_verified_files, record_stamp, verify_raw_files
from pyro_vae.errors import ConfigError, DataError

NO_TORCHVISION_ENV = "PYRO_VAE_NO_TORCHVISION_DOWNLOAD"
USER_FILES = "files found in the data dir"


def select_sources(spec: IdxEntry, kinds: Iterable[str] | None) -> tuple[list[Source], list[str]]:
    """The sources of ``spec`` whose kind is in ``kinds``, and a note for each one left out.

    ``kinds=None`` means all, except torchvision's download when ``PYRO_VAE_NO_TORCHVISION_DOWNLOAD``
    is set to anything but "" or "0".
    """
    if kinds is None:
        skip_torchvision = os.environ.get(NO_TORCHVISION_ENV, "") not in ("", "0")
        kinds = [kind for kind in SOURCE_KINDS if not (kind == TORCHVISION and skip_torchvision)]
        why = f"{NO_TORCHVISION_ENV} is set"
    else:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        unknown = sorted(set(kinds) - set(SOURCE_KINDS))
        if unknown:
            raise ConfigError(f"unknown data source kind(s) {unknown}; choose from: {', '.join(SOURCE_KINDS)}.")
        why = f"not in sources={kinds}"
    chosen = [source for source in sources_in_order(spec) if source.kind in kinds]
    skipped = [
        f"{source.description}: skipped ({why})" for source in sources_in_order(spec) if source.kind not in kinds
    ]
    return chosen, skipped


def ensure_raw_files(
    spec: IdxEntry, raw_dir: Path, kinds: Iterable[str] | None
) -> tuple[Provenance, dict[str, np.ndarray]]:
    """The raw files of ``spec`` in ``raw_dir``, fetched first if there are none, read and verified
    (header, size, sha256 of the bytes read): where they came from, and each file's bytes."""
    chosen, skipped = select_sources(spec, kinds)  # checks ``kinds`` even when nothing is fetched
    if not any((raw_dir / name).exists() for name in RAW_FILE_NAMES):
        provenance = fetch_from_sources(spec, raw_dir, chosen, skipped)
        return provenance, read_verified_files(raw_dir, spec.title, spec.sha256, spec.raw_files)
    stamp = read_stamp(raw_dir)
    contents = read_verified_files(raw_dir, spec.title, spec.sha256, spec.raw_files)  # every load, stamp or not
    if stamp.get("source"):
        source = stamp["source"]
        return Provenance(f"cache ({source})", f"from cache {raw_dir} ({source})"), contents
    record_stamp(raw_dir, USER_FILES, spec.sha256, contents)
    return Provenance(USER_FILES, f"from files found in {raw_dir} (sha256 verified)"), contents


def fetch_from_sources(spec: IdxEntry, raw_dir: Path, chosen: list[Source], skipped: list[str]) -> Provenance:
    """Try ``chosen`` in order until one delivers verified files into ``raw_dir``."""
    _make_dir(raw_dir)
    failures, failed = [], []
    for source in chosen:
        try:
            _fetch_verified(source, spec, raw_dir)
        except Exception as error:  # any failure of a source is reported, and the next one tried
            failures.append(f"{source.description}: {_one_line(error)}")
            failed.append(source.description)
            continue
        story = f"fetched from {source.description} into {raw_dir}"
        if failed:
            story += f" (unavailable: {'; '.join(failed)})"
        return Provenance(source.description, story)
    tried = [f"files in {raw_dir}: none there", *failures, *skipped]
    raise DataError(_no_source_message(spec, raw_dir, tried))


def _fetch_verified(source: Source, spec: IdxEntry, raw_dir: Path) -> None:
    """Fetch into a staging folder inside ``raw_dir``, verify, then rename the files into place."""
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=raw_dir) as tmp:
        staging = Path(tmp)
        source.fetch(staging)
        verify_raw_files(staging, spec.title, spec.sha256, source.description, spec.raw_files)
        for name in [*RAW_FILE_NAMES, STAMP_NAME]:  # the stamp last
            os.replace(staging / name, raw_dir / name)  # keeps the mtime the stamp recorded


def _make_dir(raw_dir: Path) -> None:
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot create the data folder {raw_dir} ({error.strerror or error}). Pass a writable data "
            f"dir, or set {DATA_DIR_ENV} to one."
        ) from error


def _no_source_message(spec: IdxEntry, raw_dir: Path, tried: list[str]) -> str:
    names = ", ".join(RAW_FILE_NAMES)
    lines = [f"{spec.title}: no source could provide the data set. Tried, in order:"]
    lines += [f"  - {attempt}" for attempt in tried]
    lines += ["What you can do (any one of these):"]
    lines += [f"  - place the four uncompressed IDX files ({names}) in {raw_dir}"]
    lines += [f"  - {source.description}: {source.remedy}" for source in sources_in_order(spec)]
    return "\n".join(lines)


def _one_line(error: Exception) -> str:
    """An exception as one line; its type is named unless it is one of ours with a full message."""
    text = " ".join(str(error).split()) or "no message"
    return text if isinstance(error, (DataError, SourceUnavailable)) else f"{type(error).__name__}: {text}"
