"""Data: MNIST and Fashion-MNIST loading, verification and caching; binarization; batches.

dataset = load_dataset("mnist")                     # fetched once, then cached
batches = DeviceBatches(dataset.train.images, dataset.train.labels, 128,
                        binarization="dynamic", seed=0, device="cpu")
x_eval, description = evaluation_images(dataset.test, "dynamic", seed=0)
"""

from pyro_vae.data.batches import DeviceBatches
from pyro_vae.data.binarize import BINARIZATION_MODES, binarize_fixed, check_binarization, evaluation_images
from pyro_vae.data.catalog import DATASET_NAMES
from pyro_vae.data.datasets import Dataset, Split, load_dataset
from pyro_vae.data.fetch import resolve_data_dir
from pyro_vae.data.sources import SOURCE_KINDS

__all__ = [
    "BINARIZATION_MODES",
    "DATASET_NAMES",
    "SOURCE_KINDS",
    "Dataset",
    "DeviceBatches",
    "Split",
    "binarize_fixed",
    "check_binarization",
    "evaluation_images",
    "load_dataset",
    "resolve_data_dir",
]
