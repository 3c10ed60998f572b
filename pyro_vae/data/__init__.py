"""Data: named data sets (MNIST, Fashion-MNIST, torchvision's), your own folders of images and
array files, verification and caching; binarization; batches.

dataset = load_dataset("mnist")                     # fetched once, then cached
dataset = load_data(FitConfig(data="~/faces", image_size=64))   # your own: decoded once, cached
batches = DeviceBatches(dataset.train.data, dataset.train.labels, 128,
                        binarization="dynamic", seed=0, device="cpu")
x_eval, description = evaluation_images(dataset.test, "dynamic", seed=0)
"""

from pyro_vae.data.batches import DeviceBatches
from pyro_vae.data.binarize import BINARIZATION_MODES, binarize_fixed, check_binarization, evaluation_images, split_seed
from pyro_vae.data.cache import resolve_data_dir
from pyro_vae.data.catalog import DATASET_NAMES, load_dataset
from pyro_vae.data.loader import data_record, load_data, load_own_data
from pyro_vae.data.sources import SOURCE_KINDS
from pyro_vae.data.types import Dataset, Split, intensities

__all__ = [
    "BINARIZATION_MODES",
    "DATASET_NAMES",
    "SOURCE_KINDS",
    "Dataset",
    "DeviceBatches",
    "Split",
    "binarize_fixed",
    "check_binarization",
    "data_record",
    "evaluation_images",
    "intensities",
    "load_data",
    "load_dataset",
    "load_own_data",
    "resolve_data_dir",
    "split_seed",
]
