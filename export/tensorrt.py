"""Build TensorRT engines from rdedge ONNX graphs, on the machine that will run them (TensorRT 10.3+ and 11.x).

Written to TensorRT's documented Python API directly, not Polygraphy's loaders: the build needs version-dependent
choices (strongly typed network or precision flags, FP32 pinning of the post-processing, DLA) that are clearer as a
few explicit calls, and Jetson images ship TensorRT without Polygraphy. Polygraphy stays the tool for comparing an
engine with ONNX Runtime (``benchmarks/gpu_check``).

The decisions live in :func:`plan_build`, a pure function tested without TensorRT; :func:`build_engine` only
translates a plan into TensorRT calls. **TensorRT itself has never run these calls: no GPU and no full TensorRT
install is available to CI.** TensorRT-RTX runs the strongly typed path (see "Testing seam" below); the TensorRT 10
flags path (FP16/INT8 flags, FP32 layer pinning) has met no real builder.

Precision rules:

* TensorRT 11.x has no weak typing: the engine precision is the ONNX's. Export ``--precision fp16`` or ``int8``
  first; asking for another precision than the ONNX carries is an error.
* TensorRT 10.x: an ONNX that already carries the target precision is built strongly typed (FP16 ONNX → FP16,
  Q/DQ ONNX → INT8 where quantized, FP32 elsewhere). An FP32 ONNX built as ``fp16`` (JetPack 6's usual path) uses
  the ``FP16`` builder flag with the float ``normalize/*`` and ``head/*`` layers pinned to FP32 (``OBEY_PRECISION_
  CONSTRAINTS``; their INT64 shape arithmetic is left alone). DLA always uses the flags path (DLA runs FP16/INT8
  only) with GPU fallback.
* INT8 always comes from a Q/DQ ONNX (``rdedge export --precision int8``); there is no implicit calibration.

DLA (Jetson AGX/NX Orin; TensorRT 10.3–10.7 and 11.4+): DLA has no dynamic dimensions, so a DLA engine has a
static batch (the profile's min, opt and max all equal ``max_batch``, 1 by default) and the runtime pads smaller
batches; ``GPU_FALLBACK`` is always set (the cosine/resize/blur post-processing runs on the GPU).

Testing seam: :func:`build_engine` takes the TensorRT module and the GPU description as arguments. CI passes
TensorRT-RTX (``tensorrt_rtx``, whose ONNX parser and builder run on the CPU; strongly typed only, so built by
TensorRT 11's rules) to run these very calls end to end. That proves the calls and the file handling, not TensorRT's
numerics or speed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from export.precision import qdq_summary
from sdk.backends.engine_file import EngineInfo, write_engine_file
from sdk.backends.tensorrt import import_tensorrt
from sdk.contract import (
    FP32_SCOPE_PREFIXES,
    INPUT_NAME,
    METADATA_KEY,
    PRECISIONS,
    ImageSize,
    check_precision,
    engine_file_name,
    version_tuple,
)
from sdk.errors import RdedgeError
from sdk.fileio import atomic_path
from sdk.metadata import ModelMetadata

MIN_VERSION = (10, 3)
DEFAULT_MAX_BATCH = 8
DEFAULT_DLA_BATCH = 1
TENSORRT_RTX_RULES = "11.0"
"""TensorRT-RTX builds strongly typed only, as TensorRT 11 does: its builds follow 11.x's rules."""


class EngineBuildError(RdedgeError, RuntimeError):
    """The engine cannot be built as asked (version, precision, missing TensorRT, parser or builder failure)."""


@dataclass(frozen=True)
class BuildPlan:
    """What the builder will do.

    Attributes:
        strongly_typed: Create the network with ``STRONGLY_TYPED`` (10.x) / as TensorRT 11 always does.
        network_flags: ``NetworkDefinitionCreationFlag`` names to set.
        builder_flags: ``BuilderFlag`` names to set.
        pin_postprocess_fp32: Pin ``normalize/*`` and ``head/*`` layers to FP32 (weakly typed FP16/INT8 only).
        dla: Target a DLA core with GPU fallback.
        cleared_flags: ``BuilderFlag`` names to clear: ``TF32``, on by default in TensorRT, would let FP32
            convolutions and matrix products (the network of an FP32 engine, the head's smoothing in every engine)
            round their inputs to 10 mantissa bits on Ampere and newer GPUs, so that an FP32 engine's maps and
            scores would drift from the other runtimes' by about 1e-3 relative.
    """

    strongly_typed: bool
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    pin_postprocess_fp32: bool
    dla: bool
    cleared_flags: tuple[str, ...] = ("TF32",)


