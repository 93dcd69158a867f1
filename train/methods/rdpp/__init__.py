"""RD++ (Tien et al., CVPR 2023): Revisiting Reverse Distillation — projection layers and pseudo-anomalies.

Network: teacher → per-scale projection (conv + InstanceNorm + LeakyReLU) → MFF + OCE → decoder; the map compares
the decoder with the *raw* teacher features, so the exported graph is RD4AD's plus the projection layers.

Training, following the official code (``main.py``, ``Revisit_RDLoss``) except where noted:

* L_KD: flattened cosine between teacher and decoder (as RD4AD);
* pseudo-anomalies: OpenSimplex noise boxes (:mod:`.synthesis`);
* L_recon = Σ_k mean per-pixel (1 − cos) between the projections of the noisy and of the clean features;
* L_con = Σ_k mean_b max(0, cos_flat(T_k(noisy), P_k(T_k(clean))) − 0.5) (the May-2023 sign and margin);
* L_SSOT: **not** the official term, which is identically zero (see :mod:`.ot`); the per-pair OT the paper
  describes instead;
* L = L_KD + 0.2 · (L_SSOT + 0.01 · L_recon + 0.1 · L_con) / 1.11;
* two Adam optimisers, betas (0.5, 0.999): projection lr 0.001, bottleneck + decoder lr 0.005, gradients
  accumulated over 2 steps (the December-2023 fix of the official loop).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...backbones import TeacherSpec
from ...components.projection import MultiProjection
from ...graph import DetectorGraph
from ...losses import flattened_cosine_loss, pixel_cosine_loss, sum_over_scales
from ...model import ReverseDistillationNet
from ..base import Method, unit_images
from .ot import pairwise_ot_loss
from .synthesis import SimplexNoiseAnomaly

PROJECTION_LR = 0.001
PROJECTION_WEIGHT = 0.2
CONTRAST_MARGIN = 0.5


def contrast_loss(noisy_teacher: Tensor, clean_projection: Tensor, margin: float = CONTRAST_MARGIN) -> Tensor:
    """Batch mean of max(0, cos_flat(noisy teacher, clean projection) − margin)."""
    cos = F.cosine_similarity(noisy_teacher.flatten(1), clean_projection.flatten(1), dim=1)
    return torch.relu(cos - margin).mean()


class RDPlusPlus(Method):
    """RD++: projection layers, simplex pseudo-anomalies, reconstruction / contrast / per-pair OT losses."""

    name = "rdpp"
    accumulation_steps = 2

    def setup(self, seed: int, device: torch.device | str = "cpu") -> None:
        super().setup(seed, device)
        self.seed = seed
        self.synthesis: SimplexNoiseAnomaly | None = None

    def build(self, spec: TeacherSpec, teacher: torch.nn.Module) -> ReverseDistillationNet:
        return ReverseDistillationNet(spec, teacher, projection=MultiProjection(spec.channels))

    def optimizers(self, net: ReverseDistillationNet, lr: float) -> list[torch.optim.Optimizer]:
        student = [p for n, p in net.named_parameters() if n.startswith(("bottleneck.", "decoder."))]
        return [
            torch.optim.Adam(net.projection.parameters(), lr=PROJECTION_LR, betas=(0.5, 0.999)),
            torch.optim.Adam(student, lr=lr, betas=(0.5, 0.999)),
        ]

    def training_step(
        self, net: ReverseDistillationNet, images: Tensor, graph: DetectorGraph
    ) -> dict[str, Tensor]:
        short_side = min(images.shape[1:3])  # (N, H, W, 3): boxes scale with the shorter side
        if self.synthesis is None or self.synthesis.scale != short_side / 256.0:
            self.synthesis = SimplexNoiseAnomaly(short_side, self.seed, device=images.device)
        noisy, _ = self.synthesis(unit_images(images), self.rng)
        teacher = net.encode(graph.normalize(images))
        noisy_teacher = net.encode(graph.normalize.from_unit(noisy))
        projected = net.project(teacher)
        noisy_projected = net.project(noisy_teacher)
        student = net.decoder(net.bottleneck(projected))

        kd = sum_over_scales(flattened_cosine_loss, teacher, student)
        recon = sum_over_scales(pixel_cosine_loss, noisy_projected, projected)
        contrast = sum_over_scales(contrast_loss, noisy_teacher, projected)
        permutation = torch.randperm(images.shape[0], generator=self.device_generator, device=images.device)
        ssot = sum(pairwise_ot_loss(p, permutation) for p in projected)
        projection_loss = (ssot + 0.01 * recon + 0.1 * contrast) / 1.11
        loss = kd + PROJECTION_WEIGHT * projection_loss
        return {"loss": loss, "kd": kd, "ssot": ssot, "recon": recon, "contrast": contrast}
