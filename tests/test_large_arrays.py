"""Large array files: the images of an .npy / .npz are read in chunks, every row checked and
hashed, and only the rows a run uses are kept -- the same rows, values and checksum as a whole
read -- so a run's peak memory follows the rows it uses, not the file's size."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae.config import FitConfig
from pyro_vae.data import array_rows, load_own_data
from pyro_vae.data.arrays import prepare_arrays
from pyro_vae.data.splits import seeded_order
from pyro_vae.engine.training_data import rows_used
from pyro_vae.errors import DataError

ROWS = {"train": 7, "valid": None, "test": 3}


def quiet(line):
    """A log that drops the summary line."""


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few rows, so that small files are read in many chunks."""
    monkeypatch.setattr(array_rows, "CHUNK_BYTES", 200)


def whole(x: np.ndarray) -> np.ndarray:
    """A flat float array read whole, laid out (N, 1, 1, D) and put in the seeded split order."""
    return x.astype(np.float32)[:, None, None, :][seeded_order(x.shape[0]).numpy()]


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["x.npy", "stored.npz", "compressed.npz"])
def test_the_rows_kept_are_those_of_a_whole_read(name, tmp_path, small_chunks):
    x = np.random.default_rng(0).random((50, 6))  # float64: converted to float32, chunk by chunk
    labels = np.arange(50) % 5
    path = tmp_path / name
    if name == "x.npy":
        np.save(path, x)
    else:
        (np.savez if name == "stored.npz" else np.savez_compressed)(path, images=x, labels=labels)
    every = prepare_arrays(path, image_size=None, channels=None, fractions=None)
    some = prepare_arrays(path, image_size=None, channels=None, fractions=None, rows=ROWS)
    assert np.array_equal(every.pixels, whole(x)) and every.pixels.dtype == np.float32
    assert every.counts == every.split_sizes == (40, 5, 5) and some.counts == (7, 5, 3)
    expected = np.concatenate([every.pixels[:7], every.pixels[40:45], every.pixels[45:48]])
    assert np.array_equal(some.pixels, expected)
    assert np.array_equal(some.labels, np.concatenate([every.labels[:7], every.labels[40:48]]))
    assert every.checksum == some.checksum == sha256(path)  # the file's bytes, hashed as they are read
    assert some.classes == every.classes == (() if name == "x.npy" else tuple("01234"))


def test_an_own_split_keeps_the_first_rows_of_each_part(tmp_path, small_chunks):
    rng = np.random.default_rng(1)
    train = rng.integers(0, 256, (30, 4, 4, 3), dtype=np.uint8)  # (N, H, W, C)
    test = rng.integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)  # (N, C, H, W)
    np.savez(tmp_path / "own.npz", train_images=train, test_images=test)
    every = prepare_arrays(tmp_path / "own.npz", image_size=None, channels=None, fractions=None)
    some = prepare_arrays(tmp_path / "own.npz", image_size=None, channels=None, fractions=None, rows=ROWS)
    assert every.counts == (27, 3, 10) and some.counts == (7, 3, 3)
    assert np.array_equal(some.pixels, np.concatenate([every.pixels[:7], every.pixels[27:30], every.pixels[30:33]]))
    assert np.array_equal(every.pixels[30:], test)  # the test part as it came, after the training part


def test_rows_not_kept_are_still_checked(tmp_path, small_chunks):
    x = np.random.default_rng(2).random((50, 6)).astype(np.float32)
    x[seeded_order(50).numpy()[45:]] = np.nan  # the last test rows: never kept with ROWS
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match=r"30 NaN and 0 infinite values, in 5 images \(the first: image \d+\)"):
        prepare_arrays(tmp_path / "x.npy", image_size=None, channels=None, fractions=None, rows=ROWS)


def test_a_truncated_npy_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((100, 10), np.float32))
    (tmp_path / "x.npy").write_bytes((tmp_path / "x.npy").read_bytes()[:-50])
    with pytest.raises(DataError, match="the file ends 50 bytes before the end of the array"):
        prepare_arrays(tmp_path / "x.npy", image_size=None, channels=None, fractions=None)


def test_the_load_says_which_rows_it_holds(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(3).random((50, 6)).astype(np.float32))
    lines = []
    dataset = load_own_data(tmp_path / "x.npy", cache_root=tmp_path, log=lines.append, rows=ROWS)
    assert (len(dataset.train), len(dataset.valid), len(dataset.test)) == (7, 5, 3)
    assert "holding only the rows this run uses: 7 of 40 train, 5 of 5 valid, 3 of 5 test" in lines[0]


def test_a_run_reads_its_training_and_evaluation_rows():
    assert rows_used(FitConfig(train_size=512, eval_size=100)) == {"train": 512, "valid": 100, "test": 100}
    assert rows_used(FitConfig()) == {"train": None, "valid": None, "test": None}
    on_valid = FitConfig(train_size=512, eval_size=100, train_on_validation=True)
    assert rows_used(on_valid) == {"train": None, "valid": None, "test": 100}  # train and valid joined first


