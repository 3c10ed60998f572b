"""Small data sets written in every layout pyro-vae reads: folders of images, array files, and
torchvision's formats (a few images each, so the tests stay fast)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from pyro_vae.data.idx import write_idx


def blob_images(n: int, side: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """n uint8 images (n, side, side, C) with structure a VAE can learn: a coloured background and
    one bright disc at a random place, plus a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    images = np.empty((n, side, side, channels), dtype=np.uint8)
    for i in range(n):
        background = rng.integers(20, 120, channels)
        cx, cy = rng.integers(side // 4, 3 * side // 4, 2)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (side // 5) ** 2
        image = np.broadcast_to(background, (side, side, channels)).astype(np.int64)
        image = np.where(disc[..., None], rng.integers(180, 256, channels), image)
        image = image + rng.integers(-8, 9, image.shape)
        images[i] = np.clip(image, 0, 255)
    return images


def save_image(pixels: np.ndarray, path: Path) -> None:
    """uint8 (H, W) or (H, W, C) -> an image file (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels).save(path)


def write_folder(root: Path, images: np.ndarray, labels=None, ext: str = ".png") -> Path:
    """Images (N, H, W[, C]) as files root/<label>/<i>.png (or flat without labels)."""
    for i, image in enumerate(images):
        sub = root if labels is None else root / str(int(labels[i]))
        save_image(image, sub / f"{i:05d}{ext}")
    return root


# -- torchvision's layouts ---------------------------------------------------------------------
def write_cifar10(root: Path, n_train: int = 50, n_test: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """cifar-10-batches-py with five training batches and a test batch; returns the (N, 3, 32, 32)
    training images and labels in file order."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images = np.transpose(blob_images(n_train + n_test, 32, seed=3), (0, 3, 1, 2))  # (N, 3, 32, 32)
    labels = np.arange(n_train + n_test) % 10
    per_batch = n_train // 5
    for b in range(5):
        rows = slice(b * per_batch, (b + 1) * per_batch)
        batch = {"data": images[rows].reshape(per_batch, -1), "labels": labels[rows].tolist()}
        _pickle(folder / f"data_batch_{b + 1}", batch)
    _pickle(folder / "test_batch", {"data": images[n_train:].reshape(n_test, -1), "labels": labels[n_train:].tolist()})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return images[:n_train], labels[:n_train]


def _pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_svhn(root: Path, n_train: int = 30, n_test: int = 10) -> np.ndarray:
    """SVHN/train_32x32.mat and test_32x32.mat (X: (32, 32, 3, N), y: (N, 1) with 10 for digit 0)."""
    from scipy.io import savemat

    folder = root / "SVHN"
    folder.mkdir(parents=True)
    images = blob_images(n_train + n_test, 32, seed=4)  # (N, 32, 32, 3)
    for name, rows in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
        x = np.ascontiguousarray(images[rows].transpose(1, 2, 3, 0))
        y = (np.arange(x.shape[-1]) % 10 + 1).reshape(-1, 1)  # labels 1..10, 10 meaning 0
        savemat(folder / f"{name}_32x32.mat", {"X": x, "y": y})
    return images[:n_train].transpose(0, 3, 1, 2)


def write_mnist_like(raw: Path, prefix: str = "", n_train: int = 40, n_test: int = 10, classes: int = 10):
    """The four IDX files of an MNIST-like set (KMNIST: no prefix; EMNIST: 'emnist-balanced-')."""
    raw.mkdir(parents=True)
    images = blob_images(n_train + n_test, 28, channels=1, seed=5)[..., 0]
    labels = (np.arange(n_train + n_test) % classes).astype(np.uint8)
    if prefix:
        names = [
            f"{prefix}train-images-idx3-ubyte",
            f"{prefix}train-labels-idx1-ubyte",
            f"{prefix}test-images-idx3-ubyte",
            f"{prefix}test-labels-idx1-ubyte",
        ]
    else:
        names = [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ]
    write_idx(raw / names[0], images[:n_train])
    write_idx(raw / names[1], labels[:n_train])
    write_idx(raw / names[2], images[n_train:])
    write_idx(raw / names[3], labels[n_train:])
    return images[:n_train], labels[:n_train]


def write_celeba(root: Path, n: int = 30) -> None:
    """celeba/img_align_celeba/*.jpg (178x218, as CelebA's) and the list files torchvision reads;
    images 0-19 train, 20-24 valid, 25-29 test."""
    folder = root / "celeba"
    images = blob_images(n, 218, seed=6)[:, :, 20:198]  # (n, 218, 178, 3)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    for name, image in zip(names, images):
        save_image(image, folder / "img_align_celeba" / name)
    parts = [0 if i < 20 else 1 if i < 25 else 2 for i in range(n)]
    (folder / "list_eval_partition.txt").write_text("".join(f"{m} {p}\n" for m, p in zip(names, parts)))
    (folder / "identity_CelebA.txt").write_text("".join(f"{m} {i}\n" for i, m in enumerate(names)))
    (folder / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{m} 1 2 3 4\n" for m in names)
    )
    (folder / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\nlefteye_x lefteye_y\n" + "".join(f"{m} 5 6\n" for m in names)
    )
    (folder / "list_attr_celeba.txt").write_text(f"{n}\nSmiling Young\n" + "".join(f"{m} 1 -1\n" for m in names))


def write_omniglot(root: Path) -> None:
    """omniglot-py/images_background (train) and images_evaluation (test): alphabets of characters
    of 105x105 grey PNGs."""
    seed = 0
    for part, alphabets, count in (("images_background", ("Latin", "Greek"), 4), ("images_evaluation", ("Runic",), 3)):
        for a in alphabets:
            for c in range(2):
                for k in range(count):
                    seed += 1
                    image = blob_images(1, 105, channels=1, seed=seed)[0]
                    save_image(image, root / "omniglot-py" / part / a / f"character{c + 1:02d}" / f"{k:02d}.png")
