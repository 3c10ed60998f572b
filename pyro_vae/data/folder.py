"""A folder of image files, decoded once into a cached, memory-mapped uint8 array.

Layouts (torchvision's ImageFolder and its relatives):
  - ``root/<class>/**/<image>``: one sub-folder per class, labels 0..K-1 in sorted class order;
  - ``root/<image>``: flat, no labels (e.g. CelebA's ``img_align_celeba/``);
  - ``root/train/...``, ``root/test/...`` (and optionally ``valid/`` or ``val/``), each laid out as
    above: the data's own split.

Loading runs in three steps:
  1. **scan**: list the image files (sorted) and fingerprint the listing (names, sizes,
     modification times);
  2. **check**: read every file once, hash its bytes into the folder's *content checksum* and
     read its header (size, colour mode) -- skipped when the fingerprint was seen before, except
     where a run's data are reused (``verify``): then every file is hashed again;
  3. **decode**: with a progress bar, decode (EXIF orientation applied, transparency composited
     onto white), convert and resize every image into
     ``<cache>/images.npy`` (uint8, (N, C, H, W), rows in split order), then ``labels.npy`` and
     ``meta.json`` (written last: a cache without it is incomplete and is redone).
The cache folder is named by the content checksum and the options that change the pixels, so it
is reused by any later run on the same content, wherever the folder lies.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from pyro_vae.atomic import write_json
from pyro_vae.data.cache import decoded_folder, fingerprint_index
from pyro_vae.data.images import check_channels, check_image_size, is_grey, to_array
from pyro_vae.data.splits import SPLIT_NAMES, arrange, seeded_order
from pyro_vae.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
SPLIT_FOLDERS = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}
CACHE_FORMAT = 2  # bump when the decoding changes: older caches and headers are then not reused
CHECKSUM_FORMAT = 1  # part of every content checksum: runs record it, so it changes only with the hashing
EXIF_ORIENTATION = 0x0112
TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height
MEMORY_FRACTION = 0.5  # without room in the cache, decode into memory only below this share of RAM
COPY_CHUNK_ROWS = 4096
SHOWN = 3  # examples named in a message


@dataclass
class Listing:
    """The image files of a folder, in storage order before the split: train, valid, test parts."""

    root: Path
    files: list[Path]
    labels: list[int]
    classes: tuple[str, ...]
    part_sizes: dict[str, int] | None  # the folder's own parts, or None
    skipped: list[Path] = field(default_factory=list)  # files with unknown extensions, skipped

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def fingerprint(self) -> str:
        """sha256 of every file's relative path, size and modification time, and the options."""
        digest = hashlib.sha256(f"format {CACHE_FORMAT}\n".encode())
        for path in self.files:
            status = path.stat()
            digest.update(f"{self.relative(path)}\t{status.st_size}\t{status.st_mtime_ns}\n".encode())
        return digest.hexdigest()


@dataclass
class Prepared:
    """Decoded data in split order: rows [0, n_train) train, then valid, then test."""

    pixels: np.ndarray  # (N, C, H, W) uint8, memory-mapped from the cache where there is one
    labels: np.ndarray  # (N,) int64
    counts: tuple[int, int, int]
    classes: tuple[str, ...]
    checksum: str  # the content checksum: "sha256:<hex>"
    notes: list[str]  # what was converted or skipped, said to the user
    cache: Path | None
    own_split: bool = False