def plan_build(tensorrt_version: str, onnx_precision: str, precision: str, dla: bool = False,
               nonzero_zero_points: int = 0) -> BuildPlan:
    """Decide how to build ``precision`` from an ONNX of ``onnx_precision`` with this TensorRT version.

    Raises:
        EngineBuildError: Unsupported version or a precision the ONNX cannot give on this version.
    """
    version = version_tuple(tensorrt_version)
    if version < MIN_VERSION:
        raise EngineBuildError(f"TensorRT {tensorrt_version} is too old: rdedge needs 10.3 (JetPack 6) or newer")
    for name in (onnx_precision, precision):
        try:
            check_precision(name)
        except ValueError as exc:
            raise EngineBuildError(str(exc)) from None
    if onnx_precision == "int8" and nonzero_zero_points:
        raise EngineBuildError(
            f"this INT8 ONNX has {nonzero_zero_points} Q/DQ nodes with non-zero zero points (asymmetric "
            "quantization), which TensorRT rejects: export it again with `rdedge export RUN_DIR --precision int8` "
            "(symmetric) and build that file"
        )
    if precision == "int8" and onnx_precision != "int8":
        raise EngineBuildError(
            "INT8 engines are built from a Q/DQ ONNX: run `rdedge export RUN_DIR --precision int8` and build "
            f"{PRECISIONS['int8'].onnx_file}"
        )
    if onnx_precision == "int8" and precision != "int8":
        raise EngineBuildError("this ONNX is INT8 (Q/DQ): build it with --precision int8")
    if list(PRECISIONS).index(precision) < list(PRECISIONS).index(onnx_precision):
        raise EngineBuildError(
            f"this ONNX is {onnx_precision}: an engine cannot be built in a wider precision ({precision}) than its "
            f"graph. Build it with --precision {onnx_precision}, or export `rdedge export RUN_DIR --precision "
            f"{precision}` and build that file"
        )
    if dla:
        if precision == "fp32":
            raise EngineBuildError("DLA runs FP16 or INT8 only: pass --precision fp16 or int8 with --dla")
        if not ((10, 3) <= version <= (10, 7) or version >= (11, 4)):
            raise EngineBuildError(
                f"TensorRT {tensorrt_version} has no DLA support (DLA: TensorRT 10.3-10.7, e.g. JetPack 6, and "
                "11.4+ on JetPack 7.2.2+): build without --dla"
            )
    if version >= (11, 0):
        if onnx_precision != precision:
            raise EngineBuildError(
                f"TensorRT {tensorrt_version} builds strongly typed only: the engine precision is the ONNX's "
                f"({onnx_precision}). Export `rdedge export RUN_DIR --precision {precision}` and build that file"
            )
        return BuildPlan(True, (), ("GPU_FALLBACK",) if dla else (), False, dla)
    if onnx_precision == precision and not dla:
        return BuildPlan(True, ("STRONGLY_TYPED",), (), False, False)
    flags: tuple[str, ...] = ("FP16",) if precision == "fp16" else ("FP16", "INT8")
    if dla:
        flags += ("GPU_FALLBACK",)
    return BuildPlan(False, (), (*flags, "OBEY_PRECISION_CONSTRAINTS"), True, dla)


def profile_batches(dla: bool, opt_batch: int, max_batch: int) -> tuple[int, int, int]:
    """(min, opt, max) batch of the optimisation profile: dynamic on the GPU, static on DLA.

    Raises:
        EngineBuildError: Not ``1 <= opt_batch <= max_batch``.
    """
    if not 1 <= opt_batch <= max_batch:
        raise EngineBuildError(f"need 1 <= opt batch ({opt_batch}) <= max batch ({max_batch})")
    if dla:  # DLA has no dynamic dimensions: min, opt and max must be equal
        return max_batch, max_batch, max_batch
    return 1, opt_batch, max_batch


def input_profile(image_size: ImageSize, batches: tuple[int, int, int]) -> list[tuple[int, int, int, int]]:
    """The (min, opt, max) input shapes of the optimisation profile: the batch range over the model's fixed height x
    width (a non-square model's profile is non-square too)."""
    height, width = image_size
    return [(batch, height, width, 3) for batch in batches]


def builder_rules_version(trt: ModuleType) -> str:
    """The TensorRT version whose build rules apply to this builder module (TensorRT-RTX: 11.x's)."""
    return TENSORRT_RTX_RULES if trt.__name__.split(".")[0] == "tensorrt_rtx" else str(trt.__version__)


def timing_cache_path(tensorrt_version: str, compute_capability: str, cache_dir: str | None = None) -> Path:
    """Persistent timing cache, one per TensorRT version and compute capability (timings do not transfer)."""
    root = Path(cache_dir or os.environ.get("RDEDGE_CACHE_DIR", Path.home() / ".cache" / "rdedge"))
    return root / f"trt-{tensorrt_version}-sm{compute_capability.replace('.', '')}.timing"


def read_onnx_metadata(onnx_path: str | os.PathLike[str], model: Any = None) -> ModelMetadata:
    """The rdedge metadata of an exported ONNX file (``model``: the file already loaded, so it is not read again)."""
    import onnx

    if model is None:
        model = onnx.load(str(onnx_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise EngineBuildError(f"{onnx_path} has no rdedge metadata: export it with `rdedge export`")
    return ModelMetadata.from_json(props[METADATA_KEY])


def count_nonzero_zero_points(onnx_model: Any) -> int:
    """Q/DQ nodes of an ONNX (a path or a loaded ``ModelProto``) whose zero point is not 0 (TensorRT accepts
    symmetric quantization only)."""
    import onnx

    if not isinstance(onnx_model, onnx.ModelProto):
        onnx_model = onnx.load(str(onnx_model))
    return int(qdq_summary(onnx_model)["nonzero_zero_points"])


def cuda_device_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability) of a CUDA device, through pycuda."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise EngineBuildError("building engines needs pycuda (to name the GPU in the engine header): "
                               "`pip install pycuda`") from exc

    cuda.init()
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return dev.name(), f"{major}.{minor}"


