"""Triton Inference Server: ``rdedge export-triton`` and the remote Detector, against a real tritonserver on
127.0.0.1 (tritonserver 2.51 from the ``nvidia-pytriton`` wheel, in a venv of its own: ``tests/triton_server.py``).

That server has only the Python backend, so the model served is the repository ``export-triton`` wrote with a CPU
stand-in config (same inputs, outputs, batching and rdedge parameters; a ``model.py`` runs the same ``model.onnx``
with onnxruntime). The production configs are checked by parsing them into Triton's ``ModelConfig`` protobuf.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.triton import TritonExportError, write_model_repository
from rdedge.main import main
from sdk import Detector
from sdk.backends.engine_file import EngineInfo, write_engine_file
from sdk.errors import InvalidInputError, ModelLoadError, ModelNotReadyError, ServerUnavailableError
from tests.conftest import REPO, wait_until
from tests.triton_server import TritonServer, ensure_server_venv, free_ports, stand_in_repository

MODEL = "bottle"


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def real_images(bottle_subset: Path) -> list[np.ndarray]:
    """Sixteen distinct real bottle images (BGR): every test image, and shifted copies to make up the number."""
    files = sorted((bottle_subset / "test").rglob("*.png"))
    base = [cv2.imread(str(p)) for p in files]
    shifted = [np.roll(image, 17 * (k + 1), axis=1) for k, image in enumerate(base)]
    return (base + shifted)[:16]


@pytest.fixture(scope="module")
def served(tiny_run, tmp_path_factory):
    """A tritonserver on 127.0.0.1 serving the tiny bottle model (written by ``rdedge export-triton``, CPU stand-in
    config) and a copy of it whose config carries no rdedge parameter → (server, model folder)."""
    python = ensure_server_venv()
    tmp = tmp_path_factory.mktemp("triton")
    folder = write_model_repository(tiny_run[1].path, tmp / "repository", name=MODEL)
    served = tmp / "served"
    stand_in_repository(folder, served)
    plain = stand_in_repository(folder, tmp / "plain")
    config = parse_config(plain / "config.pbtxt")
    del config.parameters["rdedge"]
    config.name = "not_rdedge"
    (plain / "config.pbtxt").write_text(text_format.MessageToString(config))
    shutil.move(plain, served / "not_rdedge")
    server = TritonServer(served, python, tmp / "server.log")
    server.start()
    yield server, folder
    server.stop()


def test_export_triton_writes_a_repository_whose_configs_parse_into_triton_model_config(tiny_run, tmp_path, capsys):
    repository = tmp_path / "repo"
    assert main(["export-triton", str(tiny_run[0]), "--out", str(repository), "--name", "line3", "--max-batch",
                 "4", "--tensorrt-accelerator"]) == 0
    assert "Detector('grpc://HOST:8001/line3')" in capsys.readouterr().out
    folder = repository / "line3"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "1", "1/model.onnx", "config.pbtxt", "configs", "configs/cpu.pbtxt"]
    assert (folder / "1" / "model.onnx").read_bytes() == tiny_run[1].path.read_bytes()
    metadata = Detector(tiny_run[1].path).metadata
    gpu, cpu = parse_config(folder / "config.pbtxt"), parse_config(folder / "configs" / "cpu.pbtxt")
    for config in (gpu, cpu):
        assert config.name == "line3" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 4
        (image,) = config.input
        assert image.name == "image" and image.data_type == model_config_pb2.TYPE_UINT8
        assert list(image.dims) == [*metadata.image_size, 3]  # the real size, pinned: the server refuses others
        outputs = {o.name: o for o in config.output}
        assert list(outputs["anomaly_map"].dims) == list(metadata.image_size)
        assert list(outputs["score"].dims) == [1] and list(outputs["score"].reshape.shape) == []
        assert list(config.dynamic_batching.preferred_batch_size) == [4]
        assert config.dynamic_batching.max_queue_delay_microseconds == 2000
        assert json.loads(config.parameters["rdedge"].string_value) == json.loads(metadata.to_json())
    assert [g.kind for g in gpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    assert [g.kind for g in cpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    (accelerator,) = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert not cpu.HasField("optimization")
    with pytest.raises(text_format.ParseError):  # a misspelt field fails: the parse is a real check
        text_format.Parse((folder / "config.pbtxt").read_text().replace("max_batch_size", "max_batch_sise"),
                          model_config_pb2.ModelConfig())


def test_export_triton_with_an_engine_adds_the_bare_plan_and_refuses_one_that_does_not_fit(tiny_run, tmp_path):
    """The engine file's format is rdedge's own (header + plan); the plan bytes are opaque here (no GPU to build
    one), so a stand-in byte string plays the plan."""
    onnx_path = tiny_run[1].path
    metadata = Detector(onnx_path).metadata
    engine = tmp_path / "model_fp16.engine"
    info = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "precision": "fp16"}
    engine_metadata = metadata.replace(precision="fp16")
    write_engine_file(engine, engine_metadata, EngineInfo(**info, max_batch=8), b"PLAN" * 100)
    folder = write_model_repository(onnx_path, tmp_path / "repo", name="m", max_batch=8, engine=engine)
    assert (folder / "1" / "model.plan").read_bytes() == b"PLAN" * 100  # the bare plan, without rdedge's header
    trt = parse_config(folder / "configs" / "tensorrt.pbtxt")
    assert trt.platform == "tensorrt_plan" and trt.default_model_filename == "model.plan"
    assert json.loads(trt.parameters["rdedge"].string_value)["precision"] == "fp16"  # the engine's own metadata

    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    small = tmp_path / "small.engine"
    write_engine_file(small, engine_metadata, EngineInfo(**info, max_batch=4), b"PLAN")
    with pytest.raises(TritonExportError, match=r"batches 1\.\.4.*--max-batch 8"):
        write_model_repository(onnx_path, tmp_path / "repo", name="m", max_batch=8, engine=small)
    static = tmp_path / "dla.engine"
    write_engine_file(static, engine_metadata, EngineInfo(**info, max_batch=8, min_batch=8), b"PLAN")
    with pytest.raises(TritonExportError, match="static-batch"):
        write_model_repository(onnx_path, tmp_path / "repo", name="m", max_batch=8, engine=static)
    other = tmp_path / "other.engine"
    write_engine_file(other, metadata.replace(weights_sha256="0" * 64), EngineInfo(**info, max_batch=8), b"PLAN")
    with pytest.raises(TritonExportError, match="another model"):
        write_model_repository(onnx_path, tmp_path / "repo", name="m", max_batch=8, engine=other)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # refused: the model is untouched
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["m"]  # and no staging folder is left behind
    write_model_repository(onnx_path, tmp_path / "repo", name="m", max_batch=8)  # replaced whole: no stale plan
    assert not (folder / "1" / "model.plan").exists() and not (folder / "configs" / "tensorrt.pbtxt").exists()
    with pytest.raises(TritonExportError, match="folder name"):
        write_model_repository(onnx_path, tmp_path / "repo", name="../escape")


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_remote_detector_gives_the_in_process_results_on_real_images(served, real_images, scheme):
    server, folder = served
    local = Detector(folder / "1" / "model.onnx")
    address = server.grpc if scheme == "grpc" else server.http
    with Detector(f"{scheme}://{address}/{MODEL}") as remote:
        assert remote.backend_name == "triton" and remote.metadata == local.metadata
        assert remote.threshold == local.threshold
        for batch in (real_images[:1], real_images[:8], real_images[:11]):  # 11: two requests of max batch 8
            ours, theirs = remote.predict_batch(batch, anomaly_maps=True), local.predict_batch(batch)
            for a, b in zip(ours, theirs, strict=True):
                assert a.score == pytest.approx(b.score, rel=1e-5, abs=1e-6)
                np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-5, atol=1e-6)
                assert (a.is_anomaly, a.normalized_score) == (b.is_anomaly, pytest.approx(b.normalized_score))
        plain = remote(real_images[0])  # maps only when asked for
        assert plain.anomaly_map is None and plain.score == pytest.approx(local(real_images[0]).score, rel=1e-5)
        with pytest.raises(InvalidInputError, match="anomaly_maps=True"):
            _ = plain.mask
        remote.threshold = plain.score - 1e-3  # settable at run time, applied to the next call
        assert remote(real_images[0]).is_anomaly and remote(real_images[0]).threshold == plain.score - 1e-3


def test_dynamic_batching_forms_batches_from_concurrent_single_image_requests(served, real_images):
    server, _ = served
    before = {b["batch_size"]: b["compute_infer"]["count"] for b in server.statistics(MODEL)["batch_stats"]}
    detector = Detector(f"grpc://{server.grpc}/{MODEL}")
    barrier = threading.Barrier(16)

    def one(k: int) -> None:
        barrier.wait()
        detector(real_images[k])

    threads = [threading.Thread(target=one, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def grown() -> dict[int, int]:
        after = {b["batch_size"]: b["compute_infer"]["count"] for b in server.statistics(MODEL)["batch_stats"]}
        return {size: int(after[size]) - int(before.get(size, 0)) for size in after}

    # every image run exactly once (the server records an execution just after answering it)
    assert wait_until(lambda: sum(size * n for size, n in grown().items()) == 16), grown()
    grown = grown()
    assert any(size > 1 and n > 0 for size, n in grown.items()), grown  # and some of them together


def test_sixteen_clients_fifty_requests_each_are_all_answered_once_with_their_own_image(served, real_images):
    server, folder = served
    expected = [r.score for r in Detector(folder / "1" / "model.onnx").predict_batch(real_images)]
    assert len({round(s, 5) for s in expected}) == len(expected)  # distinct images, distinct scores: matchable
    answers: list[list[float]] = [[] for _ in range(16)]
    errors: list[BaseException] = []

    def client(c: int) -> None:
        try:
            with Detector(f"grpc://{server.grpc}/{MODEL}") as detector:
                for i in range(50):
                    answers[c].append(detector(real_images[(c + i) % 16]).score)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:3]
    assert [len(a) for a in answers] == [50] * 16
    for c in range(16):
        for i, score in enumerate(answers[c]):
            assert score == pytest.approx(expected[(c + i) % 16], rel=1e-5, abs=1e-6), (c, i)


def test_addresses_that_serve_no_rdedge_model_give_typed_errors(served):
    server, _ = served
    with pytest.raises(ServerUnavailableError, match="no Triton server answers"):
        Detector(f"grpc://127.0.0.1:{free_ports(1)[0]}/{MODEL}")
    with pytest.raises(ServerUnavailableError):
        Detector(f"http://127.0.0.1:{free_ports(1)[0]}/{MODEL}")
    with pytest.raises(ModelNotReadyError, match="no model 'missing' ready"):
        Detector(f"grpc://{server.grpc}/missing")
    with pytest.raises(ModelLoadError, match="carries no rdedge metadata"):
        Detector(f"http://{server.http}/not_rdedge")
    with pytest.raises(ModelLoadError, match="grpc://HOST:PORT/NAME"):
        Detector("grpc://127.0.0.1:8001/")
    with pytest.raises(ModelLoadError, match="backend 'triton'"):
        Detector(f"grpc://{server.grpc}/{MODEL}", backend="onnxruntime")
    with pytest.raises(ModelLoadError, match="give its address"):
        Detector(Path(served[1]) / "1" / "model.onnx", backend="triton")


def test_a_server_that_does_not_answer_times_out_with_a_typed_error():
    """A port that accepts connections and never answers (a hung server): each scheme gives up after timeout_s."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        for scheme in ("grpc", "http"):
            started = time.monotonic()
            with pytest.raises(ServerUnavailableError):
                Detector(f"{scheme}://127.0.0.1:{port}/{MODEL}", timeout_s=1.0)
            assert time.monotonic() - started < 15, scheme


