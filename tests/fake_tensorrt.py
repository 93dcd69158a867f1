"""FAKE of the TensorRT + pycuda seam — for tests only, because neither can run without an NVIDIA GPU.

It stands in for exactly the calls ``sdk.backends.tensorrt`` makes (name-based TensorRT 10/11 API, pycuda buffers
and async copies). The "engine" bytes are an rdedge ONNX model and ``execute_async_v3`` runs it with onnxruntime on
the fake device memory, so the backend's data flow (header checks, buffer allocation per batch size, copies, tensor
names, batch splitting) is exercised with real numbers. It proves nothing about TensorRT itself.
"""

from __future__ import annotations

import itertools
import types
from typing import ClassVar

import numpy as np

_MEMORY: dict[int, np.ndarray] = {}
_ADDRESSES = itertools.count()
ALLOCATIONS: list[int] = []
EXECUTED_BATCHES: list[int] = []
FREED: list[int] = []
CONTEXT = {"detached": 0}


class _Allocation:
    def __init__(self, nbytes: int) -> None:
        self.buffer = np.zeros(nbytes, dtype=np.uint8)
        self.address = 0x1000 + 0x100000 * next(_ADDRESSES)
        _MEMORY[self.address] = self.buffer
        ALLOCATIONS.append(nbytes)

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        del _MEMORY[self.address]
        FREED.append(self.address)


class _Context:
    def push(self) -> None:
        pass

    def pop(self) -> None:
        pass

    def detach(self) -> None:
        CONTEXT["detached"] += 1


class _Device:
    def __init__(self, index: int) -> None:
        self.index = index

    def name(self) -> str:
        return FAKE_GPU_NAME

    def compute_capability(self) -> tuple[int, int]:
        return FAKE_CAPABILITY

    def retain_primary_context(self) -> _Context:
        return _Context()


class _Stream:
    handle = 0

    def synchronize(self) -> None:
        pass


def _htod(dev: _Allocation, host: np.ndarray, stream: _Stream) -> None:
    dev.buffer[: host.nbytes] = host.reshape(-1).view(np.uint8)


def _dtoh(host: np.ndarray, dev: _Allocation, stream: _Stream) -> None:
    host.reshape(-1).view(np.uint8)[:] = dev.buffer[: host.nbytes]


FAKE_GPU_NAME = "Fake GPU"
FAKE_CAPABILITY = (8, 7)
FAKE_TRT_VERSION = "10.3.0.30"

cuda = types.SimpleNamespace(
    init=lambda: None,
    Device=_Device,
    pagelocked_empty=lambda shape, dtype: np.empty(shape, dtype),
    mem_alloc=_Allocation,
    memcpy_htod_async=_htod,
    memcpy_dtoh_async=_dtoh,
    Stream=_Stream,
)


class _ExecutionContext:
    def __init__(self, model_bytes: bytes) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        if _CAPTURE is not None:  # inside cudaStreamBeginCapture/EndCapture: record, do not run
            shapes, addresses = dict(self.shapes), dict(self.addresses)
            _CAPTURE.append(lambda: self._run(shapes, addresses))
            return not FAIL_DURING_CAPTURE
        return self._run(self.shapes, self.addresses)

    def _run(self, shapes: dict[str, tuple[int, ...]], addresses: dict[str, int]) -> bool:
        """One enqueue with these shapes and addresses (a replayed graph uses those frozen at capture)."""
        shape = shapes["image"]
        EXECUTED_BATCHES.append(shape[0])
        n = int(np.prod(shape))
        image = _MEMORY[addresses["image"]][:n].reshape(shape)
        maps, scores = self.session.run(["anomaly_map", "score"], {"image": image})
        for name, value in (("anomaly_map", maps), ("score", scores)):
            raw = np.ascontiguousarray(value, dtype=np.float32).reshape(-1).view(np.uint8)
            _MEMORY[addresses[name]][: raw.size] = raw
        return True


class _Engine:
    num_io_tensors = 3

    def __init__(self, model_bytes: bytes) -> None:
        self.model_bytes = model_bytes

    def get_tensor_name(self, index: int) -> str:
        return ("image", "anomaly_map", "score")[index]

    def create_execution_context(self) -> _ExecutionContext:
        return _ExecutionContext(self.model_bytes)


class _Runtime:
    DESERIALIZED = 0
    DLA_CORES_AT_DESERIALIZE: ClassVar[list[int]] = []

    def __init__(self, logger: object) -> None:
        self.DLA_core = -1

    def deserialize_cuda_engine(self, data: bytes) -> _Engine:
        _Runtime.DESERIALIZED += 1
        _Runtime.DLA_CORES_AT_DESERIALIZE.append(self.DLA_core)
        return _Engine(data)


class _Logger:
    WARNING = 2

    def __init__(self, level: int) -> None:
        pass


tensorrt = types.SimpleNamespace(__version__=FAKE_TRT_VERSION, Logger=_Logger, Runtime=_Runtime)


# -- FAKE of cuda-python's runtime API for CUDA-graph capture: a "graph" is the list of enqueues made while capturing.

_CAPTURE: list | None = None
FAIL_DURING_CAPTURE = False
GRAPHS = {"captured": 0, "destroyed": 0, "launched": 0, "executables_destroyed": 0}


class _Graph:
    def __init__(self, ops: list) -> None:
        self.ops = ops


def _begin_capture(stream: int, mode: int) -> tuple[int]:
    global _CAPTURE
    _CAPTURE = []
    return (0,)


def _end_capture(stream: int) -> tuple[int, _Graph]:
    global _CAPTURE
    graph, _CAPTURE = _Graph(_CAPTURE or []), None
    GRAPHS["captured"] += 1
    return 0, graph


def _destroy(graph: _Graph) -> tuple[int]:
    GRAPHS["destroyed"] += 1
    return (0,)


def _destroy_executable(graph_exec: _Graph) -> tuple[int]:
    GRAPHS["executables_destroyed"] += 1
    return (0,)


def _launch(graph_exec: _Graph, stream: int) -> tuple[int]:
    GRAPHS["launched"] += 1
    for op in graph_exec.ops:
        op()
    return (0,)


cudart = types.SimpleNamespace(
    cudaStreamCaptureMode=types.SimpleNamespace(cudaStreamCaptureModeGlobal=0),
    cudaStreamBeginCapture=_begin_capture,
    cudaStreamEndCapture=_end_capture,
    cudaGraphInstantiate=lambda graph, flags: (0, _Graph(graph.ops)),
    cudaGraphDestroy=_destroy,
    cudaGraphExecDestroy=_destroy_executable,
    cudaGraphLaunch=_launch,
)
