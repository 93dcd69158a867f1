"""sdk.Detector on the exported graph with real bottle images."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from export.reference import image_scores
from sdk import Detector, ImageReadError, InvalidInputError, ModelLoadError, Result


@pytest.fixture(scope="module")
def det(tiny_onnx: Path) -> Detector:
    return Detector(tiny_onnx)


def test_result_fields(det: Detector, bottle_images):
    result = det(bottle_images["broken"])
    assert isinstance(result, Result)
    assert result.anomaly_map.shape == (128, 128) and result.anomaly_map.dtype == np.float32
    options = det.metadata.graph_options  # the recipe's head: mean of the map's top 0.1 %
    expected = image_scores(result.anomaly_map[None], options["image_score"], options["top_fraction"])[0]
    assert options["image_score"] == "top_mean" and result.score == pytest.approx(float(expected), rel=1e-5)
    assert 0.0 <= result.normalized_score <= 1.0
    assert result.is_anomaly == (result.score > det.threshold)
    assert result.input_size == bottle_images["broken"].shape[:2]
    assert result.anomaly_map_at_input_size().shape == result.input_size
    assert result.mask.shape == (128, 128) and result.mask.dtype == bool
    assert result.mask.any() == result.is_anomaly
    assert result.mask_at_input_size().shape == result.input_size
    assert result.latency_ms > 0


def test_path_array_batch_and_colour_order_agree(det: Detector, bottle_subset: Path, bottle_images):
    path = sorted((bottle_subset / "test" / "good").glob("*.png"))[0]
    from_path = det(path)
    from_bgr = det(bottle_images["good"])
    from_rgb = det(bottle_images["good"][:, :, ::-1].copy(), rgb=True)
    batch = det.predict_batch([bottle_images["broken"], path])
    for other in (from_bgr, from_rgb, batch[1]):
        np.testing.assert_allclose(other.anomaly_map, from_path.anomaly_map, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch[0].score, det(bottle_images["broken"]).score, rtol=1e-5)
    swapped = det(bottle_images["good"], rgb=True)  # BGR passed as RGB is a different picture
    assert abs(swapped.score - from_bgr.score) > 1e-6


def test_grey_and_large_inputs_are_accepted(det: Detector, bottle_dir: Path, bottle_images):
    grey = cv2.cvtColor(bottle_images["good"], cv2.COLOR_BGR2GRAY)
    assert np.isfinite(det(grey).score)
    original = next((bottle_dir / "test" / "broken_large").glob("*.png"))
    result = det(original)  # 900x900 original, resized on the host
    assert result.input_size == (900, 900) and np.isfinite(result.score)


def test_threshold_is_settable_at_run_time(tiny_onnx: Path, bottle_images):
    det = Detector(tiny_onnx)
    score = det(bottle_images["good"]).score
    det.threshold = score - 1e-3
    low = det(bottle_images["good"])
    assert low.is_anomaly and low.normalized_score > 0.5 and low.threshold == score - 1e-3
    det.threshold = score + 1e-3
    high = det(bottle_images["good"])
    assert not high.is_anomaly and high.normalized_score < 0.5
    assert Detector(tiny_onnx, threshold=123.0).threshold == 123.0
    with pytest.raises(InvalidInputError):
        det.threshold = float("nan")


def test_image_and_pixel_thresholds_are_calibrated_and_set_apart(tiny_onnx: Path, bottle_images):
    """The verdict follows the image threshold, the mask the pixel threshold; both are calibrated on held-out good
    images and settable at run time."""
    det = Detector(tiny_onnx)
    calibration = det.metadata.calibration
    assert calibration.pixel_threshold is not None and det.pixel_threshold == calibration.pixel_threshold
    assert "onnx" in calibration.source.lower() and calibration.n_images >= 2
    result = det(bottle_images["good"])
    peak = float(result.anomaly_map.max())
    det.pixel_threshold = (peak + float(result.anomaly_map.min())) / 2
    masked = det(bottle_images["good"])
    assert masked.mask.any() and masked.mask_at_input_size().any() and masked.is_anomaly == result.is_anomaly
    det.pixel_threshold = peak + 1e-4
    assert not det(bottle_images["good"]).mask.any()
    assert Detector(tiny_onnx, pixel_threshold=0.5).pixel_threshold == 0.5
    with pytest.raises(InvalidInputError):
        det.pixel_threshold = float("inf")


def test_warmup_and_predict_many(det: Detector, bottle_images):
    det.warmup(iterations=1, batch_size=2)
    images = [bottle_images["good"], bottle_images["broken"]] * 3
    results = det.predict_many(images, batch_size=4)
    assert len(results) == 6
    assert results[0].score == pytest.approx(results[2].score, rel=1e-5)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (np.zeros((0, 0, 3), np.uint8), InvalidInputError),
        (np.full((64, 64, 3), 200.0, np.float32), InvalidInputError),  # float outside [0, 1]
        (np.zeros((64, 64, 5), np.uint8), InvalidInputError),
        (np.zeros((2, 2, 64, 64, 3), np.uint8), InvalidInputError),
        ("/nonexistent/image.png", ImageReadError),
    ],
)
def test_bad_input_raises_typed_errors(det: Detector, bad, error):
    with pytest.raises(error):
        det(bad)


def test_empty_batch_is_an_error(det: Detector):
    with pytest.raises(InvalidInputError):
        det.predict_batch([])


@pytest.mark.parametrize("shape", [(256, 256, 3), (256, 256), (2, 256)])
def test_predict_batch_refuses_an_array_that_is_not_a_batch(det: Detector, bottle_images, shape):
    """Defect: predict_batch(one HxWx3 image) scored each image row as an image."""
    image = np.resize(bottle_images["good"], shape)
    with pytest.raises(InvalidInputError, match=r"detector\(image\)"):
        det.predict_batch(image)
    assert len(det.predict_batch(image[None] if image.ndim == 3 else [image])) == 1


def test_bad_model_files(tmp_path: Path, tiny_onnx: Path):
    with pytest.raises(ModelLoadError, match="unsupported"):
        Detector(tmp_path / "model.pt")
    with pytest.raises(ModelLoadError, match="not found"):
        Detector(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(tiny_onnx.read_bytes()[:1000])
    with pytest.raises(ModelLoadError):
        Detector(corrupt)
    model = onnx.load(tiny_onnx)
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, bare)
    with pytest.raises(ModelLoadError, match="rdedge export"):
        Detector(bare)


def test_import_sdk_does_not_import_torch():
    code = ("import sys, sdk, rdedge.main, sdk.evaluate, train; d = sdk.Detector; rdedge.main.build_parser(); "
            "c = train.TrainConfig; assert 'torch' not in sys.modules, 'torch'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_metadata_of_schema_1_reads_with_the_image_threshold_as_pixel_threshold(tiny_onnx: Path):
    """Models exported before pixel thresholds (schema 1) keep working; a newer schema asks for an upgrade."""
    import json

    from sdk.metadata import SCHEMA_VERSION, ModelMetadata

    raw = json.loads(Detector(tiny_onnx).metadata.to_json())
    for key in ("map_max_mean", "map_max_std", "pixel_threshold", "source", "rule", "median", "scale",
                "map_max_median", "map_max_scale"):
        del raw["calibration"][key]
    old = ModelMetadata.from_json(json.dumps({**raw, "schema_version": 1}))
    assert old.calibration.pixel == old.calibration.threshold
    with pytest.raises(ModelLoadError, match="upgrade rdedge"):
        ModelMetadata.from_json(json.dumps({**raw, "schema_version": SCHEMA_VERSION + 1}))
