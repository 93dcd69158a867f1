"""TensorRT path without a GPU: build decisions, engine files, compatibility checks, buffer sizing, backend
selection, and the backend's data flow through a labelled FAKE of the TensorRT/pycuda seam (tests/fake_tensorrt.py).

What these tests cannot show: that TensorRT builds and runs these engines with the right numbers. That needs a GPU
(tests marked ``gpu`` and ``benchmarks/gpu_check.py``)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export.tensorrt import (
    EngineBuildError,
    builder_rules_version,
    plan_build,
    profile_batches,
    timing_cache_path,
)
from sdk import Detector, ModelLoadError
from sdk.backends.engine_file import (
    EngineInfo,
    buffer_bytes,
    check_compatible,
    io_buffer_shapes,
    read_engine_header,
    write_engine_file,
)
from sdk.contract import engine_file_name, version_tuple

from . import fake_tensorrt
from .conftest import require_tool


def test_version_parsing():
    assert version_tuple("10.3.0.30") == (10, 3)
    assert version_tuple("11.4.1") == (11, 4)
    assert version_tuple("11") == (11, 0)
    assert version_tuple("10.3.0.30", 3) == version_tuple("10.3.0", 3) == (10, 3, 0)  # the engine-file rule
    assert version_tuple("11.4.1b2", 3) == (11, 4, 1)
    with pytest.raises(ValueError, match="not a version"):
        version_tuple("unknown")


@pytest.mark.parametrize("version", ["10.3.0", "10.7.0", "11.4.1"])
@pytest.mark.parametrize(("onnx_precision", "precision"), [("fp16", "fp32"), ("int8", "fp32"), ("int8", "fp16")])
def test_an_engine_is_never_wider_than_its_onnx(version, onnx_precision, precision):
    """Defect: an FP16 ONNX built with --precision fp32 was planned with FP16/INT8 flags and labelled fp32."""
    with pytest.raises(EngineBuildError, match=f"--precision {onnx_precision}"):
        plan_build(version, onnx_precision, precision)


@pytest.mark.parametrize(
    ("onnx_name", "precision", "engine_name"),
    [("model_int8.onnx", "int8", "model_int8.engine"), ("model_fp16.onnx", "fp16", "model_fp16.engine"),
     ("model.onnx", "fp16", "model_fp16.engine"), ("model.onnx", "fp32", "model_fp32.engine"),
     ("line3.onnx", "int8", "line3_int8.engine")],
)
def test_default_engine_names_say_the_precision_once(onnx_name, precision, engine_name):
    """Defect: ``model_int8.onnx`` gave ``model_int8_int8.engine``."""
    assert engine_file_name(f"runs/x/{onnx_name}", precision) == engine_name


@pytest.mark.parametrize(
    ("version", "onnx_precision", "precision", "dla", "typed", "flags", "pinned"),
    [
        ("10.3.0.30", "fp32", "fp32", False, True, (), False),
        ("10.3.0.30", "fp16", "fp16", False, True, (), False),
        ("10.3.0.30", "int8", "int8", False, True, (), False),
        ("10.3.0.30", "fp32", "fp16", False, False, ("FP16", "OBEY_PRECISION_CONSTRAINTS"), True),
        ("10.3.0.30", "fp16", "fp16", True, False, ("FP16", "GPU_FALLBACK", "OBEY_PRECISION_CONSTRAINTS"), True),
        ("10.3.0.30", "int8", "int8", True, False,
         ("FP16", "INT8", "GPU_FALLBACK", "OBEY_PRECISION_CONSTRAINTS"), True),
        ("11.4.1", "fp16", "fp16", False, True, (), False),
        ("11.4.1", "int8", "int8", True, True, ("GPU_FALLBACK",), False),
        ("10.7.0", "fp16", "fp16", True, False, ("FP16", "GPU_FALLBACK", "OBEY_PRECISION_CONSTRAINTS"), True),
    ],
)
def test_build_plans(version, onnx_precision, precision, dla, typed, flags, pinned):
    plan = plan_build(version, onnx_precision, precision, dla)
    assert (plan.strongly_typed, plan.builder_flags, plan.pin_postprocess_fp32, plan.dla) == (typed, flags, pinned,
                                                                                              dla)
    if typed and version.startswith("10."):
        assert plan.network_flags == ("STRONGLY_TYPED",)
    assert plan.cleared_flags == ("TF32",)  # FP32 layers compute in FP32, as on every other runtime


@pytest.mark.parametrize(
    ("version", "onnx_precision", "precision", "message"),
    [
        ("8.6.1", "fp32", "fp32", "too old"),
        ("10.3.0", "fp32", "int8", "--precision int8"),
        ("10.3.0", "int8", "fp16", "build it with --precision int8"),
        ("11.4.1", "fp32", "fp16", "rdedge export RUN_DIR --precision fp16"),
        ("10.3.0", "fp32", "fp32", None),
        ("11.4.1", "fp32", "fp32", None),
    ],
)
def test_build_plan_refusals(version, onnx_precision, precision, message):
    if message is None:
        with pytest.raises(EngineBuildError, match="DLA runs FP16 or INT8 only"):
            plan_build(version, onnx_precision, precision, dla=True)
        return
    with pytest.raises(EngineBuildError, match=message):
        plan_build(version, onnx_precision, precision)


def test_timing_cache_is_keyed_by_version_and_capability(tmp_path):
    a = timing_cache_path("10.3.0.30", "8.7", str(tmp_path))
    assert a == tmp_path / "trt-10.3.0.30-sm87.timing"
    assert timing_cache_path("10.3.0.30", "9.0", str(tmp_path)) != a


def _info(**changes) -> EngineInfo:
    base = {"tensorrt_version": fake_tensorrt.FAKE_TRT_VERSION, "gpu_name": fake_tensorrt.FAKE_GPU_NAME,
            "compute_capability": "8.7", "precision": "fp32", "max_batch": 4}
    return EngineInfo(**{**base, **changes})


def test_engine_file_round_trip_and_corruptions(tiny_onnx: Path, tmp_path: Path):
    meta = Detector(tiny_onnx).metadata
    path = tmp_path / "m.engine"
    write_engine_file(path, meta, _info(), b"PLAN-BYTES")
    got_meta, got_info, offset = read_engine_header(path)
    assert got_meta == meta and got_info == _info()
    assert path.read_bytes()[offset:] == b"PLAN-BYTES"
    (tmp_path / "bare.engine").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="build-engine"):
        read_engine_header(tmp_path / "bare.engine")
    data = path.read_bytes()
    (tmp_path / "cut.engine").write_bytes(data[:30])
    with pytest.raises(ModelLoadError, match="truncated"):
        read_engine_header(tmp_path / "cut.engine")
    (tmp_path / "empty.engine").write_bytes(data[:offset])
    with pytest.raises(ModelLoadError, match="no engine"):
        read_engine_header(tmp_path / "empty.engine")
    newer = bytearray(data)
    newer[8] = 9
    (tmp_path / "newer.engine").write_bytes(bytes(newer))
    with pytest.raises(ModelLoadError, match="format 9"):
        read_engine_header(tmp_path / "newer.engine")


def test_stale_engines_are_refused_with_rebuild_instructions():
    info = _info(precision="fp16", max_batch=8)
    check_compatible(info, "10.3.0.99", fake_tensorrt.FAKE_GPU_NAME, "8.7")  # build number does not matter
    with pytest.raises(ModelLoadError, match=re.escape("TensorRT 10.3.0.30, this machine has 10.4.0")) as err:
        check_compatible(info, "10.4.0.1", fake_tensorrt.FAKE_GPU_NAME, "8.7")
    assert "rdedge build-engine MODEL.onnx --precision fp16 --max-batch 8" in str(err.value)
    with pytest.raises(ModelLoadError, match=re.escape("compute capability 8.7")):
        check_compatible(info, "10.3.0.30", "NVIDIA H100", "9.0")
    with pytest.raises(ModelLoadError, match="built on Fake GPU"):
        check_compatible(info, "10.3.0.30", "Other GPU", "8.7")


def test_buffer_sizing():
    shapes = io_buffer_shapes(256, 8)
    assert shapes["image"] == ((8, 256, 256, 3), "uint8")
    assert shapes["anomaly_map"] == ((8, 256, 256), "float32")
    assert buffer_bytes(256, 8) == {"image": 8 * 256 * 256 * 3, "anomaly_map": 8 * 256 * 256 * 4, "score": 32}
    with pytest.raises(ValueError):
        io_buffer_shapes(256, 0)


def test_engine_suffix_selects_tensorrt_and_says_what_is_missing(tiny_onnx: Path, tmp_path: Path):
    path = tmp_path / "m.engine"
    write_engine_file(path, Detector(tiny_onnx).metadata, _info(), b"plan")
    with pytest.raises(ModelLoadError, match="needs TensorRT"):
        Detector(path)


def test_import_sdk_needs_neither_tensorrt_nor_pycuda():
    code = ("import sys, sdk, sdk.backends, sdk.backends.engine_file; "
            "assert not {'tensorrt', 'pycuda', 'torch'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


@pytest.fixture
def fake_engine(tiny_onnx: Path, tmp_path: Path, monkeypatch) -> Path:
    """An rdedge engine whose 'plan' is the ONNX model, run through the FAKE seam."""
    import sdk.backends.tensorrt as backend

    monkeypatch.setattr(backend, "import_runtime", lambda: (fake_tensorrt.tensorrt, fake_tensorrt.cuda))
    path = tmp_path / "fake.engine"
    write_engine_file(path, Detector(tiny_onnx).metadata, _info(max_batch=4), tiny_onnx.read_bytes())
    return path


def test_tensorrt_backend_data_flow_matches_onnx_runtime(fake_engine: Path, tiny_onnx: Path, bottle_images):
    fake_tensorrt.ALLOCATIONS.clear()
    trt_det, onnx_det = Detector(fake_engine), Detector(tiny_onnx)
    assert trt_det.backend.name == "tensorrt"
    images = list(bottle_images.values()) * 5  # 10 images: split into chunks of max_batch 4 (4, 4, 2)
    for got, want in zip(trt_det.predict_batch(images), onnx_det.predict_batch(images), strict=True):
        np.testing.assert_allclose(got.anomaly_map, want.anomaly_map, rtol=1e-6)
        assert got.score == pytest.approx(want.score, rel=1e-6)
    allocated = len(fake_tensorrt.ALLOCATIONS)
    assert allocated == 2 * 3  # batch sizes 4 and 2, three tensors each
    trt_det.predict_batch(images)
    assert len(fake_tensorrt.ALLOCATIONS) == allocated  # buffers are reused, never reallocated


@pytest.mark.parametrize("failure", ["deserialize", "tensor names"])
def test_a_failed_engine_load_releases_the_cuda_context(fake_engine: Path, tiny_onnx: Path, tmp_path: Path,
                                                        monkeypatch, failure):
    """Defect: a failed deserialisation kept the retained CUDA context (FAKE TensorRT/pycuda seam)."""
    if failure == "deserialize":
        monkeypatch.setattr(fake_tensorrt._Runtime, "deserialize_cuda_engine", lambda self, data: None)
    else:
        monkeypatch.setattr(fake_tensorrt._Engine, "get_tensor_name", lambda self, i: f"other{i}")
    detached = fake_tensorrt.CONTEXT["detached"]
    with pytest.raises(ModelLoadError, match=r"deserialize|not rdedge's"):
        Detector(fake_engine)
    assert fake_tensorrt.CONTEXT["detached"] == detached + 1


def test_tensorrt_backend_refuses_a_foreign_engine_before_deserializing(tiny_onnx: Path, tmp_path: Path,
                                                                       monkeypatch):
    import sdk.backends.tensorrt as backend

    monkeypatch.setattr(backend, "import_runtime", lambda: (fake_tensorrt.tensorrt, fake_tensorrt.cuda))
    path = tmp_path / "old.engine"
    write_engine_file(path, Detector(tiny_onnx).metadata, _info(tensorrt_version="10.0.1.6"), b"x")
    before = fake_tensorrt._Runtime.DESERIALIZED
    with pytest.raises(ModelLoadError, match="Rebuild it on this machine"):
        Detector(path)
    assert fake_tensorrt._Runtime.DESERIALIZED == before


def test_engine_header_is_plain_json(tiny_onnx: Path, tmp_path: Path):
    path = tmp_path / "m.engine"
    write_engine_file(path, Detector(tiny_onnx).metadata, _info(), b"plan")
    _, _, offset = read_engine_header(path)
    header = json.loads(path.read_bytes()[20:offset])
    assert header["engine"]["compute_capability"] == "8.7" and header["model"]["image_size"] == [128, 128]


@pytest.mark.parametrize("version", ["10.3.0", "11.4.1"])
def test_build_plan_refuses_asymmetric_int8(version):
    with pytest.raises(EngineBuildError, match=r"3 Q/DQ nodes with non-zero zero points.*--precision int8"):
        plan_build(version, "int8", "int8", nonzero_zero_points=3)
    assert plan_build(version, "int8", "int8", nonzero_zero_points=0).strongly_typed


@pytest.mark.parametrize("version", ["10.8.0", "10.16.1", "11.0.0", "11.3.0"])
def test_dla_is_refused_where_tensorrt_has_none(version):
    with pytest.raises(EngineBuildError, match="has no DLA support"):
        plan_build(version, "fp16", "fp16", dla=True)


def test_profiles_are_dynamic_on_the_gpu_and_static_on_dla():
    assert profile_batches(False, 2, 8) == (1, 2, 8)
    assert profile_batches(True, 1, 4) == (4, 4, 4)  # DLA: min, opt and max must be equal
    for opt, top in ((0, 8), (9, 8)):
        with pytest.raises(EngineBuildError, match="opt batch"):
            profile_batches(False, opt, top)


def test_tensorrt_rtx_builds_by_tensorrt_11_rules():
    import types

    assert builder_rules_version(types.SimpleNamespace(__name__="tensorrt_rtx", __version__="1.7.1.116")) == "11.0"
    assert builder_rules_version(types.SimpleNamespace(__name__="tensorrt", __version__="10.3.0.30")) == "10.3.0.30"


def test_build_engine_without_tensorrt_says_what_to_install(tiny_onnx: Path, tmp_path: Path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: nothing is missing")
    from export.tensorrt import build_engine
    from rdedge.main import main

    assert main(["build-engine", str(tiny_onnx), "--out", str(tmp_path / "m.engine")]) == 2
    assert main(["build-engine", str(tmp_path / "missing.onnx")]) == 2
    with pytest.raises(EngineBuildError, match=r"opt batch \(1\) <= max batch \(0\)"):  # refused before TensorRT
        build_engine(tiny_onnx, tmp_path / "m.engine", max_batch=0)
    with pytest.raises(EngineBuildError, match=r"python3-libnvinfer.*rdedge\[trt\]"):
        build_engine(tiny_onnx, tmp_path / "m.engine")
    assert not list(tmp_path.iterdir())


def test_static_batch_dla_engine_pads_small_batches(tiny_onnx: Path, tmp_path: Path, bottle_images, monkeypatch):
    import sdk.backends.tensorrt as backend

    monkeypatch.setattr(backend, "import_runtime", lambda: (fake_tensorrt.tensorrt, fake_tensorrt.cuda))
    path = tmp_path / "dla.engine"
    info = _info(precision="fp16", max_batch=4, opt_batch=4, min_batch=4, dla_core=1)
    write_engine_file(path, Detector(tiny_onnx).metadata, info, tiny_onnx.read_bytes())
    fake_tensorrt.EXECUTED_BATCHES.clear()
    detector, reference = Detector(path), Detector(tiny_onnx)
    assert fake_tensorrt._Runtime.DLA_CORES_AT_DESERIALIZE[-1] == 1  # the core is chosen before deserializing
    images = list(bottle_images.values()) * 3  # 6 images: a full batch of 4, then 2 padded to 4
    got, want = detector.predict_batch(images), reference.predict_batch(images)
    assert fake_tensorrt.EXECUTED_BATCHES == [4, 4]
    assert len(got) == 6
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.anomaly_map, w.anomaly_map, rtol=1e-6)
        assert g.score == pytest.approx(w.score, rel=1e-6)
    (single,) = detector.predict_batch([images[1]])
    assert fake_tensorrt.EXECUTED_BATCHES[-1] == 4 and single.score == pytest.approx(want[1].score, rel=1e-6)


def _tensorrt_calls(source: Path) -> dict[str, set[str]]:
    """Attributes the TensorRT backend uses, by receiver: the ``trt`` module, ``trt.Logger``, its runtime, engine
    and execution context (``self._runtime``, ``self._engine``, ``self._context``) and cuda-python's ``cudart``,
    read from its AST."""
    import ast

    receivers = {"_runtime": "Runtime", "_engine": "ICudaEngine", "_context": "IExecutionContext"}
    calls: dict[str, set[str]] = {"module": set(), "Logger": set(), "cudart": set(),
                                  **{v: set() for v in receivers.values()}}
    for node in ast.walk(ast.parse(source.read_text())):
        if not isinstance(node, ast.Attribute):
            continue
        value = node.value
        if isinstance(value, ast.Name) and value.id in ("trt", "cudart"):
            calls["module" if value.id == "trt" else "cudart"].add(node.attr)
        elif isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name):
            if value.value.id == "trt" and value.attr == "Logger":
                calls["Logger"].add(node.attr)
            elif value.value.id == "self" and value.attr in receivers:
                calls[receivers[value.attr]].add(node.attr)
    return calls


def test_backend_calls_exist_in_the_real_tensorrt_runtime_bindings():
    """Every TensorRT name the backend uses exists in TensorRT 11.4's runtime bindings (``tensorrt_lean``), and every
    cuda-python name in the installed ``cuda.bindings.runtime``.

    Introspection only: constructing a ``Runtime`` without a GPU segfaults, so nothing is run. The fake seam used by
    the other tests is checked against the same bindings, so it cannot drift into an API TensorRT does not have.
    """
    require_tool(importlib.util.find_spec("tensorrt_lean") is not None, "tensorrt-lean-cu13")
    require_tool(importlib.util.find_spec("cuda.bindings") is not None, "cuda-bindings")
    import tensorrt_lean as trt

    import sdk.backends.tensorrt as backend

    calls = _tensorrt_calls(Path(backend.__file__))
    cudart_calls = calls.pop("cudart")
    assert cudart_calls >= {"cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate",
                            "cudaGraphLaunch"}
    cudart = backend.import_cuda_runtime()
    assert not {n for n in cudart_calls if not hasattr(cudart, n)}
    assert not {n for n in cudart_calls if not hasattr(fake_tensorrt.cudart, n)}  # the fake covers every call
    assert cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal is not None
    assert "flags" in cudart.cudaGraphInstantiate.__doc__.split("\n")[0]  # (graph, flags): CUDA 12+ signature
    assert calls["IExecutionContext"] >= {"set_input_shape", "set_tensor_address", "execute_async_v3"}
    assert calls["ICudaEngine"] >= {"num_io_tensors", "get_tensor_name", "create_execution_context"}
    assert calls["Runtime"] >= {"deserialize_cuda_engine", "DLA_core"}
    classes = {"module": trt, "Logger": trt.Logger, "Runtime": trt.Runtime, "ICudaEngine": trt.ICudaEngine,
               "IExecutionContext": trt.IExecutionContext}
    missing = {f"{owner}.{name}" for owner, names in calls.items() for name in names
               if not hasattr(classes[owner], name)}
    assert not missing, f"not in TensorRT {trt.__version__}'s runtime bindings: {sorted(missing)}"
    fake = {"Runtime": fake_tensorrt._Runtime, "ICudaEngine": fake_tensorrt._Engine,
            "IExecutionContext": fake_tensorrt._ExecutionContext}
    for owner, cls in fake.items():
        extra = {n for n in vars(cls) if not n.startswith("_") and n.islower() and not hasattr(classes[owner], n)}
        assert not extra, f"the fake {owner} has {sorted(extra)}, which TensorRT does not"


@pytest.fixture
def fake_graph_engine(fake_engine: Path, monkeypatch) -> Path:
    import sdk.backends.tensorrt as backend

    monkeypatch.setattr(backend, "import_cuda_runtime", lambda: fake_tensorrt.cudart)
    monkeypatch.setattr(fake_tensorrt, "FAIL_DURING_CAPTURE", False)
    for key in fake_tensorrt.GRAPHS:
        fake_tensorrt.GRAPHS[key] = 0
    fake_tensorrt.EXECUTED_BATCHES.clear()
    return fake_engine


def test_cuda_graph_is_captured_once_per_batch_size_then_replayed(fake_graph_engine: Path, tiny_onnx: Path,
                                                                    bottle_images):
    detector, reference = Detector(fake_graph_engine, cuda_graph=True), Detector(tiny_onnx)
    images = list(bottle_images.values()) * 3  # 6 images: batches of 4 and 2 (max batch 4)
    want = reference.predict_batch(images)
    for call in range(3):
        got = detector.predict_batch(images)
        for g, w in zip(got, want, strict=True):
            assert g.score == pytest.approx(w.score, rel=1e-6)
            np.testing.assert_allclose(g.anomaly_map, w.anomaly_map, rtol=1e-6)
        assert fake_tensorrt.GRAPHS["captured"] == 2  # one graph per batch size, captured on the first call
        assert fake_tensorrt.GRAPHS["launched"] == 2 * call
    assert fake_tensorrt.GRAPHS["destroyed"] == 2  # the captured graphs are freed once instantiated
    assert fake_tensorrt.EXECUTED_BATCHES == [4, 2] + [4, 2] * 2  # warm-up runs, then replays only


def test_failed_cuda_graph_capture_ends_the_capture_and_says_so(fake_graph_engine: Path, bottle_images,
                                                                 monkeypatch):
    monkeypatch.setattr(fake_tensorrt, "FAIL_DURING_CAPTURE", True)
    detector = Detector(fake_graph_engine, cuda_graph=True)
    with pytest.raises(RuntimeError, match="during CUDA-graph capture"):
        detector.predict_batch(list(bottle_images.values()))
    assert fake_tensorrt._CAPTURE is None  # the stream is out of capture mode
    assert fake_tensorrt.GRAPHS == {"captured": 1, "destroyed": 1, "launched": 0, "executables_destroyed": 0}


def test_cuda_graph_without_cuda_python_is_refused_at_load(fake_engine: Path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cuda_python(name, *args, **kwargs):
        if name == "cuda" or name.startswith("cuda."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cuda_python)
    with pytest.raises(ModelLoadError, match="pip install cuda-python"):
        Detector(fake_engine, cuda_graph=True)
    assert Detector(fake_engine).backend.name == "tensorrt"  # plain execution needs no cuda-python


TENSORRT_10_ONLY_FLAGS = {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"}
"""Weak-typing builder flags: TensorRT 10.x has them, 11.x removed them (its docs' "Removed Python APIs")."""


def test_planned_flags_exist_in_tensorrt_11_style_bindings():
    """Every flag a plan names exists in TensorRT-RTX's enums (TensorRT 11.4's builder flag set), except the
    TensorRT 10 weak-typing flags, which only TensorRT 10 plans name."""
    require_tool(importlib.util.find_spec("tensorrt_rtx") is not None, "tensorrt-rtx-cu13")
    import tensorrt_rtx as trt

    for version in ("10.3.0", "10.7.0", "11.4.1"):
        for onnx_precision, precision in (("fp32", "fp32"), ("fp32", "fp16"), ("fp16", "fp16"), ("int8", "int8")):
            for dla in (False, True):
                try:
                    plan = plan_build(version, onnx_precision, precision, dla)
                except EngineBuildError:
                    continue
                for name in plan.network_flags:
                    assert hasattr(trt.NetworkDefinitionCreationFlag, name), name
                for name in plan.builder_flags:
                    assert hasattr(trt.BuilderFlag, name) or (
                        name in TENSORRT_10_ONLY_FLAGS and version.startswith("10.")), (version, name)
    assert hasattr(trt.DeviceType, "DLA") and hasattr(trt.IBuilderConfig, "DLA_core")
    assert hasattr(trt.IBuilderConfig, "default_device_type")


def test_closing_frees_device_memory_and_cuda_graphs_and_refuses_later_calls(fake_graph_engine: Path,
                                                                            bottle_images):
    from sdk import DetectorClosedError

    fake_tensorrt.ALLOCATIONS.clear()
    fake_tensorrt.FREED.clear()
    detached = fake_tensorrt.CONTEXT["detached"]
    images = list(bottle_images.values()) * 3  # batches of 4 and 2: two buffer sets, two graphs
    with Detector(fake_graph_engine, cuda_graph=True) as detector:
        detector.predict_batch(images)
        backend = detector.backend
        allocated = {int(a) for buffers in backend._buffers.values() for a in buffers.device.values()}
    assert len(allocated) == 6 and set(fake_tensorrt.FREED) == allocated  # every device buffer, once
    assert fake_tensorrt.GRAPHS["executables_destroyed"] == 2
    assert fake_tensorrt.CONTEXT["detached"] == detached + 1
    assert backend._engine is None and backend._context is None
    with pytest.raises(DetectorClosedError, match="was closed"):
        detector.predict_batch(images[:1])
    detector.close()  # idempotent
    assert len(fake_tensorrt.FREED) == 6 and fake_tensorrt.CONTEXT["detached"] == detached + 1


def test_closing_an_onnx_detector_refuses_later_calls(tiny_onnx: Path, bottle_images):
    from sdk import DetectorClosedError

    detector = Detector(tiny_onnx)
    detector.predict_batch(list(bottle_images.values()))
    detector.close()
    detector.close()
    with pytest.raises(DetectorClosedError):
        detector.predict_batch(list(bottle_images.values()))
