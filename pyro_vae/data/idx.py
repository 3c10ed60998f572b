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

IMAGE_SIDE = 28  # MNIST and Fashion-MNIST images are 28x28 grey-scale pixels
NUM_CLASSES = 10  # both data sets have labels 0-9
TRAIN_COUNT = 60_000  # images in the training file (our train + valid splits)
TEST_COUNT = 10_000  # images in the test file

UNSIGNED_BYTE_TYPE = 0x08  # IDX type code for uint8 data
DIM_SIZE_BYTES = 4  # every size in the header is a big-endian uint32
MAGIC_BYTES = 4


@dataclass(frozen=True)
class IdxFile:
    """One of the four raw files of an MNIST-like data set, and what it must contain."""

    name: str  # file name in torchvision's raw layout, e.g. "train-images-idx3-ubyte"
    count: int  # number of images or labels
    is_images: bool  # images (count x 28 x 28) or labels (count,)

    @property
    def dims(self) -> tuple[int, ...]:
        """The sizes the header must declare."""
        return (self.count, IMAGE_SIDE, IMAGE_SIDE) if self.is_images else (self.count,)

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
            return f"{self.count:,} images of {IMAGE_SIDE}x{IMAGE_SIDE}"
        return f"{self.count:,} labels"


TRAIN_IMAGES = IdxFile("train-images-idx3-ubyte", TRAIN_COUNT, is_images=True)
TRAIN_LABELS = IdxFile("train-labels-idx1-ubyte", TRAIN_COUNT, is_images=False)
TEST_IMAGES = IdxFile("t10k-images-idx3-ubyte", TEST_COUNT, is_images=True)
TEST_LABELS = IdxFile("t10k-labels-idx1-ubyte", TEST_COUNT, is_images=False)
RAW_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


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
    dims = struct.unpack(f">{ndim}I", header[MAGIC_BYTES:spec.header_bytes])
    if dims != spec.dims:
        found = "x".join(str(d) for d in dims)
        wanted = "x".join(str(d) for d in spec.dims)
        raise DataError(f"{path}: header declares sizes {found}, expected {wanted}. {refetch_hint(path)}")
    if size != spec.expected_bytes:
        raise DataError(f"{path}: {expected}, found {size:,}. {refetch_hint(path)}")


def read_idx_bytes(path: Path, spec: IdxFile) -> np.ndarray:
    """The whole file ``path`` as uint8 bytes (header included), its header and size checked."""
    data = np.fromfile(path, dtype=np.uint8)
    _check_header_and_size(data[:spec.header_bytes].tobytes(), data.size, path, spec)
    return data


def idx_tensor(data: np.ndarray, spec: IdxFile, path: Path) -> torch.Tensor:
    """The contents of a checked IDX file's bytes (from :func:`read_idx_bytes`): uint8 images
    (count, 28, 28), a view of ``data``, or int64 labels (count,)."""
    values = data[spec.header_bytes:].reshape(spec.dims)
    if spec.is_images:
        return torch.from_numpy(values)
    labels = torch.from_numpy(values.astype(np.int64))
    if int(labels.max()) >= NUM_CLASSES:
        raise DataError(
            f"{path}: labels must lie in 0-{NUM_CLASSES - 1}, found {int(labels.max())}. {refetch_hint(path)}"
        )
    return labels


def read_idx(path: Path, spec: IdxFile) -> torch.Tensor:
    """Read a checked IDX file: uint8 images (count, 28, 28) or int64 labels (count,)."""
    return idx_tensor(read_idx_bytes(path, spec), spec, path)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, atomically."""
    if array.dtype != np.uint8:
        raise TypeError(f"IDX files written here hold uint8 data, got {array.dtype}")
    header = struct.pack(f">I{array.ndim}I", _magic(array.ndim), *array.shape)
    with atomic_open(path, "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(array).tobytes())
