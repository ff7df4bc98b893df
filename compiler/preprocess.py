"""The one preprocessing function (Caffe convention), used by the compiler, sim and host.

RGB -> resize the whole image to the model's input size with PIL bilinear -> BGR -> subtract the
per-channel means (B=104, G=117, R=123), no division, ``[3, H, W]``. The result is an integer
tensor in -123..151 (9 bits signed), exactly the network input of ``docs/numerics.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["MEAN_BGR", "ImageError", "load_image", "preprocess", "resize_rgb"]

MEAN_BGR = (104, 117, 123)


class ImageError(ValueError):
    """An image file that cannot be read or used."""


def _open(path: str | Path) -> Image.Image:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"image {str(p)!r} does not exist")
    if not p.is_file():
        raise ImageError(f"image {str(p)!r} is not a file")
    try:
        img = Image.open(p)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot read image {str(p)!r}: not an image Pillow can decode "
                         f"(JPEG, PNG, BMP, ...): {e}") from None
    return img


def resize_rgb(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """8-bit RGB pixels ``[H, W, 3]`` of ``img`` resized to ``size = (H, W)``."""
    h, w = size
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> ``[3, H, W]`` int16 BGR minus the means."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ImageError(f"expected RGB pixels of shape [H, W, 3] and dtype uint8, got "
                         f"{rgb.shape} {rgb.dtype}")
    bgr = rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.int16)
    return bgr - np.array(MEAN_BGR, dtype=np.int16)[:, None, None]


def load_image(path: str | Path, size: tuple[int, int] = (227, 227)) -> np.ndarray:
    """Read any image Pillow can decode and return the network input ``[3, H, W]`` (int16).

    Raises :class:`FileNotFoundError` for a missing file and :class:`ImageError` for one that
    is not a readable image.
    """
    return preprocess(resize_rgb(_open(path), size))
