"""The in-graph anomaly-map head against SciPy and PyTorch references."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from export.reference import image_scores
from train.components.anomaly_map import (
    AnomalyMapHead,
    GaussianBlur,
    cosine_distance_map,
    gaussian_kernel1d,
    symmetric_pad_index,
)


def test_kernel_is_scipys_33_taps():
    kernel = gaussian_kernel1d(4.0)
    assert kernel.numel() == 33
    impulse = np.zeros(65)
    impulse[32] = 1.0
    np.testing.assert_allclose(kernel.numpy(), gaussian_filter(impulse, 4.0)[16:49], atol=1e-7)


def test_symmetric_padding_is_half_sample_reflection():
    assert symmetric_pad_index(5, 2).tolist() == [1, 0, 0, 1, 2, 3, 4, 4, 3]


def test_blur_equals_scipy_reflect_including_borders():
    rng = np.random.default_rng(0)
    maps = rng.uniform(0, 1, (3, 64, 64)).astype(np.float32)
    maps[:, :5, :] += 3.0  # strong border structure
    got = GaussianBlur(64)(torch.from_numpy(maps)).numpy()
    want = np.stack([gaussian_filter(m.astype(np.float64), 4.0, mode="reflect") for m in maps])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_cosine_distance_equals_torch_cosine_similarity():
    a, b = torch.rand(2, 16, 8, 8), torch.rand(2, 16, 8, 8)
    torch.testing.assert_close(cosine_distance_map(a, b), 1 - F.cosine_similarity(a, b, dim=1))
    assert cosine_distance_map(a.half(), b.half()).dtype == torch.float32


def test_head_is_per_sample_in_a_batch():
    head = AnomalyMapHead(64)
    teacher = [torch.rand(3, c, s, s) for c, s in ((8, 16), (16, 8), (32, 4))]
    student = [torch.rand_like(t) for t in teacher]
    maps, scores = head(teacher, student)
    assert maps.shape == (3, 64, 64) and scores.shape == (3,)
    single_map, single_score = head([t[1:2] for t in teacher], [s[1:2] for s in student])
    torch.testing.assert_close(maps[1:2], single_map)
    torch.testing.assert_close(scores[1:2], single_score)
    torch.testing.assert_close(scores, maps.amax(dim=(1, 2)))
    mean_maps, _ = AnomalyMapHead(64, combine="mean")(teacher, student)
    torch.testing.assert_close(mean_maps * 3, maps)


def test_top_mean_score_is_the_mean_of_the_highest_pixels_per_sample():
    head = AnomalyMapHead((48, 32), image_score="top_mean", top_fraction=0.01)
    assert head.top_count == 15  # round(48 * 32 * 0.01)
    teacher = [torch.rand(3, 8, 12, 8), torch.rand(3, 16, 6, 4), torch.rand(3, 32, 3, 2)]
    student = [torch.rand_like(t) for t in teacher]
    maps, scores = head(teacher, student)
    flat = np.sort(maps.numpy().reshape(3, -1), axis=1)
    np.testing.assert_allclose(scores.numpy(), flat[:, -15:].mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(image_scores(maps.numpy(), "top_mean", 0.01), scores.numpy(), rtol=1e-6)
    assert (scores < maps.amax(dim=(1, 2))).all()  # below the maximum unless the top pixels are equal
    everything = AnomalyMapHead((48, 32), image_score="top_mean", top_fraction=1.0)(teacher, student)[1]
    torch.testing.assert_close(everything, maps.mean(dim=(1, 2)))


def test_head_refuses_unknown_image_scores_and_fractions():
    import pytest

    with pytest.raises(ValueError, match="image_score"):
        AnomalyMapHead(64, image_score="median")
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="top_fraction"):
            AnomalyMapHead(64, image_score="top_mean", top_fraction=fraction)
    with pytest.raises(ValueError, match="TensorRT's TopK takes at most 3840"):
        AnomalyMapHead((640, 256), image_score="top_mean", top_fraction=0.05)  # 8192 pixels
    assert AnomalyMapHead((640, 256), image_score="top_mean", top_fraction=0.02).top_count == 3277


def test_map_strides_fuse_only_the_chosen_scales_as_the_reference_does():
    """The recipe's head (strides 8 and 16, top-mean score) against the papers' reference computed on the same two
    levels; the stride-4 features then change nothing; raw_map (DRD's training target) still fuses all three."""
    import pytest

    from export.reference import papers_postprocess

    head = AnomalyMapHead((64, 32), map_strides=[16, 8], image_score="top_mean", top_fraction=0.01)
    assert head.map_strides == (8, 16)
    teacher = [torch.rand(2, 8, 16, 8), torch.rand(2, 16, 8, 4), torch.rand(2, 32, 4, 2)]
    student = [torch.rand_like(t) for t in teacher]
    maps, scores = head(teacher, student)
    ref_maps, ref_scores = papers_postprocess(teacher, student, (64, 32), image_score="top_mean", top_fraction=0.01,
                                              map_strides=(8, 16))
    np.testing.assert_allclose(maps.numpy(), ref_maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-5)
    other = [torch.rand_like(teacher[0]), *teacher[1:]]
    torch.testing.assert_close(head(other, student)[0], maps)  # stride 4 is not in the map
    full = AnomalyMapHead((64, 32)).raw_map(teacher, student)
    torch.testing.assert_close(head.raw_map(teacher, student), full)
    for bad in ([], [8, 8], [2, 8], [32]):
        with pytest.raises(ValueError, match="map_strides"):
            AnomalyMapHead(64, map_strides=bad)
    with pytest.raises(ValueError, match="feature levels"):
        head(teacher[:2], student[:2])


def test_blur_sigma_is_the_references_gaussian_at_that_sigma():
    """A head with σ = 8 equals SciPy's ``gaussian_filter(σ=8)`` reference (reflect mode, non-square map), differs
    from σ = 4, and a σ that is not positive or whose kernel outgrows the map is refused."""
    import pytest

    from export.reference import papers_postprocess

    teacher = [torch.rand(2, 8, 16, 8), torch.rand(2, 16, 8, 4), torch.rand(2, 32, 4, 2)]
    student = [torch.rand_like(t) for t in teacher]
    head = AnomalyMapHead((64, 32), sigma=8.0)
    assert head.sigma == 8.0
    maps, scores = head(teacher, student)
    ref_maps, ref_scores = papers_postprocess(teacher, student, (64, 32), sigma=8.0)
    np.testing.assert_allclose(maps.numpy(), ref_maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-5)
    assert not np.allclose(AnomalyMapHead((64, 32))(teacher, student)[0].numpy(), ref_maps, atol=1e-4)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="sigma"):
            AnomalyMapHead(64, sigma=bad)
    with pytest.raises(ValueError, match="blur radius"):
        AnomalyMapHead((64, 32), sigma=16.0)  # radius 64 > the map's width 32


