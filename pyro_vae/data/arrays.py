"""Arrays in a file: ``.npz``, ``.npy`` or ``.pt``, checked and brought to (N, C, H, W).

What a file may hold:
  - ``.npy``: the images alone;
  - ``.npz`` or ``.pt`` (a dict of tensors / arrays): ``images`` (or ``x``) and optionally
    ``labels`` (or ``y``); or an own split as ``train_images``, ``test_images`` (optionally
    ``valid_images``) with ``train_labels`` ... (also ``x_train``, ``y_train``, ... as Keras
    writes them); a ``.pt`` may also hold one tensor, or a tuple (images, labels). A ``mask``
    (own split: ``<part>_mask``) of the images' shape and layout marks missing values: 1 observed,
    0 missing (:mod:`pyro_vae.data.masks`); training and evaluation then score the observed ones.
Shapes: (N, H, W) grey images, (N, C, H, W) or (N, H, W, C) with C = 1 or 3, or flat vectors
(N, D), stored as (N, 1, 1, D). Values: integers 0..255 (8-bit pixels, kept as uint8; bits per
dimension are reported) or floats in [0, 1] (kept as float32). Anything else -- NaN, inf, values
out of range, labels that are not integers >= 0 or whose count differs -- is an error that says
which and how many.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyro_vae.data.images import check_channels, check_image_size, transform_pixels
from pyro_vae.data.masks import check_mask
from pyro_vae.data.splits import arrange
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.torch_files import code_in_file

ARRAY_EXTENSIONS = (".npz", ".npy", ".pt")
IMAGE_KEYS = ("images", "x", "data")
MASK_KEY = "mask"  # own split: "<part>_mask"
LABEL_KEYS = ("labels", "y", "targets")
PART_KEYS = {  # part -> (image keys, label keys)
    "train": (("train_images", "x_train"), ("train_labels", "y_train")),
    "valid": (("valid_images", "x_valid", "x_val"), ("valid_labels", "y_valid", "y_val")),
    "test": (("test_images", "x_test"), ("test_labels", "y_test")),
}
CHANNEL_SIZES = (1, 3)
PIXEL_MAX = 255
HASH_CHUNK_BYTES = 1 << 20


@dataclass
class PreparedArrays:
    """Checked arrays in split order (train, valid, test rows), as :class:`folder.Prepared`."""

    pixels: np.ndarray  # (N, C, H, W) uint8, or float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    counts: tuple[int, int, int]
    classes: tuple[str, ...]
    checksum: str
    notes: list[str]
    cache: Path | None = None
    own_split: bool = False
    mask: np.ndarray | None = None  # (N, C, H, W) bool, True where observed; None: every value observed


def file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def prepare_arrays(
    path: Path, *, image_size: int | None, channels: int | None, fractions: tuple[float, float, float] | None
) -> PreparedArrays:
    """Read, check, convert and order the arrays of ``path`` (see the module docstring)."""
    check_image_size(image_size)
    check_channels(channels)
    if not path.is_file():
        raise DataError(f"--data {path}: no such file")
    parts = _read(path)  # {"all": (images, labels)} or {"train": ..., "test": ...}
    notes: list[str] = []
    images, labels, masks, part_sizes = [], [], [], {}
    for name, (x, y, *mask) in parts.items():
        x = _layout(np.asarray(x), path, name)
        x = _values(x, path, name)
        y = _labels(y, x.shape[0], path, name)
        images.append(x)
        labels.append(y)
        masks.append(_mask(mask[0] if mask else None, x.shape, path, name))
        part_sizes[name] = x.shape[0]
    mask_array = _masks(masks, path, images[0].shape, image_size, channels)
    if len({x.shape[1:] for x in images}) > 1 or len({x.dtype for x in images}) > 1:
        raise DataError(
            f"--data {path}: the parts hold images of different shapes or types "
            f"({', '.join(f'{n} {x.shape[1:]} {x.dtype}' for n, x in zip(parts, images))})"
        )
    pixels = np.concatenate(images) if len(images) > 1 else images[0]
    label_array = np.concatenate(labels)
    pixels = _convert(pixels, image_size, channels, path, notes)
    own = None if list(part_sizes) == ["all"] else part_sizes
    order, counts = arrange(pixels.shape[0], own, fractions, f"--data {path}")
    ordered = order.numpy()
    pixels, label_array = pixels[ordered], label_array[ordered]
    if mask_array is not None:
        mask_array = mask_array[ordered]
    num_classes = int(label_array.max()) + 1 if any(part[1] is not None for part in parts.values()) else 0
    classes = tuple(str(i) for i in range(num_classes))
    return PreparedArrays(
        pixels, label_array, counts, classes, file_checksum(path), notes, own_split=own is not None, mask=mask_array
    )


def _mask(mask, images_shape: tuple[int, ...], path: Path, part: str) -> np.ndarray | None:
    """A part's mask in the images' layout (N, C, H, W), checked (:func:`check_mask`); None if none."""
    if mask is None:
        return None
    where = f"--data {path}" + ("" if part == "all" else f" ({part} part)")
    mask = np.asarray(mask)
    if mask.ndim == len(images_shape) - 1 or (mask.ndim == len(images_shape) and mask.shape[1:] != images_shape[1:]):
        try:  # stored like the images were: (N, H, W), (N, H, W, C) or (N, D)
            mask = _layout(mask, path, part)
        except DataError:
            pass
    return check_mask(mask, images_shape, where)


def _masks(
    masks: list, path: Path, shape: tuple[int, ...], image_size: int | None, channels: int | None
) -> np.ndarray | None:
    """The parts' masks as one array (None if no part has one); every part needs one if any has."""
    given = [m is not None for m in masks]
    if not any(given):
        return None
    if not all(given):
        raise DataError(
            f"--data {path}: some parts have a mask and some do not; give '<part>_mask' for every part "
            "(all ones where nothing is missing)"
        )
    resized = image_size is not None and tuple(shape[2:]) != (image_size, image_size)
    if resized or channels not in (None, shape[1]):
        raise ConfigError(
            f"--data {path} holds a mask of missing values, which cannot be resized or converted with "
            "the images: drop --image-size and --channels, or store the images at the size to train on"
        )
    return np.concatenate(masks) if len(masks) > 1 else masks[0]


