"""DRD (Ge et al., Neurocomputing 2025): dual reverse distillation.

Network: teacher → cascade fusion (MFCF) + OCE → decoder; the exported map is the *mean* of the three upsampled
distance maps, and the image score uses DRD's detection refinement inside the graph (switchable, for the ablation).

Training, following the official ``train.py`` and ``funcs.py`` behaviour:

* normal branch: S(I) = D(OCBE(T(I)));
* pseudo-abnormal branch: PI from self cut-paste (:mod:`.synthesis`), teacher features perturbed with
  0.1 · N(0, 1) noise, S(PI) = D(OCBE(T̃(PI))); the two branches run separately, so batch norm sees each batch's own
  statistics;
* combined KD loss: Σ_k [per-pixel cosine + per-image channel cosine](T_k(I), S_k(I));
* reconstruction loss: Σ_k channel cosine(T_k(I), S_k(PI)) (restore normal features from the pseudo-abnormal input);
* segmentation loss: 0.1 · L1 between the mean upsampled distance map of (T̃_k(PI), S_k(PI)) and the soft target.
  As in the official code, the *noisy* teacher features enter this map (the code aliases them);
* one Adam, lr 0.005, betas (0.5, 0.999), weight decay 1e-5.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...backbones import TeacherSpec
from ...components.bottleneck import CascadeFusion
from ...graph import DetectorGraph
from ...losses import channel_cosine_loss, pixel_cosine_loss, sum_over_scales
from ...model import ReverseDistillationNet
from ..base import Method, unit_images
from .synthesis import SEGMENTATION_TARGETS, cut_paste, segmentation_target

FEATURE_NOISE = 0.1
SEGMENTATION_WEIGHT = 0.1
WEIGHT_DECAY = 1e-5


class DRD(Method):
    """DRD: MFCF fusion, pseudo-abnormal branch, combined KD / reconstruction / segmentation losses.

    Args:
        refinement: Use the detection refinement in the exported score (default True; False for the ablation).
        segmentation_target: Soft target of the segmentation loss: ``cosine`` (the paper's 1 − cos over RGB) or
            ``difference`` (mean absolute intensity difference; for grey parts, where the RGB cosine of a pasted
            patch is ~0 and the pseudo-abnormal branch learns nothing; :func:`.synthesis.difference_target`).
    """

    name = "drd"
    combine = "mean"
    option_names = ("refinement", "segmentation_target")

    def __init__(self, refinement: bool = True, segmentation_target: str = "cosine") -> None:
        super().__init__()
        if segmentation_target not in SEGMENTATION_TARGETS:
            raise ValueError(f"segmentation_target must be one of {SEGMENTATION_TARGETS}, got {segmentation_target!r}")
        self.use_refinement = bool(refinement)
        self.segmentation_target = segmentation_target
        self.options = {"refinement": self.use_refinement, "segmentation_target": segmentation_target}

    def graph_options(self) -> dict[str, object]:
        return {"combine": self.combine, "refinement": self.use_refinement}

    def build(self, spec: TeacherSpec, teacher: torch.nn.Module) -> ReverseDistillationNet:
        return ReverseDistillationNet(spec, teacher, fusion=CascadeFusion(spec.channels))

    def optimizers(self, net: ReverseDistillationNet, lr: float) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(net.student_parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=WEIGHT_DECAY)]

    def training_step(
        self, net: ReverseDistillationNet, images: Tensor, graph: DetectorGraph
    ) -> dict[str, Tensor]:
        clean = graph.normalize(images)
        pseudo01, _ = cut_paste(unit_images(images), self.rng)  # host-side draws, tensors on the images' device
        pseudo = graph.normalize.from_unit(pseudo01)
        target = segmentation_target(self.segmentation_target, pseudo, clean)

        teacher = net.encode(clean)
        student = net.decode(teacher)
        noisy_teacher = [
            t + FEATURE_NOISE * torch.randn(t.shape, generator=self.device_generator, device=t.device, dtype=t.dtype)
            for t in net.encode(pseudo)
        ]
        pseudo_student = net.decode(noisy_teacher)

        kd = sum_over_scales(pixel_cosine_loss, teacher, student) + sum_over_scales(
            channel_cosine_loss, teacher, student
        )
        rec = sum_over_scales(channel_cosine_loss, teacher, pseudo_student)
        pseudo_map = graph.head.raw_map(noisy_teacher, pseudo_student)  # the exported head's map, before smoothing
        seg = SEGMENTATION_WEIGHT * (pseudo_map - target).abs().mean()
        return {"loss": kd + rec + seg, "kd": kd, "rec": rec, "seg": seg}
