"""Build TensorRT engines from rdedge ONNX graphs, on the machine that will run them (TensorRT 10.3+ and 11.x).

Written to TensorRT's documented Python API directly, not Polygraphy's loaders: the build needs version-dependent
choices (strongly typed network or precision flags, FP32 pinning of the post-processing, DLA) that are clearer as a
few explicit calls, and Jetson images ship TensorRT without Polygraphy. Polygraphy stays the tool for comparing an
engine with ONNX Runtime (``benchmarks/gpu_check``).

The decisions live in :func:`plan_build`, a pure function tested without TensorRT; :func:`build_engine` only
translates a plan into TensorRT calls. **The TensorRT calls are unverified here: no GPU and no full TensorRT
install is available to CI** (TensorRT-RTX's parser/builder is used in the tests as a parse/build check only).

Precision rules:

* TensorRT 11.x has no weak typing: the engine precision is the ONNX's. Export ``--precision fp16`` or ``int8``
  first; asking for another precision than the ONNX carries is an error.
* TensorRT 10.x: an ONNX that already carries the target precision is built strongly typed (FP16 ONNX → FP16,
  Q/DQ ONNX → INT8 where quantized, FP32 elsewhere). An FP32 ONNX built as ``fp16`` (JetPack 6's usual path) uses
  the ``FP16`` builder flag with the ``normalize/*`` and ``head/*`` layers pinned to FP32 (``OBEY_PRECISION_
  CONSTRAINTS``). DLA always uses the flags path (DLA runs FP16/INT8 only) with GPU fallback.
* INT8 always comes from a Q/DQ ONNX (``rdedge export --precision int8``); there is no implicit calibration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.backends.engine_file import EngineInfo, write_engine_file
from sdk.fileio import atomic_path
from sdk.metadata import INPUT_NAME, METADATA_KEY, ModelMetadata

MIN_VERSION = (10, 3)
PINNED_FP32_SCOPES = ("normalize/", "head/")


class EngineBuildError(RuntimeError):
    """The engine cannot be built as asked (version, precision, parser or builder failure)."""


@dataclass(frozen=True)
class BuildPlan:
    """What the builder will do.

    Attributes:
        strongly_typed: Create the network with ``STRONGLY_TYPED`` (10.x) / as TensorRT 11 always does.
        network_flags: ``NetworkDefinitionCreationFlag`` names to set.
        builder_flags: ``BuilderFlag`` names to set.
        pin_postprocess_fp32: Pin ``normalize/*`` and ``head/*`` layers to FP32 (weakly typed FP16/INT8 only).
        dla: Target a DLA core with GPU fallback.
    """

    strongly_typed: bool
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    pin_postprocess_fp32: bool
    dla: bool


def version_tuple(version: str) -> tuple[int, int]:
    """``"10.3.0.30"`` → ``(10, 3)``."""
    parts = [int(part) for part in version.split(".")[:2]]
    return parts[0], parts[1] if len(parts) > 1 else 0


def plan_build(tensorrt_version: str, onnx_precision: str, precision: str, dla: bool = False,
               nonzero_zero_points: int = 0) -> BuildPlan:
    """Decide how to build ``precision`` from an ONNX of ``onnx_precision`` with this TensorRT version.

    Raises:
        EngineBuildError: Unsupported version or a precision the ONNX cannot give on this version.
    """
    version = version_tuple(tensorrt_version)
    if version < MIN_VERSION:
        raise EngineBuildError(f"TensorRT {tensorrt_version} is too old: rdedge needs 10.3 (JetPack 6) or newer")
    if precision not in ("fp32", "fp16", "int8"):
        raise EngineBuildError(f"unknown precision {precision!r}")
    if onnx_precision == "int8" and nonzero_zero_points:
        raise EngineBuildError(
            f"this INT8 ONNX has {nonzero_zero_points} Q/DQ nodes with non-zero zero points (asymmetric "
            "quantization), which TensorRT rejects: export it again with `rdedge export RUN_DIR --precision int8` "
            "(symmetric) and build that file"
        )
    if precision == "int8" and onnx_precision != "int8":
        raise EngineBuildError(
            "INT8 engines are built from a Q/DQ ONNX: run `rdedge export RUN_DIR --precision int8` and build "
            "model_int8.onnx"
        )
    if onnx_precision == "int8" and precision != "int8":
        raise EngineBuildError("this ONNX is INT8 (Q/DQ): build it with --precision int8")
    if version >= (11, 0):
        if onnx_precision != precision:
            raise EngineBuildError(
                f"TensorRT {tensorrt_version} builds strongly typed only: the engine precision is the ONNX's "
                f"({onnx_precision}). Export `rdedge export RUN_DIR --precision {precision}` and build that file"
            )
        return BuildPlan(True, (), (), False, dla)
    if onnx_precision == precision and not dla:
        return BuildPlan(True, ("STRONGLY_TYPED",), (), False, False)
    if precision == "fp32" and dla:
        raise EngineBuildError("DLA runs FP16 or INT8 only: pass --precision fp16 or int8 with --dla")
    flags: tuple[str, ...] = ("FP16",) if precision == "fp16" else ("FP16", "INT8")
    if dla:
        flags += ("GPU_FALLBACK",)
    return BuildPlan(False, (), (*flags, "OBEY_PRECISION_CONSTRAINTS"), True, dla)


def timing_cache_path(tensorrt_version: str, compute_capability: str, cache_dir: str | None = None) -> Path:
    """Persistent timing cache, one per TensorRT version and compute capability (timings do not transfer)."""
    root = Path(cache_dir or os.environ.get("RDEDGE_CACHE_DIR", Path.home() / ".cache" / "rdedge"))
    return root / f"trt-{tensorrt_version}-sm{compute_capability.replace('.', '')}.timing"


def read_onnx_metadata(onnx_path: str | os.PathLike[str]) -> ModelMetadata:
    """The rdedge metadata of an exported ONNX file."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise EngineBuildError(f"{onnx_path} has no rdedge metadata: export it with `rdedge export`")
    return ModelMetadata.from_json(props[METADATA_KEY])


def count_nonzero_zero_points(onnx_path: str | os.PathLike[str]) -> int:
    """Q/DQ nodes of an ONNX whose zero point is not 0 (TensorRT accepts symmetric quantization only)."""
    import onnx

    from export.precision import qdq_summary

    return int(qdq_summary(onnx.load(str(onnx_path)))["nonzero_zero_points"])


def cuda_device_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability) of a CUDA device, through pycuda."""
    import pycuda.driver as cuda

    cuda.init()
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return dev.name(), f"{major}.{minor}"


def build_engine(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    precision: str | None = None,
    max_batch: int = 8,
    opt_batch: int = 1,
    workspace_gb: float = 2.0,
    dla_core: int | None = None,
    cache_dir: str | None = None,
    device: int = 0,
) -> Path:
    """Build an ``.engine`` (header + plan, see :mod:`sdk.backends.engine_file`) next to the ONNX, atomically.

    Args:
        onnx_path: An rdedge ONNX (fp32, fp16 or int8).
        out: Engine path; ``<onnx stem>_<precision>.engine`` beside the ONNX by default.
        precision: Engine precision; the ONNX's by default.
        max_batch: Largest batch of the dynamic-batch profile.
        opt_batch: Batch the profile is tuned for.
        workspace_gb: Builder workspace limit.
        dla_core: Jetson DLA core (GPU fallback on), or None for the GPU.
        cache_dir: Folder of the persistent timing cache.
        device: CUDA device index.

    Raises:
        EngineBuildError: See :func:`plan_build`; parser or builder failures with TensorRT's messages.
    """
    import tensorrt as trt

    onnx_path = Path(onnx_path)
    metadata = read_onnx_metadata(onnx_path)
    precision = precision or metadata.precision
    if not 1 <= opt_batch <= max_batch:
        raise EngineBuildError(f"need 1 <= opt batch ({opt_batch}) <= max batch ({max_batch})")
    plan = plan_build(trt.__version__, metadata.precision, precision, dla_core is not None,
                      count_nonzero_zero_points(onnx_path))
    gpu_name, capability = cuda_device_info(device)
    out_path = Path(out) if out else onnx_path.with_name(f"{onnx_path.stem}_{precision}.engine")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network_flags = 0
    for name in plan.network_flags:
        network_flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    size = metadata.image_size
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, size, size, 3), (opt_batch, size, size, 3), (max_batch, size, size, 3))
    config.add_optimization_profile(profile)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan.pin_postprocess_fp32:
        pin_layers_fp32(trt, network)
    if plan.dla:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core

    cache_path = timing_cache_path(trt.__version__, capability, cache_dir)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {onnx_path} (see the messages above)")
    info = EngineInfo(
        tensorrt_version=trt.__version__, gpu_name=gpu_name, compute_capability=capability, precision=precision,
        max_batch=max_batch, opt_batch=opt_batch, strongly_typed=plan.strongly_typed,
        dla_core=-1 if dla_core is None else dla_core,
        builder={"flags": list(plan.builder_flags), "workspace_gb": workspace_gb, "onnx": onnx_path.name,
                 "pinned_fp32": plan.pin_postprocess_fp32},
    )
    with atomic_path(out_path) as tmp:
        write_engine_file(tmp, metadata.replace(precision=precision), info, bytes(serialized))
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    return out_path


def pin_layers_fp32(trt: Any, network: Any) -> int:
    """Weakly typed builds: run the ``normalize/*`` and ``head/*`` layers (and their outputs) in FP32."""
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name.startswith(PINNED_FP32_SCOPES):
            layer.precision = trt.float32
            for k in range(layer.num_outputs):
                layer.set_output_type(k, trt.float32)
            pinned += 1
    return pinned