def _read(path: Path) -> dict[str, tuple]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return {"all": (np.load(path, mmap_mode="c", allow_pickle=False), None)}
        except (ValueError, OSError) as error:
            raise DataError(f"--data {path}: not a readable .npy file ({error})") from None
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                content = {k: archive[k] for k in archive.files}
        except (ValueError, OSError, zipfile.BadZipFile) as error:
            raise DataError(f"--data {path}: not a readable .npz file ({error})") from None
        return _parts(content, path)
    if suffix == ".pt":
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:  # torch's message advises the unsafe route: never shown
            name = code_in_file(error, path)
            raise DataError(
                f"--data {path}: "
                + (
                    f"holds Python objects ({name}), not only tensors; it was not loaded and nothing in it ran"
                    if name
                    else "not a readable .pt file of tensors (damaged or not written by torch.save)"
                )
            ) from None
        except Exception as error:  # noqa: BLE001 - a foreign or damaged file fails in many ways
            raise DataError(
                f"--data {path}: not a readable .pt file of tensors ({type(error).__name__}: {error})"
            ) from None
        if isinstance(content, torch.Tensor):
            return {"all": (content.numpy(), None)}
        if isinstance(content, (tuple, list)) and len(content) == 2:
            return {"all": (_numpy(content[0]), _numpy(content[1]))}
        if isinstance(content, Mapping):
            return _parts({k: _numpy(v) for k, v in content.items()}, path)
        raise DataError(
            f"--data {path}: holds a {type(content).__name__}; expected a tensor, a tuple "
            f"(images, labels) or a dict of tensors"
        )
    raise DataError(
        f"--data {path}: unknown file extension {path.suffix or '(none)'!r}; give a folder of "
        f"images or an array file ending in {', '.join(ARRAY_EXTENSIONS)}"
    )


def _numpy(value):
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _parts(content: Mapping, path: Path) -> dict[str, tuple]:
    def first(keys):
        found = [k for k in keys if k in content]
        return content[found[0]] if found else None

    parts = {}
    for name, (image_keys, label_keys) in PART_KEYS.items():
        x = first(image_keys)
        if x is not None:
            parts[name] = (x, first(label_keys), first((f"{name}_{MASK_KEY}",)))
    if parts:
        return parts
    x = first(IMAGE_KEYS)
    if x is None and len(content) == 1:
        (x,) = content.values()
    if x is None:
        raise DataError(
            f"--data {path}: holds {', '.join(map(repr, content)) or 'nothing'}; expected the images under "
            f"'images' (and labels under 'labels'), or an own split under 'train_images', 'test_images' "
            f"(optionally 'valid_images') with '<part>_labels'"
        )
    return {"all": (x, first(LABEL_KEYS), first((MASK_KEY,)))}


