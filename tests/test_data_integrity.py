"""What a folder of images holds is what a run sees: content checked where a run's data are reused,
EXIF orientation applied, transparency composited onto white, empty class folders and empty files
named."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
from own_data_helpers import blob_images, write_folder
from PIL import Image

from pyro_vae.data.loader import load_data
from pyro_vae.errors import DataError


def quiet(_line: str) -> None:
    pass


def run_config(root, data_dir, checksum=None):
    """The fields of a run's config.json that load_data reads."""
    return SimpleNamespace(
        data=str(root),
        data_checksum=checksum,
        data_dir=str(data_dir),
        image_size=None,
        channels=None,
        split=None,
        skip_bad_images=False,
        dataset=None,
    )


def test_swapped_contents_with_restored_mtimes_are_noticed_when_a_run_reuses_its_data(tmp_path):
    root = write_folder(tmp_path / "images", blob_images(12, 8, seed=0))
    a, b = root / "00001.png", root / "00002.png"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    assert len(data_a) != len(data_b) or data_a != data_b
    # same sizes needed for the listing to look unchanged: pad both PNGs to one length
    size = max(len(data_a), len(data_b))
    data_a, data_b = data_a.ljust(size, b"\0"), data_b.ljust(size, b"\0")
    a.write_bytes(data_a), b.write_bytes(data_b)
    first = load_data(run_config(root, tmp_path / "cache"), log=quiet)
    recorded = first.record["data_checksum"]
    times = {p: (p.stat().st_atime_ns, p.stat().st_mtime_ns) for p in (a, b)}
    a.write_bytes(data_b), b.write_bytes(data_a)
    for p, ns in times.items():
        os.utime(p, ns=ns)
    with pytest.raises(DataError) as error:
        load_data(run_config(root, tmp_path / "cache", checksum=recorded), log=quiet)
    message = str(error.value)
    assert f"recorded {recorded} in config.json" in message
    assert "--data" in message and "differ from those the run was trained on" in message


def test_a_run_reusing_unchanged_data_loads_them(tmp_path):
    root = write_folder(tmp_path / "images", blob_images(12, 8, seed=0))
    first = load_data(run_config(root, tmp_path / "cache"), log=quiet)
    again = load_data(run_config(root, tmp_path / "cache", first.record["data_checksum"]), log=quiet)
    assert again.record["data_checksum"] == first.record["data_checksum"]


def test_exif_orientation_is_applied(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    pixels = np.zeros((4, 8, 3), dtype=np.uint8)  # 4 high, 8 wide; the top-left pixel white
    pixels[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    for i in range(10):
        Image.fromarray(pixels).save(root / f"{i}.jpg", exif=exif, quality=100)
    dataset = load_data(run_config(root, tmp_path / "cache"), log=quiet)
    image = dataset.train.data[0].numpy()  # (C, H, W)
    assert image.shape == (3, 8, 4)  # displayed upright: 8 high, 4 wide
    assert image[:, 0, -1].min() > 200 and image[:, 0, 0].max() < 60  # top-left moved to top-right


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_become_white_not_the_colour_beneath(tmp_path, mode):
    root = tmp_path / "icons"
    root.mkdir()
    channels = 4 if mode == "RGBA" else 2
    pixels = np.zeros((6, 6, channels), dtype=np.uint8)  # black beneath, fully transparent
    pixels[:3, ..., -1] = 255  # top half opaque black
    for i in range(10):
        Image.fromarray(pixels, mode=mode).save(root / f"{i}.png")
    dataset = load_data(run_config(root, tmp_path / "cache"), log=quiet)
    image = dataset.train.data[0].numpy()
    assert (image[:, :3] == 0).all() and (image[:, 3:] == 255).all()


def test_an_empty_class_folder_is_refused_naming_it(tmp_path):
    images = blob_images(6, 8, seed=1)
    root = write_folder(tmp_path / "classes", images, labels=np.array([0, 0, 0, 2, 2, 2]))
    (root / "1").mkdir()
    with pytest.raises(DataError) as error:
        load_data(run_config(root, tmp_path / "cache"), log=quiet)
    message = str(error.value)
    assert "class folder 1 holds no images" in message and "delete it" in message


def test_a_zero_byte_image_is_said_to_be_empty(tmp_path):
    root = write_folder(tmp_path / "images", blob_images(6, 8, seed=2))
    (root / "00003.png").write_bytes(b"")
    with pytest.raises(DataError) as error:
        load_data(run_config(root, tmp_path / "cache"), log=quiet)
    assert "00003.png (the file is empty: 0 bytes)" in str(error.value)
