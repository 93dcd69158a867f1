"""A model served by Triton Inference Server: ``Detector("grpc://host:8001/NAME")`` or ``http://host:8000/NAME``.

The server runs the same exported graph (a repository written by ``rdedge export-triton``); the client sends the
prepared uint8 batch and receives the scores, and the anomaly maps only when asked for (the FP32 map is larger than
the uint8 image). Metadata (threshold, score normalisation, image size, method, precision) comes from the model's
config on the server (its ``rdedge`` parameter), so the address is all a client needs.

``tritonclient`` is an optional extra: ``pip install rdedge[triton]``. Calls may come from several threads: each
thread gets its own client (tritonclient's HTTP client is not thread-safe). A batch larger than the model's
``max_batch_size`` is sent in several requests.

Errors: :class:`~sdk.errors.ServerUnavailableError` for a server that cannot be reached or does not answer in time
(at load or at any call; the next call tries again, so a client recovers once the server is back),
:class:`~sdk.errors.ModelNotReadyError` for a model the server does not have ready, and
:class:`~sdk.errors.ModelLoadError` for a model whose config is not rdedge's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..contract import INPUT_NAME, METADATA_KEY, OUTPUT_MAP, OUTPUT_SCORE
from ..errors import DetectorClosedError, InferenceError, ModelLoadError, ModelNotReadyError, ServerUnavailableError
from ..metadata import ModelMetadata
from .base import Backend

SCHEMES = ("grpc", "http")
"""URL schemes a Triton model address may use."""
DEFAULT_TIMEOUT_S = 10.0


def is_triton_url(model: object) -> bool:
    """Whether ``model`` is a Triton address (``grpc://`` or ``http://``) rather than a file."""
    return isinstance(model, str) and urlsplit(model).scheme in SCHEMES and "://" in model


@dataclass(frozen=True)
class TritonAddress:
    """A parsed model address: ``scheme://host:port/name``."""

    scheme: str
    host: str
    port: int
    model: str

    @classmethod
    def parse(cls, url: str) -> TritonAddress:
        """Parse ``grpc://host:port/NAME`` or ``http://host:port/NAME`` (default ports 8001 and 8000).

        Raises:
            ModelLoadError: Another scheme, no host or no model name.
        """
        parts = urlsplit(url)
        name = parts.path.strip("/")
        if parts.scheme not in SCHEMES or not parts.hostname or not name or "/" in name:
            raise ModelLoadError(f"a Triton model address is grpc://HOST:PORT/NAME or http://HOST:PORT/NAME, got "
                                 f"{url!r}")
        try:
            port = parts.port or (8001 if parts.scheme == "grpc" else 8000)
        except ValueError as exc:
            raise ModelLoadError(f"bad port in {url!r}: {exc}") from exc
        return cls(parts.scheme, parts.hostname, port, name)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.endpoint}/{self.model}"


def import_client(scheme: str) -> Any:
    """``tritonclient.grpc`` or ``tritonclient.http``, or a :class:`ModelLoadError` saying how to install it."""
    try:
        if scheme == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
    except ImportError as exc:
        raise ModelLoadError(
            f"a Triton model needs tritonclient: `pip install rdedge[triton]` ({exc})") from exc
    return client


