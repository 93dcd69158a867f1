"""The OpenVINO backend: the same exported graph, the same numbers as ONNX Runtime, on real bottle images.

OpenVINO runs here for real (its CPU plugin), FP32 and INT8, from the ONNX file and from the IR written by
``rdedge export-openvino``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from sdk import Detector
from sdk.backends import auto_runtime, load_backend
from sdk.errors import DetectorClosedError, ModelLoadError

from .conftest import REPO

pytest.importorskip("openvino", reason="the OpenVINO backend needs `pip install rdedge[openvino]` (in the dev extra)")


def bottle_batch(bottle_subset: Path, n: int = 6) -> list[np.ndarray]:
    import cv2

    files = sorted((bottle_subset / "test").rglob("*.png"))
    return [cv2.imread(str(p)) for p in files[:: max(1, len(files) // n)][:n]]


def agree(a: list, b: list, tolerance: float) -> None:
    """Scores and maps of two result lists equal within ``tolerance`` of the map's range."""
    scale = max(float(np.abs(r.anomaly_map).max()) for r in a)
    assert np.allclose([r.score for r in a], [r.score for r in b], rtol=0, atol=tolerance * scale)
    for x, y in zip(a, b, strict=True):
        assert np.abs(x.anomaly_map - y.anomaly_map).max() <= tolerance * scale


def test_fp32_graph_in_openvino_equals_onnxruntime_on_real_images_batch_1_and_6(tiny_onnx, bottle_subset):
    images = bottle_batch(bottle_subset)
    reference, openvino = Detector(tiny_onnx), Detector(tiny_onnx, backend="openvino")
    assert (reference.backend_name, openvino.backend_name) == ("onnxruntime", "openvino")
    assert openvino.metadata == reference.metadata and openvino.threshold == reference.threshold
    agree(reference.predict_batch(images), openvino.predict_batch(images), 1e-5)
    single = [openvino.predict_batch([image])[0] for image in images]
    agree(reference.predict_batch(images), single, 1e-5)
    verdicts = [r.is_anomaly for r in openvino.predict_batch(images)]
    assert verdicts == [r.is_anomaly for r in reference.predict_batch(images)]


def test_int8_graph_runs_integer_kernels_in_openvino_and_stays_near_onnxruntime(precision_models, bottle_subset):
    """The INT8 file TensorRT reads runs in OpenVINO with integer kernels (its runtime model says which precision
    each layer ran in) and gives maps close to onnxruntime's INT8 (both quantize the same Q/DQ graph)."""
    images = bottle_batch(bottle_subset)
    path = precision_models["int8"]
    openvino = Detector(path, backend="openvino")
    runtime = openvino.backend.compiled.get_runtime_model()
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str) for op in runtime.get_ordered_ops()
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    assert {"i8", "u8"} & precisions, precisions  # an FP32 graph's convolutions run in f32 only
    ours, theirs = openvino.predict_batch(images), Detector(path).predict_batch(images)
    fp32 = Detector(precision_models["fp32"]).predict_batch(images)
    for a, b in zip(ours, theirs, strict=True):
        assert np.corrcoef(a.anomaly_map.ravel(), b.anomaly_map.ravel())[0, 1] > 0.99
    # INT8 departs from FP32 by the same order in either runtime. OpenVINO rounds activations its own way: on the
    # tiny 3-epoch model its mean score error has measured up to 2.3x ONNX Runtime's, by the CPU the model was
    # trained on; a broken quantization departs by an order of magnitude.
    ours_error = np.mean([abs(a.score - f.score) for a, f in zip(ours, fp32, strict=True)])
    theirs_error = np.mean([abs(a.score - f.score) for a, f in zip(theirs, fp32, strict=True)])
    assert ours_error <= 3 * theirs_error + 1e-3 * abs(fp32[0].score)


