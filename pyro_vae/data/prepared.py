"""A :class:`Dataset` from decoded arrays in split order (a decoded folder, an array file, a set
torchvision read): its splits are contiguous slices of those arrays."""

from __future__ import annotations

from pathlib import Path

import torch

from pyro_vae.data.splits import SPLIT_NAMES
from pyro_vae.data.types import Dataset, Split


def dataset_from_prepared(
    name: str, prepared, *, source: str, root: Path, kind: str, image_size: int | None, split: str | None
) -> Dataset:
    """A :class:`Dataset` whose splits are contiguous slices (views) of ``prepared``'s arrays."""
    pixels = torch.from_numpy(prepared.pixels)  # memory-mapped where the cache is: no copy
    labels = torch.from_numpy(prepared.labels)
    bounds, start = [], 0
    for count in prepared.counts:
        bounds.append((start, start + count))
        start += count
    mask = getattr(prepared, "mask", None)  # an array file's mask of missing values
    mask = None if mask is None else torch.from_numpy(mask)
    splits = [
        Split(n, pixels[a:b], labels[a:b], None if mask is None else mask[a:b])
        for n, (a, b) in zip(SPLIT_NAMES, bounds)
    ]
    record = {
        "data_kind": kind,
        "data_checksum": prepared.checksum,
        "split": split,
        "image_size": image_size,
        "channels": int(pixels.shape[1]),
        **({"data_mask": True} if mask is not None else {}),
    }
    return Dataset(
        name,
        *splits,
        source=source,
        root=root,
        num_classes=len(prepared.classes),
        class_names=tuple(prepared.classes),
        record=record,
    )
