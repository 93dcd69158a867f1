"""The rdedge ``.engine`` file: a length-prefixed JSON header followed by the serialized TensorRT engine.

Layout (all integers little-endian)::

    8 bytes   magic  b"RDEDGE\\x00E"
    4 bytes   format version (uint32, currently 1)
    8 bytes   header length N (uint64)
    N bytes   UTF-8 JSON header: {"model": <ModelMetadata>, "engine": <EngineInfo>}
    rest      the engine exactly as ``IBuilder.build_serialized_network`` produced it

A header instead of a sidecar keeps model, threshold and engine in one file that cannot drift apart. The engine
info records what a TensorRT engine is tied to — TensorRT version, GPU name and compute capability — so that a
stale engine is refused with instructions before TensorRT is ever asked to deserialize it (which, across versions
or GPUs, fails with an opaque error or worse). Everything here is pure Python, testable without a GPU.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..contract import INPUT_NAME, OUTPUT_MAP, OUTPUT_SCORE, ImageSize, version_tuple
from ..errors import ModelLoadError
from ..metadata import ModelMetadata

MAGIC = b"RDEDGE\x00E"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIQ")


@dataclass(frozen=True)
class EngineInfo:
    """What an engine was built with and for.

    Attributes:
        tensorrt_version: ``tensorrt.__version__`` of the builder, e.g. ``10.3.0``.
        gpu_name: CUDA device name, e.g. ``NVIDIA H100 80GB HBM3`` or ``Orin``.
        compute_capability: ``major.minor``, e.g. ``9.0`` or ``8.7``.
        precision: ``fp32``, ``fp16`` or ``int8``.
        max_batch: Largest batch of the optimisation profile.
        opt_batch: Batch the profile is tuned for.
        min_batch: Smallest batch of the profile; equal to ``max_batch`` for a static-batch (DLA) engine, whose
            runtime pads smaller batches.
        strongly_typed: Whether the network was built strongly typed (precision from the ONNX).
        dla_core: DLA core the engine targets (-1: GPU only).
        builder: Free-form build details (flags, workspace, timing cache...).
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    max_batch: int
    opt_batch: int = 1
    min_batch: int = 1
    strongly_typed: bool = False
    dla_core: int = -1
    builder: dict[str, Any] = field(default_factory=dict)


def write_engine_file(path: str | os.PathLike[str], model: ModelMetadata, info: EngineInfo, engine: bytes) -> None:
    """Write header and engine bytes to ``path`` (the caller makes it atomic)."""
    header = json.dumps({"model": json.loads(model.to_json()), "engine": asdict(info)}, sort_keys=True).encode()
    with open(path, "wb") as f:
        f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)))
        f.write(header)
        f.write(engine)


def read_engine_header(path: str | os.PathLike[str]) -> tuple[ModelMetadata, EngineInfo, int]:
    """Read the header → (model metadata, engine info, byte offset of the engine).

    Raises:
        ModelLoadError: Not an rdedge engine file (e.g. a bare TensorRT plan), truncated, or a newer format.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"engine file not found: {p}")
    size = p.stat().st_size
    with open(p, "rb") as f:
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size:
            raise ModelLoadError(f"{p} is too short to be an rdedge engine")
        magic, version, length = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            raise ModelLoadError(
                f"{p} is not an rdedge engine (no rdedge header; a bare TensorRT plan has no threshold or "
                "metadata): build it with `rdedge build-engine MODEL.onnx`"
            )
        if version > FORMAT_VERSION:
            raise ModelLoadError(f"{p} uses engine format {version}; this SDK reads up to {FORMAT_VERSION}")
        if _PREFIX.size + length > size:
            raise ModelLoadError(f"{p} is truncated (header says {length} bytes)")
        try:
            header = json.loads(f.read(length))
            model = ModelMetadata.from_json(json.dumps(header["model"]))
            info = EngineInfo(**header["engine"])
            version_tuple(info.tensorrt_version)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{p} has a corrupt header: {exc}") from exc
    offset = _PREFIX.size + length
    if offset == size:
        raise ModelLoadError(f"{p} holds a header but no engine (truncated write?)")
    return model, info, offset


def check_compatible(info: EngineInfo, tensorrt_version: str, gpu_name: str, compute_capability: str,
                     path: str | os.PathLike[str] = "engine") -> None:
    """Refuse an engine built with another TensorRT version or for another GPU, saying how to rebuild it.

    TensorRT engines are tied to the exact TensorRT version (major.minor.patch) and the GPU model; the compute
    capability is the hard requirement, a different GPU name with the same capability gets a clear error too
    because tactic choices (and so speed and numerics) were timed on the original GPU.

    Raises:
        ModelLoadError: With the mismatch and the ``rdedge build-engine`` command to run on this machine.
    """
    problems = []
    if version_tuple(info.tensorrt_version, 3) != version_tuple(tensorrt_version, 3):  # a build number changes nothing
        problems.append(f"built with TensorRT {info.tensorrt_version}, this machine has {tensorrt_version}")
    if info.compute_capability != compute_capability:
        problems.append(f"built for compute capability {info.compute_capability} ({info.gpu_name}), this GPU is "
                        f"{compute_capability} ({gpu_name})")
    elif info.gpu_name != gpu_name:
        problems.append(f"built on {info.gpu_name}, this GPU is {gpu_name}")
    if problems:
        raise ModelLoadError(
            f"{path} cannot run here: {'; '.join(problems)}. Rebuild it on this machine from the ONNX model: "
            f"rdedge build-engine MODEL.onnx --precision {info.precision} --max-batch {info.max_batch}"
        )


def io_buffer_shapes(image_size: ImageSize | int, batch: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shapes and numpy dtypes of the engine's I/O tensors for one batch size (for buffer allocation)."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    height, width = ImageSize.parse(image_size)
    return {
        INPUT_NAME: ((batch, height, width, 3), "uint8"),
        OUTPUT_MAP: ((batch, height, width), "float32"),
        OUTPUT_SCORE: ((batch,), "float32"),
    }


def buffer_bytes(image_size: ImageSize | int, batch: int) -> dict[str, int]:
    """Bytes of each I/O buffer for one batch size."""
    import numpy as np

    return {
        name: int(np.prod(shape)) * np.dtype(dtype).itemsize
        for name, (shape, dtype) in io_buffer_shapes(image_size, batch).items()
    }
