"""Tests that need an NVIDIA GPU with TensorRT and pycuda; they skip cleanly elsewhere (CI has no GPU)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest


def has_gpu() -> bool:
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("pycuda") is None:
        return False
    try:
        import pycuda.driver as cuda

        cuda.init()
        return cuda.Device.count() > 0
    except Exception:
        return False


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not has_gpu(), reason="needs an NVIDIA GPU with TensorRT+pycuda")]


TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": 5e-2}
"""Relative score tolerance of an engine against ONNX Runtime on the same ONNX (INT8: different integer kernels)."""


def _engine(tiny_run, precision: str, tmp_path: Path) -> tuple[Path, Path]:
    from export.onnx import export_onnx
    from export.tensorrt import build_engine

    onnx_path = export_onnx(tiny_run[0], tmp_path / f"m_{precision}.onnx", precision=precision, check_images=2,
                            calib_images=16).path
    engine = build_engine(onnx_path, tmp_path / f"m_{precision}.engine", max_batch=4, cache_dir=str(tmp_path))
    return onnx_path, engine


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_matches_onnx_runtime(tiny_run, precision, bottle_images, tmp_path: Path):
    from sdk import Detector

    onnx_path, engine = _engine(tiny_run, precision, tmp_path)
    images = list(bottle_images.values()) * 3  # 6 images: a batch of 4 and one of 2 (two buffer sets)
    got = Detector(engine).predict_batch(images)
    want = Detector(onnx_path).predict_batch(images)
    np.testing.assert_allclose([r.score for r in got], [r.score for r in want], rtol=TOLERANCE[precision])
    assert all(r.anomaly_map.shape == w.anomaly_map.shape for r, w in zip(got, want, strict=True))


def test_cuda_graph_replay_gives_the_plain_execution_results(tiny_run, bottle_images, tmp_path: Path):
    from sdk import Detector

    _, engine = _engine(tiny_run, "fp16", tmp_path)
    images = list(bottle_images.values())
    plain = Detector(engine).predict_batch(images)
    graphed = Detector(engine, cuda_graph=True)
    for _ in range(3):  # first call captures, later calls replay
        got = graphed.predict_batch(images)
        np.testing.assert_array_equal([r.score for r in got], [r.score for r in plain])
        np.testing.assert_array_equal(got[0].anomaly_map, plain[0].anomaly_map)
