"""Hostile input through ``sdk.Detector``: each kind either raises a typed error or follows a documented conversion
(sdk.image.to_rgb_uint8), and nothing ever returns NaN. Real bottle images, real exported graph."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sdk import Detector, ImageReadError, InferenceError, InvalidInputError
from sdk.contract import INPUT_NAME, OUTPUT_MAP, OUTPUT_SCORE


@pytest.fixture(scope="module")
def det(tiny_onnx: Path) -> Detector:
    return Detector(tiny_onnx)


@pytest.fixture(scope="module")
def bottle(bottle_images) -> np.ndarray:
    return bottle_images["broken"]  # BGR uint8


@pytest.fixture(scope="module")
def png_file(bottle, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("files") / "bottle.png"
    cv2.imwrite(str(path), bottle)
    return path


def same(a, b) -> None:
    assert np.isfinite(a.score) and np.isfinite(a.anomaly_map).all()
    np.testing.assert_allclose(a.score, b.score, rtol=1e-5)
    np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-4, atol=1e-6)


# 1-5: files -----------------------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.mark.parametrize("kind", ["random_bytes", "truncated_png", "truncated_jpeg", "empty", "missing",
                                  "directory", "pixel_bomb", "text_named_png"])
def test_unusable_files_raise_image_read_error(det: Detector, png_file: Path, bottle, tmp_path: Path, kind):
    path = tmp_path / f"{kind}.png"
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "truncated_png":
        data = png_file.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_jpeg":
        path = tmp_path / "truncated.jpg"
        data = cv2.imencode(".jpg", bottle)[1].tobytes()
        path.write_bytes(data[: len(data) * 2 // 3])  # OpenCV alone would decode this, grey-filling the rest
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    elif kind == "pixel_bomb":  # a valid PNG header announcing 100000 x 100000 pixels
        header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
        body = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    elif kind == "text_named_png":
        path.write_text("this is not an image")
    with pytest.raises(ImageReadError):
        det(path)
    with pytest.raises(ImageReadError):
        det.predict_batch([png_file, path])  # one bad file fails the batch with the typed error, not a crash


def test_sixteen_bit_png_file_is_scaled_to_eight_bits(det: Detector, bottle, tmp_path: Path):
    path = tmp_path / "bottle16.png"
    cv2.imwrite(str(path), bottle.astype(np.uint16) * 257)
    same(det(path), det(bottle))


# 6-15: arrays ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda b: np.zeros((0, 0, 3), np.uint8), "empty"),
        (lambda b: b[:, :0], "empty"),
        (lambda b: b[:, :, 0].ravel(), "HxW"),
        (lambda b: b[None, None], "HxW"),
        (lambda b: b[:, :, :2], "channels"),
        (lambda b: np.dstack([b, b[:, :, :2]]), "channels"),
        (lambda b: b.astype(bool), "dtype"),
        (lambda b: b.astype(np.int64), "dtype"),
        (lambda b: b.astype(np.complex64), "dtype"),
        (lambda b: b.astype(object), "dtype"),
        (lambda b: np.where(np.arange(b.shape[1])[None, :, None] == 5, np.nan, b / 255.0), "NaN"),
        (lambda b: np.full(b.shape, np.inf, np.float32), "NaN or infinite"),
        (lambda b: b.astype(np.float32), r"\[0, 1\]"),  # 0-255 floats are ambiguous
        (lambda b: -b.astype(np.float32) / 255.0, r"\[0, 1\]"),
        (lambda b: None, "numpy array"),
        (lambda b: b.tolist(), "numpy array"),
    ],
    ids=["zero_size", "zero_width", "one_dim", "five_dim", "two_channels", "five_channels", "bool", "int64",
         "complex", "object", "nan_float", "inf_float", "float_0_255", "negative_float", "none", "nested_list"],
)
def test_unusable_arrays_raise_invalid_input_error(det: Detector, bottle, make, match):
    with pytest.raises(InvalidInputError, match=match):
        det(make(bottle))


@pytest.mark.parametrize(
    "convert",
    [
        lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2GRAY),
        lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)[:, :, None],
    ],
    ids=["grey_hw", "grey_hw1"],
)
def test_grey_images_are_replicated_to_three_channels(det: Detector, bottle, convert):
    grey = cv2.cvtColor(bottle, cv2.COLOR_BGR2GRAY)
    same(det(convert(bottle)), det(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)))


@pytest.mark.parametrize(
    ("convert", "kwargs"),
    [
        (lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2BGRA), {}),
        (lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2RGBA), {"rgb": True}),
        (lambda b: b.astype(np.uint16) * 257, {}),
        (lambda b: b.astype(np.float32) / 255.0, {}),
        (lambda b: (b.astype(np.float64) / 255.0)[:, :, ::-1], {"rgb": True}),
        (lambda b: np.ascontiguousarray(b[:, ::-1])[:, ::-1], {}),  # negative strides
        (lambda b: np.repeat(b, 2, axis=1)[:, ::2], {}),  # every other column: not contiguous
        (lambda b: np.asfortranarray(b), {}),
    ],
    ids=["bgra", "rgba", "uint16", "float32_0_1", "float64_rgb_reversed_view", "negative_strides", "strided",
         "fortran_order"],
)
def test_documented_conversions_give_the_same_result(det: Detector, bottle, convert, kwargs):
    image = convert(bottle)
    if not kwargs.get("rgb") and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        assert not image.flags["C_CONTIGUOUS"]
    same(det(image, **kwargs), det(bottle))


def test_read_only_arrays_are_accepted_and_left_untouched(det: Detector, bottle):
    image = bottle.copy()
    image.flags.writeable = False
    before = image.copy()
    same(det(image), det(bottle))
    same(det(image, rgb=True), det(bottle[:, :, ::-1]))
    assert not image.flags.writeable and np.array_equal(image, before)


def test_huge_image_is_resized_on_the_host(det: Detector, bottle):
    huge = cv2.resize(bottle, (8000, 6000), interpolation=cv2.INTER_LINEAR)  # 144 MB
    result = det(huge)
    assert np.isfinite(result.score) and result.input_size == (6000, 8000)
    assert result.anomaly_map.shape == det.image_size


# 16: the runtime itself ----------------------------------------------------------------------------------


def test_non_finite_outputs_of_a_broken_model_raise_inference_error(tiny_onnx: Path, tmp_path: Path, bottle):
    """A real graph (run by onnxruntime) whose map is 0/0, carrying a real model's metadata: never a NaN result."""
    real = onnx.load(str(tiny_onnx))
    height, width = Detector(tiny_onnx).image_size
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x", "channel_axis"], ["mean"], keepdims=0),
        helper.make_node("Sub", ["mean", "mean"], ["zero"]),
        helper.make_node("Div", ["zero", "zero"], [OUTPUT_MAP]),
        helper.make_node("ReduceMax", [OUTPUT_MAP, "map_axes"], [OUTPUT_SCORE], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "broken",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", height, width, 3])],
        [helper.make_tensor_value_info(OUTPUT_MAP, TensorProto.FLOAT, ["N", height, width]),
         helper.make_tensor_value_info(OUTPUT_SCORE, TensorProto.FLOAT, ["N"])],
        [helper.make_tensor("channel_axis", TensorProto.INT64, [1], [3]),
         helper.make_tensor("map_axes", TensorProto.INT64, [2], [1, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = real.ir_version
    model.metadata_props.extend(real.metadata_props)
    path = tmp_path / "broken.onnx"
    onnx.save(model, path)
    with pytest.raises(InferenceError, match="non-finite"):
        Detector(path)(bottle)
