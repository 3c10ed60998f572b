"""torchvision's data sets in the catalogue: read from small files laid out in each format, and
the "no source reachable" message where there are none."""

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from own_data_helpers import write_celeba, write_cifar10, write_mnist_like, write_omniglot, write_svhn

from pyro_vae.data import load_dataset
from pyro_vae.data.catalog import TORCHVISION_SETS
from pyro_vae.data.splits import seeded_order, valid_count
from pyro_vae.errors import DataError


def quiet(line):
    """A log that drops the summary line."""


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("PYRO_VAE_NO_TORCHVISION_DOWNLOAD", "1")


@pytest.fixture
def no_md5(monkeypatch):
    """The tests' small files cannot have the real files' md5s, which torchvision checks."""
    for cls in (tvd.CIFAR10, tvd.SVHN, tvd.CelebA, tvd.Omniglot):
        monkeypatch.setattr(cls, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": None})  # None: existence only


@pytest.mark.parametrize("entry", TORCHVISION_SETS, ids=lambda e: e.name)
def test_without_files_the_load_says_no_source_reachable_and_where_to_put_them(entry, tmp_path):
    with pytest.raises(DataError) as caught:
        load_dataset(entry.name, tmp_path, log=quiet)
    message = str(caught.value)
    assert message.startswith(f"{entry.title}: no source reachable. Tried, in order:\n  - files in {tmp_path}: ")
    assert "torchvision download: skipped (PYRO_VAE_NO_TORCHVISION_DOWNLOAD is set)" in message
    assert f"place the files in torchvision's layout: {entry.layout.format(root=tmp_path)}" in message


def expected_train_valid(pixels: np.ndarray, labels: np.ndarray):
    """An own train part: seeded order, its last 10% the validation set."""
    order = seeded_order(len(labels)).numpy()
    n_valid = valid_count(len(labels), "")
    return (pixels[order][:-n_valid], labels[order][:-n_valid]), (pixels[order][-n_valid:], labels[order][-n_valid:])


def test_cifar10(tmp_path, no_md5):
    images, labels = write_cifar10(tmp_path)
    lines = []
    dataset = load_dataset("cifar10", tmp_path, log=lines.append)
    (train_x, train_y), (valid_x, valid_y) = expected_train_valid(images, labels)
    assert dataset.image_shape == (3, 32, 32) and dataset.bits == 8 and dataset.num_classes == 10
    assert torch.equal(dataset.train.data, torch.from_numpy(train_x))
    assert torch.equal(dataset.valid.labels, torch.from_numpy(valid_y))
    assert len(dataset.test) == 10 and dataset.class_names[0] == "class0"
    assert lines == [f"cifar10: 45 train / 5 valid / 10 test, 32x32x3, 8-bit, labels 0-9 — from files in {tmp_path}"]
    assert dataset.record["data_kind"] == "catalogue:cifar10"


def test_svhn(tmp_path, no_md5):
    images = write_svhn(tmp_path)
    dataset = load_dataset("svhn", tmp_path, log=quiet)
    (train_x, _), _ = expected_train_valid(images, np.zeros(len(images)))
    assert torch.equal(dataset.train.data, torch.from_numpy(np.ascontiguousarray(train_x)))
    assert sorted(set(dataset.test.labels.tolist())) == list(range(10))  # SVHN's 10 means digit 0


def test_kmnist_and_emnist(tmp_path):
    k_images, k_labels = write_mnist_like(tmp_path / "KMNIST" / "raw")
    e_images, _ = write_mnist_like(tmp_path / "EMNIST" / "raw", prefix="emnist-balanced-", classes=47)
    kmnist = load_dataset("kmnist", tmp_path, log=quiet)
    (train_x, train_y), _ = expected_train_valid(k_images[:, None], k_labels.astype(np.int64))
    assert torch.equal(kmnist.train.data, torch.from_numpy(train_x))
    assert torch.equal(kmnist.train.labels, torch.from_numpy(train_y))
    emnist = load_dataset("emnist", tmp_path, log=quiet)
    (train_x, _), _ = expected_train_valid(e_images[:, None], np.zeros(len(e_images)))
    assert torch.equal(emnist.train.data, torch.from_numpy(train_x.transpose(0, 1, 3, 2)))  # stored transposed


def test_celeba_uses_its_own_split_and_is_cropped_to_64(tmp_path, no_md5):
    write_celeba(tmp_path)
    lines = []
    dataset = load_dataset("celeba", tmp_path, log=lines.append)
    assert (len(dataset.train), len(dataset.valid), len(dataset.test)) == (20, 5, 5)
    assert dataset.image_shape == (3, 64, 64) and dataset.num_classes == 0
    small = load_dataset("celeba", tmp_path, log=quiet, image_size=32, channels=1)
    assert small.image_shape == (1, 32, 32)


def test_omniglot(tmp_path, no_md5):
    write_omniglot(tmp_path)
    dataset = load_dataset("omniglot", tmp_path, log=quiet, image_size=28)
    assert dataset.image_shape == (1, 28, 28)
    assert len(dataset.train) + len(dataset.valid) == 16 and len(dataset.test) == 6


def test_fit_on_a_missing_torchvision_set_exits_2_with_the_message(tmp_path, capsys):
    from pyro_vae.cli.fit import main

    assert main(["--dataset", "svhn", "--data-dir", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: SVHN: no source reachable.") and "Traceback" not in err
