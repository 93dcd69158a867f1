"""The model metadata that travels inside every exported model.

One schema, written by ``export`` (into the ONNX ``metadata_props`` under :data:`METADATA_KEY`) and read by the SDK
backends. It holds everything the runtime needs besides the graph itself: the input size, the calibrated threshold
and the score normalisation, plus provenance (method, backbone, versions, a hash of the weights).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ModelLoadError

METADATA_KEY = "rdedge"
"""Key of the JSON metadata entry in an ONNX model's ``metadata_props``."""

SCHEMA_VERSION = 1
INPUT_NAME = "image"
"""Graph input: uint8 RGB images, NHWC, shape (N, size, size, 3)."""
OUTPUT_MAP = "anomaly_map"
"""Graph output: float32 anomaly maps, shape (N, size, size)."""
OUTPUT_SCORE = "score"
"""Graph output: float32 image scores (the maximum of each smoothed map), shape (N,)."""


@dataclass(frozen=True)
class ScoreCalibration:
    """Statistics of image scores on held-out *good* validation images, and the threshold derived from them.

    The threshold is ``mean + sigmas * std`` of the validation scores: only good images are used, never the test set.
    Normalised scores map the validation mean to 0 and the threshold to 0.5 (see :meth:`normalize`).

    Attributes:
        mean: Mean validation score.
        std: Standard deviation (ddof=1) of the validation scores.
        minimum: Smallest validation score.
        maximum: Largest validation score.
        n_images: Number of validation images.
        sigmas: Number of standard deviations above the mean at which the threshold sits.
        threshold: The calibrated image threshold on raw scores; also used on the anomaly map for masks.
    """

    mean: float
    std: float
    minimum: float
    maximum: float
    n_images: int
    sigmas: float
    threshold: float

    @classmethod
    def from_scores(cls, scores: Any, sigmas: float = 3.0) -> ScoreCalibration:
        """Calibrate from a sequence of validation scores of good images."""
        values = [float(s) for s in scores]
        if len(values) < 2:
            raise ValueError(f"need at least 2 validation scores to calibrate, got {len(values)}")
        if not all(math.isfinite(v) for v in values):
            raise ValueError("validation scores contain NaN or infinity")
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        return cls(
            mean=mean,
            std=std,
            minimum=min(values),
            maximum=max(values),
            n_images=len(values),
            sigmas=sigmas,
            threshold=mean + sigmas * std,
        )

    def normalize(self, score: float, threshold: float | None = None) -> float:
        """Map a raw score to [0, 1]: the validation mean gives 0, ``threshold`` gives 0.5, clipped at 1.

        Args:
            score: Raw image score.
            threshold: Threshold to centre on; the calibrated one by default.
        """
        t = self.threshold if threshold is None else threshold
        span = max(t - self.mean, 1e-12)
        return float(min(max(0.5 * (score - self.mean) / span, 0.0), 1.0))


@dataclass(frozen=True)
class ModelMetadata:
    """Everything an exported rdedge model carries besides its graph.

    Attributes:
        method: Training method (``rd4ad``, ...).
        backbone: Teacher network name.
        image_size: Side of the square model input, in pixels.
        calibration: Score statistics and threshold from held-out good images.
        precision: Numeric precision of the graph (``fp32``; later ``fp16``/``int8``).
        weights_sha256: Hash of the trained weights, to tell two models apart.
        input_mean: Per-channel RGB mean (0-1 scale) applied inside the graph.
        input_std: Per-channel RGB standard deviation applied inside the graph.
        versions: Versions of the software that produced the model.
        training: Free-form training provenance (data spec, category, epochs, seed...).
        graph_options: Options the graph was built with (score fusion, DRD refinement), for provenance.
        checks: Results of the export's self-checks (parity with PyTorch...).
        schema_version: Version of this metadata schema.
    """

    method: str
    backbone: str
    image_size: int
    calibration: ScoreCalibration
    precision: str = "fp32"
    weights_sha256: str = ""
    input_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    input_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    versions: dict[str, str] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    graph_options: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """Serialise to a JSON string."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def replace(self, **changes: Any) -> ModelMetadata:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        """Parse metadata written by :meth:`to_json`.

        Raises:
            ModelLoadError: The text is not valid JSON, lacks a required field or has a newer schema.
        """
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"model metadata is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ModelLoadError("model metadata is not a JSON object")
        version = raw.get("schema_version", 0)
        if version > SCHEMA_VERSION:
            raise ModelLoadError(
                f"model metadata schema {version} is newer than this SDK understands ({SCHEMA_VERSION}); "
                "upgrade rdedge"
            )
        try:
            calibration = ScoreCalibration(**raw.pop("calibration"))
            raw["input_mean"] = tuple(raw.get("input_mean", cls.input_mean))
            raw["input_std"] = tuple(raw.get("input_std", cls.input_std))
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(calibration=calibration, **{k: v for k, v in raw.items() if k in known})
        except (KeyError, TypeError) as exc:
            raise ModelLoadError(f"model metadata is incomplete or malformed: {exc}") from exc
