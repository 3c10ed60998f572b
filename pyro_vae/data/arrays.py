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

Large files: the images of an ``.npy`` (or of an ``.npz`` member, stored or compressed) are read
front to back in chunks (:mod:`pyro_vae.data.array_rows`): every row is checked and hashed, and
only the rows a run uses (``rows``: the first n of each split) are kept and converted, so memory
holds those rows and one chunk, not the file. A ``.pt`` file is loaded whole (torch.load). A mask
member is read whole (like the labels, at most the images' size; as bools a quarter of float32
images), checked whole, and only the kept rows' masks are held.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyro_vae.data.array_rows import (
    HASH_CHUNK_BYTES,
    HashingReader,
    RowSource,
    gather_rows,
    in_memory,
    read_fortran_array,
    read_npy_header,
    streamed,
)
from pyro_vae.data.array_values import ValueCheck
from pyro_vae.data.images import check_channels, check_image_size, transform_pixels
from pyro_vae.data.masks import check_mask
from pyro_vae.data.splits import SPLIT_NAMES, arrange
from pyro_vae.errors import ConfigError, DataError, PyroVAEError
from pyro_vae.torch_files import code_in_file

ARRAY_EXTENSIONS = (".npz", ".npy", ".pt")
IMAGE_KEYS = ("images", "x", "data")
LABEL_KEYS = ("labels", "y", "targets")
PART_KEYS = {  # part -> (image keys, label keys)
    "train": (("train_images", "x_train"), ("train_labels", "y_train")),
    "valid": (("valid_images", "x_valid", "x_val"), ("valid_labels", "y_valid", "y_val")),
    "test": (("test_images", "x_test"), ("test_labels", "y_test")),
}
CHANNEL_SIZES = (1, 3)
MASK_KEY = "mask"  # own split: "<part>_mask"
PartSources = dict[str, tuple[RowSource, "np.ndarray | None", "np.ndarray | None"]]  # part -> (images, labels, mask)


@dataclass
class PreparedArrays:
    """Checked arrays in split order (train, valid, test rows), as :class:`folder.Prepared`.

    With ``rows`` asked for, only the first rows of each split are held: ``counts`` says how many,
    ``split_sizes`` how large the splits are."""

    pixels: np.ndarray  # (N, C, H, W) uint8, or float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    counts: tuple[int, int, int]
    classes: tuple[str, ...]
    checksum: str
    notes: list[str]
    cache: Path | None = None
    own_split: bool = False
    split_sizes: tuple[int, int, int] | None = None
    mask: np.ndarray | None = None  # (N, C, H, W) bool, True where observed; None: every value observed


@dataclass
class _Part:
    """One part of an array file (its images, or its own train / valid / test part), checked
    as far as its header tells."""

    source: RowSource
    labels: np.ndarray  # (N,) int64, all of them (zeros where the file has none)
    layout: Callable[[np.ndarray], np.ndarray]  # rows as stored -> (n, C, H, W)
    values: ValueCheck
    has_labels: bool


def file_checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def prepare_arrays(
    path: Path,
    *,
    image_size: int | None,
    channels: int | None,
    fractions: tuple[float, float, float] | None,
    rows: Mapping[str, int | None] | None = None,
) -> PreparedArrays:
    """Read, check, convert and order the arrays of ``path`` (see the module docstring).

    ``rows`` (split name -> n, None for all) keeps only the first n rows of each split in split
    order; the others are read and checked, never kept. Only the rows kept are converted."""
    check_image_size(image_size)
    check_channels(channels)
    if not path.is_file():
        raise DataError(f"--data {path}: no such file")
    with _opened(path) as (sources, checksum):  # {"all": (rows, labels, mask)} or {"train": ..., "test": ...}
        parts = {name: _part(source, y, path, name) for name, (source, y, _) in sources.items()}
        try:
            masks = [_mask(mask, parts[name], path, name) for name, (_, _, mask) in sources.items()]
            mask = _masks(masks, path, image_size, channels)
            target, own, order, split_sizes = _plan(parts, path, image_size, channels, fractions)
        except PyroVAEError:
            _gather(parts, np.empty(0, dtype=np.int64))  # wrong values are reported first, as they are found
            raise
        positions, counts = _kept_positions(split_sizes, rows)
        kept = order.numpy()[positions]  # the file's row of each row held, in split order
        pixels = _gather(parts, kept)
        checksum = checksum()
    if mask is not None:
        mask = mask[kept]  # the kept rows' masks, in the pixels' split order
    label_array = np.concatenate([part.labels for part in parts.values()])
    num_classes = int(label_array.max()) + 1 if any(part.has_labels for part in parts.values()) else 0
    notes: list[str] = []
    if counts != split_sizes:
        held = ", ".join(f"{n:,} of {size:,} {name}" for name, n, size in zip(SPLIT_NAMES, counts, split_sizes))
        notes.append(f"holding only the rows this run uses: {held}")
    if target is not None:
        pixels = _convert(pixels, *target, notes)
    return PreparedArrays(
        pixels,
        label_array[kept],
        counts,
        tuple(str(i) for i in range(num_classes)),
        checksum,
        notes,
        own_split=own is not None,
        split_sizes=split_sizes,
        mask=mask,
    )