def build_engine(
    onnx_path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    precision: str | None = None,
    max_batch: int | None = None,
    opt_batch: int = 1,
    workspace_gb: float = 2.0,
    dla_core: int | None = None,
    cache_dir: str | None = None,
    device: int = 0,
    tensorrt: ModuleType | None = None,
    gpu: tuple[str, str] | None = None,
) -> Path:
    """Build an ``.engine`` (header + plan, see :mod:`sdk.backends.engine_file`) next to the ONNX, atomically.

    Args:
        onnx_path: An rdedge ONNX (fp32, fp16 or int8).
        out: Engine path; ``<onnx stem>_<precision>.engine`` beside the ONNX by default.
        precision: Engine precision; the ONNX's by default.
        max_batch: Largest batch of the dynamic-batch profile (default 8); on DLA the static batch (default 1).
        opt_batch: Batch the profile is tuned for (GPU only).
        workspace_gb: Builder workspace limit.
        dla_core: Jetson DLA core (GPU fallback on), or None for the GPU.
        cache_dir: Folder of the persistent timing cache.
        device: CUDA device index.
        tensorrt: The TensorRT module to build with (default: ``import tensorrt``). Tests pass ``tensorrt_rtx``.
        gpu: (GPU name, compute capability) to record; read from CUDA device ``device`` by default.

    Raises:
        EngineBuildError: See :func:`plan_build`; TensorRT or pycuda missing; parser or builder failures with
            TensorRT's messages.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineBuildError(f"ONNX model not found: {onnx_path}")
    import onnx

    model = onnx.load(str(onnx_path))  # once, for the metadata and the zero points; TensorRT parses the file itself
    metadata = read_onnx_metadata(onnx_path, model)
    nonzero_zero_points = count_nonzero_zero_points(model)
    del model
    precision = precision or metadata.precision
    dla = dla_core is not None
    if max_batch is None:
        max_batch = DEFAULT_DLA_BATCH if dla else DEFAULT_MAX_BATCH
    batches = profile_batches(dla, opt_batch, max_batch)
    trt = tensorrt or import_tensorrt("building engines", EngineBuildError)
    plan = plan_build(builder_rules_version(trt), metadata.precision, precision, dla, nonzero_zero_points)
    gpu_name, capability = gpu or cuda_device_info(device)
    out_path = Path(out) if out else onnx_path.with_name(engine_file_name(onnx_path, precision))

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
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *input_profile(metadata.image_size, batches))
    config.add_optimization_profile(profile)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    cleared = [name for name in plan.cleared_flags if hasattr(trt.BuilderFlag, name)]
    for name in cleared:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    pinned = pin_layers_fp32(trt, network) if plan.pin_postprocess_fp32 else 0
    if dla:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core

    cache_path = timing_cache_path(str(trt.__version__), capability, cache_dir)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build {onnx_path} (see the messages above)")
    info = EngineInfo(
        tensorrt_version=str(trt.__version__), gpu_name=gpu_name, compute_capability=capability,
        precision=precision, max_batch=batches[2], opt_batch=batches[1], min_batch=batches[0],
        strongly_typed=plan.strongly_typed, dla_core=-1 if dla_core is None else dla_core,
        builder={"flags": list(plan.builder_flags), "workspace_gb": workspace_gb, "onnx": onnx_path.name,
                 "pinned_fp32_layers": pinned, "builder": trt.__name__, "cleared_flags": cleared},
    )
    with atomic_path(out_path) as tmp:
        write_engine_file(tmp, metadata.replace(precision=precision), info, bytes(serialized))
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    return out_path


def layers_to_pin_fp32(trt: Any, network: Any) -> list[Any]:
    """The parsed network's pre/post-processing layers (``normalize/*``, ``head/*``) that compute floats.

    Shape arithmetic in those scopes (``Shape``, ``Slice``, ``Concat`` of INT64 sizes for the resizes) is left alone:
    forcing an FP32 output type on an integer shape tensor is an error.
    """
    floats = {trt.float32, trt.float16}
    selected = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name.startswith(FP32_SCOPE_PREFIXES) and all(
            layer.get_output_type(k) in floats for k in range(layer.num_outputs)
        ):
            selected.append(layer)
    return selected


def pin_layers_fp32(trt: Any, network: Any) -> int:
    """Weakly typed builds (TensorRT 10.x flags path): run the float pre/post-processing layers in FP32."""
    layers = layers_to_pin_fp32(trt, network)
    for layer in layers:
        layer.precision = trt.float32
        for k in range(layer.num_outputs):
            layer.set_output_type(k, trt.float32)
    return len(layers)
