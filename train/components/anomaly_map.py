"""The anomaly-map head: per-scale cosine distance, upsampling, fusion, Gaussian smoothing and image score.

This module is part of the exported graph (it *is* the post-processing the detector runs), so it is written with
ONNX- and TensorRT-friendly operations only, batched and shape-agnostic in N:

* optionally, teacher and student features averaged over each position's ``feature_pool`` x ``feature_pool``
  neighbourhood first (stride 1, zero-padded borders, which the cosine ignores; 1, the papers', compares single
  positions; PatchCore compares 3x3 neighbourhoods the same way), so that a feature is judged with its surroundings;
* cosine distance over channels written out as ½‖a/‖a‖ − b/‖b‖‖² (= 1 − cos, without float32 cancellation),
  in FP32 (a sum of squares of 1024 post-ReLU channels can overflow FP16);
* bilinear upsampling with ``align_corners=True`` to the model size (height x width; square or not);
* fusion by sum (RD4AD, RD++, REASON) or mean (DRD) of the scales in ``map_strides`` (all three by default, as the
  papers; rdedge's recipe fuses strides 8 and 16, see ``benchmarks/results/scores.md``);
* Gaussian σ = 4, with the borders padded half-sample-symmetrically (``d c b a | a b c d``), which is exactly
  SciPy's ``gaussian_filter(mode="reflect", truncate=4.0)``, the papers' host-side smoothing;
* upsampling, fusion and blur are all linear and separable along rows and columns, so the exported graph computes
  them together as two small constant matrix products per scale, ``L_k · d_k · R_k`` (``L_k`` = row blur x row
  upsampling, H x h_k; ``R_k`` the same for columns, w_k x W): the same map as upsample → fuse → 33-tap blur
  (:meth:`AnomalyMapHead.upsample`, :meth:`~AnomalyMapHead.fuse`, :class:`GaussianBlur`, kept for the studies and
  the tests, within float32 rounding) in a few MFLOP, where the Resize, the padding Gather and the two
  single-channel convolutions cost 12-18 % of the Lite0 graph's time on a CPU (``benchmarks/results/head.md``);
* image score = maximum of the smoothed map (the papers'), or the mean of its top ``top_fraction`` pixels
  (``image_score="top_mean"``: TopK + ReduceMean; one hot pixel no longer decides a part alone);
  optionally DRD's *detection refinement*, per sample:
  ``score = (1 + v_k*) · max(map)`` where ``v_k`` is the peak of scale k's distance map at its native resolution
  and ``k* = argmin_k Var(upsampled map k)`` (unbiased variance), the flattest scale. Exported as
  ReduceMax / variance / ArgMin / GatherElements, no host-side step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdk.contract import (
    FEATURE_STRIDES,
    IMAGE_SCORES,
    MAX_TOP_COUNT,
    ImageSize,
    check_feature_pool,
    check_map_strides,
    top_pixel_count,
)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> Tensor:
    """SciPy's 1-D Gaussian kernel: radius ``int(truncate·σ + 0.5)``, normalised to sum 1 (33 taps for σ = 4)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).float()


def symmetric_pad_index(size: int, radius: int) -> Tensor:
    """Indices that pad an axis of ``size`` by ``radius`` on each side with half-sample symmetric reflection."""
    if radius > size:
        raise ValueError(f"blur radius {radius} exceeds the map size {size}")
    inner = torch.arange(size)
    return torch.cat([inner[:radius].flip(0), inner, inner[size - radius :].flip(0)])