# -- peak memory of a training run --------------------------------------------------------------
SIDE = 64  # 64x64 float32 grey images: 16 KiB a row
LARGE_ROWS = 20_000  # 328 MB: read whole, it would exceed the bound many times over
TRAIN_SIZE, EVAL_SIZE = 2048, 256
USED_BYTES = (TRAIN_SIZE + 2 * EVAL_SIZE) * SIDE * SIDE * 4
PEAK = """
import json, resource, sys, torch
torch.set_num_threads(1)
from pyro_vae.cli.fit import main
status = main(sys.argv[1:])
print(json.dumps({"status": status, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def write_rows(path: Path, rows: int) -> None:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, SIDE, SIDE))
    rng = np.random.default_rng(0)
    for start in range(0, rows, 1024):
        out[start : start + 1024] = rng.random((min(1024, rows - start), SIDE, SIDE), dtype=np.float32)
    out.flush()
    del out


def peak_of_fit(data: Path, out: Path) -> int:
    """Peak resident memory (bytes) of one epoch of `fit` on ``data``, in a fresh process."""
    argv = ["--data", str(data), "--out", str(out), "--train-size", str(TRAIN_SIZE), "--eval-size", str(EVAL_SIZE)]
    argv += ["--epochs", "1", "--batch-size", "256", "--latent-dim", "2", "--hidden", "8", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *argv], capture_output=True, text=True, env=env, cwd=out.parent, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 0
    return result["peak"]


@pytest.mark.slow
def test_peak_memory_follows_the_rows_used_not_the_file(tmp_path):
    """One epoch with --train-size on a 328 MB file peaks at most 0.3x the rows used above the same
    run on a file that just holds those rows (torch, the model, the rows and the evaluation sets),
    i.e. at most 1.3x the rows used plus the rest."""
    large, small = tmp_path / "large.npy", tmp_path / "small.npy"
    write_rows(large, LARGE_ROWS)
    write_rows(small, TRAIN_SIZE * 10 // 8 + 10)  # its 0.8 / 0.1 / 0.1 split just holds the rows used
    large_bytes = large.stat().st_size
    try:
        baseline = peak_of_fit(small, tmp_path / "run-small")
        peak = peak_of_fit(large, tmp_path / "run-large")
    finally:
        large.unlink()
        small.unlink()
    assert peak <= baseline + 0.3 * USED_BYTES, (
        f"peak {peak / 2**20:.0f} MiB on the {large_bytes / 2**20:.0f} MiB file, {baseline / 2**20:.0f} MiB on the "
        f"small one; rows used {USED_BYTES / 2**20:.0f} MiB"
    )


def test_torch_tensors_of_the_rows_kept_are_float32(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(4).random((50, 2, 3)))  # float64 grey images
    dataset = load_own_data(tmp_path / "x.npy", cache_root=tmp_path, log=quiet, rows=ROWS)
    assert dataset.train.data.dtype == torch.float32 and dataset.image_shape == (1, 2, 3)


@pytest.mark.parametrize("name", ["stored.npz", "compressed.npz"])
def test_the_masks_kept_are_those_of_the_rows_kept(name, tmp_path, small_chunks):
    rng = np.random.default_rng(5)
    train = rng.integers(0, 256, (30, 4, 4, 3), dtype=np.uint8)  # (N, H, W, C)
    test = rng.integers(0, 256, (10, 3, 4, 4), dtype=np.uint8)  # (N, C, H, W)
    train[:, 0, 0, 0] &= 0xFE  # even: observed, so that every image observes a value
    test[:, 0, 0, 0] &= 0xFE
    masks = {"train_mask": (train % 2 == 0).astype(np.float64), "test_mask": (test % 2 == 0).astype(np.uint8)}
    (np.savez if name == "stored.npz" else np.savez_compressed)(
        tmp_path / name, train_images=train, test_images=test, **masks
    )
    every = prepare_arrays(tmp_path / name, image_size=None, channels=None, fractions=None)
    some = prepare_arrays(tmp_path / name, image_size=None, channels=None, fractions=None, rows=ROWS)
    assert every.mask.dtype == some.mask.dtype == np.bool_ and every.mask.shape == every.pixels.shape
    assert np.array_equal(every.mask, every.pixels % 2 == 0)  # each mask stays with its image
    assert np.array_equal(some.mask, np.concatenate([every.mask[:7], every.mask[27:30], every.mask[30:33]]))
    assert np.array_equal(some.mask, some.pixels % 2 == 0)


def test_a_bad_mask_in_rows_not_kept_is_still_refused(tmp_path, small_chunks):
    x = np.random.default_rng(6).random((50, 6)).astype(np.float32)
    mask = np.ones((50, 1, 1, 6))  # flat vectors' mask in their (N, 1, 1, D) layout
    mask[seeded_order(50).numpy()[47], 0, 0, 2] = 0.5  # a test row never kept with ROWS
    np.savez(tmp_path / "x.npz", images=x, mask=mask)
    with pytest.raises(DataError, match="the mask holds 1 values other than 0 and 1 .*the first 0.5"):
        prepare_arrays(tmp_path / "x.npz", image_size=None, channels=None, fractions=None, rows=ROWS)
