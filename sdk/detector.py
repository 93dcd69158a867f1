"""The :class:`Detector`: load an exported model, give it images, get :class:`Result` objects."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .backends import Backend, load_backend
from .contract import ImageSize
from .errors import InferenceError, InvalidInputError
from .image import prepare_image, read_image
from .metadata import ModelMetadata
from .result import Result
from .sources import Source
from .stream import Stream

ImageLike = np.ndarray | str | os.PathLike[str]


class Detector:
    """Anomaly detector running an exported rdedge model.

    The model file is the whole detector: normalisation, network, anomaly map and score are inside it, and its
    metadata gives the input size, threshold and score normalisation. The backend is chosen by the file suffix.

    Example:
        >>> det = Detector("model.onnx")
        >>> result = det("part.png")
        >>> result.score, result.is_anomaly

    Args:
        model: Path of an exported model: ``.onnx`` (ONNX Runtime, or OpenVINO), ``.xml`` (OpenVINO IR, written
            by ``rdedge export-openvino``) or ``.engine`` (TensorRT, written by ``rdedge build-engine``); or the
            address of a model on a Triton Inference Server, ``grpc://host:8001/NAME`` or ``http://host:8000/NAME``
            (a repository written by ``rdedge export-triton``; ``pip install rdedge[triton]``).
        backend: The runtime: None (default) for the file suffix's (``.onnx``: onnxruntime), ``onnxruntime``,
            ``openvino`` (``pip install rdedge[openvino]``; CPU, or ``device="GPU"``/``"NPU"``), ``tensorrt``, or
            ``auto``: OpenVINO for ``.onnx`` on x86 CPUs where installed, onnxruntime otherwise.
            :attr:`backend_name` says which runs.
        threshold: Image threshold (raw score) to use instead of the calibrated one.
        pixel_threshold: Pixel threshold (anomaly-map value, for masks and overlays) to use instead of the
            calibrated one.
        anomaly_maps: Whether results carry the anomaly map. Default: yes for a local model (it costs nothing),
            no for a Triton server (the FP32 map is larger than the image it sends); ``predict_batch`` can ask
            per call. A result without one has ``anomaly_map=None``.
        **backend_options: Passed to the backend (e.g. ``providers`` or ``intra_op_threads`` for onnxruntime;
            ``device``, ``threads`` or ``performance_hint`` for OpenVINO; ``device`` or ``cuda_graph`` for
            TensorRT; ``timeout_s`` for Triton).

    Raises:
        ModelLoadError: The file cannot be loaded.

    Thread safety: one Detector may be called from several threads and gives the same results as from one. It
    keeps no per-call state (the thresholds are read once per call); onnxruntime sessions run calls concurrently,
    the TensorRT backend serialises them with a lock (one execution context). For parallel TensorRT inference,
    use one Detector per thread.
    """

    def __init__(self, model: str | os.PathLike[str], *, backend: str | None = None,
                 threshold: float | None = None, pixel_threshold: float | None = None,
                 anomaly_maps: bool | None = None, **backend_options: Any):
        self.backend: Backend = load_backend(model, backend, **backend_options)
        self.metadata: ModelMetadata = self.backend.metadata
        self.anomaly_maps = self.backend.maps_by_default if anomaly_maps is None else bool(anomaly_maps)
        self._threshold = self.metadata.calibration.threshold
        self._pixel_threshold = self.metadata.calibration.pixel
        if threshold is not None:
            self.threshold = threshold
        if pixel_threshold is not None:
            self.pixel_threshold = pixel_threshold

    def close(self) -> None:
        """Release the runtime now (TensorRT: device buffers, CUDA graphs, engine; onnxruntime: the session).

        Idempotent. Calls afterwards raise :class:`~sdk.errors.DetectorClosedError`. ``with Detector(...) as det:``
        closes on leaving the block.
        """
        self.backend.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def backend_name(self) -> str:
        """The runtime running the model: ``onnxruntime``, ``openvino``, ``tensorrt`` or ``triton``."""
        return self.backend.name

    @property
    def image_size(self) -> ImageSize:
        """Model input (and anomaly map) size, height x width."""
        return self.metadata.image_size

    @property
    def threshold(self) -> float:
        """Raw-score threshold; settable at run time (the calibrated value is ``metadata.calibration.threshold``)."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._threshold = _finite(value, "threshold")

    @property
    def pixel_threshold(self) -> float:
        """Anomaly-map threshold of masks and overlays; settable at run time (the calibrated value is
        ``metadata.calibration.pixel``)."""
        return self._pixel_threshold

    @pixel_threshold.setter
    def pixel_threshold(self, value: float) -> None:
        self._pixel_threshold = _finite(value, "pixel threshold")

    def normalize(self, score: float) -> float:
        """Normalise a raw score: validation median → 0 (the mean in models of schema ≤ 3), current threshold → 0.5,
        clipped to [0, 1]."""
        return self.metadata.calibration.normalize(score, self._threshold)

    def __call__(self, image: ImageLike, *, rgb: bool = False, anomaly_maps: bool | None = None) -> Result:
        """Score one image.

        Args:
            image: Path of an image file, or an HxW / HxWx3 / HxWx4 uint8 (or uint16) array, any size.
            rgb: Whether a colour array is RGB; OpenCV's BGR is assumed otherwise.
            anomaly_maps: Whether the result carries the anomaly map (default: the Detector's ``anomaly_maps``).
        """
        return self.predict_batch([image], rgb=rgb, anomaly_maps=anomaly_maps)[0]

    def predict_batch(self, images: Sequence[ImageLike], *, rgb: bool = False,
                      anomaly_maps: bool | None = None) -> list[Result]:
        """Score several images in one inference call.

        Args:
            images: Paths or arrays, as for :meth:`__call__`; sizes may differ.
            rgb: Whether colour arrays are RGB.
            anomaly_maps: Whether the results carry anomaly maps (default: the Detector's ``anomaly_maps``).

        Raises:
            InvalidInputError: An empty sequence, or an image that cannot be used.
            ImageReadError: A path that cannot be read.
        """
        if isinstance(images, np.ndarray):
            if images.ndim != 4:
                raise InvalidInputError(
                    f"predict_batch takes a sequence of images or an (N, H, W, C) array, got an array of shape "
                    f"{images.shape}: score one image with detector(image), or pass [image]"
                )
            images = list(images)
        if len(images) == 0:
            raise InvalidInputError("predict_batch needs at least one image")
        start = time.perf_counter()
        size = self.image_size
        batch = np.empty((len(images), *size, 3), dtype=np.uint8)
        input_sizes = []
        for i, image in enumerate(images):
            if isinstance(image, (str, os.PathLike)):
                image, rgb_i = read_image(image), False
            else:
                rgb_i = rgb
            batch[i] = prepare_image(image, size, rgb=rgb_i)
            input_sizes.append((int(image.shape[0]), int(image.shape[1])))
        want_maps = self.anomaly_maps if anomaly_maps is None else anomaly_maps
        if want_maps:
            maps, scores = self.backend.infer(batch)
        else:
            maps, scores = None, self.backend.infer_scores(batch)
        if not (np.isfinite(scores).all() and (maps is None or np.isfinite(maps).all())):
            raise InferenceError(
                f"{self.backend.name} returned non-finite scores or anomaly maps for {self.backend.path}: the model "
                "or engine is broken (re-export it; for an engine, rebuild it with rdedge build-engine)"
            )
        latency_ms = (time.perf_counter() - start) * 1000.0 / len(images)
        threshold, pixel_threshold = self._threshold, self._pixel_threshold  # read once: one pair per call
        return [
            Result(
                score=float(scores[i]),
                normalized_score=self.metadata.calibration.normalize(float(scores[i]), threshold),
                is_anomaly=bool(scores[i] > threshold),
                threshold=threshold,
                pixel_threshold=pixel_threshold,
                anomaly_map=None if maps is None else maps[i],
                input_size=input_sizes[i],
                latency_ms=latency_ms,
            )
            for i in range(len(images))
        ]

    def predict_many(self, images: Iterable[ImageLike], *, batch_size: int = 8, rgb: bool = False) -> list[Result]:
        """Score an iterable of images in batches of ``batch_size``."""
        results: list[Result] = []
        chunk: list[ImageLike] = []
        for image in images:
            chunk.append(image)
            if len(chunk) == batch_size:
                results += self.predict_batch(chunk, rgb=rgb)
                chunk = []
        if chunk:
            results += self.predict_batch(chunk, rgb=rgb)
        return results

    def stream(self, source: Source | Sequence[Source], **options: Any) -> Stream:
        """Score the frames of a camera, video file, URL or GStreamer pipeline (or several, batched).

        Example:
            >>> with det.stream("rtsp://camera/stream", overlay=True) as frames:
            ...     for item in frames:
            ...         print(item.frame_index, item.score, item.is_anomaly)

        Args:
            source: One source or a sequence of sources (see :mod:`sdk.sources`).
            **options: :class:`sdk.stream.Stream` options: ``mode`` (``latest``/``every``/``auto``), ``overlay``,
                ``keep_frames``, ``max_batch``, ``max_frames``, ``backoff``, ``rgb``, ``isolate`` (each source read
                in a child process).

        Returns:
            A :class:`sdk.stream.Stream`: iterate over it for :class:`sdk.stream.StreamResult` objects; use it in
            a ``with`` block so that its reader threads stop when the block is left.
        """
        return Stream(self, source, **options)

    def warmup(self, iterations: int = 3, batch_size: int = 1) -> None:
        """Run the model a few times on blank input, so that the first real call is not slowed by initialisation."""
        blank = np.zeros((batch_size, *self.image_size, 3), dtype=np.uint8)
        for _ in range(iterations):
            self.backend.infer(blank)

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"Detector({str(self.backend.path)!r}, backend={self.backend.name}, method={m.method}, "
            f"backbone={m.backbone}, size={m.image_size}, threshold={self._threshold:.4g}, "
            f"pixel_threshold={self._pixel_threshold:.4g})"
        )


def _finite(value: float, what: str) -> float:
    """``value`` as a finite float, else :class:`InvalidInputError`."""
    value = float(value)
    if not math.isfinite(value):
        raise InvalidInputError(f"{what} must be a finite number, got {value}")
    return value