def test_feature_pool_compares_neighbourhoods_as_scipys_uniform_filter_does():
    """A head with ``feature_pool=3`` equals the reference that averages teacher and student features with SciPy's
    ``uniform_filter`` (zeros beyond the borders) before the cosine, on a non-square map with the recipe's strides and
    score; the border padding does not matter to the cosine (scale-free), so averaging over the inside pixels only
    gives the same map; a change at one position spreads to its 3x3 neighbours' distances; 1 is the papers'
    head; even, zero and fractional sides are refused."""
    import pytest

    from export.reference import papers_postprocess
    from train.components.anomaly_map import pool_features

    torch.manual_seed(0)
    teacher = [torch.rand(2, 8, 16, 8), torch.rand(2, 16, 8, 4), torch.rand(2, 32, 4, 2)]
    student = [torch.rand_like(t) for t in teacher]
    options = {"map_strides": (8, 16), "image_score": "top_mean", "top_fraction": 0.01}
    head = AnomalyMapHead((64, 32), feature_pool=3, **options)
    maps, scores = head(teacher, student)
    ref_maps, ref_scores = papers_postprocess(teacher, student, (64, 32), feature_pool=3, **options)
    np.testing.assert_allclose(maps.numpy(), ref_maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-5)
    inside_only = [F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False) for f in teacher[1:]]
    inside_student = [F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False) for f in student[1:]]
    torch.testing.assert_close(cosine_distance_map(pool_features(teacher[1], 3), pool_features(student[1], 3)),
                               cosine_distance_map(inside_only[0], inside_student[0]))
    papers = AnomalyMapHead((64, 32), **options)
    assert not np.allclose(papers(teacher, student)[0].numpy(), ref_maps, atol=1e-4)
    np.testing.assert_allclose(papers(teacher, student)[0].numpy(),
                               papers_postprocess(teacher, student, (64, 32), **options)[0], rtol=1e-5, atol=1e-6)

    changed = [t.clone() for t in student]
    changed[1][:, :, 4, 2] += 1.0  # one stride-8 position
    before = cosine_distance_map(pool_features(teacher[1], 3), pool_features(student[1], 3))
    after = cosine_distance_map(pool_features(teacher[1], 3), pool_features(changed[1], 3))
    moved = (after - before).abs() > 1e-6
    assert moved[:, 3:6, 1:4].all() and moved.sum() == 2 * 9  # its 3x3 neighbourhood, in both images
    for bad in (0, 2, 1.5, True, -3):
        with pytest.raises(ValueError, match="feature_pool"):
            AnomalyMapHead(64, feature_pool=bad)