# -- 1. scan ----------------------------------------------------------------------------------
def scan_folder(root: Path, skip_bad: bool) -> Listing:
    """The image files under ``root`` in one of the layouts of the module docstring."""
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder")
    subdirs, files = _entries(root)
    parts = {SPLIT_FOLDERS.get(d.name.lower()) for d in subdirs}
    if subdirs and not files and None not in parts and "train" in parts:
        listing = Listing(root, [], [], (), {})
        found = []
        for name in SPLIT_NAMES:
            folders = [d for d in subdirs if SPLIT_FOLDERS[d.name.lower()] == name]
            if len(folders) > 1:
                raise DataError(
                    f"--data {root}: both {' and '.join(d.name for d in folders)} hold a {name} part; keep one"
                )
            if folders:
                found.append((name, _scan_part(folders[0], skip_bad, listing)))
        class_sets = {bool(classes) for _, (_, classes) in found}
        if len(class_sets) > 1:
            raise DataError(
                f"--data {root}: some parts have class sub-folders and some do not; lay every part out the same way"
            )
        classes = sorted(set().union(*(set(c for c in cls) for _, (_, cls) in found)))
        index = {c: i for i, c in enumerate(classes)}
        for name, (paths, cls) in found:
            listing.files += paths
            listing.labels += [index[c] for c in cls] if cls else [0] * len(paths)
            listing.part_sizes[name] = len(paths)
        listing.classes = tuple(classes)
        return listing
    listing = Listing(root, [], [], (), None)
    paths, cls = _scan_part(root, skip_bad, listing)
    classes = sorted(set(cls))
    index = {c: i for i, c in enumerate(classes)}
    listing.files, listing.classes = paths, tuple(classes)
    listing.labels = [index[c] for c in cls] if cls else [0] * len(paths)
    return listing