def _mask(mask, part: _Part, path: Path, name: str) -> np.ndarray | None:
    """A part's mask in the images' layout (N, C, H, W), checked (:func:`check_mask`); None if none."""
    if mask is None:
        return None
    where = f"--data {path}" + ("" if name == "all" else f" ({name} part)")
    images_shape = (part.source.shape[0], *_laid_out(part))
    mask = np.asarray(mask)
    if mask.ndim == len(images_shape) - 1 or (mask.ndim == len(images_shape) and mask.shape[1:] != images_shape[1:]):
        try:  # stored like the images were: (N, H, W), (N, H, W, C) or (N, D)
            mask = _layout(mask.shape, where)(mask)
        except DataError:
            pass
    return check_mask(mask, images_shape, where)


def _masks(masks: list, path: Path, image_size: int | None, channels: int | None) -> np.ndarray | None:
    """The parts' masks as one array (None if no part has one); every part needs one if any has."""
    given = [m is not None for m in masks]
    if not any(given):
        return None
    if not all(given):
        raise DataError(
            f"--data {path}: some parts have a mask and some do not; give '<part>_mask' for every part "
            "(all ones where nothing is missing)"
        )
    shape = masks[0].shape
    resized = image_size is not None and tuple(shape[2:]) != (image_size, image_size)
    if resized or channels not in (None, shape[1]):
        raise ConfigError(
            f"--data {path} holds a mask of missing values, which cannot be resized or converted with "
            "the images: drop --image-size and --channels, or store the images at the size to train on"
        )
    return np.concatenate(masks) if len(masks) > 1 else masks[0]


def _plan(
    parts: dict[str, _Part],
    path: Path,
    image_size: int | None,
    channels: int | None,
    fractions: tuple[float, float, float] | None,
) -> tuple[tuple[int, int | None] | None, dict[str, int] | None, torch.Tensor, tuple[int, int, int]]:
    """What the parts' headers decide: the conversion (:func:`_conversion`), the own split's part
    sizes (None without one), the split order and the split sizes (:func:`arrange`)."""
    shapes = {name: _laid_out(part) for name, part in parts.items()}
    if len(set(shapes.values())) > 1 or len({p.values.dtype for p in parts.values()}) > 1:
        raise DataError(
            f"--data {path}: the parts hold images of different shapes or types "
            f"({', '.join(f'{n} {shapes[n]} {p.values.dtype}' for n, p in parts.items())})"
        )
    (shape, *_), (dtype, *_) = shapes.values(), (p.values.dtype for p in parts.values())
    target = _conversion(shape, dtype, image_size, channels, path)
    sizes = {name: part.source.shape[0] for name, part in parts.items()}
    own = None if list(sizes) == ["all"] else sizes
    order, split_sizes = arrange(sum(sizes.values()), own, fractions, f"--data {path}")
    return target, own, order, split_sizes


