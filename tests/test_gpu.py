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


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_onnx_runtime(tiny_run, precision, bottle_images, tmp_path: Path):
    from export.onnx import export_onnx
    from export.tensorrt import build_engine
    from sdk import Detector

    onnx_path = export_onnx(tiny_run[0], tmp_path / f"m_{precision}.onnx", precision=precision, check_images=2).path
    engine = build_engine(onnx_path, tmp_path / f"m_{precision}.engine", max_batch=4, cache_dir=str(tmp_path))
    images = list(bottle_images.values()) * 3
    got = Detector(engine).predict_batch(images)
    want = Detector(onnx_path).predict_batch(images)
    tolerance = 1e-3 if precision == "fp32" else 2e-2
    np.testing.assert_allclose([r.score for r in got], [r.score for r in want], rtol=tolerance)