def _entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """Sorted sub-folders and files of ``folder``, hidden ones (.DS_Store, .cache) left out."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    return [p for p in entries if p.is_dir()], [p for p in entries if p.is_file()]


def _scan_part(folder: Path, skip_bad: bool, listing: Listing) -> tuple[list[Path], list[str]]:
    """Images of one part: (paths, class name of each path or [] when flat)."""
    subdirs, files = _entries(folder)
    if subdirs and any(_is_image(f) for f in files):
        raise DataError(
            f"--data {listing.root}: {folder} holds both image files ({files[0].name}, ...) and sub-folders "
            f"({subdirs[0].name}, ...). Put every image in a class sub-folder (labels), or none in "
            f"sub-folders (no labels)"
        )
    if not subdirs:
        return _images(files, skip_bad, listing), []
    paths, classes = [], []
    for sub in subdirs:
        found = []
        for dirpath, dirnames, filenames in os.walk(sub):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
        images = _images(found, skip_bad, listing)
        if not images:
            raise DataError(
                f"--data {listing.root}: the class folder {listing.relative(sub)} holds no images; every "
                f"class sub-folder is a label (0..K-1 in sorted order), so an empty one would shift the "
                f"labels after it. Put its images in, or delete it"
            )
        paths += images
        classes += [sub.name] * len(images)
    return paths, classes


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _images(files: list[Path], skip_bad: bool, listing: Listing) -> list[Path]:
    unknown = [f for f in files if not _is_image(f)]
    if unknown and not skip_bad:
        raise DataError(
            f"--data {listing.root}: {listing.relative(unknown[0])} has an unknown file extension "
            f"{unknown[0].suffix or '(none)'!r}"
            + (f" ({len(unknown)} such files)" if len(unknown) > 1 else "")
            + f"; images are read from files ending in {', '.join(IMAGE_EXTENSIONS)}. Move other files "
            f"out of the folder, or pass --skip-bad-images to skip them"
        )
    listing.skipped += unknown
    return [f for f in files if _is_image(f)]


# -- 2. check ---------------------------------------------------------------------------------
@dataclass
class Headers:
    checksum: str
    sizes: list[tuple[int, int]]  # (width, height) per file; (0, 0) for an unreadable file
    grey: list[bool]
    bad: dict[int, str]  # file index -> why it cannot be read


def check_files(listing: Listing, index_path: Path, verify: bool = False) -> Headers:
    """Hash and read the header of every file, or reuse what an earlier run found for this listing
    (never with ``verify``: then every file's bytes are hashed again, whatever the listing says)."""
    fingerprint = listing.fingerprint()
    index = _read_index(index_path)
    known = None if verify else index.get(fingerprint)
    if known is not None:
        return Headers(
            known["checksum"],
            [tuple(s) for s in known["sizes"]],
            known["grey"],
            {int(k): v for k, v in known["bad"].items()},
        )
    digest = hashlib.sha256(f"format {CHECKSUM_FORMAT}\n".encode())
    sizes, grey, bad = [], [], {}
    for i, path in enumerate(
        tqdm(listing.files, desc=f"checking {listing.root.name}", unit="file", disable=None, leave=False)
    ):
        data = path.read_bytes()
        digest.update(f"{listing.relative(path)}\t{listing.labels[i]}\t".encode())
        digest.update(hashlib.sha256(data).digest())
        try:
            if not data:
                raise EmptyFile
            with Image.open(io.BytesIO(data)) as image:
                sizes.append(_upright_size(image))
                grey.append(is_grey(image.mode))
        except EmptyFile:
            sizes.append((0, 0))
            grey.append(True)
            bad[i] = "the file is empty: 0 bytes"
        except Exception as error:  # noqa: BLE001 - PIL fails in many ways on a bad file
            sizes.append((0, 0))
            grey.append(True)
            bad[i] = _why(error)
    if listing.part_sizes:
        digest.update(json.dumps(listing.part_sizes, sort_keys=True).encode())
    headers = Headers("sha256:" + digest.hexdigest(), sizes, grey, bad)
    index[fingerprint] = {
        "checksum": headers.checksum,
        "sizes": sizes,
        "grey": grey,
        "bad": {str(k): v for k, v in bad.items()},
    }
    try:
        write_json(index_path, index)
    except OSError:
        pass  # an unwritable cache only costs a re-check next time
    return headers


class EmptyFile(Exception):
    """A zero-byte image file."""


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the image as displayed: after its EXIF orientation, read from the header."""
    width, height = image.size
    if image.getexif().get(EXIF_ORIENTATION) in TRANSPOSED_ORIENTATIONS:
        return height, width
    return width, height


def _read_index(path: Path) -> dict:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return index if isinstance(index, dict) else {}


def _why(error: Exception) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


# -- 3. decode --------------------------------------------------------------------------------
def prepare_folder(
    root: Path,
    *,
    cache_root: Path,
    image_size: int | None,
    channels: int | None,
    fractions: tuple[float, float, float] | None,
    skip_bad: bool,
    log: Callable[[str], object],
    verify: bool = False,
) -> Prepared:
    """Scan, check and decode the folder ``root`` (or reuse its cache); see the module docstring.
    ``verify`` hashes every file again (a run's data reused), not trusting the listing's fingerprint."""
    check_image_size(image_size)
    check_channels(channels)
    return prepare_listing(
        scan_folder(root, skip_bad),
        cache_root=cache_root,
        image_size=image_size,
        channels=channels,
        fractions=fractions,
        skip_bad=skip_bad,
        log=log,
        verify=verify,
    )


def prepare_listing(
    listing: Listing,
    *,
    cache_root: Path,
    image_size: int | None,
    channels: int | None,
    fractions: tuple[float, float, float] | None,
    skip_bad: bool,
    log: Callable[[str], object],
    verify: bool = False,
) -> Prepared:
    """Check and decode the files of ``listing`` (or reuse their cache); ``verify`` as in
    :func:`prepare_folder`."""
    root = listing.root
    notes = []
    if listing.skipped:
        notes.append(
            f"skipped {len(listing.skipped)} file(s) with unknown extensions "
            f"(e.g. {listing.relative(listing.skipped[0])})"
        )
    if not listing.files:
        raise DataError(
            f"--data {root}: no images found (looked for files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}, in the folder or its class sub-folders)"
        )
    _make_dir(cache_root)
    headers = check_files(listing, fingerprint_index(cache_root), verify)
    keep = list(range(len(listing.files)))
    if headers.bad:
        first = min(headers.bad)
        if not skip_bad:
            raise DataError(_bad_image_message(listing, first, headers.bad[first], len(headers.bad)))
        keep = [i for i in keep if i not in headers.bad]
        notes.append(
            f"skipped {len(headers.bad)} unreadable image(s) (e.g. "
            f"{listing.relative(listing.files[first])}: {headers.bad[first]})"
        )
        if not keep:
            raise DataError(f"--data {root}: none of the {len(listing.files)} image files could be read")
    c = _channels(channels, [headers.grey[i] for i in keep], notes)
    size = _size(image_size, listing, headers, keep)
    key = hashlib.sha256(json.dumps([headers.checksum, c, size, skip_bad, CACHE_FORMAT]).encode()).hexdigest()
    cache = decoded_folder(cache_root, key)
    meta = _read_meta(cache)
    if meta is None:
        meta = _decode(listing, keep, c, size, image_size, cache, skip_bad, notes)
    counts = _counts(meta, listing, fractions)
    pixels = np.load(cache / "images.npy", mmap_mode="c") if meta["cached"] else meta.pop("pixels")
    labels = np.load(cache / "labels.npy") if meta["cached"] else meta.pop("labels")
    if meta["cached"]:
        notes += meta["notes"]
    return Prepared(
        pixels,
        labels,
        counts,
        listing.classes,
        headers.checksum,
        notes,
        cache if meta["cached"] else None,
        own_split=meta["part_sizes"] is not None,
    )


def _bad_image_message(listing: Listing, first: int, why: str, count: int) -> str:
    more = f" ({count} unreadable files in all)" if count > 1 else ""
    return (
        f"--data {listing.root}: cannot read the image {listing.relative(listing.files[first])} ({why})"
        f"{more}. Replace or delete it, or pass --skip-bad-images to skip unreadable images"
    )


def _channels(channels: int | None, grey: list[bool], notes: list[str]) -> int:
    n_grey = sum(grey)
    n_colour = len(grey) - n_grey
    chosen = channels or (3 if n_colour else 1)
    if chosen == 3 and n_grey:
        notes.append(
            f"converted {n_grey} grey image(s) to RGB"
            + ("" if channels else " (the folder mixes grey and colour; --channels 1 makes all grey)")
        )
    if chosen == 1 and n_colour:
        notes.append(f"converted {n_colour} colour image(s) to grey (--channels 1)")
    return chosen


def _size(image_size: int | None, listing: Listing, headers: Headers, keep: list[int]) -> tuple[int, int]:
    """(H, W) of the stored images: --image-size, else the one size every image has."""
    if image_size is not None:
        return image_size, image_size
    sizes = Counter(headers.sizes[i] for i in keep)
    if len(sizes) > 1:
        examples = []
        for (w, h), n in sizes.most_common(SHOWN):
            i = next(i for i in keep if headers.sizes[i] == (w, h))
            examples.append(f"{n:,} of {w}x{h} (e.g. {listing.relative(listing.files[i])})")
        raise DataError(
            f"--data {listing.root}: the images have {len(sizes)} different sizes: {'; '.join(examples)}. "
            f"Pass --image-size S to resize each one's shorter side to S and crop its centre S x S"
        )
    ((w, h),) = sizes
    return h, w


def _counts(meta: dict, listing: Listing, fractions) -> tuple[int, int, int]:
    """(train, valid, test) sizes of the stored rows; --split cuts data without an own split and is
    refused for data with one."""
    _, counts = arrange(meta["count"], meta["part_sizes"], fractions, f"--data {listing.root}")
    return counts


def _read_meta(cache: Path) -> dict | None:
    try:
        meta = json.loads((cache / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    meta["cached"] = True
    return meta


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot create the cache folder {path} ({error.strerror or error}); pass --data-dir with a writable folder"
        ) from None


def _available_memory() -> int:
    """Bytes of memory available to new allocations (MemAvailable), or total RAM if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _decode(
    listing: Listing,
    keep: list[int],
    c: int,
    size: tuple[int, int],
    image_size: int | None,
    cache: Path,
    skip_bad: bool,
    notes: list[str],
) -> dict:
    """Decode the kept files into ``cache`` (or into memory when the cache has no room)."""
    part_sizes = _kept_part_sizes(listing, keep)
    n = len(keep)
    # rows in split order: the seeded order, or the parts' order (train seeded if valid is carved)
    order = arrange(n, part_sizes, None, f"--data {listing.root}")[0] if part_sizes else seeded_order(n)
    shape = (n, c, *size)
    need = int(np.prod(shape))
    free = shutil.disk_usage(cache.parent).free
    in_memory = need > free * 0.95
    if in_memory:
        memory = _available_memory()
        if need > memory * MEMORY_FRACTION:
            raise DataError(
                f"--data {listing.root}: its {n:,} images of {c}x{size[0]}x{size[1]} take {_gb(need)} as uint8, "
                f"more than the {_gb(free)} free in the cache folder {cache.parent} and more than half of "
                f"the memory available ({_gb(memory)}). Pass --data-dir with a folder on a disk with at "
                f"least {_gb(need)} free (the decoded images are cached there)"
            )
        notes.append(
            f"the cache folder {cache.parent} has only {_gb(free)} free; decoded into memory ({_gb(need)}), not cached"
        )
    rows = [keep[int(i)] for i in order]
    tmp_dir = None if in_memory else Path(tempfile.mkdtemp(prefix=".decode-", dir=cache.parent))
    try:
        if in_memory:
            pixels = np.empty(shape, dtype=np.uint8)
        else:
            pixels = np.lib.format.open_memmap(tmp_dir / "images.npy", mode="w+", dtype=np.uint8, shape=shape)
        bad = _decode_rows(listing, rows, pixels, c, image_size, skip_bad)
        labels = np.asarray([listing.labels[i] for i in rows], dtype=np.int64)
        decode_notes = []
        if bad:
            decode_notes.append(
                f"skipped {len(bad)} image(s) that failed to decode (e.g. "
                f"{listing.relative(listing.files[rows[bad[0]]])})"
            )
            pixels, labels, part_sizes = _drop_rows(pixels, labels, bad, rows, listing, keep, tmp_dir)
        meta = {
            "count": int(labels.shape[0]),
            "shape": list(pixels.shape[1:]),
            "part_sizes": part_sizes,
            "classes": list(listing.classes),
            "notes": decode_notes,
            "format": CACHE_FORMAT,
        }
        if in_memory:
            notes += decode_notes
            return {**meta, "cached": False, "pixels": pixels, "labels": labels}
        pixels.flush()
        del pixels
        np.save(tmp_dir / "labels.npy", labels)
        write_json(tmp_dir / "meta.json", meta)
        if cache.exists():
            shutil.rmtree(cache)  # an incomplete earlier attempt (no meta.json)
        os.replace(tmp_dir, cache)
        tmp_dir = None
        return {**meta, "cached": True}
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _decode_rows(
    listing: Listing, rows: list[int], pixels, c: int, image_size: int | None, skip_bad: bool
) -> list[int]:
    """Decode ``listing.files[rows[r]]`` into ``pixels[r]``; returns the rows that failed to decode
    (with ``skip_bad``; without it the first failure raises DataError)."""
    bad = []
    bar = tqdm(rows, desc=f"decoding {listing.root.name}", unit="img", disable=None)
    for row, i in enumerate(bar):
        try:
            with Image.open(listing.files[i]) as image:
                pixels[row] = to_array(ImageOps.exif_transpose(image), c, image_size)
        except ConfigError as error:
            raise DataError(f"--data {listing.root}: {listing.relative(listing.files[i])}: {error}") from None
        except Exception as error:  # noqa: BLE001 - truncated or corrupt data found while decoding
            if not skip_bad:
                raise DataError(_bad_image_message(listing, i, _why(error), 1)) from None
            bad.append(row)
    bar.close()
    return bad


def _kept_part_sizes(listing: Listing, keep: list[int]) -> dict[str, int] | None:
    if listing.part_sizes is None:
        return None
    sizes, start = {}, 0
    kept = set(keep)
    for name, count in listing.part_sizes.items():
        sizes[name] = sum(1 for i in range(start, start + count) if i in kept)
        start += count
    return sizes


def _drop_rows(pixels, labels, bad, rows, listing, keep, tmp_dir):
    """Remove the rows of images that failed to decode (rare): a compacted copy of the array."""
    good = np.setdiff1d(np.arange(pixels.shape[0]), bad)
    shape = (good.size, *pixels.shape[1:])
    if tmp_dir is None:
        out = pixels[good]
    else:
        out = np.lib.format.open_memmap(tmp_dir / "compact.npy", mode="w+", dtype=np.uint8, shape=shape)
        for start in range(0, good.size, COPY_CHUNK_ROWS):
            out[start : start + COPY_CHUNK_ROWS] = pixels[good[start : start + COPY_CHUNK_ROWS]]
        out.flush()
        del pixels
        os.replace(tmp_dir / "compact.npy", tmp_dir / "images.npy")
        out = np.load(tmp_dir / "images.npy", mmap_mode="r+")
    part_sizes = None
    if listing.part_sizes is not None:  # rows are in part order: count what is left of each part
        failed = {rows[b] for b in bad}
        part_sizes = _kept_part_sizes(listing, [i for i in keep if i not in failed])
    return out, labels[good], part_sizes


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"
