"""The deployable detector graph: uint8 NHWC RGB images in, anomaly maps and scores out.

This module is what ``rdedge export`` writes to ONNX, and what training uses to calibrate its threshold, so the
calibrated numbers and the deployed numbers come from one implementation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sdk.contract import ImageSize

from .components.anomaly_map import FEATURE_STRIDES, AnomalyMapHead
from .model import ReverseDistillationNet


class InputNormalizer(nn.Module):
    """(N, H, W, 3) uint8 RGB → (N, 3, H, W) float32, scaled to [0, 1] and normalised with ``mean``/``std``.

    The scaling and normalisation are folded into one multiply-add per channel.
    """

    def __init__(self, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * s), persistent=False)
        self.register_buffer("shift", -m / s, persistent=False)

        self.register_buffer("mean", m, persistent=False)
        self.register_buffer("std", s, persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        # Cast before the transpose: TensorRT accepts a UInt8 tensor only as the input of a Cast. The per-channel
        # multiply-add is a depthwise 1x1 convolution: as Mul/Add, onnxruntime moves the transpose after them when
        # the next convolution runs in NHWC (INT8) and broadcasts over a last axis of 3, ~0.4 ms slower at 256 px.
        x = images.float().permute(0, 3, 1, 2)
        return F.conv2d(x, self.scale.view(3, 1, 1, 1), self.shift.view(3), groups=3)

    def from_unit(self, images: Tensor) -> Tensor:
        """Normalise (N, 3, H, W) float images in [0, 1] (training-time synthesised images)."""
        return (images - self.mean) / self.std


class DetectorGraph(nn.Module):
    """Normalisation → reverse-distillation network → anomaly-map head.

    Args:
        net: The teacher/student network.
        image_size: Input size, height x width (an int for a square input).
        combine: How the head fuses scales (``sum`` or ``mean``).
        refinement: DRD's detection refinement of the image score.
        sigma: Gaussian σ of the head.
        image_score: ``max`` or ``top_mean`` (see :class:`~train.components.anomaly_map.AnomalyMapHead`).
        top_fraction: Share of pixels averaged by ``top_mean``.
        map_strides: Feature strides fused into the anomaly map (all three by default).
        feature_pool: Neighbourhood side over which the head averages features before the cosine (1: none).

    ``forward(images)`` takes (N, H, W, 3) uint8 RGB and returns ``(anomaly_map (N, H, W), score (N,))``, float32.
    """

    def __init__(
        self,
        net: ReverseDistillationNet,
        image_size: ImageSize | int,
        combine: str = "sum",
        refinement: bool = False,
        sigma: float = 4.0,
        image_score: str = "max",
        top_fraction: float = 0.01,
        map_strides: tuple[int, ...] | list[int] = FEATURE_STRIDES,
        feature_pool: int = 1,
    ) -> None:
        super().__init__()
        self.normalize = InputNormalizer(net.spec.mean, net.spec.std)
        self.net = net
        self.head = AnomalyMapHead(image_size, sigma=sigma, combine=combine, refinement=refinement,
                                   image_score=image_score, top_fraction=top_fraction, map_strides=map_strides,
                                   feature_pool=feature_pool)
        self.compute_dtype = torch.float32

    def half_network(self) -> DetectorGraph:
        """Run teacher, projection, bottleneck and decoder in FP16; normalisation and the head stay FP32.

        The head casts the features back to FP32 before the cosine distance (a 1024-channel sum of squares can
        overflow FP16), so an export of this graph is an FP16 network with FP32 pre- and post-processing.
        """
        self.net.half()
        self.compute_dtype = torch.float16
        return self

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        teacher, student = self.net(self.normalize(images).to(self.compute_dtype))
        return self.head(teacher, student)
