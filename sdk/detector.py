"""The :class:`Detector`: load an exported model, give it images, get :class:`Result` objects."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from .backends import Backend, load_backend
from .errors import InferenceError, InvalidInputError
from .image import read_image, resize_square, to_rgb_uint8
from .metadata import ModelMetadata
from .stream import Source, Stream

ImageLike = np.ndarray | str | os.PathLike[str]


@dataclass
class Result:
    """What the detector says about one image.

    Attributes:
        score: Raw image score (maximum of the smoothed anomaly map), as the graph computes it.
        normalized_score: Score mapped to [0, 1]; 0.5 is the threshold (see ``ScoreCalibration.normalize``).
        is_anomaly: Whether ``score`` exceeds the threshold.
        threshold: Threshold in force when the image was processed.
        anomaly_map: (S, S) float32 anomaly map at model size.
        input_size: (height, width) of the image given.
        latency_ms: Wall time of pre-processing, inference and post-processing; for a batch, the batch's time
            divided by its size.
    """

    score: float
    normalized_score: float
    is_anomaly: bool
    threshold: float
    anomaly_map: np.ndarray
    input_size: tuple[int, int]
    latency_ms: float
    _full_map: np.ndarray | None = field(default=None, repr=False)

    @property
    def mask(self) -> np.ndarray:
        """Binary (S, S) mask of the pixels whose anomaly value exceeds the threshold."""
        return self.anomaly_map > self.threshold

    def anomaly_map_at_input_size(self) -> np.ndarray:
        """The anomaly map resized (bilinear) to the input image's size; computed once, on request."""
        if self._full_map is None:
            h, w = self.input_size
            self._full_map = cv2.resize(self.anomaly_map, (w, h), interpolation=cv2.INTER_LINEAR)
        return self._full_map

    def mask_at_input_size(self) -> np.ndarray:
        """Binary mask at the input image's size."""
        return self.anomaly_map_at_input_size() > self.threshold


class Detector:
    """Anomaly detector running an exported rdedge model.

    The model file is the whole detector: normalisation, network, anomaly map and score are inside it, and its
    metadata gives the input size, threshold and score normalisation. The backend is chosen by the file suffix.

    Example:
        >>> det = Detector("model.onnx")
        >>> result = det("part.png")
        >>> result.score, result.is_anomaly

    Args:
        model: Path of an exported model: ``.onnx`` (ONNX Runtime) or ``.engine`` (TensorRT, written by
            ``rdedge build-engine``).
        threshold: Raw-score threshold to use instead of the calibrated one.
        **backend_options: Passed to the backend (e.g. ``providers`` or ``intra_op_threads`` for onnxruntime;
            ``device`` or ``cuda_graph`` for TensorRT).

    Raises:
        ModelLoadError: The file cannot be loaded.

    Thread safety: one Detector may be called from several threads and gives the same results as from one. It
    keeps no per-call state (the threshold is read once per call); onnxruntime sessions run calls concurrently,
    the TensorRT backend serialises them with a lock (one execution context). For parallel TensorRT inference,
    use one Detector per thread.
    """

    def __init__(self, model: str | os.PathLike[str], *, threshold: float | None = None, **backend_options: Any):
        self.backend: Backend = load_backend(model, **backend_options)
        self.metadata: ModelMetadata = self.backend.metadata
        self._threshold = self.metadata.calibration.threshold
        if threshold is not None:
            self.threshold = threshold

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
    def image_size(self) -> int:
        """Side of the square model input."""
        return self.metadata.image_size

    @property
    def threshold(self) -> float:
        """Raw-score threshold; settable at run time (the calibrated value is ``metadata.calibration.threshold``)."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value):
            raise InvalidInputError(f"threshold must be a finite number, got {value}")
        self._threshold = value

    def normalize(self, score: float) -> float:
        """Normalise a raw score: validation mean → 0, current threshold → 0.5, clipped to [0, 1]."""
        return self.metadata.calibration.normalize(score, self._threshold)

    def __call__(self, image: ImageLike, *, rgb: bool = False) -> Result:
        """Score one image.

        Args:
            image: Path of an image file, or an HxW / HxWx3 / HxWx4 uint8 (or uint16) array, any size.
            rgb: Whether a colour array is RGB; OpenCV's BGR is assumed otherwise.
        """
        return self.predict_batch([image], rgb=rgb)[0]

    def predict_batch(self, images: Sequence[ImageLike], *, rgb: bool = False) -> list[Result]:
        """Score several images in one inference call.

        Args:
            images: Paths or arrays, as for :meth:`__call__`; sizes may differ.
            rgb: Whether colour arrays are RGB.

        Raises:
            InvalidInputError: An empty sequence, or an image that cannot be used.
            ImageReadError: A path that cannot be read.
        """
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        if len(images) == 0:
            raise InvalidInputError("predict_batch needs at least one image")
        start = time.perf_counter()
        size = self.image_size
        batch = np.empty((len(images), size, size, 3), dtype=np.uint8)
        input_sizes = []
        for i, image in enumerate(images):
            if isinstance(image, (str, os.PathLike)):
                image = read_image(image)
                rgb_i = False
            else:
                rgb_i = rgb
            array = to_rgb_uint8(image, rgb=rgb_i)
            input_sizes.append((int(array.shape[0]), int(array.shape[1])))
            batch[i] = resize_square(array, size)
        maps, scores = self.backend.infer(batch)
        if not (np.isfinite(scores).all() and np.isfinite(maps).all()):
            raise InferenceError(
                f"{self.backend.name} returned non-finite scores or anomaly maps for {self.backend.path}: the model "
                "or engine is broken (re-export it; for an engine, rebuild it with rdedge build-engine)"
            )
        latency_ms = (time.perf_counter() - start) * 1000.0 / len(images)
        return [
            Result(
                score=float(scores[i]),
                normalized_score=self.normalize(float(scores[i])),
                is_anomaly=bool(scores[i] > self._threshold),
                threshold=self._threshold,
                anomaly_map=maps[i],
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
            source: One source or a sequence of sources (see :mod:`sdk.stream`).
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
        blank = np.zeros((batch_size, self.image_size, self.image_size, 3), dtype=np.uint8)
        for _ in range(iterations):
            self.backend.infer(blank)

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"Detector({str(self.backend.path)!r}, backend={self.backend.name}, method={m.method}, "
            f"backbone={m.backbone}, size={m.image_size}, threshold={self._threshold:.4g})"
        )
