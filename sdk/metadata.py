"""The model metadata that travels inside every exported model.

One schema, written by ``export`` (into the ONNX ``metadata_props`` under :data:`METADATA_KEY`) and read by the SDK
backends. It holds everything the runtime needs besides the graph itself: the input size, the calibrated threshold
and the score normalisation, plus provenance (method, backbone, versions, a hash of the weights).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from .contract import PRECISION_NAMES, ImageSize
from .errors import ModelLoadError

SCHEMA_VERSION = 3
"""2: the calibration has a pixel threshold and a source (schema 1 models read with the image threshold as pixel
threshold); 3: ``image_size`` is ``[height, width]`` (models up to schema 2 hold one int, a square side). An SDK
older than the model's schema refuses it with "upgrade rdedge"."""


def _mean_std(values: list[float], what: str) -> tuple[float, float]:
    """Mean and standard deviation (ddof=1) of at least two finite values."""
    if len(values) < 2:
        raise ValueError(f"need at least 2 validation {what} to calibrate, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"validation {what} contain NaN or infinity")
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class ScoreCalibration:
    """Statistics of a graph's outputs on held-out *good* validation images, and the two thresholds derived from them.

    Only good images are used, never the test set. Two thresholds, because the image score is not always a map
    value (DRD's refined score is ``max(map) · (1 + v)``):

    * the **image threshold** ``threshold = mean + sigmas · std`` of the validation *scores* decides the verdict;
    * the **pixel threshold** ``pixel_threshold = map_max_mean + sigmas · map_max_std`` of the validation images'
      *map maxima* decides which map pixels are anomalous (masks, overlays). Where the score is the map's maximum
      (RD4AD, RD++, REASON) the two are equal.

    Normalised scores map the validation mean to 0 and the image threshold to 0.5 (see :meth:`normalize`).

    Attributes:
        mean: Mean validation score.
        std: Standard deviation (ddof=1) of the validation scores.
        minimum: Smallest validation score.
        maximum: Largest validation score.
        n_images: Number of validation images.
        sigmas: Number of standard deviations above the mean at which both thresholds sit.
        threshold: The calibrated image threshold on raw scores.
        map_max_mean: Mean of the validation images' anomaly-map maxima (``None`` in models from before it existed).
        map_max_std: Their standard deviation (ddof=1).
        pixel_threshold: The calibrated threshold on anomaly-map values; see :attr:`pixel`.
        source: What produced the calibrated outputs (graph, precision, runtime, image count).
    """

    mean: float
    std: float
    minimum: float
    maximum: float
    n_images: int
    sigmas: float
    threshold: float
    map_max_mean: float | None = None
    map_max_std: float | None = None
    pixel_threshold: float | None = None
    source: str = ""

    @classmethod
    def from_scores(cls, scores: Any, sigmas: float = 3.0, map_maxima: Any = None,
                    source: str = "") -> ScoreCalibration:
        """Calibrate from validation scores of good images and, for the pixel threshold, their maps' maxima.

        Args:
            scores: Image scores of the held-out good images.
            sigmas: Standard deviations above the mean for both thresholds.
            map_maxima: The maximum of each image's anomaly map; without them the pixel threshold is the image one.
            source: What produced the outputs, for the metadata.
        """
        values = [float(s) for s in scores]
        mean, std = _mean_std(values, "scores")
        pixel: dict[str, float] = {}
        if map_maxima is not None:
            map_mean, map_std = _mean_std([float(m) for m in map_maxima], "map maxima")
            pixel = {"map_max_mean": map_mean, "map_max_std": map_std, "pixel_threshold": map_mean + sigmas * map_std}
        return cls(mean=mean, std=std, minimum=min(values), maximum=max(values), n_images=len(values), sigmas=sigmas,
                   threshold=mean + sigmas * std, source=source, **pixel)

    @property
    def pixel(self) -> float:
        """The pixel threshold; the image threshold for models calibrated before pixel thresholds existed."""
        return self.threshold if self.pixel_threshold is None else self.pixel_threshold

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
        image_size: Model input (and anomaly map) size, height x width; an int or ``"HxW"`` given to the constructor
            is parsed (:meth:`sdk.contract.ImageSize.parse`).
        calibration: Score statistics and threshold from held-out good images.
        precision: Numeric precision of the graph (a name of :data:`sdk.contract.PRECISIONS`).
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
    image_size: ImageSize
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

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "image_size", ImageSize.parse(self.image_size))
        except ValueError as exc:
            raise ModelLoadError(f"model metadata has a malformed image size: {exc}") from exc

    def without_local_paths(self) -> ModelMetadata:
        """A copy fit to ship: training provenance keeps names (dataset spec or folder name, category, file names,
        hashes), never a path of the machine that trained or exported it."""
        from .datasets import FOLDER_TEST_KEYS, portable_spec

        training = dict(self.training)
        if training.get("data"):
            training["data"] = portable_spec(str(training["data"]))
        for key in ("out", "weights", *FOLDER_TEST_KEYS):
            if training.get(key):
                training[key] = os.path.basename(os.path.normpath(str(training[key])))
        return self.replace(training=training)

    def to_json(self) -> str:
        """Serialise to a JSON string, in this SDK's schema (:data:`SCHEMA_VERSION`), whichever schema it was read
        from."""
        return json.dumps({**dataclasses.asdict(self), "schema_version": SCHEMA_VERSION}, sort_keys=True)

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
            if raw.get("precision", "fp32") not in PRECISION_NAMES:
                raise ModelLoadError(f"model metadata names an unknown precision {raw['precision']!r}")
            return cls(calibration=calibration, **{k: v for k, v in raw.items() if k in known})
        except (KeyError, TypeError) as exc:
            raise ModelLoadError(f"model metadata is incomplete or malformed: {exc}") from exc
