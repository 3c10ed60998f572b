"""IDX files (the MNIST file format): layout, header checks, reading and writing.

An IDX file is a big-endian header -- a magic number ``0x000008DD`` (``08``: unsigned bytes,
``DD``: number of dimensions), then one 4-byte size per dimension -- followed by the raw bytes.
Every read checks magic, dimensions, count and file size against what the data set should hold,
so a truncated or corrupt file is reported by name instead of crashing later.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyro_vae.atomic import atomic_open
from pyro_vae.errors import DataError

UNSIGNED_BYTE_TYPE = 0x08  # IDX type code for uint8 data
DIM_SIZE_BYTES = 4  # every size in the header is a big-endian uint32
MAGIC_BYTES = 4


@dataclass(frozen=True)
class IdxFile:
    """One of the four raw files of an MNIST-like data set, and what it must contain.

    The sizes come from the data set's catalogue entry (:mod:`pyro_vae.data.catalog`).
    """

    name: str  # file name in torchvision's raw layout, e.g. "train-images-idx3-ubyte"
    count: int  # number of images or labels
    is_images: bool  # images (count x side x side) or labels (count,)
    side: int = 0  # image height and width (images only)
    num_classes: int = 0  # labels lie in 0..num_classes-1 (labels only; 0: not checked)

    @property
    def dims(self) -> tuple[int, ...]:
        """The sizes the header must declare."""
        return (self.count, self.side, self.side) if self.is_images else (self.count,)

    @property
    def header_bytes(self) -> int:
        """Length of the header: magic number plus one uint32 per dimension."""
        return MAGIC_BYTES + DIM_SIZE_BYTES * len(self.dims)

    @property
    def expected_bytes(self) -> int:
        """Exact size of a correct file."""
        return self.header_bytes + int(np.prod(self.dims))

    def describe(self) -> str:
        """What the file holds, in words: '60,000 images of 28x28' or '10,000 labels'."""
        if self.is_images:
            return f"{self.count:,} images of {self.side}x{self.side}"
        return f"{self.count:,} labels"


# The four files of an MNIST-like data set, in torchvision's raw layout.
TRAIN_IMAGES_NAME = "train-images-idx3-ubyte"
TRAIN_LABELS_NAME = "train-labels-idx1-ubyte"
TEST_IMAGES_NAME = "t10k-images-idx3-ubyte"
TEST_LABELS_NAME = "t10k-labels-idx1-ubyte"
RAW_FILE_NAMES = (TRAIN_IMAGES_NAME, TRAIN_LABELS_NAME, TEST_IMAGES_NAME, TEST_LABELS_NAME)


def raw_files(train_count: int, test_count: int, side: int, num_classes: int) -> tuple[IdxFile, ...]:
    """The four raw files (train images, train labels, test images, test labels) of a data set of
    ``train_count`` + ``test_count`` images of ``side`` x ``side`` pixels and ``num_classes`` labels."""
    return (
        IdxFile(TRAIN_IMAGES_NAME, train_count, is_images=True, side=side),
        IdxFile(TRAIN_LABELS_NAME, train_count, is_images=False, num_classes=num_classes),
        IdxFile(TEST_IMAGES_NAME, test_count, is_images=True, side=side),
        IdxFile(TEST_LABELS_NAME, test_count, is_images=False, num_classes=num_classes),
    )


def _magic(ndim: int) -> int:
    return (UNSIGNED_BYTE_TYPE << 8) | ndim


def refetch_hint(path: Path) -> str:
    """The fix for a bad raw file: delete the raw files (pyro-vae fetches them again) or replace it."""
    return (
        f"Delete it and the other raw files in {path.parent} so that pyro-vae fetches fresh copies, "
        f"or replace it with the original file."
    )


def check_idx_file(path: Path, spec: IdxFile) -> None:
    """Check header and size of ``path`` against ``spec`` without reading the data.

    Raises :class:`DataError` naming the file, what was expected and what was found.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(spec.header_bytes)
    _check_header_and_size(header, size, path, spec)


def _check_header_and_size(header: bytes, size: int, path: Path, spec: IdxFile) -> None:
    expected = f"expected {spec.expected_bytes:,} bytes for {spec.describe()}"
    if size < spec.header_bytes:
        raise DataError(f"{path}: {expected}, found {size:,}. {refetch_hint(path)}")
    ndim = len(spec.dims)
    (magic,) = struct.unpack(">I", header[:MAGIC_BYTES])
    if magic != _magic(ndim):
        raise DataError(
            f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s): magic number "
            f"0x{magic:08X}, expected 0x{_magic(ndim):08X}. {refetch_hint(path)}"
        )
    dims = struct.unpack(f">{ndim}I", header[MAGIC_BYTES : spec.header_bytes])
    if dims != spec.dims:
        found = "x".join(str(d) for d in dims)
        wanted = "x".join(str(d) for d in spec.dims)
        raise DataError(f"{path}: header declares sizes {found}, expected {wanted}. {refetch_hint(path)}")
    if size != spec.expected_bytes:
        raise DataError(f"{path}: {expected}, found {size:,}. {refetch_hint(path)}")


def read_idx_bytes(path: Path, spec: IdxFile) -> np.ndarray:
    """The whole file ``path`` as uint8 bytes (header included), its header and size checked."""
    data = np.fromfile(path, dtype=np.uint8)
    _check_header_and_size(data[: spec.header_bytes].tobytes(), data.size, path, spec)
    return data


def idx_tensor(data: np.ndarray, spec: IdxFile, path: Path) -> torch.Tensor:
    """The contents of a checked IDX file's bytes (from :func:`read_idx_bytes`): uint8 images
    (count, side, side), a view of ``data``, or int64 labels (count,)."""
    values = data[spec.header_bytes :].reshape(spec.dims)
    if spec.is_images:
        return torch.from_numpy(values)
    labels = torch.from_numpy(values.astype(np.int64))
    if spec.num_classes and int(labels.max()) >= spec.num_classes:
        raise DataError(
            f"{path}: labels must lie in 0-{spec.num_classes - 1}, found {int(labels.max())}. {refetch_hint(path)}"
        )
    return labels


def read_idx(path: Path, spec: IdxFile) -> torch.Tensor:
    """Read a checked IDX file: uint8 images (count, side, side) or int64 labels (count,)."""
    return idx_tensor(read_idx_bytes(path, spec), spec, path)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, atomically."""
    if array.dtype != np.uint8:
        raise TypeError(f"IDX files written here hold uint8 data, got {array.dtype}")
    header = struct.pack(f">I{array.ndim}I", _magic(array.ndim), *array.shape)
    with atomic_open(path, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(array).tobytes())