def metadata_from_config(config: dict[str, Any], address: TritonAddress) -> tuple[ModelMetadata, int]:
    """The rdedge metadata and ``max_batch_size`` of a model config (as JSON), checked against rdedge's signature.

    Raises:
        ModelLoadError: No ``rdedge`` parameter, or inputs/outputs/sizes that are not the metadata's.
    """
    try:
        metadata = ModelMetadata.from_json(config["parameters"][METADATA_KEY]["string_value"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{address}: the model's config carries no rdedge metadata (parameter "
                             f"{METADATA_KEY!r}); write its repository with `rdedge export-triton` ({exc})") from exc
    inputs = {i["name"]: [int(d) for d in i.get("dims", [])] for i in config.get("input", [])}
    outputs = {o["name"] for o in config.get("output", [])}
    height, width = metadata.image_size
    if inputs != {INPUT_NAME: [height, width, 3]} or outputs != {OUTPUT_MAP, OUTPUT_SCORE}:
        raise ModelLoadError(f"{address}: the model's inputs {inputs} and outputs {sorted(outputs)} are not "
                             f"rdedge's ({INPUT_NAME} [{height}, {width}, 3] → {OUTPUT_MAP}, {OUTPUT_SCORE})")
    return metadata, int(config.get("max_batch_size", 0))


class TritonBackend(Backend):
    """Runs an rdedge model on a Triton Inference Server (see the module text).

    Args:
        url: ``grpc://host:port/NAME`` or ``http://host:port/NAME``.
        timeout_s: Time-out of every request (and of connecting), in seconds.

    Raises:
        ServerUnavailableError: The server cannot be reached.
        ModelNotReadyError: The server does not have the model ready.
        ModelLoadError: tritonclient is missing, or the model's config is not rdedge's.
    """

    maps_by_default = False

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.address = TritonAddress.parse(url)
        self.path = str(self.address)
        self.timeout_s = float(timeout_s)
        self._module = import_client(self.address.scheme)
        from tritonclient.utils import InferenceServerException

        self._server_errors = (InferenceServerException, OSError)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False
        client = self._client()
        try:
            live = client.is_server_live(**self._deadline)
        except self._server_errors as exc:
            raise ServerUnavailableError(f"no Triton server answers at {self.address.endpoint}: {exc}") from exc
        if not live:
            raise ServerUnavailableError(f"the Triton server at {self.address.endpoint} is not live")
        try:
            ready = client.is_model_ready(self.address.model, **self._deadline)
            config = client.get_model_config(self.address.model, **self._json, **self._deadline) if ready else None
        except self._server_errors as exc:
            raise ServerUnavailableError(f"the Triton server at {self.address.endpoint} failed: {exc}") from exc
        if not ready:
            raise ModelNotReadyError(f"the Triton server at {self.address.endpoint} has no model "
                                     f"{self.address.model!r} ready (see its log and /v2/repository/index)")
        config = config.get("config", config)  # gRPC's JSON wraps the config
        self.metadata, self.max_batch = metadata_from_config(config, self.address)

    @property
    def _json(self) -> dict[str, Any]:
        return {"as_json": True} if self.address.scheme == "grpc" else {}

    @property
    def _deadline(self) -> dict[str, Any]:
        """The per-call time-out argument (gRPC); the HTTP client has its time-outs from its constructor."""
        return {"client_timeout": self.timeout_s} if self.address.scheme == "grpc" else {}

    def _client(self) -> Any:
        """This thread's client (created on first use)."""
        if self._closed:
            raise DetectorClosedError(f"{self.path} was closed: open a new Detector")
        client = getattr(self._local, "client", None)
        if client is None:
            if self.address.scheme == "grpc":
                client = self._module.InferenceServerClient(self.address.endpoint)
            else:
                client = self._module.InferenceServerClient(self.address.endpoint,
                                                            connection_timeout=self.timeout_s,
                                                            network_timeout=self.timeout_s)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    @property
    def name(self) -> str:
        return "triton"

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = self._run(batch, maps=True)
        assert maps is not None
        return maps, scores

    def infer_scores(self, batch: np.ndarray) -> np.ndarray:
        """Scores only: the server computes the maps but does not send them."""
        return self._run(batch, maps=False)[1]

    def _run(self, batch: np.ndarray, maps: bool) -> tuple[np.ndarray | None, np.ndarray]:
        step = self.max_batch or len(batch)
        parts = [self._request(batch[i : i + step], maps) for i in range(0, len(batch), step)]
        scores = np.concatenate([s for _, s in parts])
        return (np.concatenate([m for m, _ in parts]) if maps else None), scores

    def _request(self, batch: np.ndarray, maps: bool) -> tuple[np.ndarray | None, np.ndarray]:
        client, module = self._client(), self._module
        image = module.InferInput(INPUT_NAME, list(batch.shape), "UINT8")
        image.set_data_from_numpy(np.ascontiguousarray(batch))
        wanted = [module.InferRequestedOutput(OUTPUT_SCORE)]
        if maps:
            wanted.append(module.InferRequestedOutput(OUTPUT_MAP))
        try:
            result = client.infer(self.address.model, [image], outputs=wanted, **self._deadline)
        except self._server_errors as exc:
            status = str(getattr(exc, "status", lambda: "")() or "")
            if isinstance(exc, OSError) or any(s in status for s in ("UNAVAILABLE", "DEADLINE_EXCEEDED")) or (
                    "timed out" in str(exc).lower() or "connect" in str(exc).lower()):
                raise ServerUnavailableError(f"the Triton server at {self.address.endpoint} did not answer: "
                                             f"{exc}") from exc
            raise InferenceError(f"Triton could not run {self.address}: {exc}") from exc
        scores = result.as_numpy(OUTPUT_SCORE)
        anomaly_maps = result.as_numpy(OUTPUT_MAP) if maps else None
        if scores is None or (maps and anomaly_maps is None):
            raise InferenceError(f"{self.address} answered without the outputs asked for")
        return anomaly_maps, scores.reshape(len(batch)).astype(np.float32, copy=False)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:  # closing a client of a dead server must not raise
                pass
