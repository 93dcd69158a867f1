"""The calibration rule: thresholds from held-out good images, robust to an odd one (sdk.metadata)."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from sdk.errors import ModelLoadError
from sdk.metadata import MEAN_STD, MEDIAN_MAD, ScoreCalibration


def test_one_odd_good_image_barely_moves_the_threshold():
    """The KolektorSDD case: 27 good scores between 0.36 and 0.6 and one at 0.995."""
    typical = list(np.linspace(0.36, 0.6, 27))
    clean = ScoreCalibration.from_scores(typical)
    with_odd = ScoreCalibration.from_scores([*typical, 0.995])
    mean_std = statistics.mean([*typical, 0.995]) + 3 * statistics.stdev([*typical, 0.995])
    assert mean_std > 0.8  # the old rule: far above every typical good score
    assert with_odd.threshold - clean.threshold < 0.05
    assert max(typical) < with_odd.threshold < 0.8


def test_for_normal_scores_the_rule_agrees_with_mean_plus_three_standard_deviations():
    scores = np.random.default_rng(0).normal(1.0, 0.1, 20000)
    calibration = ScoreCalibration.from_scores(scores)
    assert calibration.rule == MEDIAN_MAD
    assert calibration.scale == pytest.approx(scores.std(ddof=1), rel=0.03)
    assert calibration.threshold == pytest.approx(scores.mean() + 3 * scores.std(ddof=1), rel=0.01)


def test_pixel_threshold_follows_the_map_maxima_by_the_same_rule():
    calibration = ScoreCalibration.from_scores([1.0, 2.0, 3.0, 4.0], map_maxima=[10.0, 11.0, 12.0, 50.0], sigmas=2)
    assert calibration.median == 2.5 and calibration.scale == pytest.approx(1.4826)
    assert calibration.threshold == pytest.approx(2.5 + 2 * 1.4826)
    assert calibration.map_max_median == 11.5 and calibration.map_max_scale == pytest.approx(1.4826)
    assert calibration.pixel == pytest.approx(11.5 + 2 * 1.4826)


def test_where_most_scores_are_equal_the_scale_is_the_standard_deviation():
    scores = [0.5, 0.5, 0.5, 0.5, 0.9]
    calibration = ScoreCalibration.from_scores(scores)
    assert calibration.scale == pytest.approx(statistics.stdev(scores))
    assert calibration.threshold > 0.5


@pytest.mark.parametrize("bad", [[1.0], [1.0, float("nan")], [1.0, float("inf")]])
def test_too_few_or_non_finite_scores_are_refused(bad):
    with pytest.raises(ValueError):
        ScoreCalibration.from_scores(bad)


def test_normalised_scores_put_the_median_at_0_and_the_threshold_at_half():
    calibration = ScoreCalibration.from_scores([1.0, 2.0, 3.0, 4.0, 100.0])
    assert calibration.center == 3.0 != calibration.mean
    assert calibration.normalize(3.0) == 0.0
    assert calibration.normalize(calibration.threshold) == pytest.approx(0.5)
    assert calibration.normalize(1e9) == 1.0
    assert calibration.rule_text == "median + 3 robust std of 5 good images"


def test_a_schema_3_calibration_keeps_its_mean_plus_std_threshold_and_mean_centre():
    from sdk.metadata import ModelMetadata

    old = {"mean": 1.0, "std": 0.5, "minimum": 0.2, "maximum": 2.0, "n_images": 10, "sigmas": 3.0,
           "threshold": 2.5, "source": "fp32"}
    metadata = ModelMetadata.from_json(json.dumps({"method": "rd4ad", "backbone": "resnet18", "image_size": [64, 64],
                                                   "calibration": old, "schema_version": 3}))
    calibration = metadata.calibration
    assert calibration.rule == MEAN_STD and calibration.threshold == 2.5 and calibration.center == 1.0
    assert calibration.normalize(2.5) == pytest.approx(0.5)
    assert json.loads(metadata.to_json())["schema_version"] == 4


def test_a_malformed_calibration_rule_is_a_model_load_error():
    from sdk.metadata import ModelMetadata

    calibration = {"mean": 1.0, "std": 0.5, "minimum": 0.2, "maximum": 2.0, "n_images": 10, "sigmas": 3.0,
                   "threshold": 2.5, "rule": MEDIAN_MAD}  # no median, no scale
    with pytest.raises(ModelLoadError, match="median and scale"):
        ModelMetadata.from_json(json.dumps({"method": "rd4ad", "backbone": "resnet18", "image_size": [64, 64],
                                            "calibration": calibration}))
    with pytest.raises(ModelLoadError, match="unknown calibration rule"):
        ModelMetadata.from_json(json.dumps({"method": "rd4ad", "backbone": "resnet18", "image_size": [64, 64],
                                            "calibration": {**calibration, "rule": "quantile"}}))
