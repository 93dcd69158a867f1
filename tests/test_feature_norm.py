"""Feature standardisation (``--feature-norm standardize``): fitted on good images, kept in the checkpoint, exported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sdk.contract import INPUT_NAME
from sdk.datasets import load_dataset, load_prepared
from train.backbones import build_teacher, get_teacher_spec
from train.checkpoint import build_graph_from_checkpoint, load_checkpoint
from train.components.feature_norm import FeatureStandardizer
from train.graph import InputNormalizer
from train.trainer import TrainConfig, TrainError, fit_feature_norm, train


@pytest.fixture(scope="module")
def standardized_run(bottle_subset: Path, tmp_path_factory: pytest.TempPathFactory):
    """RD4AD / Lite0 with standardised teacher features, 2 epochs at 128 px on real bottle images, exported."""
    from export.onnx import export_onnx

    out = tmp_path_factory.mktemp("standardized")
    train(TrainConfig(data=str(bottle_subset), out=str(out), epochs=2, image_size=128, batch_size=8, seed=0,
                      feature_norm="standardize"), progress=False)
    return out, export_onnx(out, check_images=4).path


def good_training_images(bottle_subset: Path, size: int = 128) -> np.ndarray:
    return load_prepared(load_dataset(str(bottle_subset), seed=0).train, size, progress=False)


def test_standardized_features_have_zero_mean_and_unit_std_on_the_images_they_were_fitted_on(bottle_subset: Path):
    spec = get_teacher_spec("efficientnet_lite0")
    teacher = build_teacher("efficientnet_lite0")
    images = good_training_images(bottle_subset)
    teacher.feature_norm = fit_feature_norm(teacher, spec, images, torch.device("cpu"), progress=False)
    normalize = InputNormalizer(spec.mean, spec.std)
    with torch.no_grad():
        raw = teacher.raw_features(normalize(torch.from_numpy(images)))
        standardized = teacher(normalize(torch.from_numpy(images)))
    for r, s, channels in zip(raw, standardized, spec.channels, strict=True):
        assert s.shape == r.shape and s.shape[1] == channels
        assert r.mean(dim=(0, 2, 3)).abs().max() > 0.05  # raw features are not centred: the test can fail
        torch.testing.assert_close(s.mean(dim=(0, 2, 3)), torch.zeros(channels), atol=1e-4, rtol=0)
        torch.testing.assert_close(s.std(dim=(0, 2, 3), correction=0), torch.ones(channels), atol=1e-3, rtol=0)


def test_the_identity_standardizer_changes_nothing_and_a_wrong_scale_count_is_an_error():
    features = [torch.randn(2, c, 8, 8) for c in (24, 40, 112)]
    standardizer = FeatureStandardizer((24, 40, 112))
    for before, after in zip(features, standardizer(features), strict=True):
        torch.testing.assert_close(after, before)
    with pytest.raises(ValueError, match="3 feature maps"):
        standardizer(features[:2])
    with pytest.raises(ValueError, match="at least one"):
        standardizer.fit(lambda x: features, np.zeros((0, 8, 8, 3), np.uint8), lambda x: x)


def test_a_constant_channel_gets_a_bounded_gain():
    constant = [torch.full((4, 1, 8, 8), 3.0)]
    standardizer = FeatureStandardizer((1,)).fit(lambda x: constant, np.zeros((4, 8, 8, 3), np.uint8),
                                                 lambda x: x, progress=False)
    assert torch.isfinite(standardizer.inv_std0).all() and float(standardizer.inv_std0) <= 1e4
    torch.testing.assert_close(standardizer(constant)[0], torch.zeros(4, 1, 8, 8))


def test_the_checkpoint_keeps_the_fitted_statistics_and_the_onnx_graph_carries_them(standardized_run,
                                                                                     bottle_subset: Path,
                                                                                     bottle_images):
    import onnxruntime as ort

    from sdk.image import prepare_image

    run, onnx_path = standardized_run
    metadata, state = load_checkpoint(run)
    assert metadata.training["feature_norm"] == "standardize"
    spec = get_teacher_spec("efficientnet_lite0")
    refit = fit_feature_norm(build_teacher("efficientnet_lite0"), spec, good_training_images(bottle_subset),
                             torch.device("cpu"), progress=False)
    for name, value in refit.state_dict().items():
        torch.testing.assert_close(state[f"teacher.feature_norm.{name}"], value)  # fitted on the training images

    graph, _ = build_graph_from_checkpoint(run)
    assert isinstance(graph.net.teacher.feature_norm, FeatureStandardizer)
    images = np.stack([prepare_image(im, 128) for im in bottle_images.values()])
    maps, scores = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
        None, {INPUT_NAME: images})
    with torch.no_grad():
        want_maps, want_scores = graph(torch.from_numpy(images))
        graph.net.teacher.feature_norm = None  # the same weights on raw features: another detector
        raw_maps, _ = graph(torch.from_numpy(images))
    np.testing.assert_allclose(maps, want_maps.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores, want_scores.numpy(), rtol=1e-4)
    assert np.abs(raw_maps.numpy() - maps).max() > 1e-2  # the standardisation is in the exported graph


def test_a_run_without_standardization_has_no_statistics_and_an_unknown_mode_is_refused(tiny_run, bottle_subset,
                                                                                         tmp_path: Path):
    metadata, state = load_checkpoint(tiny_run[0])
    assert metadata.training["feature_norm"] == "none"
    assert not any(".feature_norm." in key for key in state)
    with pytest.raises(TrainError, match=r"feature_norm 'whiten'.*none, standardize"):
        train(TrainConfig(data=str(bottle_subset), out=str(tmp_path / "x"), epochs=1, image_size=128,
                          feature_norm="whiten"), progress=False)
