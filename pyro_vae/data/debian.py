"""Fashion-MNIST offline: Debian's package ``dataset-fashion-mnist``.

The package holds the four gzipped IDX files under ``/usr/share/datasets/fashion-mnist``. Two
sources use it: the files of an installed package, and ``apt-get download`` of the package into a
temporary folder (no root needed once apt's package lists exist), read without installing it.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import IO

from pyro_vae.atomic import atomic_open
from pyro_vae.data.idx import RAW_FILE_NAMES
from pyro_vae.data.sources import OFFLINE, SourceUnavailable, run_command
from pyro_vae.data.types import Source

FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_INSTALLED_DIR = Path("/usr/share/datasets/fashion-mnist")
APT_TIMEOUT_S = 300
DPKG_TIMEOUT_S = 120

# A .deb is an ar archive: a global magic line, then members, each behind a 60-byte header
# whose first 16 bytes are the name and bytes 48-58 the decimal size; data is padded to even.
AR_MAGIC = b"!<arch>\n"
AR_HEADER_BYTES = 60
AR_NAME = slice(0, 16)
AR_SIZE = slice(48, 58)
DEB_DATA_MEMBER = "data.tar"  # data.tar.xz, data.tar.gz, ...


def gunzip_into(source: IO[bytes], path: Path) -> None:
    """Decompress a gzip stream into ``path``, atomically."""
    with gzip.GzipFile(fileobj=source) as unzipped, atomic_open(path, "wb") as out:
        shutil.copyfileobj(unzipped, out)


def fetch_fashion_installed(dest: Path) -> None:
    """Decompress the installed package's four files into ``dest``."""
    if not FASHION_INSTALLED_DIR.is_dir():
        raise SourceUnavailable(f"{FASHION_INSTALLED_DIR} does not exist ({FASHION_PACKAGE} is not installed)")
    for name in RAW_FILE_NAMES:
        with open(FASHION_INSTALLED_DIR / f"{name}.gz", "rb") as f:
            gunzip_into(f, dest / name)


def fetch_fashion_apt(dest: Path) -> None:
    """``apt-get download`` the package to a temporary folder; decompress its four files into ``dest``."""
    with tempfile.TemporaryDirectory(prefix="pyro-vae-deb-") as tmp:
        fashion_from_deb(apt_download(FASHION_PACKAGE, Path(tmp)), dest)


def apt_download(package: str, dest: Path) -> Path:
    """Download a package's .deb into ``dest`` with ``apt-get download``; return its path."""
    run_command(["apt-get", "download", package], cwd=dest, timeout_s=APT_TIMEOUT_S)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if len(debs) != 1:
        raise SourceUnavailable(f"apt-get download {package} left {len(debs)} .deb files, expected one")
    return debs[0]


def fashion_from_deb(deb: Path, dest: Path) -> None:
    """Decompress the four gzipped IDX files inside the .deb into ``dest``."""
    inside = PurePosixPath(*FASHION_INSTALLED_DIR.parts[1:])  # usr/share/datasets/fashion-mnist
    with deb_data_tar(deb) as tar:
        members = {PurePosixPath(m.name): m for m in tar.getmembers() if m.isfile()}
        for name in RAW_FILE_NAMES:
            member = members.get(inside / f"{name}.gz")
            if member is None:
                raise SourceUnavailable(f"{deb.name} has no /{inside}/{name}.gz")
            gunzip_into(tar.extractfile(member), dest / name)


def deb_data_tar(deb: Path) -> tarfile.TarFile:
    """The file-system tar archive inside a .deb: via ``dpkg-deb``, or parsed here without it."""
    if shutil.which("dpkg-deb"):
        data = run_command(["dpkg-deb", "--fsys-tarfile", str(deb)], timeout_s=DPKG_TIMEOUT_S)
    else:
        data = ar_member(deb, DEB_DATA_MEMBER)
    return tarfile.open(fileobj=io.BytesIO(data))  # detects xz / gz / bz2 compression itself


def ar_member(archive: Path, prefix: str) -> bytes:
    """The bytes of the first member of an ar archive whose name starts with ``prefix``."""
    data = archive.read_bytes()
    if not data.startswith(AR_MAGIC):
        raise SourceUnavailable(f"{archive.name} is not a Debian package (no ar archive header)")
    position = len(AR_MAGIC)
    while position + AR_HEADER_BYTES <= len(data):
        header = data[position : position + AR_HEADER_BYTES]
        size = int(header[AR_SIZE].decode("ascii"))
        start = position + AR_HEADER_BYTES
        if header[AR_NAME].decode("ascii").strip().startswith(prefix):
            return data[start : start + size]
        position = start + size + size % 2
    raise SourceUnavailable(f"{archive.name} has no {prefix}* member")


FASHION_INSTALLED_SOURCE = Source(
    kind=OFFLINE,
    description=f"offline: installed Debian package {FASHION_PACKAGE}",
    fetch=fetch_fashion_installed,
    remedy=f"install it: `apt-get install {FASHION_PACKAGE}` (as root)",
)
FASHION_APT_SOURCE = Source(
    kind=OFFLINE,
    description=f"offline: Debian package {FASHION_PACKAGE} via apt-get download",
    fetch=fetch_fashion_apt,
    remedy=(
        f"refresh apt's package lists so that `apt-get download {FASHION_PACKAGE}` finds it: `apt-get update` (as root)"
    ),
)
