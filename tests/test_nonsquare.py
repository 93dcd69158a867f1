"""Non-square models (``--image-size HEIGHTxWIDTH``), end to end on real KolektorSDD strips.

The strips are 256 px wide and ~645 px tall; a square input squashes their thin cracks. The test model is 160x64
(height x width, the strips' aspect): every part that knows the input size is checked with height != width, so a
swapped axis or a square assumption anywhere fails here — the graph's input and maps, the blur's padding per axis,
the metadata, ``Detector``, overlays and masks, evaluation against masks, INT8 calibration, streams, the TensorRT
profile and buffers (TensorRT itself through the labelled FAKE seam, and TensorRT-RTX's real parser and builder).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from scipy.ndimage import gaussian_filter

from benchmarks.soak import write_video
from export.reference import papers_postprocess
from export.tensorrt import input_profile
from sdk import Detector
from sdk.backends.engine_file import EngineInfo, buffer_bytes, io_buffer_shapes, write_engine_file
from sdk.contract import ImageSize
from sdk.datasets import load_dataset
from sdk.errors import ModelLoadError
from sdk.evaluate import evaluate_detector
from sdk.metadata import SCHEMA_VERSION, ModelMetadata
from sdk.visualize import overlay
from train.components.anomaly_map import AnomalyMapHead, GaussianBlur

from . import fake_tensorrt
from .conftest import REPO, WIDE_SIZE

HEIGHT, WIDTH = ImageSize.parse(WIDE_SIZE)


# -- the size itself -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (256, (256, 256)), ("256", (256, 256)), ("256x640", (256, 640)), ("640X256", (640, 256)), (" 96 x 160 ", (96, 160)),
    ((256, 640), (256, 640)), ([640, 256], (640, 256)),
])
def test_image_size_reads_a_side_or_height_by_width(value, expected):
    size = ImageSize.parse(value)
    assert size == expected and (size.height, size.width) == expected
    assert size.cv2_size == expected[::-1]
    assert str(size) == (str(expected[0]) if expected[0] == expected[1] else f"{expected[0]}x{expected[1]}")
    assert ImageSize.parse(str(size)) == size


@pytest.mark.parametrize("value", ["256x", "x256", "256x640x3", "-256", "0", "2.5", "", [256], (256, 0), True, 256.0])
def test_malformed_image_sizes_are_refused(value):
    with pytest.raises(ValueError, match="image size"):
        ImageSize.parse(value)


@pytest.mark.parametrize(("value", "side"), [("250x640", "height"), ("256x650", "width"), ("32x256", "height")])
def test_sizes_the_teacher_cannot_halve_five_times_are_refused_naming_the_side(value, side):
    with pytest.raises(ValueError, match=f"image {side} must be a multiple of 32"):
        ImageSize.parse(value).check_trainable()
    result = subprocess.run([sys.executable, "-m", "rdedge", "train", "--data", "x", "--out", "y", "--image-size",
                             value], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and f"image {side} must be a multiple of 32" in result.stderr


@pytest.mark.parametrize(("height", "width", "short", "expected"), [
    (645, 256, 256, (640, 256)),  # KolektorSDD strips
    (341, 256, 256, (352, 256)),  # MVTec 3D-AD tire
    (900, 900, 256, (256, 256)),  # MVTec AD bottle
    (300, 300, 256, (256, 256)),  # ELPV cells
    (256, 645, 128, (128, 320)),  # a wide part, short side 128
    (4000, 100, 64, (256, 64)),   # longer than MAX_ASPECT: squashed to 4:1
])
def test_auto_size_keeps_the_aspect_with_sides_the_teacher_can_halve(height, width, short, expected):
    size = ImageSize.fit_aspect(height, width, short)
    assert size == expected and size.check_trainable() == size


def test_auto_image_size_is_measured_on_the_training_images(kolektor_subset: Path):
    """``--image-size auto`` on real KolektorSDD strips gives 640x256; ``auto:128`` scales the short side; a bad
    ``auto:N`` is refused by the command line before anything runs."""
    from train.config import auto_short_side
    from train.trainer import resolve_image_size

    train_samples = load_dataset(str(kolektor_subset)).train
    assert resolve_image_size("auto", train_samples) == (640, 256)
    assert resolve_image_size("auto:128", train_samples) == (320, 128)
    assert resolve_image_size("256x640", train_samples) == (256, 640)  # a fixed size is not measured
    assert auto_short_side("AUTO") == 256 and auto_short_side(256) is None and auto_short_side("256") is None
    for bad in ("auto:100", "auto:x"):
        with pytest.raises(ValueError):
            auto_short_side(bad)
        result = subprocess.run([sys.executable, "-m", "rdedge", "train", "--data", "x", "--out", "y", "--image-size",
                                 bad], capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 2 and "--image-size" in result.stderr


def test_metadata_stores_height_by_width_and_still_reads_square_models(tiny_onnx: Path):
    meta = Detector(tiny_onnx).metadata
    wide = meta.replace(image_size=ImageSize(HEIGHT, WIDTH))
    raw = json.loads(wide.to_json())
    assert raw["image_size"] == [HEIGHT, WIDTH] and raw["schema_version"] == SCHEMA_VERSION
    assert ModelMetadata.from_json(wide.to_json()).image_size == (HEIGHT, WIDTH)
    old = json.loads(meta.to_json())
    old.update(image_size=128, schema_version=2)  # what every model exported before non-square inputs holds
    assert ModelMetadata.from_json(json.dumps(old)).image_size == (128, 128)
    with pytest.raises(ModelLoadError, match="image size"):
        ModelMetadata.from_json(json.dumps({**old, "image_size": "wide"}))


# -- the head: blur and upsampling per axis ------------------------------------------------------------------------


def test_blur_pads_each_axis_like_scipy_on_non_square_maps():
    maps = torch.rand(2, HEIGHT, WIDTH, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    blurred = GaussianBlur((HEIGHT, WIDTH)).double()(maps).numpy()
    expected = np.stack([gaussian_filter(m, sigma=4.0, mode="reflect") for m in maps.numpy()])
    assert blurred.shape == (2, HEIGHT, WIDTH)
    np.testing.assert_allclose(blurred, expected, atol=1e-12)


@pytest.mark.parametrize(("combine", "refinement"), [("sum", False), ("mean", True)])
def test_head_equals_the_papers_post_processing_on_non_square_features(combine, refinement):
    generator = torch.Generator().manual_seed(1)
    shapes = [(8, HEIGHT // 4, WIDTH // 4), (16, HEIGHT // 8, WIDTH // 8), (32, HEIGHT // 16, WIDTH // 16)]
    teacher = [torch.rand(2, *s, dtype=torch.float64, generator=generator) for s in shapes]
    student = [t + 0.3 * torch.rand(t.shape, dtype=torch.float64, generator=generator) for t in teacher]
    head = AnomalyMapHead(ImageSize(HEIGHT, WIDTH), combine=combine, refinement=refinement)  # FP32, as exported
    with torch.no_grad():
        maps, scores = head(teacher, student)
    ref_maps, ref_scores = papers_postprocess(teacher, student, ImageSize(HEIGHT, WIDTH), combine=combine,
                                              refinement=refinement)
    assert maps.shape == ref_maps.shape == (2, HEIGHT, WIDTH)
    np.testing.assert_allclose(maps.numpy(), ref_maps, rtol=1e-5, atol=1e-7)  # float32 against float64
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-5)


# -- a trained non-square model, end to end --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wide(wide_run) -> Detector:
    return Detector(wide_run[1].path)


@pytest.fixture(scope="module")
def strips(kolektor_subset: Path) -> list[np.ndarray]:
    """Real test strips at their native size (BGR; 256 wide, ~645 tall): good ones, then cracked ones."""
    return [cv2.imread(str(p)) for kind in ("good", "defect")
            for p in sorted((kolektor_subset / "test" / kind).glob("*.png"))]


def test_the_exported_graph_takes_and_gives_height_by_width(wide_run, wide: Detector):
    _, fp32, int8 = wide_run
    assert wide.image_size == (HEIGHT, WIDTH) and str(wide.image_size) == WIDE_SIZE
    for report in (fp32, int8):
        graph = onnx.load(report.path).graph
        dims = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
                for v in [*graph.input, *graph.output]}
        assert dims["image"][1:] == [HEIGHT, WIDTH, 3] and dims["anomaly_map"][1:] == [HEIGHT, WIDTH]
        assert report.metadata.image_size == (HEIGHT, WIDTH)
        assert f"(N,{HEIGHT},{WIDTH},3)" in onnx.load(report.path).doc_string
    # the export's own checks ran on real strips: ONNX Runtime vs PyTorch, and vs the papers' SciPy post-processing
    assert fp32.checks["n_images"] == 4 and fp32.checks["onnxruntime_vs_reference_map"] <= fp32.checks["tolerance"]
    assert int8.metadata.precision == "int8" and int8.checks["calibration_images"] == 16
    log = json.loads((wide_run[0] / "train_log.json").read_text())
    assert log["image_size"] == [HEIGHT, WIDTH] and log["training"]["image_size"] == WIDE_SIZE


def test_detector_maps_overlays_and_masks_follow_the_strip(wide: Detector, strips):
    results = wide.predict_batch(strips)
    for strip, result in zip(strips, results, strict=True):
        assert result.input_size == strip.shape[:2] and strip.shape[0] > 2 * strip.shape[1]  # tall strips
        assert result.anomaly_map.shape == result.mask.shape == (HEIGHT, WIDTH)
        assert result.anomaly_map_at_input_size().shape == result.mask_at_input_size().shape == strip.shape[:2]
        drawn = overlay(strip, result)
        assert drawn.shape == strip.shape and np.abs(drawn.astype(int) - strip.astype(int)).mean() > 1.0
    # the same strip turned on its side is a different input, not the same one squashed back
    turned = wide(np.ascontiguousarray(np.rot90(strips[0])))
    assert turned.anomaly_map.shape == (HEIGHT, WIDTH) and turned.score != pytest.approx(results[0].score)


def test_evaluation_scores_masks_at_height_by_width(wide: Detector, kolektor_subset: Path):
    dataset = load_dataset(str(kolektor_subset))
    metrics = evaluate_detector(wide, dataset.test, progress=False)
    assert (metrics["n_images"], metrics["n_anomalous"]) == (6, 3)
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("image_auroc", "pixel_auroc", "aupro"))
    cracked = next(s for s in dataset.test if s.label == 1)
    mask = cracked.load_mask(wide.image_size)
    assert mask.shape == (HEIGHT, WIDTH) and mask.any()


def test_int8_graph_follows_fp32_on_real_strips(wide_run, wide: Detector, strips):
    int8 = Detector(wide_run[2].path)
    assert int8.image_size == (HEIGHT, WIDTH)
    a, b = wide.predict_batch(strips), int8.predict_batch(strips)
    maps_a = np.stack([r.anomaly_map for r in a]).ravel()
    maps_b = np.stack([r.anomaly_map for r in b]).ravel()
    assert maps_b.shape == maps_a.shape and np.corrcoef(maps_a, maps_b)[0, 1] > 0.9


def test_stream_of_strips_scores_each_frame_like_single_calls(wide: Detector, strips, tmp_path: Path):
    frames = [cv2.resize(s, (256, 640)) for s in strips]  # MJPG wants even sides; the strips are 645 tall
    video = write_video(frames, tmp_path / "strips.avi", 12, fps=10)
    with wide.stream(video, overlay=True) as stream:
        results = list(stream)
    capture = cv2.VideoCapture(str(video))
    decoded = [capture.read()[1] for _ in range(12)]
    capture.release()
    expected = wide.predict_batch(decoded)
    assert len(results) == 12
    np.testing.assert_allclose([r.score for r in results], [e.score for e in expected], rtol=1e-5)
    assert all(r.overlay.shape == (640, 256, 3) for r in results)


def test_a_graph_whose_metadata_lies_about_its_size_is_refused(wide_run, tmp_path: Path):
    from export.onnx import set_metadata

    model = onnx.load(wide_run[1].path)
    set_metadata(model, wide_run[1].metadata.replace(image_size=ImageSize(WIDTH, HEIGHT)))  # axes swapped
    onnx.save(model, tmp_path / "swapped.onnx")
    with pytest.raises(ModelLoadError, match=f"{HEIGHT}x{WIDTH} .*re-export"):
        Detector(tmp_path / "swapped.onnx")


# -- TensorRT: profile, buffers, binding ---------------------------------------------------------------------------


def test_tensorrt_profile_and_buffers_are_height_by_width():
    size = ImageSize(HEIGHT, WIDTH)
    assert input_profile(size, (1, 2, 8)) == [(1, HEIGHT, WIDTH, 3), (2, HEIGHT, WIDTH, 3), (8, HEIGHT, WIDTH, 3)]
    assert io_buffer_shapes(size, 4)["image"] == ((4, HEIGHT, WIDTH, 3), "uint8")
    assert io_buffer_shapes(size, 4)["anomaly_map"] == ((4, HEIGHT, WIDTH), "float32")
    assert buffer_bytes(size, 2) == {"image": 2 * HEIGHT * WIDTH * 3, "anomaly_map": 2 * HEIGHT * WIDTH * 4,
                                     "score": 8}


def test_tensorrt_backend_binds_height_by_width(wide_run, wide: Detector, strips, tmp_path: Path, monkeypatch):
    """Through the labelled FAKE TensorRT/pycuda seam (tests/fake_tensorrt.py), whose 'engine' runs the ONNX with
    onnxruntime on the shapes the backend binds: a square binding would not run at all."""
    import sdk.backends.tensorrt as backend

    monkeypatch.setattr(backend, "import_runtime", lambda: (fake_tensorrt.tensorrt, fake_tensorrt.cuda))
    info = EngineInfo(tensorrt_version=fake_tensorrt.FAKE_TRT_VERSION, gpu_name=fake_tensorrt.FAKE_GPU_NAME,
                      compute_capability="8.7", precision="fp32", max_batch=4)
    path = tmp_path / "wide.engine"
    write_engine_file(path, wide.metadata, info, wide_run[1].path.read_bytes())
    engine = Detector(path)
    assert engine.image_size == (HEIGHT, WIDTH)
    for got, want in zip(engine.predict_batch(strips), wide.predict_batch(strips), strict=True):
        np.testing.assert_allclose(got.anomaly_map, want.anomaly_map, rtol=1e-6)


def test_tensorrt_rtx_parses_and_builds_the_non_square_graph(wide_run, tmp_path: Path, verification_log):
    """TensorRT-RTX's real ONNX parser and builder on the CPU, with the non-square profile (not TensorRT numerics)."""
    from .test_precision import run_with_tensorrt_rtx

    report = run_with_tensorrt_rtx(f"""
import json, tensorrt_rtx
from export.tensorrt import build_engine
from sdk.backends.engine_file import read_engine_header
path = build_engine({str(wide_run[2].path)!r}, {str(tmp_path / "wide.engine")!r}, max_batch=4,
                    cache_dir={str(tmp_path / "cache")!r}, tensorrt=tensorrt_rtx,
                    gpu=("none (TensorRT-RTX CPU build check)", "0.0"))
meta, info, offset = read_engine_header(path)
print(json.dumps({{"size": list(meta.image_size), "precision": meta.precision, "max_batch": info.max_batch}}))
""")
    assert report == {"size": [HEIGHT, WIDTH], "precision": "int8", "max_batch": 4}
    verification_log(f"TensorRT-RTX parsed and built the {WIDE_SIZE} (height x width) INT8 graph")
