"""ONNX Runtime backend (CPU by default; any execution provider onnxruntime offers)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from ..metadata import INPUT_NAME, METADATA_KEY, OUTPUT_MAP, OUTPUT_SCORE, ModelMetadata
from .base import Backend


class OnnxRuntimeBackend(Backend):
    """Run an rdedge ``.onnx`` graph with ONNX Runtime.

    Args:
        path: The ``.onnx`` file written by ``rdedge export``.
        providers: onnxruntime execution providers, in order of preference; CPU by default.
        intra_op_threads: Threads per operator (0 lets onnxruntime choose).
        optimize: Whether to apply onnxruntime's graph optimisations (``ORT_ENABLE_ALL``) or run the graph as is.

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
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for corrupt files
            raise ModelLoadError(f"onnxruntime cannot load {self.path}: {exc}") from exc
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise ModelLoadError(
                f"{self.path} has no rdedge metadata (key {METADATA_KEY!r}); export it with `rdedge export`"
            )
        self.metadata = ModelMetadata.from_json(props[METADATA_KEY])
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or set(outputs) != {OUTPUT_MAP, OUTPUT_SCORE}:
            raise ModelLoadError(
                f"{self.path} has inputs {inputs} and outputs {outputs}; expected [{INPUT_NAME!r}] and "
                f"{{{OUTPUT_MAP!r}, {OUTPUT_SCORE!r}}}"
            )

    @property
    def name(self) -> str:
        return "onnxruntime"

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = self.session.run([OUTPUT_MAP, OUTPUT_SCORE], {INPUT_NAME: batch})
        return maps, scores
