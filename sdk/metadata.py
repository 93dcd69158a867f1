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
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .contract import PRECISION_NAMES, ImageSize
from .errors import ModelLoadError

SCHEMA_VERSION = 4
"""2: the calibration has a pixel threshold and a source (schema 1 models read with the image threshold as pixel
threshold); 3: ``image_size`` is ``[height, width]`` (models up to schema 2 hold one int, a square side); 4: the
thresholds are median + k · robust scale (:data:`MEDIAN_MAD`; models up to schema 3 hold mean + k · std and keep it).
An SDK older than the model's schema refuses it with "upgrade rdedge"."""

MEAN_STD = "mean_std"
"""Calibration rule of models up to schema 3: threshold = mean + sigmas · standard deviation."""
MEDIAN_MAD = "median_mad"
"""Calibration rule since schema 4: threshold = median + sigmas · 1.4826 · median absolute deviation (MAD).

For normally distributed good scores both rules give the same threshold on average (1.4826 · MAD estimates the
standard deviation), but one odd good image among the held-out ones moves the median and the MAD by about one
rank, where it drags the mean and inflates the standard deviation without bound: one good KolektorSDD image scored
0.995 among 27 at 0.36-0.6 lifted mean + 3 std to 0.945, above every defective part."""
MAD_TO_STD = 1.4826
"""1 / Φ⁻¹(3/4): the factor that makes the MAD of normal data an estimate of its standard deviation."""