def test_smoothing_matrices_are_the_upsampling_and_blur_they_replace():
    """``upsampling_matrix`` is ``F.interpolate`` (linear, align_corners) as a matrix and ``blur_matrix`` SciPy's
    1-D reflect-mode Gaussian; the head's ``smooth`` (two constant matrix products per scale) equals upsample → fuse →
    blur operator by operator, for sum and mean fusion, square and non-square maps, whichever side it multiplies
    first."""
    from scipy.ndimage import gaussian_filter1d

    from train.components.anomaly_map import blur_matrix, upsampling_matrix

    torch.manual_seed(0)
    v = torch.rand(8, dtype=torch.float64)
    expected = F.interpolate(v.view(1, 1, -1), size=64, mode="linear", align_corners=True).view(-1)
    torch.testing.assert_close(upsampling_matrix(64, 8) @ v, expected)
    w = torch.rand(64, dtype=torch.float64)
    np.testing.assert_allclose((blur_matrix(64, 4.0) @ w).numpy(), gaussian_filter1d(w.numpy(), 4.0, mode="reflect"),
                               rtol=1e-6, atol=1e-9)

    orders = set()
    for size, strides, combine in (((64, 32), (4, 8, 16), "sum"), ((32, 96), (8, 16), "mean"), (64, (8,), "sum")):
        head = AnomalyMapHead(size, combine=combine, map_strides=strides)
        orders.update(head.smoothing_orders)
        height, width = head.image_size.height, head.image_size.width
        distances = [torch.rand(3, height // s, width // s) for s in strides]
        step_by_step = head.blur(head.fuse([head.upsample(d) for d in distances]))
        torch.testing.assert_close(head.smooth(distances), step_by_step, rtol=1e-5, atol=1e-6)
    assert orders == {True, False}


def test_head_refuses_features_whose_size_does_not_match_its_input_size():
    """The smoothing matrices are built for features at strides 4, 8 and 16 of the head's input size: other sizes
    are one clear error, not a shape error inside a matrix product."""
    import pytest

    head = AnomalyMapHead(64)
    teacher = [torch.rand(1, 8, s, s) for s in (32, 16, 8)]  # strides 2, 4, 8: the features of a 64 px input
    with pytest.raises(ValueError, match="stride-4 features of a 64x64 input must be 16x16, got \\(32, 32\\)"):
        head(teacher, [torch.rand_like(t) for t in teacher])
