"""TensorRT backend: runs an rdedge ``.engine`` with TensorRT and pycuda.

Design (TensorRT 10.x and 11.x name-based API):

* the engine header is read and checked against this machine's TensorRT version and GPU *before* TensorRT
  deserializes anything (:func:`sdk.backends.engine_file.check_compatible`);
* one execution context and one CUDA stream; I/O tensors looked up by name (``image``, ``anomaly_map``, ``score``);
* page-locked host buffers and device buffers allocated once per batch size and reused; asynchronous copies in,
  ``execute_async_v3``, asynchronous copies out, one synchronisation;
* batches larger than the engine's profile maximum are split; batches smaller than its minimum (static-batch DLA
  engines) are zero-padded and the padding's outputs dropped;
* a DLA engine is deserialized on the DLA core it was built for (``runtime.DLA_core``);
* optional CUDA-graph capture per batch size (``cuda_graph=True``), through cuda-python's runtime API on the same
  stream (imported when the backend is created, so a missing cuda-python is reported at load).

Thread safety: calls are serialised with a lock (one context, one stream, shared buffers). Use one Detector per
thread for parallel inference.

**Unverified on a GPU in this repository's CI** (no GPU there): the TensorRT and CUDA calls follow the documented
API; ``tests/test_tensorrt_backend.py`` drives this module through a labelled fake of the TensorRT/pycuda seam.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..contract import INPUT_NAME, OUTPUT_MAP, OUTPUT_SCORE, ImageSize
from ..errors import DetectorClosedError, ModelLoadError, RdedgeError
from .base import Backend
from .engine_file import check_compatible, io_buffer_shapes, read_engine_header


def import_tensorrt(purpose: str, error: type[RdedgeError] = ModelLoadError) -> ModuleType:
    """Import TensorRT lazily (``import sdk`` needs none), or raise ``error`` saying how to install it.

    Args:
        purpose: What needs TensorRT, for the message (e.g. "running .engine files").
        error: The error class to raise (the export's build errors, the backend's load errors).
    """
    try:
        import tensorrt
    except ImportError as exc:
        raise error(
            f"{purpose} needs TensorRT: on Jetson use JetPack's python3-libnvinfer (apt); on a discrete GPU "
            "`pip install 'rdedge[trt]'` (see the README's TensorRT sections)"
        ) from exc
    return tensorrt


def import_runtime() -> tuple[ModuleType, ModuleType]:
    """Import ``tensorrt`` and ``pycuda.driver`` lazily, with install instructions when missing."""
    tensorrt = import_tensorrt("running .engine files")
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise ModelLoadError("running .engine files needs pycuda: `pip install pycuda` (builds against CUDA)") from exc
    return tensorrt, cuda


class _Buffers:
    """Page-locked host and device buffers of one batch size."""

    def __init__(self, cuda: ModuleType, image_size: ImageSize, batch: int) -> None:
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, Any] = {}
        for name, (shape, dtype) in io_buffer_shapes(image_size, batch).items():
            self.host[name] = cuda.pagelocked_empty(shape, dtype)
            self.device[name] = cuda.mem_alloc(self.host[name].nbytes)
        self.graph_exec: Any = None


class TensorRTBackend(Backend):
    """Run an rdedge ``.engine``.

    Args:
        path: Engine written by ``rdedge build-engine``.
        device: CUDA device index.
        cuda_graph: Capture one CUDA graph per batch size and replay it (lower launch overhead).

    Raises:
        ModelLoadError: Not an rdedge engine, built for another TensorRT/GPU, or TensorRT/pycuda missing.
    """

    def __init__(self, path: str | os.PathLike[str], *, device: int = 0, cuda_graph: bool = False) -> None:
        self.path = Path(path)
        self.metadata, self.engine_info, offset = read_engine_header(self.path)
        trt, cuda = import_runtime()
        self._trt, self._cuda = trt, cuda
        self._cudart = import_cuda_runtime() if cuda_graph else None
        cuda.init()
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        check_compatible(self.engine_info, trt.__version__, dev.name(), f"{major}.{minor}", self.path)
        self._context_cuda = dev.retain_primary_context()
        self._context_cuda.push()
        try:
            self._load_engine(trt, cuda, offset)
        except BaseException:  # a failed load keeps nothing: TensorRT objects go, then the retained CUDA context
            self._context = self._engine = self._runtime = self._stream = None
            self._context_cuda.pop()
            self._context_cuda.detach()
            raise
        self._context_cuda.pop()
        self._buffers: dict[int, _Buffers] = {}
        self._lock = threading.Lock()
        self._cuda_graph = cuda_graph
        self._closed = False

    def _load_engine(self, trt: ModuleType, cuda: ModuleType, offset: int) -> None:
        """Deserialize the engine (the CUDA context current) and create its execution context and stream."""
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if self.engine_info.dla_core >= 0:
            self._runtime.DLA_core = self.engine_info.dla_core
        with open(self.path, "rb") as f:
            f.seek(offset)
            self._engine = self._runtime.deserialize_cuda_engine(f.read())
        if self._engine is None:
            raise ModelLoadError(f"TensorRT could not deserialize {self.path} (see the messages above)")
        names = {self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)}
        if names != {INPUT_NAME, OUTPUT_MAP, OUTPUT_SCORE}:
            raise ModelLoadError(f"{self.path} has I/O tensors {sorted(names)}, not rdedge's")
        self._context = self._engine.create_execution_context()
        self._stream = cuda.Stream()

    @property
    def name(self) -> str:
        return "tensorrt"

    @property
    def max_batch(self) -> int:
        return self.engine_info.max_batch

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = [], []
        for start in range(0, len(batch), self.max_batch):
            m, s = self._infer_chunk(batch[start : start + self.max_batch])
            maps.append(m)
            scores.append(s)
        return np.concatenate(maps), np.concatenate(scores)

    def _infer_chunk(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(batch)
        engine_batch = max(n, self.engine_info.min_batch)
        with self._lock:
            if self._closed:
                raise DetectorClosedError(f"{self.path} was closed: open a new Detector")
            self._context_cuda.push()
            try:
                buffers = self._buffers.get(engine_batch)
                if buffers is None:
                    buffers = self._buffers[engine_batch] = _Buffers(self._cuda, self.metadata.image_size,
                                                                     engine_batch)
                image = buffers.host[INPUT_NAME]
                np.copyto(image[:n], batch)
                image[n:] = 0
                self._bind(buffers, engine_batch)
                self._cuda.memcpy_htod_async(buffers.device[INPUT_NAME], buffers.host[INPUT_NAME], self._stream)
                if self._cuda_graph:
                    self._launch_graph(buffers)
                elif not self._context.execute_async_v3(self._stream.handle):
                    raise RuntimeError("TensorRT execution failed")
                for name in (OUTPUT_MAP, OUTPUT_SCORE):
                    self._cuda.memcpy_dtoh_async(buffers.host[name], buffers.device[name], self._stream)
                self._stream.synchronize()
                return buffers.host[OUTPUT_MAP][:n].copy(), buffers.host[OUTPUT_SCORE][:n].copy()
            finally:
                self._context_cuda.pop()

    def close(self) -> None:
        """Free the CUDA graphs, device buffers, execution context, engine and stream, then release the CUDA context.

        TensorRT objects are dropped in dependency order (context, engine, runtime) while the CUDA context is current,
        since destroying them frees device memory.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._context_cuda.push()
            try:
                for buffers in self._buffers.values():
                    if buffers.graph_exec is not None:
                        _check(self._cudart.cudaGraphExecDestroy(buffers.graph_exec))
                    for allocation in buffers.device.values():
                        allocation.free()
                self._buffers.clear()
                self._context = None
                self._engine = None
                self._runtime = None
                self._stream = None
            finally:
                self._context_cuda.pop()
            self._context_cuda.detach()

    def _bind(self, buffers: _Buffers, n: int) -> None:
        self._context.set_input_shape(INPUT_NAME, (n, *self.metadata.image_size, 3))
        for name, allocation in buffers.device.items():
            self._context.set_tensor_address(name, int(allocation))

    def _launch_graph(self, buffers: _Buffers) -> None:
        """Capture the enqueue of this batch size once (after one normal run), then replay it."""
        cudart = self._cudart
        stream = self._stream.handle
        if buffers.graph_exec is None:
            if not self._context.execute_async_v3(stream):  # first run outside capture: TensorRT lazy setup
                raise RuntimeError("TensorRT execution failed")
            _check(cudart.cudaStreamBeginCapture(stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
            try:
                captured = self._context.execute_async_v3(stream)
            finally:  # always end the capture, or the stream stays unusable
                graph = _check(cudart.cudaStreamEndCapture(stream))
            try:
                if not captured:
                    raise RuntimeError("TensorRT execution failed during CUDA-graph capture")
                buffers.graph_exec = _check(cudart.cudaGraphInstantiate(graph, 0))
            finally:
                _check(cudart.cudaGraphDestroy(graph))  # the executable graph keeps what it needs
            return
        _check(cudart.cudaGraphLaunch(buffers.graph_exec, stream))


def import_cuda_runtime() -> ModuleType:
    """cuda-python's runtime API, for CUDA-graph capture (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise ModelLoadError(
                "cuda_graph=True needs cuda-python's runtime API: `pip install cuda-python` (the major version of "
                "the CUDA driver: 12.x on JetPack 6, 13.x on JetPack 7 and CUDA 13 GPUs)"
            ) from exc
    return cudart


def _check(result: tuple[Any, ...]) -> Any:
    """Unwrap a cuda-python ``(error, value...)`` result, raising on an error code."""
    error, *values = result
    if int(error) != 0:
        raise RuntimeError(f"CUDA runtime error {error}")
    return values[0] if len(values) == 1 else tuple(values)
