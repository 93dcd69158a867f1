"""ONNX Runtime backend (CPU by default; any execution provider onnxruntime offers).

INT8 graphs opened on the CPU alone are rewritten in memory, exactly, so onnxruntime's integer kernels run them
(:mod:`sdk.backends.cpu_int8`); the file is never modified.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import INPUT_NAME, METADATA_KEY, OUTPUT_MAP, OUTPUT_SCORE
from ..errors import DetectorClosedError, ModelLoadError
from ..metadata import ModelMetadata
from .base import Backend, check_graph_signature
from .cpu_int8 import CpuInt8Rewrite


class OnnxRuntimeBackend(Backend):
    """Run an rdedge ``.onnx`` graph with ONNX Runtime.

    Args:
        path: The ``.onnx`` file written by ``rdedge export``.
        providers: onnxruntime execution providers, in order of preference; CPU by default.
        intra_op_threads: Threads per operator (0 lets onnxruntime choose).
        optimize: Whether to apply onnxruntime's graph optimisations (``ORT_ENABLE_ALL``) or run the graph as is.
        int8_cpu_kernels: INT8 graphs on the CPU execution provider alone (with ``optimize``): apply the exact
            rewrite of :mod:`sdk.backends.cpu_int8` so onnxruntime runs them with integer kernels. Off runs the
            graph as exported (slower than FP32 on x86; for comparisons).

    Attributes:
        cpu_int8_rewrite: What the INT8 rewrite changed, or None when it did not apply.

    Raises:
        ModelLoadError: Missing or corrupt file, no rdedge metadata, or inputs/outputs that are not rdedge's.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: list[str] | None = None,
        intra_op_threads: int = 0,
        optimize: bool = True,
        int8_cpu_kernels: bool = True,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        self._session_args = (intra_op_threads, optimize, providers or ["CPUExecutionProvider"])
        self.session = self._open(str(self.path))
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise ModelLoadError(
                f"{self.path} has no rdedge metadata (key {METADATA_KEY!r}); export it with `rdedge export`"
            )
        self.metadata = ModelMetadata.from_json(props[METADATA_KEY])
        first = self.session.get_inputs()[0]
        check_graph_signature(self.path, [i.name for i in self.session.get_inputs()],
                              [o.name for o in self.session.get_outputs()], tuple(first.shape[1:3]), self.metadata)
        self.cpu_int8_rewrite: CpuInt8Rewrite | None = None
        if int8_cpu_kernels and optimize and self.metadata.precision == "int8" and (
                self.session.get_providers() == ["CPUExecutionProvider"]):
            self._use_cpu_int8_kernels()

    def _open(self, model: str | bytes) -> Any:
        import onnxruntime as ort

        intra_op_threads, optimize, providers = self._session_args
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        try:
            return ort.InferenceSession(model, sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
            raise ModelLoadError(f"onnxruntime cannot load {self.path}: {exc}") from exc

    def _use_cpu_int8_kernels(self) -> None:
        """Reopen an INT8 graph rewritten for onnxruntime's CPU integer kernels (same values, see cpu_int8)."""
        try:
            import onnx
        except ImportError as exc:
            raise ModelLoadError(
                "running INT8 graphs with onnxruntime's CPU integer kernels needs the onnx package: `pip install "
                "onnx` (or pass int8_cpu_kernels=False to run the graph as exported, slower)"
            ) from exc

        from .cpu_int8 import rewrite_for_cpu_int8_kernels

        model = onnx.load(str(self.path))
        self.cpu_int8_rewrite = rewrite_for_cpu_int8_kernels(model)
        if self.cpu_int8_rewrite.changed:
            self.session = self._open(model.SerializeToString())

    @property
    def name(self) -> str:
        return "onnxruntime"

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.session is None:
            raise DetectorClosedError(f"{self.path} was closed: open a new Detector")
        maps, scores = self.session.run([OUTPUT_MAP, OUTPUT_SCORE], {INPUT_NAME: batch})
        return maps, scores

    def close(self) -> None:
        self.session = None
