"""The rows of an array file, read front to back in chunks: every row checked, only the rows asked
for kept.

An ``.npy`` file, or a member of an ``.npz`` (stored by ``np.savez`` or deflated by
``np.savez_compressed``: a deflated member is inflated as it is read), is read in chunks of about
:data:`CHUNK_BYTES`, one sequential pass, so memory holds one chunk and the rows kept, never the
whole array. The rows kept are copied out of each chunk in the order of the file (sorted row
numbers), into the places the caller asks for. An ``.npy`` file's sha256 is computed in the same
pass, over every byte read (:class:`HashingReader`). Arrays already in memory (a ``.pt`` file, or an
``.npy`` written in Fortran order, whose rows are not contiguous) are read through a memory map or
as they are, in the same chunks.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from pyro_vae.errors import DataError

CHUNK_BYTES = 8 << 20  # rows read at a time, in bytes (at least one row)
HASH_CHUNK_BYTES = 1 << 20
NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class HashingReader:
    """A binary stream that feeds every byte read through it to a sha256."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        return data

    def checksum(self) -> str:
        """``sha256:<hex>`` of the whole stream: what is left is read (and hashed) first."""
        while self.read(HASH_CHUNK_BYTES):
            pass
        return "sha256:" + self.digest.hexdigest()


@dataclass(frozen=True)
class RowSource:
    """An array (N, ...) whose shape and type are known before any row is read; ``chunks(k)``
    yields (first row, the next k rows) from the first row to the last, once."""

    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: Callable[[int], Iterator[tuple[int, np.ndarray]]]

    @property
    def row_bytes(self) -> int:
        return self.dtype.itemsize * math.prod(self.shape[1:])

    def rows_per_chunk(self) -> int:
        return max(1, CHUNK_BYTES // max(1, self.row_bytes))


def in_memory(array: np.ndarray) -> RowSource:
    """An array already in memory (or memory-mapped) as a :class:`RowSource` of views."""

    def chunks(k: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, array.shape[0], k):
            yield start, array[start : start + k]

    return RowSource(tuple(array.shape), array.dtype, chunks)


def read_npy_header(stream, where: str, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from the header of the ``.npy`` data ``stream`` begins with;
    the stream is left at the first data byte. :class:`DataError` (naming ``where``: "not a
    readable .npy ``what``") if it is not a readable ``.npy`` header, or holds Python objects."""
    try:
        version = np.lib.format.read_magic(stream)
        if version not in NPY_HEADER_READERS:
            raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        shape, fortran_order, dtype = NPY_HEADER_READERS[version](stream)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{where}: not a readable .npy {what} ({error})") from None
    if dtype.hasobject:
        raise DataError(f"{where}: holds Python objects, not numbers; it was not loaded and nothing in it ran")
    return tuple(shape), fortran_order, dtype


def streamed(stream, shape: tuple[int, ...], dtype: np.dtype, where: str) -> RowSource:
    """The C-ordered rows that follow an ``.npy`` header in ``stream``, read as they are asked for."""
    row_bytes = dtype.itemsize * math.prod(shape[1:])

    def chunks(k: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, shape[0], k):
            count = min(k, shape[0] - start)
            data = _read_exactly(stream, count * row_bytes, where)
            yield start, np.frombuffer(data, dtype=dtype).reshape((count, *shape[1:]))

    return RowSource(shape, dtype, chunks)


def read_fortran_array(stream, shape: tuple[int, ...], dtype: np.dtype, where: str) -> np.ndarray:
    """The Fortran-ordered array that follows an ``.npy`` header in ``stream``, read whole."""
    data = _read_exactly(stream, dtype.itemsize * math.prod(shape), where)
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F")


def _read_exactly(stream, size: int, where: str) -> bytes:
    parts, left = [], size
    while left:
        try:
            data = stream.read(left)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:  # e.g. a damaged .npz member
            raise DataError(f"{where}: could not be read ({error}); write it again") from None
        if not data:
            raise DataError(
                f"{where}: the file ends {left:,} bytes before the end of the array its header "
                f"describes (truncated or damaged); write it again"
            )
        parts.append(data)
        left -= len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def gather_rows(
    source: RowSource,
    rows: np.ndarray,
    places: np.ndarray,
    out: np.ndarray,
    check: Callable[[int, np.ndarray], None],
    convert: Callable[[np.ndarray], np.ndarray],
) -> None:
    """Read every row of ``source`` once: ``check(first_row, chunk)`` sees each chunk (to check
    its values), and ``out[places[i]] = convert(row rows[i])``, converting only the rows kept.

    Rows are taken from each chunk in file order (sorted row numbers), so a memory-mapped source
    is read front to back.
    """
    sorter = np.argsort(rows, kind="stable")
    wanted, targets = rows[sorter], places[sorter]
    for start, chunk in source.chunks(source.rows_per_chunk()):
        check(start, chunk)
        lo, hi = np.searchsorted(wanted, (start, start + chunk.shape[0]))
        if hi > lo:
            out[targets[lo:hi]] = convert(chunk[wanted[lo:hi] - start])