def test_ir_written_by_the_command_runs_by_suffix_with_the_same_numbers(tiny_onnx, bottle_subset, tmp_path: Path):
    out = tmp_path / "ir" / "bottle.xml"
    result = subprocess.run([sys.executable, "-m", "rdedge", "export-openvino", str(tiny_onnx), "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["bottle.bin", "bottle.xml"]  # no temporary leftovers
    images = bottle_batch(bottle_subset)
    from_ir, from_onnx = Detector(out), Detector(tiny_onnx, backend="openvino")
    assert from_ir.backend_name == "openvino" and from_ir.metadata == from_onnx.metadata
    agree(from_onnx.predict_batch(images), from_ir.predict_batch(images), 1e-6)
    with pytest.raises(ModelLoadError, match=r"does not read \.xml"):
        Detector(out, backend="onnxruntime")


def test_calls_from_several_threads_equal_calls_from_one(tiny_onnx, bottle_subset):
    images = bottle_batch(bottle_subset, 8)
    detector = Detector(tiny_onnx, backend="openvino")
    serial = [detector.predict_batch([image])[0].score for image in images]
    parallel: dict[int, float] = {}

    def work(i: int) -> None:
        for _ in range(3):
            parallel[i] = detector.predict_batch([images[i]])[0].score

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [parallel[i] for i in range(len(images))] == serial


def test_typed_errors_for_files_and_runtimes_it_cannot_run(tiny_onnx, tmp_path: Path, bottle_subset):
    with pytest.raises(ModelLoadError, match="not found"):
        Detector(tmp_path / "missing.onnx", backend="openvino")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model" * 100)
    with pytest.raises(ModelLoadError, match="OpenVINO cannot read"):
        Detector(corrupt, backend="openvino")
    with pytest.raises(ModelLoadError, match="unknown backend 'openvion'"):
        Detector(tiny_onnx, backend="openvion")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"does not read \.engine"):
        load_backend(engine, "openvino")
    with pytest.raises(ModelLoadError, match=r"cannot compile .* 'NO_SUCH_DEVICE'"):
        Detector(tiny_onnx, backend="openvino", device="NO_SUCH_DEVICE")
    foreign = tmp_path / "foreign.onnx"
    _write_foreign_onnx(foreign)
    with pytest.raises(ModelLoadError, match="no rdedge metadata"):
        Detector(foreign, backend="openvino")
    detector = Detector(tiny_onnx, backend="openvino")
    detector.close()
    detector.close()
    with pytest.raises(DetectorClosedError):
        detector.predict_batch(bottle_batch(bottle_subset, 1))


def _write_foreign_onnx(path: Path) -> None:
    """An ONNX model that is not rdedge's: one Identity, no metadata."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["out"])], "foreign",
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 8, 8, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.UINT8, [1, 8, 8, 3])])
    onnx.save(helper.make_model(graph), str(path))


def test_auto_picks_openvino_for_onnx_on_x86_and_the_suffix_default_otherwise(tiny_onnx, monkeypatch):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert auto_runtime(".onnx") == "openvino" and auto_runtime(".engine") == "tensorrt"
    assert Detector(tiny_onnx, backend="auto").backend_name == "openvino"
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")  # a Jetson: onnxruntime (or TensorRT engines)
    assert auto_runtime(".onnx") == "onnxruntime"
    assert Detector(tiny_onnx).backend_name == "onnxruntime"  # the default stays the suffix's


def test_evaluate_command_runs_the_openvino_backend_on_real_test_images(tiny_onnx, bottle_subset):
    common = [sys.executable, "-m", "rdedge", "evaluate", str(tiny_onnx), "--data", str(bottle_subset.parent),
              "--category", "bottle", "--json", "--quiet"]

    results = {}
    for backend in ("onnxruntime", "openvino"):
        done = subprocess.run([*common, "--backend", backend], capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, done.stderr
        results[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("image_auroc", "pixel_auroc", "f1"):
        assert results["openvino"][key] == pytest.approx(results["onnxruntime"][key], abs=1e-6)
