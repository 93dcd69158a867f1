"""A patch nearest-neighbour baseline (PatchCore-style) on an rdedge teacher's features: the bar every RD variant
must clear.

A reference for the accuracy benchmark, not an rdedge method (it is never exported). Following PatchCore (Roth et
al., CVPR 2022) in its essentials, on the *same* frozen teacher the RD methods distil from:

* patch features: the teacher's stride-8 and stride-16 feature maps (its mid-level stages), each averaged over
  its 3x3 neighbourhood, the coarser one upsampled (bilinear) to the finer grid, concatenated along channels
  (averaged down to :data:`MAX_DIMS` channels where wider);
* memory bank: every patch of the good training images, reduced by greedy k-centre coreset selection (distances
  measured in a fixed random projection to 128 dimensions) to ``coreset_ratio`` of the patches, at most
  :data:`MAX_BANK` of them;
* anomaly map: each test patch's Euclidean distance to its nearest bank patch, then the **same** post-processing as
  the exported RD graph — bilinear upsampling (``align_corners=True``) to the model size, Gaussian σ = 4 with
  SciPy's reflect borders (the graph's own :class:`~train.components.anomaly_map.GaussianBlur`), score = maximum;
* thresholds: calibrated like rdedge's (:class:`~sdk.metadata.ScoreCalibration`, median + 3 robust σ of held-out
  good images' scores), so F1 at the threshold compares like with like.

It answers ``predict_batch`` with :class:`sdk.result.Result` objects, so :func:`sdk.evaluate.evaluate_detector`
scores it exactly as it scores an exported detector.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sdk.contract import ImageSize
from sdk.image import prepare_image, read_image
from sdk.metadata import ScoreCalibration
from sdk.result import Result
from train.backbones import build_teacher, get_teacher_spec
from train.components.anomaly_map import GaussianBlur
from train.graph import InputNormalizer

MAX_DIMS = 1024
"""Patch features wider than this are averaged down to it (PatchCore's channel reduction)."""
MAX_BANK = 16384
"""Largest memory bank kept after coreset selection."""
PROJECTION_DIMS = 128
"""Dimensions of the random projection in which the coreset's distances are measured."""


def greedy_coreset(features: Tensor, size: int, seed: int = 0) -> Tensor:
    """Indices of ``size`` rows chosen by greedy k-centre selection (each pick the row farthest from those picked).

    Squared distances to each new centre come from one matrix-vector product, ``|x|² − 2 x·c + |c|²``, in float32
    (no (N, D) temporaries per pick: 16k picks over 480k patches take about two minutes on 2 cores, not twenty).

    Args:
        features: (N, D) patch features.
        size: Rows to keep.
        seed: Seed of the random projection and of the first pick.
    """
    n = features.shape[0]
    if size >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    if features.shape[1] > PROJECTION_DIMS:
        projection = torch.randn(features.shape[1], PROJECTION_DIMS, generator=generator) / PROJECTION_DIMS**0.5
        features = features @ projection
    features = features.float().contiguous()
    squared = (features**2).sum(dim=1)
    picked = torch.empty(size, dtype=torch.long)
    picked[0] = int(torch.randint(n, (1,), generator=generator))
    nearest = torch.full((n,), float("inf"))
    for i in range(1, size):
        c = int(picked[i - 1])
        distance = squared - 2.0 * (features @ features[c]) + squared[c]
        torch.minimum(nearest, distance, out=nearest)
        picked[i] = int(torch.argmax(nearest))
    return picked


class PatchNearestNeighbour:
    """The baseline as a detector: ``fit`` on good images, then ``predict_batch`` like :class:`sdk.Detector`.

    Args:
        backbone: rdedge teacher name.
        image_size: Model input size (a side or height x width).
        weights: Local ImageNet weights file for ResNet teachers.
        coreset_ratio: Share of training patches kept in the bank (at most :data:`MAX_BANK`).
        seed: Seed of the coreset selection.
        sigmas: Thresholds = validation median + ``sigmas`` · 1.4826 · MAD.
    """

    def __init__(self, backbone: str, image_size: ImageSize | int | str, *, weights: str | None = None,
                 coreset_ratio: float = 0.1, seed: int = 0, sigmas: float = 3.0) -> None:
        spec = get_teacher_spec(backbone)
        self.teacher = build_teacher(backbone, weights).eval()
        self.normalize = InputNormalizer(spec.mean, spec.std)
        self.image_size = ImageSize.parse(image_size)
        self.blur = GaussianBlur(self.image_size)
        self.coreset_ratio, self.seed, self.sigmas = coreset_ratio, seed, sigmas
        self.bank: Tensor | None = None
        self.calibration: ScoreCalibration | None = None
        self.threshold = float("inf")
        self.pixel_threshold = float("inf")

    @torch.no_grad()
    def patch_features(self, images: np.ndarray) -> Tensor:
        """(N, H, W, 3) uint8 RGB → (N, h, w, D) patch features on the stride-8 grid."""
        features = self.teacher(self.normalize(torch.from_numpy(images)))
        mid, deep = (F.avg_pool2d(f, 3, stride=1, padding=1) for f in features[1:3])
        deep = F.interpolate(deep, size=mid.shape[-2:], mode="bilinear", align_corners=False)
        patches = torch.cat([mid, deep], dim=1).permute(0, 2, 3, 1)
        if patches.shape[-1] > MAX_DIMS:
            n, h, w, d = patches.shape
            patches = F.adaptive_avg_pool1d(patches.reshape(-1, 1, d), MAX_DIMS).reshape(n, h, w, MAX_DIMS)
        return patches.contiguous()

    def _batches(self, images: np.ndarray, batch_size: int = 16) -> Tensor:
        return torch.cat([self.patch_features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])

    def fit(self, train_images: np.ndarray, validation_images: np.ndarray) -> PatchNearestNeighbour:
        """Build the memory bank from prepared good training images; calibrate on held-out good ones."""
        patches = self._batches(train_images)
        flat = patches.reshape(-1, patches.shape[-1])
        size = min(MAX_BANK, max(1, round(self.coreset_ratio * len(flat))))
        self.bank = flat[greedy_coreset(flat, size, self.seed)].contiguous()
        maps, scores = self.score(validation_images)
        self.calibration = ScoreCalibration.from_scores(scores, sigmas=self.sigmas, map_maxima=maps.max(axis=(1, 2)),
                                                        source="patch nearest-neighbour baseline")
        self.threshold, self.pixel_threshold = self.calibration.threshold, self.calibration.pixel
        return self

    @torch.no_grad()
    def score(self, images: np.ndarray, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Prepared images → (anomaly maps (N, H, W), scores (N,)), float32."""
        if self.bank is None:
            raise RuntimeError("fit the baseline first")
        maps = []
        for start in range(0, len(images), batch_size):
            patches = self.patch_features(images[start : start + batch_size])
            n, h, w, d = patches.shape
            distances = torch.cdist(patches.reshape(-1, d), self.bank).amin(dim=1).reshape(n, 1, h, w)
            upsampled = F.interpolate(distances, size=tuple(self.image_size), mode="bilinear", align_corners=True)
            maps.append(self.blur(upsampled.squeeze(1)))
        stacked = torch.cat(maps).numpy().astype(np.float32)
        return stacked, stacked.reshape(len(stacked), -1).max(axis=1)

    def predict_batch(self, images: Sequence[Any], *, rgb: bool = False,
                      anomaly_maps: bool | None = None) -> list[Result]:
        """Score images (arrays as stored, BGR, or paths), as :meth:`sdk.Detector.predict_batch` does (the maps
        are always computed here: ``anomaly_maps`` is accepted for the same signature)."""
        loaded = [read_image(i) if isinstance(i, str) else i for i in images]
        batch = np.stack([prepare_image(image, self.image_size, rgb=rgb) for image in loaded])
        maps, scores = self.score(batch)
        assert self.calibration is not None
        return [
            Result(score=float(s), normalized_score=self.calibration.normalize(float(s)),
                   is_anomaly=bool(s > self.threshold), threshold=self.threshold,
                   pixel_threshold=self.pixel_threshold, anomaly_map=m,
                   input_size=(int(image.shape[0]), int(image.shape[1])), latency_ms=0.0)
            for image, m, s in zip(loaded, maps, scores, strict=True)
        ]
