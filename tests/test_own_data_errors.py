"""Every bad input of your own data: a clear message naming the problem and the fix, exit status 2
from the command line, no traceback, nothing lost."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from own_data_helpers import blob_images, save_image, write_folder

from pyro_vae.cli.fit import main as fit_main
from pyro_vae.data import folder as folder_module

FAST = ["--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--batch-size", "8", "--device", "cpu"]


def fit_error(capsys, tmp_path, *args) -> str:
    """Run `fit` on the given data flags; assert exit status 2; return what it printed on stderr."""
    status = fit_main([*args, "--data-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), *FAST])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


@pytest.fixture
def good_folder(tmp_path):
    return write_folder(tmp_path / "images", blob_images(12, 8, seed=0))


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = fit_error(capsys, tmp_path, "--data", str(tmp_path / "empty"))
    assert f"--data {tmp_path / 'empty'}: no images found (looked for files ending in .png, .jpg" in err


def test_corrupt_image_is_named_and_skip_bad_images_skips_it_and_says_how_many(good_folder, tmp_path, capsys):
    (good_folder / "00003.png").write_bytes(b"not an image at all")
    err = fit_error(capsys, tmp_path, "--data", str(good_folder))
    assert "cannot read the image 00003.png (UnidentifiedImageError" in err
    assert "Replace or delete it, or pass --skip-bad-images to skip unreadable images" in err
    assert (
        fit_main(
            [
                "--data",
                str(good_folder),
                "--skip-bad-images",
                "--split",
                "0.5,0.25,0.25",
                "--data-dir",
                str(tmp_path / "cache"),
                "--out",
                str(tmp_path / "run"),
                *FAST,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "5 train / 3 valid / 3 test" in out  # 11 of the 12 images
    assert "skipped 1 unreadable image(s) (e.g. 00003.png: UnidentifiedImageError" in out


def test_truncated_jpeg_is_found_while_decoding(tmp_path, capsys):
    folder = write_folder(tmp_path / "jpegs", blob_images(10, 32, seed=1), ext=".jpg")
    path = folder / "00004.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 4 // 5])  # header intact, data cut
    err = fit_error(capsys, tmp_path, "--data", str(folder))
    assert "cannot read the image 00004.jpg (OSError: image file is truncated" in err
    assert (
        fit_main(
            [
                "--data",
                str(folder),
                "--skip-bad-images",
                "--split",
                "0.5,0.25,0.25",
                "--data-dir",
                str(tmp_path / "cache"),
                "--out",
                str(tmp_path / "run"),
                *FAST,
            ]
        )
        == 0
    )
    assert "skipped 1 image(s) that failed to decode (e.g. 00004.jpg)" in capsys.readouterr().out


def test_mixed_sizes_without_image_size(good_folder, tmp_path, capsys):
    save_image(blob_images(1, 10, seed=2)[0], good_folder / "big.png")
    err = fit_error(capsys, tmp_path, "--data", str(good_folder))
    assert "the images have 2 different sizes: 12 of 8x8 (e.g. 00000.png); 1 of 10x10 (e.g. big.png)" in err
    assert "Pass --image-size S" in err


def test_grey_and_colour_mixed_are_converted_and_said_so(good_folder, tmp_path, capsys):
    save_image(blob_images(1, 8, channels=1, seed=3)[0], good_folder / "grey.png")
    assert (
        fit_main(
            [
                "--data",
                str(good_folder),
                "--split",
                "0.5,0.25,0.25",
                "--data-dir",
                str(tmp_path / "c"),
                "--out",
                str(tmp_path / "run"),
                *FAST,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "8x8x3" in out and "converted 1 grey image(s) to RGB (the folder mixes grey and colour" in out
    assert (
        fit_main(
            [
                "--data",
                str(good_folder),
                "--channels",
                "1",
                "--split",
                "0.5,0.25,0.25",
                "--data-dir",
                str(tmp_path / "c"),
                "--out",
                str(tmp_path / "run1"),
                *FAST,
            ]
        )
        == 0
    )
    assert "converted 12 colour image(s) to grey (--channels 1)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.nan, "1 NaN and 0 infinite values, in 1 images (the first: image 3). Remove or repair them"),
        (np.inf, "0 NaN and 1 infinite values, in 1 images (the first: image 3)"),
        (1.5, r"float values in [0, 1.5], outside [0, 1]. Rescale them to [0, 1]"),
    ],
)
def test_nan_inf_and_out_of_range_floats(tmp_path, capsys, bad, message):
    x = np.zeros((10, 4, 4), dtype=np.float32)
    x[3, 1, 2] = bad
    np.save(tmp_path / "x.npy", x)
    assert message in fit_error(capsys, tmp_path, "--data", str(tmp_path / "x.npy"))


def test_out_of_range_integers(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.full((10, 4, 4), 300, dtype=np.int64))
    err = fit_error(capsys, tmp_path, "--data", str(tmp_path / "x.npy"))
    assert "integer values in [300, 300]; 8-bit pixels lie in 0..255" in err


def test_label_count_differs(tmp_path, capsys):
    np.savez(tmp_path / "x.npz", images=np.zeros((10, 4, 4), np.uint8), labels=np.zeros(9, np.int64))
    err = fit_error(capsys, tmp_path, "--data", str(tmp_path / "x.npz"))
    assert "10 images but 9 labels; give one integer label per image" in err


def test_bernoulli_on_non_binary_data_without_binarization(good_folder, tmp_path, capsys):
    err = fit_error(capsys, tmp_path, "--data", str(good_folder), "--binarize", "none")
    assert "the bernoulli likelihood needs binary pixels" in err and "use --binarize dynamic" in err


def test_unknown_file_extension(tmp_path, good_folder, capsys):
    (tmp_path / "table.csv").write_text("1,2\n")
    err = fit_error(capsys, tmp_path, "--data", str(tmp_path / "table.csv"))
    assert "unknown file extension '.csv'; give a folder of images or an array file ending in .npz, .npy, .pt" in err
    (good_folder / "notes.txt").write_text("about these images")
    err = fit_error(capsys, tmp_path, "--data", str(good_folder))
    assert "notes.txt has an unknown file extension '.txt'" in err and "--skip-bad-images" in err


def test_split_leaving_a_set_empty(good_folder, tmp_path, capsys):
    err = fit_error(capsys, tmp_path, "--data", str(good_folder), "--split", "0.95,0.05,0")
    assert "--split 0.95,0.05,0 of the 12 images of" in err and "leaves the valid set empty" not in err
    assert "leaves the test set empty" in err
    err = fit_error(capsys, tmp_path, "--data", str(good_folder), "--split", "0.5,0.2")
    assert "expected three fractions train,valid,test" in err


def test_far_larger_than_memory_without_room_in_the_cache(good_folder, tmp_path, capsys, monkeypatch):
    class Usage:
        free = 100  # bytes free in the cache folder

    monkeypatch.setattr(folder_module.shutil, "disk_usage", lambda path: Usage)
    monkeypatch.setattr(folder_module, "_available_memory", lambda: 1000)
    err = fit_error(capsys, tmp_path, "--data", str(good_folder))
    assert "its 12 images of 3x8x8 take 0.00 GB as uint8, more than the 0.00 GB free in the cache folder" in err
    assert "Pass --data-dir with a folder on a disk with at least" in err
    monkeypatch.setattr(folder_module, "_available_memory", lambda: 10**9)  # fits memory: decoded there
    assert (
        fit_main(
            [
                "--data",
                str(good_folder),
                "--split",
                "0.5,0.25,0.25",
                "--data-dir",
                str(tmp_path / "c"),
                "--out",
                str(tmp_path / "run"),
                *FAST,
            ]
        )
        == 0
    )
    assert "decoded into memory" in capsys.readouterr().out


def test_data_and_dataset_together_and_labels_needed(good_folder, tmp_path, capsys):
    err = fit_error(capsys, tmp_path, "--data", str(good_folder), "--dataset", "mnist")
    assert "give --data (your own data) or --dataset (a named data set), not both" in err
    err = fit_error(capsys, tmp_path, "--data", str(good_folder), "--model", "cvae")
    assert "--model cvae needs labelled data; images has no labels" in err


def test_discretized_logistic_needs_8_bit_data(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((10, 8, 8)).astype(np.float32))
    err = fit_error(capsys, tmp_path, "--data", str(tmp_path / "x.npy"), "--likelihood", "discretized-logistic")
    assert "models the 256 values of 8-bit pixels, but these data are other floats" in err
    err = fit_error(
        capsys,
        tmp_path,
        "--data",
        str(tmp_path / "x.npy"),
        "--likelihood",
        "discretized-logistic",
        "--binarize",
        "dynamic",
    )
    assert "use --binarize none, not dynamic" in err


def test_the_command_line_prints_no_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    done = subprocess.run(
        [sys.executable, "-m", "pyro_vae.fit", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: --data {tmp_path / 'empty'}: no images found")


def test_resume_checks_the_data_and_follows_a_moved_folder(good_folder, tmp_path, capsys):
    run = ["--split", "0.5,0.25,0.25", "--data-dir", str(tmp_path / "c"), "--out", str(tmp_path / "run"), *FAST]
    assert fit_main(["--data", str(good_folder), *run]) == 0
    moved = good_folder.rename(tmp_path / "moved")
    resume = ["--resume", str(tmp_path / "run"), "--epochs", "2"]
    assert fit_main([*resume, "--data", str(moved)]) == 0  # same content: continues
    save_image(blob_images(1, 8, seed=9)[0], moved / "00000.png")  # one image changed
    assert fit_main([*resume, "--epochs", "3", "--data", str(moved)]) == 2
    assert "differ from those the run was trained on" in capsys.readouterr().err


class RunsCommand:
    """A pickle that would create ``marker`` if it were loaded with ``weights_only=False``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pt_file_holding_code_is_refused_without_torchs_advice(tmp_path, capsys):
    """Issue 26 point 5: the message says what the file holds and that it was not loaded; never
    torch's advice to re-run with weights_only=False or to file an issue."""
    import torch

    marker = tmp_path / "payload-ran"
    torch.save({"images": torch.zeros(10, 4, 4), "labels": RunsCommand(marker)}, tmp_path / "x.pt")
    err = fit_error(capsys, tmp_path, "--data", str(tmp_path / "x.pt"))
    assert "posix.system" in err and "it was not loaded" in err, err
    assert "weights_only" not in err and "issue" not in err.lower() and "Re-running" not in err, err
    assert not marker.exists()