def _layout(x: np.ndarray, path: Path, part: str) -> np.ndarray:
    """(N, H, W) / (N, C, H, W) / (N, H, W, C) / (N, D) -> (N, C, H, W)."""
    where = f"--data {path}" + ("" if part == "all" else f" ({part} part)")
    if x.ndim == 2:
        return x[:, None, None, :]  # flat vectors (N, D) as (N, 1, 1, D)
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        first, last = x.shape[1] in CHANNEL_SIZES, x.shape[3] in CHANNEL_SIZES
        if first:
            return x
        if last:
            return x.transpose(0, 3, 1, 2)
        raise DataError(
            f"{where}: images of shape {x.shape[1:]} have no channel axis of size 1 or 3 "
            f"(expected (N, C, H, W) or (N, H, W, C))"
        )
    raise DataError(
        f"{where}: an array of shape {x.shape}; expected images (N, H, W), (N, C, H, W), "
        f"(N, H, W, C) or flat vectors (N, D)"
    )


def _values(x: np.ndarray, path: Path, part: str) -> np.ndarray:
    """uint8 as it is; other integers or bools checked to lie in 0..255; floats checked to be
    finite and in [0, 1]."""
    where = f"--data {path}" + ("" if part == "all" else f" ({part} part)")
    if x.shape[0] == 0:
        raise DataError(f"{where}: holds no images")
    if x.dtype == np.uint8:
        return x
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * PIXEL_MAX
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > PIXEL_MAX:
            raise DataError(
                f"{where}: integer values in [{lo}, {hi}]; 8-bit pixels lie in 0..255. Rescale "
                f"them, or store floats in [0, 1]"
            )
        return x.astype(np.uint8)
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(x)
        if not finite.all():
            bad = np.argwhere(~finite.reshape(x.shape[0], -1).all(axis=1)).ravel()
            nans = int(np.isnan(x).sum())
            raise DataError(
                f"{where}: {nans:,} NaN and {int((~finite).sum()) - nans:,} infinite values, in "
                f"{bad.size:,} images (the first: image {int(bad[0])}). Remove or repair them"
            )
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"{where}: float values in [{lo:g}, {hi:g}], outside [0, 1]. Rescale them to "
                f"[0, 1] (e.g. divide 8-bit pixels by 255), or store 8-bit pixels as uint8"
            )
        return x.astype(np.float32)
    raise DataError(f"{where}: values of type {x.dtype}; expected integers 0..255 or floats in [0, 1]")


def _labels(y, n: int, path: Path, part: str) -> np.ndarray:
    where = f"--data {path}" + ("" if part == "all" else f" ({part} part)")
    if y is None:
        return np.zeros(n, dtype=np.int64)
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(
            f"{where}: {n:,} images but {y.shape[0] if y.ndim else 0:,} labels"
            + ("" if y.ndim == 1 else f" (labels of shape {y.shape}, expected ({n},))")
            + "; give one integer label per image"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels of type {y.dtype}; expected integers 0..K-1")
    if y.min() < 0:
        raise DataError(f"{where}: negative labels (min {int(y.min())}); expected integers 0..K-1")
    return y.astype(np.int64)


def _convert(
    pixels: np.ndarray, image_size: int | None, channels: int | None, path: Path, notes: list[str]
) -> np.ndarray:
    flat = pixels.shape[1:3] == (1, 1)
    if flat and (image_size is not None or channels not in (None, 1)):
        raise ConfigError(
            f"--data {path} holds flat vectors of {pixels.shape[3]} values; --image-size and "
            f"--channels apply to images only"
        )
    c = pixels.shape[1]
    target = channels or c
    if target == c and (image_size is None or pixels.shape[2:] == (image_size, image_size)):
        return pixels
    if pixels.dtype != np.uint8:
        raise ConfigError(
            f"--data {path}: --image-size and --channels convert 8-bit pixels; these are "
            f"floats. Convert them before, or store them as uint8"
        )
    if target != c:
        notes.append(f"converted {pixels.shape[0]:,} images from {c} to {target} channel(s)")
    if image_size is not None:
        notes.append(f"resized and centre-cropped to {image_size}x{image_size}")
    return transform_pixels(np.ascontiguousarray(pixels), target, image_size)
