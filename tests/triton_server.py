"""A real Triton Inference Server on 127.0.0.1 for the tests: tritonserver 2.51 from the ``nvidia-pytriton`` wheel.

That wheel bundles tritonserver with its **Python backend only** (no onnxruntime or TensorRT backend), so the tests
serve a repository written by ``rdedge export-triton`` with a *CPU stand-in config*: the same inputs, outputs,
dynamic batching and rdedge parameters, ``backend: "python"`` instead of ``platform: "onnxruntime_onnx"``, and a
``model.py`` that runs the same ``model.onnx`` with onnxruntime. The production configs themselves are checked by
parsing them into Triton's ``ModelConfig`` protobuf.

The server gets a virtual environment of its own (the wheel pins ``numpy<2``), created on first use under
``.cache/triton/``. Pitfalls handled here (see ``../shared/research/serving.md``): the Python-backend stub links
``libpython3.11.so`` and must find the venv interpreter's copy (its ``LIBDIR`` first on ``LD_LIBRARY_PATH``); the
stub imports packages through the ``python3`` on ``PATH`` (the venv's); the binary needs the wheel's
``nvidia_pytriton.libs``; every endpoint binds 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVER_VENV = REPO / ".cache" / "triton" / "server-venv"
SERVER_PACKAGES = ("nvidia-pytriton==0.7.0", "onnxruntime>=1.17", "numpy<2")
"""The server environment: tritonserver (in pytriton's wheel), and onnxruntime for the stand-in model."""

STAND_IN_MODEL = '''"""CPU stand-in for Triton's onnxruntime backend (tests only): 1/model.onnx run by onnxruntime."""
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        images = [pb_utils.get_input_tensor_by_name(r, "image").as_numpy() for r in requests]
        maps, scores = self.session.run(["anomaly_map", "score"], {"image": np.concatenate(images)})
        responses, start = [], 0
        for request, batch in zip(requests, images):
            end = start + len(batch)
            outputs = [pb_utils.Tensor("score", scores[start:end])]
            if "anomaly_map" in request.requested_output_names():
                outputs.append(pb_utils.Tensor("anomaly_map", maps[start:end]))
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            start = end
        return responses
'''


def ensure_server_venv(path: Path = SERVER_VENV) -> Path:
    """The server environment's Python, created and filled on first use (again when the package list changes)."""
    python = path / "bin" / "python"
    stamp = path / ".rdedge-triton"
    want = json.dumps(SERVER_PACKAGES)
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    shutil.rmtree(path, ignore_errors=True)
    venv.EnvBuilder(with_pip=True).create(path)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *SERVER_PACKAGES], check=True)
    stamp.write_text(want)
    return python


def server_files(python: Path) -> tuple[Path, Path, dict[str, str]]:
    """(tritonserver binary, backend directory, environment) of a server venv, the Python stub put in place."""
    site = Path(subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    root = site / "pytriton" / "tritonserver"
    backends = root / "backends"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = backends / "python" / "triton_python_backend_stub"
    if not stub.exists():
        shutil.copy2(root / "python_backend_stubs" / version / "triton_python_backend_stub", stub)
    libdir = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    env = dict(os.environ)
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [libdir, str(site / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH", "")])
    env.pop("PYTHONPATH", None)
    return root / "bin" / "tritonserver", backends, env


def stand_in_repository(model_folder: Path, out: Path) -> Path:
    """A copy of a model folder written by ``rdedge export-triton`` with its config switched to the CPU stand-in
    (Python backend running the same ONNX; inputs, outputs, batching and parameters unchanged) → the new folder."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    target = out / model_folder.name
    shutil.copytree(model_folder, target)
    shutil.rmtree(target / "configs")
    config = text_format.Parse((model_folder / "configs" / "cpu.pbtxt").read_text(), model_config_pb2.ModelConfig())
    config.platform = ""
    config.backend = "python"
    (target / "config.pbtxt").write_text(text_format.MessageToString(config))
    (target / "1" / "model.py").write_text(STAND_IN_MODEL)
    return target


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class TritonServer:
    """tritonserver on 127.0.0.1 serving ``repository``; ``start``/``stop``/``kill``, same ports across restarts."""

    def __init__(self, repository: Path, python: Path, log: Path) -> None:
        self.repository = repository
        self.binary, self.backends, self.env = server_files(python)
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and wait until it reports ready (raises with its log otherwise)."""
        command = [str(self.binary), f"--model-repository={self.repository}",
                   f"--backend-directory={self.backends}", "--exit-on-error=true", "--strict-readiness=true",
                   "--http-address=127.0.0.1", f"--http-port={self.http_port}",
                   "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
                   "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({self.process.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"tritonserver not ready in {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """Kill the server at once (as a crash would)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def statistics(self, model: str) -> dict:
        """The server's inference statistics of ``model`` (HTTP statistics API)."""
        with urllib.request.urlopen(f"http://{self.http}/v2/models/{model}/stats", timeout=5) as response:
            return json.loads(response.read())["model_stats"][0]
