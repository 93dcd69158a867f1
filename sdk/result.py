"""The :class:`Result` of scoring one image: score, verdict, thresholds and anomaly map."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .errors import InvalidInputError


@dataclass
class Result:
    """What the detector says about one image.

    Attributes:
        score: Raw image score, as the graph computes it (the maximum of the smoothed anomaly map; DRD: refined).
        normalized_score: Score mapped to [0, 1]; 0.5 is the image threshold (see ``ScoreCalibration.normalize``).
        is_anomaly: Whether ``score`` exceeds ``threshold``.
        threshold: Image threshold in force when the image was processed (decides the verdict).
        pixel_threshold: Pixel threshold in force (decides which anomaly-map pixels are anomalous: masks,
            overlays). Equal to ``threshold`` where the score is the map's maximum.
        anomaly_map: (H, W) float32 anomaly map at model size; None when the Detector was asked for scores only
            (``anomaly_maps=False``, the default for a Triton server).
        input_size: (height, width) of the image given.
        latency_ms: Wall time of pre-processing, inference and post-processing; for a batch, the batch's time
            divided by its size.
    """

    score: float
    normalized_score: float
    is_anomaly: bool
    threshold: float
    pixel_threshold: float
    anomaly_map: np.ndarray | None
    input_size: tuple[int, int]
    latency_ms: float
    _full_map: np.ndarray | None = field(default=None, repr=False)

    def _map(self) -> np.ndarray:
        if self.anomaly_map is None:
            raise InvalidInputError(
                "this result carries no anomaly map: its Detector was asked for scores only (anomaly_maps=False, the "
                "default for a Triton server); pass anomaly_maps=True to the Detector or to predict_batch")
        return self.anomaly_map

    @property
    def mask(self) -> np.ndarray:
        """Binary (H, W) mask, at the model size, of the pixels whose anomaly value exceeds the pixel threshold."""
        return self._map() > self.pixel_threshold

    def anomaly_map_at_input_size(self) -> np.ndarray:
        """The anomaly map resized (bilinear) to the input image's size; computed once, on request."""
        if self._full_map is None:
            h, w = self.input_size
            self._full_map = cv2.resize(self._map(), (w, h), interpolation=cv2.INTER_LINEAR)
        return self._full_map

    def mask_at_input_size(self) -> np.ndarray:
        """Binary mask (pixel threshold) at the input image's size."""
        return self.anomaly_map_at_input_size() > self.pixel_threshold
