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

RUNTIMES: dict[str, str] = {
    "onnxruntime": "sdk.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "sdk.backends.openvino:OpenVinoBackend",
    "tensorrt": "sdk.backends.tensorrt:TensorRTBackend",
    "triton": "sdk.backends.triton:TritonBackend",
}
"""Runtime name (``Detector(..., backend=NAME)``) → ``module:class`` of the backend."""
FORMATS: dict[str, tuple[str, ...]] = {
    ".onnx": ("onnxruntime", "openvino"),
    ".xml": ("openvino",),
    ".engine": ("tensorrt",),
}
"""File suffix → the runtimes that read it, the default first (as ultralytics' AutoBackend keys on the suffix)."""
BACKENDS: dict[str, str] = {suffix: RUNTIMES[names[0]] for suffix, names in FORMATS.items()}
"""File suffix → ``module:class`` of the backend that runs it by default."""
AUTO = "auto"


def auto_runtime(suffix: str) -> str:
    """``backend="auto"``: OpenVINO for ONNX graphs on x86 CPUs where it is installed (the runtime anomalib users
    deploy there), otherwise the suffix's default. At FP32 compute the two CPU runtimes are within a few per cent of
    each other on rdedge's graphs (``benchmarks/results/runtimes.md``)."""
    import importlib.util
    import platform

    if (suffix == ".onnx" and platform.machine().lower() in {"x86_64", "amd64"}
            and importlib.util.find_spec("openvino") is not None):
        return "openvino"
    return FORMATS[suffix][0]


def load_backend(path: str | os.PathLike[str], backend: str | None = None, **options: Any) -> Backend:
    """Open a model file with a runtime that reads its format.

    Args:
        path: Model file, or a Triton Inference Server address (``grpc://host:8001/NAME``, ``http://host:8000/NAME``:
            :mod:`sdk.backends.triton`).
        backend: Runtime name (``onnxruntime``, ``openvino``, ``tensorrt``), ``auto`` (:func:`auto_runtime`), or
            None for the suffix's default (``.onnx``: onnxruntime, ``.xml``: openvino, ``.engine``: tensorrt).
        **options: Passed to the backend's constructor.

    Raises:
        ModelLoadError: Unknown suffix, a runtime that does not read that format, or the backend cannot load the
            file.
    """
    from .triton import TritonBackend, is_triton_url  # no tritonclient import until a server is asked for

    if is_triton_url(path):
        if backend not in (None, AUTO, "triton"):
            raise ModelLoadError(f"{path} is a Triton Inference Server address: it runs with backend 'triton'")
        return TritonBackend(str(path), **options)
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ModelLoadError(
            f"unsupported model format {suffix or '(no suffix)'!r} for {path}; supported: {', '.join(FORMATS)}"
        )
    name = auto_runtime(suffix) if backend == AUTO else backend or FORMATS[suffix][0]
    if name == "triton":
        raise ModelLoadError(f"backend 'triton' runs a model on a Triton Inference Server: give its address, "
                             f"grpc://HOST:8001/NAME or http://HOST:8000/NAME, not a file ({path}); write the "
                             "server's repository with `rdedge export-triton`")
    if name not in RUNTIMES:
        raise ModelLoadError(f"unknown backend {name!r}; choose one of {', '.join([*RUNTIMES, AUTO])}")
    if name not in FORMATS[suffix]:
        readers = [s for s, names in FORMATS.items() if name in names]
        raise ModelLoadError(f"backend {name!r} does not read {suffix} files ({path}); it reads {', '.join(readers)}")
    module_name, class_name = RUNTIMES[name].split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    return backend_class(path, **options)


def resolve_model(path: str | os.PathLike[str]) -> Path:
    """A model file as given, or a run folder → its FP32 graph (:data:`sdk.contract.MODEL_FILE`).

    Raises:
        ModelLoadError: No such file, or a folder without the model (saying how to export it).
    """
    remedy = f"run `rdedge export {path}` first" if Path(path).is_dir() else "no such model file"
    return resolve_run_file(path, MODEL_FILE, ModelLoadError, remedy)


__all__ = ["AUTO", "BACKENDS", "FORMATS", "RUNTIMES", "Backend", "auto_runtime", "load_backend", "resolve_model"]
