"""Where data lie on disk: the data dir and every path pyro-vae computes under it.

The data dir is ``--data-dir`` if given, else ``$PYRO_VAE_DATA``, else ``~/.cache/pyro-vae``.
Under it:
  - ``<folder>/raw/``: the four IDX files of an MNIST-like data set, in torchvision's layout
    (``MNIST/raw/``, ``FashionMNIST/raw/``), so torchvision reads them too;
  - ``own-data/``: decoded folders of images (:mod:`pyro_vae.data.folder`), one sub-folder per
    content and decoding options, and ``fingerprints.json``, the index of the folders already
    checked.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "PYRO_VAE_DATA"
DEFAULT_DATA_DIR = Path("~/.cache/pyro-vae")
OWN_DATA_FOLDER = "own-data"  # under the data dir
FINGERPRINT_INDEX_NAME = "fingerprints.json"  # fingerprint of a listing -> its content checksum and headers
DECODED_NAME_CHARS = 32  # a decoded folder is named by this many hex digits of its key


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data dir: ``data_dir`` if given, else ``$PYRO_VAE_DATA``, else ``~/.cache/pyro-vae``."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser()


def raw_folder(data_dir: Path, folder: str) -> Path:
    """The folder of an MNIST-like data set's raw IDX files: ``<data dir>/<folder>/raw``."""
    return data_dir / folder / "raw"


def own_data_cache(data_dir: str | os.PathLike | None) -> Path:
    """The root of the decoded-folder caches: ``<data dir>/own-data``."""
    return resolve_data_dir(data_dir) / OWN_DATA_FOLDER


def fingerprint_index(cache_root: Path) -> Path:
    """The index of the folders already checked, in the decoded-folder cache ``cache_root``."""
    return cache_root / FINGERPRINT_INDEX_NAME


def decoded_folder(cache_root: Path, key: str) -> Path:
    """The decoded images of one content and decoding options (``key``, a sha256 hex digest)."""
    return cache_root / key[:DECODED_NAME_CHARS]
