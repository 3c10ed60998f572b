"""One image to a fixed shape: channel conversion, resize and centre crop, on PIL images.

``--channels 1`` converts colour to grey with PIL's ITU-R 601-2 luma (L = 0.299 R + 0.587 G +
0.114 B), ``--channels 3`` repeats grey into three channels. ``--image-size S`` resizes the
shorter side to S (bilinear, antialiased) and crops the centre S x S, as torchvision's
``Resize(S)`` + ``CenterCrop(S)``. Folders and arrays go through the same functions, so a data set
gives the same pixels whichever way it is stored.

Transparent and half-transparent pixels (RGBA, LA, or a palette or grey image with a transparent
colour) are composited onto a white background (``BACKGROUND``) first, so a transparent pixel is
white whatever colour its RGB values hold.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from pyro_vae.errors import ConfigError

CHANNEL_CHOICES = (1, 3)
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
PIL_MODE = {1: "L", 3: "RGB"}
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
BACKGROUND = (255, 255, 255, 255)  # white, opaque: what transparent pixels become


def check_channels(channels: int | None) -> None:
    if channels is not None and channels not in CHANNEL_CHOICES:
        raise ConfigError(f"--channels must be 1 (grey) or 3 (colour), got {channels}")


def check_image_size(size: int | None) -> None:
    if size is not None and size < 1:
        raise ConfigError(f"--image-size must be at least 1, got {size}")


def is_grey(mode: str) -> bool:
    """Whether a PIL mode holds grey-scale images (palette images count as colour)."""
    return mode in GREY_MODES


def has_alpha(image: Image.Image) -> bool:
    """Whether ``image`` has transparency: an alpha channel or a transparent colour."""
    return image.mode in ALPHA_MODES or "transparency" in image.info


def resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bilinear with antialiasing), then crop the centre
    ``size`` x ``size``: torchvision's Resize(size) + CenterCrop(size)."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_array(image: Image.Image, channels: int, size: int | None) -> np.ndarray:
    """A PIL image as uint8 pixels (C, H, W) with ``channels`` channels, resized if ``size``;
    transparency composited onto white."""
    if has_alpha(image):
        image = Image.alpha_composite(Image.new("RGBA", image.size, BACKGROUND), image.convert("RGBA"))
    if image.mode != PIL_MODE[channels]:
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float grey: no 8-bit data
            raise ConfigError(f"{image.mode}-mode images (16-bit or float) are not 8-bit pixels")
        image = image.convert(PIL_MODE[channels])
    if size is not None:
        image = resize_and_crop(image, size)
    pixels = np.array(image, dtype=np.uint8)  # a writable copy
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def transform_pixels(
    pixels: np.ndarray, channels: int, size: int | None, progress: Callable[[int], object] | None = None
) -> np.ndarray:
    """uint8 images (N, C, H, W) to ``channels`` channels and (if ``size``) ``size`` x ``size``,
    one image at a time through :func:`to_array`, exactly as a folder's images are."""
    n, c = pixels.shape[:2]
    if c == channels and (size is None or pixels.shape[2:] == (size, size)):
        return pixels
    first = to_array(_pil(pixels[0]), channels, size)
    out = np.empty((n, *first.shape), dtype=np.uint8)
    for i in range(n):
        out[i] = to_array(_pil(pixels[i]), channels, size)
        if progress is not None:
            progress(1)
    return out


def _pil(image: np.ndarray) -> Image.Image:
    """uint8 (C, H, W) with C = 1 or 3 -> a PIL image."""
    return Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