def test_a_remote_detector_streams_a_video_like_the_local_one(served, bottle_subset, tmp_path):
    from benchmarks.soak import bottle_frames, write_video

    server, folder = served
    video = write_video(bottle_frames(bottle_subset, 96), tmp_path / "bottle.avi", 12)
    with Detector(folder / "1" / "model.onnx").stream(video) as stream:
        local = list(stream)
    with Detector(f"grpc://{server.grpc}/{MODEL}") as remote, remote.stream(video, overlay=True) as stream:
        ours = list(stream)
    assert [r.frame_index for r in ours] == list(range(12))
    np.testing.assert_allclose([r.score for r in ours], [r.score for r in local], rtol=1e-5)
    assert all(r.overlay is not None and r.overlay.shape == r.frame.shape for r in ours)  # maps came for overlays


def test_importing_the_sdk_loads_no_triton_client():
    code = ("import sys, sdk, sdk.backends; from sdk import Detector; "
            "print(sorted(m for m in sys.modules if m.startswith(('tritonclient', 'grpc'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "[]"


def test_a_server_killed_mid_load_gives_typed_errors_and_the_client_recovers_after_a_restart(served, real_images):
    """Last in this module: it kills and restarts the shared server."""
    server, _ = served
    detector = Detector(f"grpc://{server.grpc}/{MODEL}", timeout_s=5)
    http = Detector(f"http://{server.http}/{MODEL}", timeout_s=5)
    outcomes: list[object] = []
    started = threading.Event()

    def load() -> None:
        for k in range(400):
            try:
                outcomes.append(detector(real_images[k % 16]).score)
            except Exception as exc:  # the kind is checked below
                outcomes.append(exc)
                return
            started.set()

    worker = threading.Thread(target=load)
    worker.start()
    assert started.wait(30)
    server.kill()
    worker.join(timeout=60)
    assert not worker.is_alive()
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], ServerUnavailableError), failures
    assert all(isinstance(o, float) for o in outcomes[:-1]) and len(outcomes) > 1
    for remote in (detector, http):  # each later call says the same, at once
        with pytest.raises(ServerUnavailableError):
            remote(real_images[0])
    server.start()
    for remote in (detector, http):  # the same Detector objects recover: no reconnect by hand
        deadline = 60
        while True:
            try:
                remote(real_images[0])
                break
            except ServerUnavailableError:
                deadline -= 1
                assert deadline > 0, "the client did not recover within 60 s of the restart"
                threading.Event().wait(1.0)
    detector.close()
    http.close()