def _mean_std(values: list[float], what: str) -> tuple[float, float]:
    """Mean and standard deviation (ddof=1) of at least two finite values."""
    if len(values) < 2:
        raise ValueError(f"need at least 2 validation {what} to calibrate, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"validation {what} contain NaN or infinity")
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def mad_scale(values: Sequence[float]) -> float:
    """1.4826 · median absolute deviation of ``values``: their standard deviation where they are normal, unmoved by
    a few odd ones; 0.0 where more than half of them are equal."""
    median = statistics.median(values)
    return MAD_TO_STD * statistics.median(abs(v - median) for v in values)


def _median_scale(values: list[float], std: float) -> tuple[float, float]:
    """Median and robust scale (:func:`mad_scale`) of values checked by :func:`_mean_std`; their standard deviation
    ``std`` as scale where more than half the values are equal (MAD 0)."""
    scale = mad_scale(values)
    return statistics.median(values), scale if scale > 0 else std


@dataclass(frozen=True)
class ScoreCalibration:
    """Statistics of a graph's outputs on held-out *good* validation images, and the two thresholds derived from them.

    Only good images are used, never the test set. Two thresholds, because the image score is not always a map
    value (DRD's refined score is ``max(map) · (1 + v)``):

    * the **image threshold** ``threshold = median + sigmas · scale`` of the validation *scores* decides the verdict;
    * the **pixel threshold** ``pixel_threshold = map_max_median + sigmas · map_max_scale`` of the validation images'
      *map maxima* decides which map pixels are anomalous (masks, overlays). Where the score is the map's maximum
      (RD4AD, RD++, REASON) the two are equal.

    ``scale`` is 1.4826 · MAD (:data:`MEDIAN_MAD`), robust to an odd good image. Models calibrated before it
    (:data:`MEAN_STD`, schema up to 3) hold mean + sigmas · std, and keep it: :attr:`rule` says which.

    Normalised scores map the validation centre (:attr:`center`) to 0 and the image threshold to 0.5 (see
    :meth:`normalize`).

    Attributes:
        mean: Mean validation score.
        std: Standard deviation (ddof=1) of the validation scores.
        minimum: Smallest validation score.
        maximum: Largest validation score.
        n_images: Number of validation images.
        sigmas: Number of (robust) standard deviations above the centre at which both thresholds sit.
        threshold: The calibrated image threshold on raw scores.
        map_max_mean: Mean of the validation images' anomaly-map maxima (``None`` in models from before it existed).
        map_max_std: Their standard deviation (ddof=1).
        pixel_threshold: The calibrated threshold on anomaly-map values; see :attr:`pixel`.
        source: What produced the calibrated outputs (graph, precision, runtime, image count).
        rule: How the thresholds were set: :data:`MEDIAN_MAD` or, in older models, :data:`MEAN_STD`.
        median: Median validation score (``None`` with :data:`MEAN_STD`).
        scale: Robust standard deviation of the validation scores, 1.4826 · MAD (the standard deviation where the
            MAD is 0).
        map_max_median: Median of the validation images' map maxima.
        map_max_scale: Their robust standard deviation.
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
    rule: str = MEAN_STD
    median: float | None = None
    scale: float | None = None
    map_max_median: float | None = None
    map_max_scale: float | None = None

    def __post_init__(self) -> None:
        if self.rule not in (MEAN_STD, MEDIAN_MAD):
            raise ValueError(f"unknown calibration rule {self.rule!r} (known: {MEAN_STD}, {MEDIAN_MAD})")
        if self.rule == MEDIAN_MAD and (self.median is None or self.scale is None):
            raise ValueError(f"a {MEDIAN_MAD} calibration needs its median and scale")

    @classmethod
    def from_scores(cls, scores: Any, sigmas: float = 3.0, map_maxima: Any = None,
                    source: str = "") -> ScoreCalibration:
        """Calibrate from validation scores of good images and, for the pixel threshold, their maps' maxima, by the
        robust rule :data:`MEDIAN_MAD`: median + ``sigmas`` · 1.4826 · MAD.

        Args:
            scores: Image scores of the held-out good images.
            sigmas: Robust standard deviations above the median for both thresholds.
            map_maxima: The maximum of each image's anomaly map; without them the pixel threshold is the image one.
            source: What produced the outputs, for the metadata.

        Raises:
            ValueError: Fewer than two values, or a NaN or infinite one.
        """
        values = [float(s) for s in scores]
        mean, std = _mean_std(values, "scores")
        median, scale = _median_scale(values, std)
        pixel: dict[str, float] = {}
        if map_maxima is not None:
            maxima = [float(m) for m in map_maxima]
            map_mean, map_std = _mean_std(maxima, "map maxima")
            map_median, map_scale = _median_scale(maxima, map_std)
            pixel = {"map_max_mean": map_mean, "map_max_std": map_std, "map_max_median": map_median,
                     "map_max_scale": map_scale, "pixel_threshold": map_median + sigmas * map_scale}
        return cls(mean=mean, std=std, minimum=min(values), maximum=max(values), n_images=len(values), sigmas=sigmas,
                   threshold=median + sigmas * scale, source=source, rule=MEDIAN_MAD, median=median, scale=scale,
                   **pixel)

    @property
    def rule_text(self) -> str:
        """The rule in words, for reports: ``median + 3 robust std`` or ``mean + 3 std``."""
        return f"{'median' if self.rule == MEDIAN_MAD else 'mean'} + {self.sigmas:g} " \
               f"{'robust std' if self.rule == MEDIAN_MAD else 'std'} of {self.n_images} good images"

    @property
    def center(self) -> float:
        """The validation scores' centre the thresholds are set from: the median (the mean in :data:`MEAN_STD`
        models)."""
        return self.mean if self.median is None else self.median

    @property
    def pixel(self) -> float:
        """The pixel threshold; the image threshold for models calibrated before pixel thresholds existed."""
        return self.threshold if self.pixel_threshold is None else self.pixel_threshold

    def normalize(self, score: float, threshold: float | None = None) -> float:
        """Map a raw score to [0, 1]: the validation centre (:attr:`center`) gives 0, ``threshold`` gives 0.5, clipped
        to [0, 1].

        Args:
            score: Raw image score.
            threshold: Threshold to centre on; the calibrated one by default.
        """
        t = self.threshold if threshold is None else threshold
        span = max(t - self.center, 1e-12)
        return float(min(max(0.5 * (score - self.center) / span, 0.0), 1.0))


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
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"model metadata is incomplete or malformed: {exc}") from exc
