"""Preprocessing: Caffe convention, any image Pillow reads, clear refusals."""

import numpy as np
import pytest
from PIL import Image

from compiler.api import DEFAULT_IMAGE
from compiler.preprocess import MEAN_BGR, ImageError, load_image, preprocess


def test_bgr_order_and_means():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[..., 1] = 100
    rgb[..., 2] = 10  # blue
    x = preprocess(rgb)
    assert x.shape == (3, 2, 2)
    assert (x[0] == 10 - MEAN_BGR[0]).all()  # channel 0 is blue
    assert (x[1] == 100 - MEAN_BGR[1]).all()
    assert (x[2] == 200 - MEAN_BGR[2]).all()


def test_bundled_photo_is_9_bit_integers():
    x = load_image(DEFAULT_IMAGE)
    assert x.shape == (3, 227, 227) and np.issubdtype(x.dtype, np.integer)
    assert x.min() >= -123 and x.max() <= 151


@pytest.mark.parametrize("mode,ext", [("L", "png"), ("RGBA", "png"), ("P", "gif"),
                                      ("RGB", "bmp"), ("CMYK", "jpeg")])
def test_any_pillow_image(tmp_path, mode, ext):
    p = tmp_path / f"img.{ext}"
    Image.new(mode, (40, 30), 1 if mode == "P" else None).save(p)
    x = load_image(p, (16, 20))
    assert x.shape == (3, 16, 20)


def test_unreadable_image_is_named(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("these are not pixels")
    with pytest.raises(ImageError, match="notes.jpg") as e:
        load_image(p)
    assert "Pillow" in str(e.value)


def test_truncated_image_is_refused(tmp_path):
    data = DEFAULT_IMAGE.read_bytes()
    p = tmp_path / "cut.jpeg"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="cut.jpeg"):
        load_image(p)


def test_missing_image_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.png"):
        load_image(tmp_path / "absent.png")


def test_directory_is_refused(tmp_path):
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)
