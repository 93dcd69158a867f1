"""A Triton Inference Server model repository from an exported rdedge model: ``rdedge export-triton``.

The exported graph is already what Triton serves natively: ``image`` uint8 (N, H, W, 3) in, ``anomaly_map``
(N, H, W) and ``score`` (N,) float32 out, with a dynamic batch axis. The repository holds::

    REPO/NAME/config.pbtxt          onnxruntime_onnx on the GPU (KIND_GPU), TensorRT accelerator in FP16 optional
    REPO/NAME/configs/cpu.pbtxt     onnxruntime_onnx on CPUs (KIND_CPU)
    REPO/NAME/configs/tensorrt.pbtxt  tensorrt_plan (only with an engine)
    REPO/NAME/1/model.onnx
    REPO/NAME/1/model.plan          the bare TensorRT plan of an rdedge ``.engine`` (only with an engine)

``tritonserver --model-config-name=cpu`` (or ``tensorrt``) selects an alternative config. Every config pins the
model's real ``[H, W, 3]`` (a wrong size is refused by the server, not deep inside the runtime), declares
``max_batch_size`` and dynamic batching, and carries the rdedge metadata (threshold, score normalisation, image
size, method, precision) as the JSON ``parameters`` entry ``rdedge``, so that a client needs only the server's
address (:mod:`sdk.backends.triton`).

The model folder is written in a temporary folder beside it and renamed into place; an existing model of the same
name is replaced only once the new one is complete.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sdk.backends.engine_file import read_engine_header
from sdk.backends.onnxruntime import OnnxRuntimeBackend
from sdk.contract import INPUT_NAME, METADATA_KEY, OUTPUT_MAP, OUTPUT_SCORE
from sdk.errors import RdedgeError
from sdk.fileio import atomic_folder
from sdk.metadata import ModelMetadata

DEFAULT_MAX_BATCH = 8
DEFAULT_QUEUE_DELAY_US = 2000
"""How long Triton's dynamic batcher waits to fill a batch (µs): 2 ms, a fraction of one batch's inference."""
CONFIG_FILE = "config.pbtxt"
ALTERNATIVE_CONFIGS = ("cpu", "tensorrt")
"""Names of the configs under ``NAME/configs/`` (``tritonserver --model-config-name=NAME``)."""


class TritonExportError(RdedgeError, ValueError):
    """A model repository that cannot be written as asked (a bad name, an engine that does not fit the model)."""


def pbtxt_string(text: str) -> str:
    """``text`` as a protobuf text-format string literal (double-quoted, C escapes)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def model_config(name: str, metadata: ModelMetadata, *, platform: str, kind: str, max_batch: int,
                 queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, tensorrt_accelerator: bool = False,
                 model_filename: str | None = None) -> str:
    """One ``config.pbtxt`` for an rdedge model.

    Args:
        name: The model's name in the repository.
        metadata: The model's rdedge metadata (image size; stored whole as the ``rdedge`` parameter).
        platform: ``onnxruntime_onnx`` or ``tensorrt_plan``.
        kind: ``KIND_GPU`` or ``KIND_CPU``.
        max_batch: ``max_batch_size`` (and the dynamic batcher's preferred batch).
        queue_delay_us: The dynamic batcher's ``max_queue_delay_microseconds``.
        tensorrt_accelerator: onnxruntime on the GPU through its TensorRT execution accelerator, in FP16.
        model_filename: ``default_model_filename`` (``model.onnx`` / ``model.plan`` by default).

    Returns:
        The config text (parse it with ``tritonclient.grpc.model_config_pb2`` to check it).
    """
    height, width = metadata.image_size
    lines = [
        f"name: {pbtxt_string(name)}",
        f"platform: {pbtxt_string(platform)}",
        f"max_batch_size: {max_batch}",
    ]
    if model_filename:
        lines.append(f"default_model_filename: {pbtxt_string(model_filename)}")
    lines += [
        "input [",
        f"  {{ name: {pbtxt_string(INPUT_NAME)} data_type: TYPE_UINT8 dims: [ {height}, {width}, 3 ] }}",
        "]",
        "output [",
        f"  {{ name: {pbtxt_string(OUTPUT_MAP)} data_type: TYPE_FP32 dims: [ {height}, {width} ] }},",
        f"  {{ name: {pbtxt_string(OUTPUT_SCORE)} data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }}",
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {max_batch} ]",
        f"  max_queue_delay_microseconds: {queue_delay_us}",
        "}",
        f"instance_group [ {{ kind: {kind} count: 1 }} ]",
    ]
    if tensorrt_accelerator:
        lines += [
            "optimization { execution_accelerators { gpu_execution_accelerator: [ {",
            '  name: "tensorrt"',
            '  parameters { key: "precision_mode" value: "FP16" }',
            "} ] } }",
        ]
    lines += [
        "parameters {",
        f"  key: {pbtxt_string(METADATA_KEY)}",
        f"  value: {{ string_value: {pbtxt_string(metadata.to_json())} }}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def check_engine_fits(engine: Path, metadata: ModelMetadata, max_batch: int) -> tuple[ModelMetadata, int]:
    """Refuse an engine that is not this model's or whose batch range does not cover 1..``max_batch``.

    Returns:
        ``(metadata, offset)``: the engine's own metadata (its precision and thresholds: an FP16 or INT8 engine is
        calibrated on its own outputs) and the byte offset of the bare TensorRT plan in the ``.engine`` file.

    Raises:
        TritonExportError: Saying what does not fit and how to rebuild it.
        ModelLoadError: Not an rdedge engine file.
    """
    engine_metadata, info, offset = read_engine_header(engine)
    if (engine_metadata.weights_sha256 != metadata.weights_sha256
            or tuple(engine_metadata.image_size) != tuple(metadata.image_size)):
        raise TritonExportError(f"{engine} was built from another model than this one (other weights or size): "
                                "build it from this ONNX with `rdedge build-engine`")
    if info.min_batch > 1 or info.max_batch < max_batch:
        raise TritonExportError(
            f"{engine} runs batches {info.min_batch}..{info.max_batch}, but Triton's dynamic batcher sends "
            f"1..{max_batch}: rebuild it with `rdedge build-engine MODEL.onnx --max-batch {max_batch}` (a "
            "static-batch DLA engine cannot be served with dynamic batching), or pass --max-batch "
            f"{info.max_batch}")
    return engine_metadata, offset


def write_model_repository(model: str | os.PathLike[str], repository: str | os.PathLike[str], *,
                           name: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                           engine: str | os.PathLike[str] | None = None,
                           queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                           tensorrt_accelerator: bool = False) -> Path:
    """Write ``REPOSITORY/NAME`` for an exported ``.onnx`` model (see the module text).

    Args:
        model: An ``.onnx`` file written by ``rdedge export``.
        repository: The model repository folder (created if needed; other models in it are left alone).
        name: The model's name (default: ``rdedge_<method>``).
        max_batch: ``max_batch_size`` of every config.
        engine: An rdedge ``.engine`` built from this model (adds ``model.plan`` and ``configs/tensorrt.pbtxt``).
        queue_delay_us: The dynamic batcher's queue delay.
        tensorrt_accelerator: The default GPU config runs onnxruntime with its TensorRT accelerator in FP16.

    Returns:
        The model folder.

    Raises:
        TritonExportError: A bad name or batch size, or an engine that does not fit.
        ModelLoadError: The ONNX file (or the engine) is not an rdedge model.
    """
    model = Path(model)
    backend = OnnxRuntimeBackend(model, optimize=False)  # reads and checks the metadata and the graph's signature
    metadata = backend.metadata
    backend.close()
    name = name or f"rdedge_{metadata.method}"
    if not name or name.startswith(".") or any(c in name for c in "/\\ \t\n"):
        raise TritonExportError(f"a Triton model name is one folder name without spaces, got {name!r}")
    if not 1 <= max_batch <= 1024:
        raise TritonExportError(f"max batch must be 1..1024, got {max_batch}")
    plan = check_engine_fits(Path(engine), metadata, max_batch) if engine is not None else None
    folder = Path(repository) / name
    with atomic_folder(folder) as staging:
        (staging / "1").mkdir()
        (staging / "configs").mkdir()
        shutil.copyfile(model, staging / "1" / "model.onnx")
        common = {"max_batch": max_batch, "queue_delay_us": queue_delay_us}
        (staging / CONFIG_FILE).write_text(model_config(name, metadata, platform="onnxruntime_onnx",
                                                        kind="KIND_GPU", tensorrt_accelerator=tensorrt_accelerator,
                                                        **common))
        (staging / "configs" / "cpu.pbtxt").write_text(model_config(name, metadata, platform="onnxruntime_onnx",
                                                                    kind="KIND_CPU", **common))
        if plan is not None:
            engine_metadata, offset = plan
            with open(engine, "rb") as source, open(staging / "1" / "model.plan", "wb") as target:
                source.seek(offset)
                shutil.copyfileobj(source, target)
            (staging / "configs" / "tensorrt.pbtxt").write_text(model_config(
                name, engine_metadata, platform="tensorrt_plan", kind="KIND_GPU", model_filename="model.plan",
                **common))
    return folder
