"""Session fixtures with the real data sets, fetched once per test session into a temporary dir.

MNIST and Fashion-MNIST come through the offline sources (torchvision's download is skipped, it
needs the internet). Every test file that wants them declares ``pytest_plugins = ["data_fixtures"]``
(conftest.py may too: pytest registers the plugin once, so the data is still fetched once).

The tensors are shared by every test of the session: never modify them in place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyro_vae.data import Dataset, load_dataset

OFFLINE_ONLY = ("offline",)


@dataclass(frozen=True)
class FirstLoad:
    """The first load of a data set in the session: it fetched the files."""

    dataset: Dataset
    lines: list[str]  # what load_dataset printed
    seconds: float  # wall-clock time of the fetch, conversion, verification and read


def _first_load(name: str, data_root: Path) -> FirstLoad:
    lines: list[str] = []
    start = time.perf_counter()
    dataset = load_dataset(name, data_root, sources=OFFLINE_ONLY, log=lines.append)
    return FirstLoad(dataset, lines, time.perf_counter() - start)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """The session's data dir, holding MNIST/raw and FashionMNIST/raw once they are fetched."""
    return tmp_path_factory.mktemp("pyro-vae-data")


@pytest.fixture(scope="session")
def mnist_first_load(data_root) -> FirstLoad:
    return _first_load("mnist", data_root)


@pytest.fixture(scope="session")
def fashion_first_load(data_root) -> FirstLoad:
    return _first_load("fashion-mnist", data_root)


@pytest.fixture(scope="session")
def mnist_dataset(mnist_first_load) -> Dataset:
    """Real MNIST: train 50,000 / valid 10,000 / test 10,000 (use ``.subset(n)`` for small runs)."""
    return mnist_first_load.dataset


@pytest.fixture(scope="session")
def fashion_mnist_dataset(fashion_first_load) -> Dataset:
    """Real Fashion-MNIST: train 50,000 / valid 10,000 / test 10,000."""
    return fashion_first_load.dataset