def pool_features(features: Tensor, size: int) -> Tensor:
    """Mean of each position's ``size`` x ``size`` neighbourhood, same shape, zero-padded: a border position is its
    inside pixels' mean scaled alike for teacher and student, which their cosine distance does not see."""
    if size == 1:
        return features
    return F.avg_pool2d(features, size, stride=1, padding=size // 2)


def cosine_distance_map(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """1 − cosine similarity over the channel axis: (N, C, H, W) × 2 → (N, H, W), in FP32.

    Computed as ½‖a/‖a‖ − b/‖b‖‖², which equals 1 − cos but has no cancellation: where teacher and student agree
    (cos ≈ 0.9999) the direct ``1 − a·b/(‖a‖‖b‖)`` loses most of its float32 digits, and two runtimes summing the
    channels in different orders then disagree by 1e-4 relative; this form keeps them within ~1e-6. Norms are
    clamped at ``eps``; an all-zero vector therefore scores 0.5 against a non-zero one (1 − cos would give 1).
    """
    a, b = a.float(), b.float()
    a = a / torch.sqrt((a * a).sum(dim=1, keepdim=True)).clamp_min(eps)
    b = b / torch.sqrt((b * b).sum(dim=1, keepdim=True)).clamp_min(eps)
    diff = a - b
    return 0.5 * (diff * diff).sum(dim=1)


def upsampling_matrix(size: int, native: int) -> Tensor:
    """(size, native) float64 matrix of 1-D linear upsampling with ``align_corners=True``: ``U @ v`` is
    ``F.interpolate`` of the vector ``v`` (computed by that function on the identity, so the two agree)."""
    identity = torch.eye(native, dtype=torch.float64).unsqueeze(0)  # (1, native channels, native samples)
    return F.interpolate(identity, size=size, mode="linear", align_corners=True)[0].T.contiguous()


def blur_matrix(size: int, sigma: float, truncate: float = 4.0) -> Tensor:
    """(size, size) float64 matrix of the 1-D Gaussian blur with half-sample-symmetric borders (:class:`GaussianBlur`
    along one axis): ``G @ v`` smooths the vector ``v``."""
    kernel = gaussian_kernel1d(sigma, truncate).double()
    radius = (kernel.numel() - 1) // 2
    pad = symmetric_pad_index(size, radius)
    matrix = torch.zeros(size, size, dtype=torch.float64)
    for tap, weight in enumerate(kernel):
        matrix.index_put_((torch.arange(size), pad[tap : tap + size]), weight.expand(size), accumulate=True)
    return matrix


class GaussianBlur(nn.Module):
    """Separable Gaussian smoothing of (N, H, W) maps, equal to ``scipy.ndimage.gaussian_filter`` (reflect mode).

    Args:
        size: The maps' height x width (an int for square maps); each axis has its own padding index.
        sigma: Gaussian σ in pixels.
        truncate: Kernel radius in σ.
    """

    def __init__(self, size: ImageSize | int, sigma: float = 4.0, truncate: float = 4.0) -> None:
        super().__init__()
        height, width = ImageSize.parse(size)
        kernel = gaussian_kernel1d(sigma, truncate)
        self.radius = (kernel.numel() - 1) // 2
        self.register_buffer("kernel_h", kernel.view(1, 1, -1, 1), persistent=False)
        self.register_buffer("kernel_w", kernel.view(1, 1, 1, -1), persistent=False)
        self.register_buffer("pad_index_h", symmetric_pad_index(height, self.radius), persistent=False)
        self.register_buffer("pad_index_w", symmetric_pad_index(width, self.radius), persistent=False)

    def forward(self, maps: Tensor) -> Tensor:
        x = maps.unsqueeze(1)
        x = F.conv2d(x.index_select(3, self.pad_index_w), self.kernel_w)
        x = F.conv2d(x.index_select(2, self.pad_index_h), self.kernel_h)
        return x.squeeze(1)


class AnomalyMapHead(nn.Module):
    """Teacher and student feature lists → (anomaly map (N, H, W), image score (N,)).

    Args:
        image_size: Model input size (H, W), and the map's (an int for a square input).
        sigma: Gaussian σ of the map's blur in pixels of the model input (4, as all four papers).
        combine: ``sum`` or ``mean`` of the upsampled per-scale maps.
        refinement: Apply DRD's detection refinement to the image score.
        image_score: ``max`` (the papers') or ``top_mean`` (mean of the ``top_fraction`` highest pixels).
        top_fraction: Share of the map's pixels averaged by ``top_mean`` (at least one pixel).
        map_strides: Feature strides whose distance maps form the anomaly map (default: all three, the papers').
            :meth:`raw_map`, which DRD's segmentation loss supervises, always fuses all three, as the paper does.
        feature_pool: Side of the neighbourhood over which teacher and student features are averaged before their
            cosine distance (odd; 1, the papers', compares single positions). :meth:`raw_map` never pools.
    """

    def __init__(self, image_size: ImageSize | int, sigma: float = 4.0, combine: str = "sum",
                 refinement: bool = False, image_score: str = "max", top_fraction: float = 0.01,
                 map_strides: tuple[int, ...] | list[int] = FEATURE_STRIDES, feature_pool: int = 1) -> None:
        super().__init__()
        self.feature_pool = check_feature_pool(feature_pool)
        self.map_strides = check_map_strides(map_strides)
        self.map_levels = tuple(FEATURE_STRIDES.index(s) for s in self.map_strides)
        if combine not in ("sum", "mean"):
            raise ValueError(f"combine must be 'sum' or 'mean', got {combine!r}")
        if image_score not in IMAGE_SCORES:
            raise ValueError(f"image_score must be one of {IMAGE_SCORES}, got {image_score!r}")
        if not 0.0 < top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction!r}")
        if not sigma > 0.0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        self.image_size = ImageSize.parse(image_size)
        self.sigma = float(sigma)
        self.combine = combine
        self.refinement = refinement
        self.image_score = image_score
        self.top_fraction = top_fraction
        self.blur = GaussianBlur(image_size, sigma)
        height, width = self.image_size.height, self.image_size.width
        blur_rows, blur_columns = blur_matrix(height, sigma), blur_matrix(width, sigma)
        self.smoothing_orders: list[bool] = []
        for k, stride in enumerate(self.map_strides):
            rows, columns = height // stride, width // stride
            left = blur_rows @ upsampling_matrix(height, rows)
            right = (blur_columns @ upsampling_matrix(width, columns)).T
            if combine == "mean":
                left = left / len(self.map_strides)
            self.register_buffer(f"smooth_left_{k}", left.float().contiguous(), persistent=False)
            self.register_buffer(f"smooth_right_{k}", right.float().contiguous(), persistent=False)
            # Multiply on the side that makes the smaller intermediate first (the same result within rounding).
            self.smoothing_orders.append(height * columns * (rows + width) <= rows * width * (columns + height))
        if image_score == "top_mean" and self.top_count > MAX_TOP_COUNT:
            raise ValueError(f"top_fraction {top_fraction} averages {self.top_count} pixels of a {self.image_size} "
                             "map; "
                             f"TensorRT's TopK takes at most {MAX_TOP_COUNT}: use a top_fraction of at most "
                             f"{MAX_TOP_COUNT / (self.image_size.height * self.image_size.width):.4f}")

    @property
    def top_count(self) -> int:
        """Pixels averaged by ``top_mean``."""
        return top_pixel_count(self.image_size, self.top_fraction)

    def upsample(self, distance: Tensor) -> Tensor:
        """(N, h, w) → (N, H, W), bilinear with ``align_corners=True``."""
        return F.interpolate(distance.unsqueeze(1), size=tuple(self.image_size), mode="bilinear",
                             align_corners=True).squeeze(1)

    def fuse(self, upsampled: list[Tensor]) -> Tensor:
        """Sum (or mean) of the upsampled per-scale maps: the map before smoothing."""
        fused = upsampled[0]
        for m in upsampled[1:]:
            fused = fused + m
        return fused / len(upsampled) if self.combine == "mean" else fused

    def smooth(self, distances: list[Tensor]) -> Tensor:
        """Per-scale distance maps at native resolution (N, h_k, w_k), in ``map_strides`` order → the smoothed map
        (N, H, W): ``blur(fuse(upsample(d_k)))`` computed as ``Σ_k L_k · d_k · R_k``."""
        smoothed = None
        for k, (distance, left_first) in enumerate(zip(distances, self.smoothing_orders, strict=True)):
            left, right = getattr(self, f"smooth_left_{k}"), getattr(self, f"smooth_right_{k}")
            if tuple(distance.shape[-2:]) != (left.shape[1], right.shape[0]):
                raise ValueError(f"stride-{self.map_strides[k]} features of a {self.image_size.height}x"
                                 f"{self.image_size.width} input must be "
                                 f"{left.shape[1]}x{right.shape[0]}, got {tuple(distance.shape[-2:])}")
            term = torch.matmul(torch.matmul(left, distance), right) if left_first else \
                torch.matmul(left, torch.matmul(distance, right))
            smoothed = term if smoothed is None else smoothed + term
        return smoothed

    def raw_map(self, teacher: list[Tensor], student: list[Tensor]) -> Tensor:
        """The fused map before smoothing (what the papers pass to ``gaussian_filter``)."""
        return self.fuse([self.upsample(cosine_distance_map(t, s)) for t, s in zip(teacher, student, strict=True)])

    def forward(self, teacher: list[Tensor], student: list[Tensor]) -> tuple[Tensor, Tensor]:
        if len(teacher) != len(FEATURE_STRIDES) or len(student) != len(FEATURE_STRIDES):
            raise ValueError(f"the head takes {len(FEATURE_STRIDES)} feature levels, got {len(teacher)} and "
                             f"{len(student)}")
        teacher, student = ([pool_features(features[i], self.feature_pool) for i in self.map_levels]
                            for features in (teacher, student))
        distances = [cosine_distance_map(t, s) for t, s in zip(teacher, student, strict=True)]
        smoothed = self.smooth(distances)
        if self.image_score == "top_mean":
            score = smoothed.flatten(1).topk(self.top_count, dim=1).values.mean(dim=1)
        else:
            score = smoothed.amax(dim=(1, 2))
        if self.refinement:
            score = score * (1.0 + refinement_peak(distances, [self.upsample(d) for d in distances]))
        return smoothed, score


def refinement_peak(distances: list[Tensor], upsampled: list[Tensor]) -> Tensor:
    """DRD: per sample, the native-resolution peak of the scale whose upsampled map has the least variance.

    Args:
        distances: Per-scale distance maps at native resolution, (N, h_k, w_k).
        upsampled: The same maps upsampled to (N, H, W).

    Returns:
        (N,) values ``v_k*``; the refined score is ``(1 + v_k*) · max(smoothed map)``.
    """
    peaks = torch.stack([d.amax(dim=(1, 2)) for d in distances], dim=1)  # (N, K)
    variances = torch.stack([u.flatten(1).var(dim=1, unbiased=True) for u in upsampled], dim=1)  # (N, K)
    flattest = variances.argmin(dim=1, keepdim=True)  # (N, 1)
    return peaks.gather(1, flattest).squeeze(1)


__all__ = [
    "FEATURE_STRIDES",
    "IMAGE_SCORES",
    "AnomalyMapHead",
    "GaussianBlur",
    "blur_matrix",
    "check_feature_pool",
    "check_map_strides",
    "cosine_distance_map",
    "gaussian_kernel1d",
    "pool_features",
    "symmetric_pad_index",
    "top_pixel_count",
    "upsampling_matrix",
]