def _kept_positions(
    split_sizes: tuple[int, int, int], rows: Mapping[str, int | None] | None
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The positions (in split order) of the first ``rows[split]`` rows of each split, and how many
    of each; every row where ``rows`` is None or names no limit."""
    if rows is None:
        return np.arange(sum(split_sizes)), split_sizes
    starts = np.cumsum((0, *split_sizes[:-1]))
    counts = tuple(
        size if rows.get(name) is None else min(rows[name], size) for name, size in zip(SPLIT_NAMES, split_sizes)
    )
    positions = np.concatenate([np.arange(start, start + n) for start, n in zip(starts, counts)])
    return positions, counts


def _gather(parts: dict[str, _Part], kept: np.ndarray) -> np.ndarray:
    """The rows ``kept`` (numbered across the parts, in their order) as (len(kept), C, H, W): every
    row of every part is read and its values checked; only the rows kept are converted."""
    if len(parts) == 1:  # gathered as stored, then laid out: (N, H, W, C) stays channels-last in memory
        (part,) = parts.values()
        out = np.empty((kept.size, *part.source.shape[1:]), dtype=part.values.dtype)
        gather_rows(part.source, kept, np.arange(kept.size), out, part.values.update, part.values.convert)
        part.values.finish()
        return _indexing_strides(part.layout(out), part)
    first = next(iter(parts.values()))
    out = np.empty((kept.size, *_laid_out(first)), dtype=first.values.dtype)
    start = 0
    for part in parts.values():
        n = part.source.shape[0]
        places = np.flatnonzero((kept >= start) & (kept < start + n))
        convert = lambda x, part=part: part.layout(part.values.convert(x))  # noqa: E731
        gather_rows(part.source, kept[places] - start, places, out, part.values.update, convert)
        part.values.finish()
        start += n
    return out


def _indexing_strides(pixels: np.ndarray, part: _Part) -> np.ndarray:
    """``pixels`` with, on its size-1 axes, the strides NumPy gives rows taken by an index array
    from the whole part laid out and converted, so that a file gives tensors of the same strides
    however many of its rows are read (the memory is the same: a size-1 axis is never stepped)."""
    proxy = np.zeros((2, *part.source.shape[1:]), dtype=part.source.dtype)
    indexed = part.values.convert(part.layout(proxy))[np.array([1, 0])]
    strides = tuple(i if n == 1 else s for n, s, i in zip(pixels.shape, pixels.strides, indexed.strides))
    return pixels if strides == pixels.strides else np.lib.stride_tricks.as_strided(pixels, strides=strides)


@contextmanager
def _opened(path: Path) -> Iterator[tuple[PartSources, Callable[[], str]]]:
    """The parts of the array file ``path`` as row sources with their labels and masks (read
    whole), and a function giving the file's checksum once the rows have been read."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with open(path, "rb") as raw:
            reader = HashingReader(raw)  # the checksum comes from the same pass that reads the rows
            shape, fortran_order, dtype = read_npy_header(reader, f"--data {path}", "file")
            if fortran_order:  # rows are not contiguous: read through a memory map
                yield {"all": (in_memory(np.load(path, mmap_mode="r")), None, None)}, lambda: file_checksum(path)
            else:
                yield {"all": (streamed(reader, shape, dtype, f"--data {path}"), None, None)}, reader.checksum
    elif suffix == ".npz":
        with _npz_members(path) as parts:
            yield parts, lambda: file_checksum(path)
    else:
        parts = {name: (in_memory(np.asarray(x)), y, mask) for name, (x, y, mask) in _read(path).items()}
        yield parts, lambda: file_checksum(path)


@contextmanager
def _npz_members(path: Path) -> Iterator[PartSources]:
    """The image members of an .npz, streamed (stored or deflated), and its label and mask
    members, read whole. Its keys are np.load's: member names without ``.npy``."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"--data {path}: not a readable .npz file ({error})") from None
    with archive, ExitStack() as streams:  # member streams keep the file open: closed with it
        members = {name.removesuffix(".npy"): name for name in archive.namelist()}
        parts = {}
        try:
            for part, (image_key, label_key, mask_key) in _part_keys(list(members), path).items():
                where = f"--data {path} ({image_key!r})"
                stream = streams.enter_context(archive.open(members[image_key]))
                shape, fortran_order, dtype = read_npy_header(stream, where, "array")
                if fortran_order:  # rows are not contiguous: read whole
                    source = in_memory(read_fortran_array(stream, shape, dtype, where))
                else:
                    source = streamed(stream, shape, dtype, where)
                labels, mask = (
                    None if key is None else _read_member(archive, members[key]) for key in (label_key, mask_key)
                )
                parts[part] = (source, labels, mask)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as error:
            raise DataError(f"--data {path}: not a readable .npz file ({error})") from None
        yield parts


def _read_member(archive: zipfile.ZipFile, member: str) -> np.ndarray:
    """One member of an .npz, read whole."""
    with archive.open(member) as stream:
        return np.lib.format.read_array(stream, allow_pickle=False)


def _read(path: Path) -> dict[str, tuple]:
    """The parts of a ``.pt`` file, as arrays."""
    if path.suffix.lower() == ".pt":
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
            return {"all": (content.numpy(), None, None)}
        if isinstance(content, (tuple, list)) and len(content) == 2:
            return {"all": (_numpy(content[0]), _numpy(content[1]), None)}
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
    keys = _part_keys(list(content), path)
    return {part: tuple(None if k is None else content[k] for k in part_keys) for part, part_keys in keys.items()}


def _part_keys(keys: list[str], path: Path) -> dict[str, tuple[str, str | None, str | None]]:
    """Which keys hold each part's images, labels and mask: part -> (image key, label key or None,
    mask key or None)."""

    def first(candidates):
        found = [k for k in candidates if k in keys]
        return found[0] if found else None

    parts = {}
    for name, (image_keys, label_keys) in PART_KEYS.items():
        x = first(image_keys)
        if x is not None:
            parts[name] = (x, first(label_keys), first((f"{name}_{MASK_KEY}",)))
    if parts:
        return parts
    x = first(IMAGE_KEYS)
    if x is None and len(keys) == 1:
        (x,) = keys
    if x is None:
        raise DataError(
            f"--data {path}: holds {', '.join(map(repr, keys)) or 'nothing'}; expected the images under "
            f"'images' (and labels under 'labels'), or an own split under 'train_images', 'test_images' "
            f"(optionally 'valid_images') with '<part>_labels'"
        )
    return {"all": (x, first(LABEL_KEYS), first((MASK_KEY,)))}


def _part(source: RowSource, y, path: Path, part: str) -> _Part:
    """Check what the header tells of one part (its layout, size and type) and its labels."""
    where = f"--data {path}" + ("" if part == "all" else f" ({part} part)")
    layout = _layout(source.shape, where)
    if source.shape[0] == 0:
        raise DataError(f"{where}: holds no images")
    values = ValueCheck(source.dtype, where)
    return _Part(source, _labels(y, source.shape[0], where), layout, values, y is not None)


def _laid_out(part: _Part) -> tuple[int, ...]:
    """(C, H, W) of the part's images once laid out."""
    return part.layout(np.empty((0, *part.source.shape[1:]), dtype=np.uint8)).shape[1:]


