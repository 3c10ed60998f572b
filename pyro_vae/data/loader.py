"""``load_data(config)``: the data a run trains on -- a named data set or ``--data PATH`` -- and the
record that lets ``evaluate`` rebuild exactly the same splits later.

The record (fields of :class:`~pyro_vae.config.FitConfig`, so it lands in config.json):
``data`` (the path), ``data_kind`` (``image-folder``, ``array-file`` or ``catalogue:<name>``),
``data_checksum`` (the content checksum), ``split`` (the fractions, for data without an own
split), ``image_size`` and ``channels``. A later load with that config recomputes the checksum
and refuses data that changed; data that moved are pointed at with ``--data NEW_PATH``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from pyro_vae.data.arrays import ARRAY_EXTENSIONS, prepare_arrays
from pyro_vae.data.cache import own_data_cache
from pyro_vae.data.catalog import load_dataset
from pyro_vae.data.folder import prepare_folder
from pyro_vae.data.prepared import dataset_from_prepared
from pyro_vae.data.splits import format_split, parse_split
from pyro_vae.data.types import Dataset
from pyro_vae.errors import ConfigError, DataError

IMAGE_FOLDER, ARRAY_FILE = "image-folder", "array-file"


def load_own_data(
    path: str | Path,
    *,
    cache_root: Path,
    image_size: int | None = None,
    channels: int | None = None,
    split: str | None = None,
    skip_bad_images: bool = False,
    log: Callable[[str], object] = print,
    verify: bool = False,
    rows: Mapping[str, int | None] | None = None,
) -> Dataset:
    """A folder of images or an array file (see :mod:`.folder` and :mod:`.arrays`) as a Dataset.
    ``verify`` hashes every image of a folder again rather than trusting its listing (names, sizes,
    modification times); an array file is always hashed. ``rows`` (split name -> n; None: all):
    of an array file, only the first n rows of each split are kept (every row is still read and
    checked), and the splits hold only those; a folder's splits are views of its cache and hold
    every row."""
    path = Path(path).expanduser()
    fractions = None if split is None else parse_split(split)
    if path.is_dir():
        kind = IMAGE_FOLDER
        prepared = prepare_folder(
            path,
            cache_root=cache_root,
            image_size=image_size,
            channels=channels,
            fractions=fractions,
            skip_bad=skip_bad_images,
            log=log,
            verify=verify,
        )
    elif path.is_file():
        if path.suffix.lower() not in ARRAY_EXTENSIONS:
            raise DataError(
                f"--data {path}: unknown file extension {path.suffix or '(none)'!r}; give a "
                f"folder of images or an array file ending in {', '.join(ARRAY_EXTENSIONS)}"
            )
        kind = ARRAY_FILE
        prepared = prepare_arrays(path, image_size=image_size, channels=channels, fractions=fractions, rows=rows)
    else:
        raise DataError(f"--data {path}: no such file or folder")
    own_split = prepared.own_split
    recorded_split = None if own_split else format_split(fractions or parse_split(None))
    where = "cache " + str(prepared.cache) if prepared.cache is not None else "memory"
    dataset = dataset_from_prepared(
        path.name, prepared, source=f"{kind} {path}", root=path, kind=kind, image_size=image_size, split=recorded_split
    )
    split_words = "its own split" if own_split else f"split {recorded_split} (seeded)"
    log(
        f"{path.name}: {dataset.describe()}, {split_words} — {kind} {path}, in {where}"
        + "".join(f"; {note}" for note in prepared.notes)
    )
    return dataset


def load_data(
    config,
    *,
    log: Callable[[str], object] = print,
    data: str | Path | None = None,
    rows: Mapping[str, int | None] | None = None,
) -> Dataset:
    """The data of a run: ``config.data`` (or ``data``, where it moved) or ``config.dataset``.
    ``rows``: of an array file, keep only the first n rows of each split (:func:`load_own_data`).

    With a recorded ``config.data_checksum`` (a run's config.json), every file's content is hashed
    again (a listing with unchanged names, sizes and modification times is not trusted) and data
    whose content differs are refused with a message saying so.
    """
    path = data if data is not None else getattr(config, "data", None)
    if path is not None:
        where = Path(path).expanduser()
        if not where.exists() and config.data_checksum:
            raise DataError(
                f"the run's data were at {where} (config.json records it, with checksum "
                f"{config.data_checksum[:19]}...) and are not there now. If they moved, point at them "
                f"with --data NEW_PATH (python -m pyro_vae.evaluate RUN --data NEW_PATH); their content "
                f"is checked against the checksum"
            )
        dataset = load_own_data(
            where,
            cache_root=own_data_cache(config.data_dir),
            image_size=config.image_size,
            channels=config.channels,
            split=config.split,
            skip_bad_images=config.skip_bad_images,
            log=log,
            verify=bool(config.data_checksum),
            rows=rows,
        )
    else:
        if config.split is not None:
            raise ConfigError(
                f"--split is for --data without a split of its own; {config.dataset} has its "
                f"own train / valid / test split (drop --split)"
            )
        dataset = load_dataset(
            config.dataset, config.data_dir, log=log, image_size=config.image_size, channels=config.channels
        )
    recorded = getattr(config, "data_checksum", None)
    if recorded and recorded != dataset.record["data_checksum"]:
        raise DataError(
            f"the data at {dataset.root} differ from those the run was trained on: content checksum "
            f"{dataset.record['data_checksum']}, recorded {recorded} in config.json. Point --data at the "
            f"original data (python -m pyro_vae.evaluate RUN --data PATH), or train a new run on these"
        )
    return dataset


def data_record(dataset: Dataset, config) -> dict:
    """The config fields a run records about ``dataset`` (its path, kind, checksum, split, shape)."""
    record = dict(dataset.record)
    if getattr(config, "data", None) is not None:
        record["data"] = str(Path(config.data).expanduser().resolve())
    return record
