"""Shared INT8 test steps: onnxruntime sessions with or without its optimisations, and the check that the SDK's CPU
rewrite (sdk.backends.cpu_int8) computes exactly what an exported INT8 file says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from sdk.backends.cpu_int8 import CpuInt8Rewrite, rewrite_for_cpu_int8_kernels


def ort_session(model: str | bytes, optimize: bool, saved: Path | None = None) -> ort.InferenceSession:
    """A CPU session; ``optimize`` uses EXTENDED (onnxruntime's Q/DQ fusions, without the machine-specific layouts
    of ALL, so a graph saved to ``saved`` reads back), otherwise the graph runs exactly as written."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if saved is not None:
        options.optimized_model_filepath = str(saved)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def rewrite_exactly(path: Path, images: np.ndarray) -> tuple[onnx.ModelProto, CpuInt8Rewrite]:
    """Rewrite the INT8 file at ``path`` for the CPU and assert that, run as written, it gives bit-identical
    outputs on ``images``; returns the rewritten model and what changed."""
    model = onnx.load(str(path))
    rewrite = rewrite_for_cpu_int8_kernels(model)
    onnx.checker.check_model(model)
    exported = ort_session(str(path), optimize=False).run(None, {"image": images})
    rewritten = ort_session(model.SerializeToString(), optimize=False).run(None, {"image": images})
    for a, b in zip(exported, rewritten, strict=True):
        np.testing.assert_array_equal(a, b)
    return model, rewrite
