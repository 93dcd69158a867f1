"""REASON (Wang et al., TCSVT 2025): reverse distillation with latent anomaly suppression.

Network: teacher → anomaly-suppression layers (ASL; architecturally RD++'s projection) → MFF + OCE → decoder; the
exported graph is structurally RD++'s. For ResNet-18 the OCE has 3 basic blocks (official ``get_bn_layer_resnet18``).

Training, following the official ``main.py`` / ``REASON_loss``:

* two teacher passes: clean features f_k (targets) and features of noisy stem activations (:mod:`.noise`);
* g_k = D(OCBE(ASL(T_k(noisy)))), φ_k = ASL_k(T_k(noisy));
* L_KD = Σ_k flat-cos(f_k, g_k) + 0.2 · (1/3) Σ_k per-pixel cos(f_k, g_k) (the official "block" loss reduces
  exactly to this per-pixel mean for equal tiling blocks);
* L_supp = Σ_k flat-cos(φ_k, target_k), target = the decoder output g_k as in the released code
  (``suppression_target="decoder"``), or the clean teacher f_k as the paper's figure draws it (``"teacher"``);
* L = L_KD + 0.01 · L_supp; one Adam, betas (0.5, 0.999): bottleneck + decoder lr 0.005, ASL lr 0.001.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...backbones import TeacherSpec
from ...components.projection import MultiProjection
from ...graph import DetectorGraph
from ...losses import flattened_cosine_loss, pixel_cosine_loss, sum_over_scales
from ...model import ReverseDistillationNet
from ..base import Method
from .noise import NOISE_STD, inject_latent_noise

ASL_LR = 0.001
BLOCK_WEIGHT = 0.2
SUPPRESSION_WEIGHT = 0.01
TARGETS = ("decoder", "teacher")


class REASON(Method):
    """REASON: anomaly-suppression layers trained with latent noise.

    Args:
        suppression_target: ``decoder`` (released code, default) or ``teacher`` (paper figure).
        noise_std: Standard deviation of the latent noise on the stem features (the paper's 0.015, default). Grey
            parts with low-contrast defects may need a stronger (e.g. 0.05) perturbation to resemble them.
    """

    name = "reason"

    option_names = ("suppression_target", "noise_std")

    def __init__(self, suppression_target: str = "decoder", noise_std: float = NOISE_STD) -> None:
        super().__init__()
        if suppression_target not in TARGETS:
            raise ValueError(f"suppression_target must be one of {TARGETS}, got {suppression_target!r}")
        if not noise_std > 0:
            raise ValueError(f"noise_std must be positive, got {noise_std!r}")
        self.suppression_target = suppression_target
        self.noise_std = float(noise_std)
        self.options = {"suppression_target": suppression_target, "noise_std": self.noise_std}

    def build(self, spec: TeacherSpec, teacher: torch.nn.Module) -> ReverseDistillationNet:
        oce_blocks = 3 if spec.name == "resnet18" else None
        return ReverseDistillationNet(spec, teacher, projection=MultiProjection(spec.channels), oce_blocks=oce_blocks)

    def optimizers(self, net: ReverseDistillationNet, lr: float) -> list[torch.optim.Optimizer]:
        student = [p for n, p in net.named_parameters() if n.startswith(("bottleneck.", "decoder."))]
        groups = [{"params": student, "lr": lr}, {"params": list(net.projection.parameters()), "lr": ASL_LR}]
        return [torch.optim.Adam(groups, betas=(0.5, 0.999))]

    def training_step(
        self, net: ReverseDistillationNet, images: Tensor, graph: DetectorGraph
    ) -> dict[str, Tensor]:
        with torch.no_grad():
            stem = net.teacher.forward_stem(graph.normalize(images))
            clean = net.teacher.forward_stages(stem)
            noisy_stem, _ = inject_latent_noise(stem, self.generator, self.device_generator, std=self.noise_std)
            noisy = net.teacher.forward_stages(noisy_stem)
        suppressed = net.project(noisy)
        student = net.decoder(net.bottleneck(suppressed))
        kd = sum_over_scales(flattened_cosine_loss, clean, student) + BLOCK_WEIGHT * sum_over_scales(
            pixel_cosine_loss, clean, student
        ) / len(clean)
        target = student if self.suppression_target == "decoder" else clean
        supp = sum_over_scales(flattened_cosine_loss, suppressed, target)
        return {"loss": kd + SUPPRESSION_WEIGHT * supp, "kd": kd, "supp": supp}