def _layout(shape: tuple[int, ...], where: str) -> Callable[[np.ndarray], np.ndarray]:
    """How rows of an array of ``shape`` become (n, C, H, W): from (N, H, W), (N, C, H, W),
    (N, H, W, C) or flat vectors (N, D), stored as (n, 1, 1, D)."""
    if len(shape) == 2:
        return lambda x: x[:, None, None, :]
    if len(shape) == 3:
        return lambda x: x[:, None]
    if len(shape) == 4:
        first, last = shape[1] in CHANNEL_SIZES, shape[3] in CHANNEL_SIZES
        if first:
            return lambda x: x
        if last:
            return lambda x: x.transpose(0, 3, 1, 2)
        raise DataError(
            f"{where}: images of shape {shape[1:]} have no channel axis of size 1 or 3 "
            f"(expected (N, C, H, W) or (N, H, W, C))"
        )
    raise DataError(
        f"{where}: an array of shape {shape}; expected images (N, H, W), (N, C, H, W), "
        f"(N, H, W, C) or flat vectors (N, D)"
    )


def _labels(y, n: int, where: str) -> np.ndarray:
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


def _conversion(
    shape: tuple[int, int, int], dtype: np.dtype, image_size: int | None, channels: int | None, path: Path
) -> tuple[int, int | None] | None:
    """(channels, image size) to convert images of ``shape`` to, None if they are kept as they are;
    :class:`ConfigError` for a conversion that does not apply (flat vectors, floats)."""
    flat = shape[:2] == (1, 1)
    if flat and (image_size is not None or channels not in (None, 1)):
        raise ConfigError(
            f"--data {path} holds flat vectors of {shape[2]} values; --image-size and --channels apply to images only"
        )
    c = shape[0]
    target = channels or c
    if target == c and (image_size is None or shape[1:] == (image_size, image_size)):
        return None
    if dtype != np.uint8:
        raise ConfigError(
            f"--data {path}: --image-size and --channels convert 8-bit pixels; these are "
            f"floats. Convert them before, or store them as uint8"
        )
    return target, image_size


def _convert(pixels: np.ndarray, target: int, image_size: int | None, notes: list[str]) -> np.ndarray:
    c = pixels.shape[1]
    if target != c:
        notes.append(f"converted {pixels.shape[0]:,} images from {c} to {target} channel(s)")
    if image_size is not None:
        notes.append(f"resized and centre-cropped to {image_size}x{image_size}")
    return transform_pixels(np.ascontiguousarray(pixels), target, image_size)
