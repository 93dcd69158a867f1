"""Runtime backends, chosen by the model file's suffix (as ultralytics' AutoBackend does).

Backends are imported lazily, so ``import sdk`` needs neither onnxruntime nor TensorRT until a model of that format
is opened.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from ..contract import MODEL_FILE
from ..errors import ModelLoadError
from ..fileio import resolve_run_file
from .base import Backend

BACKENDS: dict[str, str] = {
    ".onnx": "sdk.backends.onnxruntime:OnnxRuntimeBackend",
    ".engine": "sdk.backends.tensorrt:TensorRTBackend",
}
"""File suffix → ``module:class`` of the backend that runs it."""


def load_backend(path: str | os.PathLike[str], **options: Any) -> Backend:
    """Open a model file with the backend registered for its suffix.

    Args:
        path: Model file.
        **options: Passed to the backend's constructor.

    Raises:
        ModelLoadError: Unknown suffix, or the backend cannot load the file.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in BACKENDS:
        raise ModelLoadError(
            f"unsupported model format {suffix or '(no suffix)'!r} for {path}; supported: {', '.join(BACKENDS)}"
        )
    module_name, class_name = BACKENDS[suffix].split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(path, **options)


def resolve_model(path: str | os.PathLike[str]) -> Path:
    """A model file as given, or a run folder → its FP32 graph (:data:`sdk.contract.MODEL_FILE`).

    Raises:
        ModelLoadError: No such file, or a folder without the model (saying how to export it).
    """
    remedy = f"run `rdedge export {path}` first" if Path(path).is_dir() else "no such model file"
    return resolve_run_file(path, MODEL_FILE, ModelLoadError, remedy)


__all__ = ["BACKENDS", "Backend", "load_backend", "resolve_model"]
