"""Host-side image checks and conversions (sdk.image)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from sdk.errors import ImageReadError, InvalidInputError
from sdk.image import prepare_image, read_image, resize_mask, to_rgb_uint8


def test_bgr_is_converted_and_rgb_flag_keeps_order(bottle_images):
    bgr = bottle_images["good"]
    rgb = to_rgb_uint8(bgr)
    assert rgb.shape == bgr.shape and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, bgr[:, :, ::-1])
    np.testing.assert_array_equal(to_rgb_uint8(rgb, rgb=True), rgb)


def test_grey_single_channel_and_rgba_become_three_channels(bottle_images):
    grey = cv2.cvtColor(bottle_images["good"], cv2.COLOR_BGR2GRAY)
    for image in (grey, grey[:, :, None]):
        out = to_rgb_uint8(image)
        assert out.shape == (*grey.shape, 3)
        np.testing.assert_array_equal(out[:, :, 0], grey)
    bgra = cv2.cvtColor(bottle_images["good"], cv2.COLOR_BGR2BGRA)
    np.testing.assert_array_equal(to_rgb_uint8(bgra), bottle_images["good"][:, :, ::-1])


def test_uint16_is_scaled_to_8_bits(bottle_images):
    image16 = bottle_images["good"].astype(np.uint16) * 257
    np.testing.assert_array_equal(to_rgb_uint8(image16), to_rgb_uint8(bottle_images["good"]))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((2, 8, 8, 3), np.uint8), "shape"),
        (np.zeros((8, 8, 2), np.uint8), "channels"),
        (np.zeros((8, 8, 3), np.int32), "dtype"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_arrays_raise_typed_errors(array, message):
    with pytest.raises(InvalidInputError, match=message):
        to_rgb_uint8(array)


def test_unreadable_files_raise_image_read_error(tmp_path: Path, bottle_subset: Path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(empty)
    real = next((bottle_subset / "train" / "good").glob("*.png")).read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(real[:40])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(truncated)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"GIF89a but not really" * 10)
    with pytest.raises(ImageReadError, match="decode"):
        read_image(garbage)


def test_prepare_image_resizes_any_size_to_model_input(bottle_dir: Path):
    path = next((bottle_dir / "train" / "good").glob("*.png"))
    original = read_image(path)
    assert original.shape[0] > 256
    prepared = prepare_image(path, 256)
    assert prepared.shape == (256, 256, 3) and prepared.dtype == np.uint8 and prepared.flags.c_contiguous
    np.testing.assert_array_equal(prepared, prepare_image(original, 256))


def test_resize_mask_binarises(bottle_dir: Path):
    mask = read_image(next((bottle_dir / "ground_truth" / "broken_large").glob("*.png")))
    small = resize_mask(mask, 64)
    assert small.dtype == bool and small.shape == (64, 64)
    assert 0 < small.mean() < 1
    assert abs(small.mean() - (mask > 127).mean()) < 0.02
