"""Your own data: folders of images and array files, splits, the cache, the run's data record,
and the equivalence with the built-in MNIST loader."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from own_data_helpers import blob_images, write_folder

from pyro_vae.cli.evaluate import main as evaluate_main
from pyro_vae.cli.fit import main as fit_main
from pyro_vae.cli.generate import main as generate_main
from pyro_vae.config import FitConfig
from pyro_vae.data import Dataset, DeviceBatches, Split, load_data, load_own_data
from pyro_vae.data import folder as folder_module
from pyro_vae.data.splits import seeded_order
from pyro_vae.engine import Trainer

N_TRAIN, N_EVAL = 300, 100  # MNIST images exported: a few hundred keep the tests fast


def quiet(line):
    """A log that drops the summary line."""


@pytest.fixture(scope="module")
def mnist_export(mnist_dataset, tmp_path_factory):
    """The first 300 train, 100 valid and 100 test MNIST images as an .npz (own split, MNIST's
    order) and as a folder of PNGs train/<label>/, valid/<label>/, test/<label>/."""
    root = tmp_path_factory.mktemp("mnist-export")
    parts = {
        "train": mnist_dataset.train.subset(N_TRAIN),
        "valid": mnist_dataset.valid.subset(N_EVAL),
        "test": mnist_dataset.test.subset(N_EVAL),
    }
    arrays = {}
    for name, split in parts.items():
        arrays[f"{name}_images"] = split.data[:, 0].numpy()  # (N, 28, 28) uint8
        arrays[f"{name}_labels"] = split.labels.numpy()
        write_folder(root / "pngs" / name, split.data[:, 0].numpy(), split.labels.numpy())
    np.savez(root / "mnist.npz", **arrays)
    return root, parts


def test_npz_gives_exactly_the_built_in_loaders_tensors(mnist_export, tmp_path):
    root, parts = mnist_export
    dataset = load_own_data(root / "mnist.npz", cache_root=tmp_path, log=quiet)
    assert dataset.image_shape == (1, 28, 28) and dataset.bits == 8 and dataset.num_classes == 10
    for name, split in parts.items():
        loaded = getattr(dataset, name)
        assert loaded.data.dtype == torch.uint8
        assert torch.equal(loaded.data, split.data) and torch.equal(loaded.labels, split.labels)
        assert torch.equal(loaded.images, split.images)  # the same float intensities
    assert dataset.record["split"] is None  # its own split, recorded as such


def test_png_folder_gives_exactly_the_built_in_loaders_tensors_in_class_order(mnist_export, tmp_path):
    root, parts = mnist_export
    lines = []
    dataset = load_own_data(root / "pngs", cache_root=tmp_path, log=lines.append)
    assert "its own split" in lines[0] and "labels 0-9" in lines[0]
    for name, split in parts.items():
        # an image folder lists class by class (ImageFolder's order), by file name within a class
        order = torch.argsort(split.labels, stable=True)
        loaded = getattr(dataset, name)
        assert torch.equal(loaded.data, split.data[order]) and torch.equal(loaded.labels, split.labels[order])


def test_png_folder_and_mnist_take_the_same_first_training_steps(mnist_export, mnist_dataset, tmp_path):
    root, parts = mnist_export
    folder = load_own_data(root / "pngs", cache_root=tmp_path / "cache", log=quiet)
    splits = {}
    for name, split in parts.items():
        order = torch.argsort(split.labels, stable=True)
        splits[name] = Split(name, split.data[order], split.labels[order])
    reference = Dataset(
        "mnist", splits["train"], splits["valid"], splits["test"], source="test", root=tmp_path, num_classes=10
    )
    config = FitConfig(latent_dim=4, hidden=(32,), batch_size=50, out=str(tmp_path / "run"))
    losses = []
    for dataset in (folder, reference):
        trainer = Trainer(config, dataset, tmp_path / "run", torch.device("cpu"), log=quiet)
        batches = iter(trainer.variant.training_batches())
        losses.append([float(trainer.train_step(next(batches))) for _ in range(3)])
    assert losses[0] == losses[1]


@pytest.fixture(scope="module")
def equivalent_runs(mnist_export, mnist_dataset, tmp_path_factory):
    """`fit --data mnist.npz` and `fit --dataset mnist` on the same 300 / 100 / 100 images."""
    root, _ = mnist_export
    out = tmp_path_factory.mktemp("runs")
    common = [
        "--train-size",
        str(N_TRAIN),
        "--eval-size",
        str(N_EVAL),
        "--epochs",
        "2",
        "--latent-dim",
        "4",
        "--hidden",
        "32",
        "--batch-size",
        "50",
        "--device",
        "cpu",
        "--data-dir",
        str(Path(mnist_dataset.root).parent.parent),
    ]
    assert fit_main(["--data", str(root / "mnist.npz"), "--out", str(out / "npz"), *common]) == 0
    assert fit_main(["--dataset", "mnist", "--out", str(out / "mnist"), *common]) == 0
    return out


def test_fit_on_the_npz_equals_fit_on_mnist(equivalent_runs):
    records = {}
    for name in ("npz", "mnist"):
        lines = (equivalent_runs / name / "metrics.jsonl").read_text().splitlines()
        records[name] = [
            {k: v for k, v in json.loads(line).items() if k not in ("seconds", "images_per_s")} for line in lines
        ]
    assert records["npz"] == records["mnist"]


def test_the_run_records_its_data_in_config_json(equivalent_runs, mnist_export):
    root, _ = mnist_export
    config = json.loads((equivalent_runs / "npz" / "config.json").read_text())
    assert config["data"] == str((root / "mnist.npz").resolve()) and config["dataset"] is None
    assert config["data_kind"] == "array-file" and config["data_checksum"].startswith("sha256:")
    assert config["split"] is None and config["channels"] == 1 and config["binarize"] == "dynamic"
    mnist = json.loads((equivalent_runs / "mnist" / "config.json").read_text())
    assert mnist["data_kind"] == "catalogue:mnist" and mnist["data_checksum"].startswith("sha256:")


def test_evaluate_and_generate_need_no_data_flags_and_agree_with_mnist(equivalent_runs, capsys):
    results = {}
    for name in ("npz", "mnist"):
        run = str(equivalent_runs / name)
        assert (
            evaluate_main([run, "--k", "5", "--limit", "20", "--curve-images", "0", "--no-progress", "--device", "cpu"])
            == 0
        )
        results[name] = json.loads((equivalent_runs / name / "eval.json").read_text())["test"]
        assert generate_main([run, "--n", "4", "--device", "cpu"]) == 0
        assert (equivalent_runs / name / "generated.png").is_file()
    assert results["npz"]["log_px_mean"] == results["mnist"]["log_px_mean"]


def test_moved_data_are_an_error_saying_how_to_point_at_them(equivalent_runs, mnist_export, tmp_path, capsys):
    root, _ = mnist_export
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "best.pt"):
        (run / name).write_bytes((equivalent_runs / "npz" / name).read_bytes())
    config = json.loads((run / "config.json").read_text())
    config["data"] = str(tmp_path / "gone.npz")
    (run / "config.json").write_text(json.dumps(config))
    args = [str(run), "--k", "2", "--limit", "5", "--curve-images", "0", "--no-progress", "--device", "cpu"]
    assert evaluate_main(args) == 2
    err = capsys.readouterr().err
    assert f"the run's data were at {tmp_path / 'gone.npz'}" in err and "are not there now" in err
    assert "--data NEW_PATH" in err
    assert evaluate_main([*args, "--data", str(root / "mnist.npz")]) == 0  # pointed at: checked, used


def test_changed_data_are_refused(equivalent_runs, mnist_export, tmp_path, capsys):
    root, _ = mnist_export
    changed = dict(np.load(root / "mnist.npz"))
    changed["test_images"] = changed["test_images"][::-1].copy()
    np.savez(tmp_path / "changed.npz", **changed)
    args = [
        str(equivalent_runs / "npz"),
        "--k",
        "2",
        "--limit",
        "5",
        "--curve-images",
        "0",
        "--no-progress",
        "--device",
        "cpu",
        "--data",
        str(tmp_path / "changed.npz"),
    ]
    assert evaluate_main(args) == 2
    err = capsys.readouterr().err
    assert "differ from those the run was trained on" in err and "Point --data at the original data" in err


# -- folders: layouts, splits, the cache --------------------------------------------------------
@pytest.fixture
def colour_folder(tmp_path):
    images = blob_images(40, 12, seed=1)
    return write_folder(tmp_path / "colour", images, labels=np.arange(40) % 3), images


def test_flat_folder_has_no_labels_and_a_seeded_split(tmp_path):
    images = blob_images(50, 10, seed=2)
    write_folder(tmp_path / "flat", images)
    dataset = load_own_data(tmp_path / "flat", cache_root=tmp_path / "cache", split="0.6,0.2,0.2", log=quiet)
    assert (len(dataset.train), len(dataset.valid), len(dataset.test)) == (30, 10, 10)
    assert dataset.num_classes == 0 and dataset.image_shape == (3, 10, 10)
    # the rows are the files in the seeded order: train the first 30 of it
    order = seeded_order(50)
    expected = torch.from_numpy(images.transpose(0, 3, 1, 2))[order]
    assert torch.equal(dataset.train.data, expected[:30]) and torch.equal(dataset.test.data, expected[40:])
    assert dataset.record["split"] == "0.6,0.2,0.2"


def test_the_split_does_not_depend_on_the_run_seed_or_the_fractions_order(colour_folder, tmp_path):
    root, _ = colour_folder
    a = load_own_data(root, cache_root=tmp_path / "c", split="0.5,0.25,0.25", log=quiet)
    b = load_own_data(root, cache_root=tmp_path / "c", split="0.8,0.1,0.1", log=quiet)
    # one seeded order cut at other places: b's train starts with a's train
    assert torch.equal(b.train.data[:20], a.train.data)


def test_folder_is_decoded_once_and_the_cache_is_memory_mapped(colour_folder, tmp_path, monkeypatch):
    root, _ = colour_folder
    first = load_own_data(root, cache_root=tmp_path / "cache", log=quiet)
    caches = list((tmp_path / "cache").glob("*/images.npy"))
    assert len(caches) == 1
    decoded = []
    monkeypatch.setattr(folder_module, "_decode", lambda *a, **k: decoded.append(1))
    lines = []
    again = load_own_data(root, cache_root=tmp_path / "cache", log=lines.append)
    assert decoded == [] and f"in cache {caches[0].parent}" in lines[0]
    assert torch.equal(again.train.data, first.train.data)
    assert isinstance(np.load(caches[0], mmap_mode="r"), np.memmap)


def test_a_moved_copy_of_a_folder_reuses_its_cache(colour_folder, tmp_path, monkeypatch):
    root, _ = colour_folder
    first = load_own_data(root, cache_root=tmp_path / "cache", log=quiet)
    moved = root.rename(tmp_path / "moved")
    monkeypatch.setattr(folder_module, "_decode", lambda *a, **k: pytest.fail("decoded again"))
    again = load_own_data(moved, cache_root=tmp_path / "cache", log=quiet)
    assert again.record["data_checksum"] == first.record["data_checksum"]


def test_resize_crop_and_channels(colour_folder, tmp_path):
    root, images = colour_folder
    dataset = load_own_data(root, cache_root=tmp_path / "c", image_size=8, channels=1, log=quiet)
    assert dataset.image_shape == (1, 8, 8) and dataset.record["image_size"] == 8
    from PIL import Image

    from pyro_vae.data.images import to_array

    first_row = dataset.train.data[0]
    # the same row as decoding the file by hand: grey, shorter side to 8, centre crop
    by_label = sorted(range(40), key=lambda i: (str(i % 3), i))  # class folders, then file names
    order = seeded_order(40)
    index = by_label[int(order[0])]
    expected = to_array(Image.fromarray(images[index]), 1, 8)
    assert torch.equal(first_row, torch.from_numpy(expected))


def test_array_layouts_and_labels(tmp_path):
    images = blob_images(20, 8, seed=3)  # (N, H, W, C)
    labels = np.arange(20) % 4
    nchw = images.transpose(0, 3, 1, 2)
    for name, array in (("nhwc", images), ("nchw", nchw)):
        np.savez(tmp_path / f"{name}.npz", images=array, labels=labels)
    torch.save({"images": torch.from_numpy(nchw.copy()), "labels": torch.from_numpy(labels)}, tmp_path / "t.pt")
    np.save(tmp_path / "grey.npy", images[..., 0])
    loaded = {
        name: load_own_data(tmp_path / name, cache_root=tmp_path, log=quiet)
        for name in ("nhwc.npz", "nchw.npz", "t.pt", "grey.npy")
    }
    for name in ("nhwc.npz", "t.pt"):
        for split in ("train", "valid", "test"):
            assert torch.equal(getattr(loaded[name], split).data, getattr(loaded["nchw.npz"], split).data)
    assert loaded["nchw.npz"].num_classes == 4 and loaded["grey.npy"].image_shape == (1, 8, 8)
    assert loaded["grey.npy"].num_classes == 0


def test_flat_float_vectors_are_1_by_d_and_not_8_bit(tmp_path):
    x = np.random.default_rng(0).random((30, 7)).astype(np.float32)
    np.save(tmp_path / "flat.npy", x)
    dataset = load_own_data(tmp_path / "flat.npy", cache_root=tmp_path, log=quiet)
    assert dataset.image_shape == (1, 1, 7) and dataset.bits is None and dataset.dims == 7
    assert dataset.train.data.dtype == torch.float32
    assert torch.equal(dataset.train.data[:, 0, 0], torch.from_numpy(x)[seeded_order(30)[:24]])


def test_load_data_reads_the_config(colour_folder, tmp_path):
    root, _ = colour_folder
    config = FitConfig(data=str(root), data_dir=str(tmp_path), image_size=8, out=str(tmp_path / "r"))
    dataset = load_data(config, log=quiet)
    assert dataset.image_shape == (3, 8, 8) and dataset.record["data_kind"] == "image-folder"


def test_uint8_batches_become_floats_one_batch_at_a_time():
    pixels = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    batches = DeviceBatches(pixels, torch.arange(10), 4, binarization="none", seed=0, device="cpu")
    assert batches.images is pixels  # stays uint8 (and where it is)
    for x, y in batches:
        assert x.dtype == torch.float32 and torch.equal(x[:, 0, 0, 0], y.float() / 255)


def test_host_resident_batches_gather_the_same_rows_as_device_resident_ones():
    """The per-batch copy path (a GPU without room for the split) draws the same batches; here
    on the CPU, with the gather forced, since the copy itself needs a GPU."""
    pixels = torch.randint(0, 256, (23, 3, 4, 4), dtype=torch.uint8)
    resident = DeviceBatches(pixels, torch.arange(23), 5, binarization="dynamic", seed=3, device="cpu")
    copied = DeviceBatches(pixels, torch.arange(23), 5, binarization="dynamic", seed=3, device="cpu")
    copied.on_host, copied.pin = True, False
    for (xa, ya), (xb, yb) in zip(resident, copied, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
