"""The settings of a training run, without PyTorch (the ``rdedge`` command reads its defaults from here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sdk.contract import ImageSize

DEFAULT_STEPS = 1000
"""Training length when neither epochs nor steps are given: 1,000 optimiser steps, the fewest whole epochs making
them (``benchmarks/results/accuracy.md``: KolektorSDD's 250 images at 30 epochs were under-trained, 0.815 -> 0.875
image AUROC at 1,000 steps; bottle, tire and ELPV within 0.005). About 10 minutes on bottle on a 2-core CPU."""
DEFAULT_EPOCHS = 30
"""The demo's training length (``rdedge demo``: ELPV, where 1,000 steps gave the same accuracy in twice the time)."""


@dataclass
class TrainConfig:
    """Settings of one training run (the ``rdedge train`` options).

    Attributes:
        data: Dataset spec: an MVTec-layout folder, a plain folder of good images, or ``elpv:mono``/``elpv:poly``.
        out: Run folder for the checkpoint.
        category: MVTec category when ``data`` is a root with several.
        method: Method name.
        backbone: Teacher name.
        weights: Local teacher weights file (ResNets).
        epochs: Training length in epochs (fixed; no model selection). Give ``epochs`` or ``steps``, not both.
        steps: Training length in optimiser steps: the fewest whole epochs that make at least this many (small
            sets get as many updates as large ones). Neither given: :data:`DEFAULT_STEPS`.
        image_size: Model input size: ``"auto"`` (the training images' median aspect, short side 256;
            ``"auto:320"`` for another short side), a side (``256``, square) or height x width (``"256x640"`` or
            ``(256, 640)``),
            each a multiple of 32 and at least 64. Images are resized to it (no crop, no padding).
        batch_size: Images per step.
        lr: Student learning rate; the method's default when None.
        lr_schedule: ``constant`` (the papers: the same rate for every step) or ``cosine`` (the rate decays from
            ``lr`` to zero along a half cosine over the run's optimiser steps, so that the last steps, whose
            weights are exported, move the student less). See :data:`LR_SCHEDULES`.
        weight_average: Decay of an exponential moving average of the student's weights, exported instead of the
            last step's (:mod:`train.weight_average`); 0 (the papers', default) exports the last step's weights.
            With an average, the last step's weights are written too, as the run ``OUT/last_step``.
        augment: ``none`` (the papers: training images as they are) or ``flip`` (each training image of each step
            mirrored left-right and top-bottom, each with probability ½, drawn from the shuffling generator: four
            times the views of a small set, for parts whose good appearance does not depend on orientation). See
            :data:`AUGMENTATIONS`.
        hard_images: Share of each epoch's draws given to the training images the student restores worst: before
            every epoch but the first, the training images are scored by the graph with the current weights, and
            that share of the epoch's draws (shuffled in) repeats the highest-scoring images in place of as many
            random ones; 0 (the papers', default) draws every image once per epoch. For good parts with rare normal
            regions (a white gap at a strip's edge, a label) that the student otherwise sees too seldom to
            restore. Scoring the training set before each epoch takes about 0.8 of an epoch's training time (RD4AD,
            Lite0, KolektorSDD on a 2-core CPU). Measured worse than 0 on KolektorSDD's image AUROC
            (``benchmarks/results/accuracy.md``). See :func:`train.trainer.epoch_order`.
        bn_freeze: Share of the last optimiser steps in which the student's batch-norm layers normalise with their
            running statistics, as at inference, and stop updating them, at a fifth of the learning rate with Adam's
            moments started afresh (:data:`train.trainer.FROZEN_BN_LR_FACTOR`); 0.1 by default, 0 (the papers')
            trains every step with each batch's own statistics. Batch statistics hide a rare good image whose
            features a channel carries far beyond the usual range (the batch's variance takes it in), so the student
            is never taught that image as inference sees it; with running statistics the loss does. With 0,
            RD4AD scored ten of KolektorSDD's own training strips (a bright band at the edge) above every defect.
            Measured for every method on every public set (``benchmarks/results/accuracy.md``, the recipe rows
            against those labelled ``bn_freeze=0``; the README sums them up): 0.025 to 0.107 more image AUROC on
            KolektorSDD for every method; on tyres more for RD++ and DRD, less for REASON and, at seed 0 only, RD4AD;
            ELPV within 0.004, bottle within 0.001.
            See :func:`train.trainer.use_running_statistics`.
        seed: Seed of initialisation, shuffling, augmentation and the validation hold-out.
        validation_fraction: Share of good training images held out for calibration.
        sigmas: Threshold = validation median + ``sigmas`` · 1.4826 · MAD (:data:`sdk.metadata.MEDIAN_MAD`).
        image_score: The graph's image score: ``max`` (the papers') or ``top_mean`` (mean of the map's
            ``top_fraction`` highest pixels); ``rdedge export --image-score`` can change it without retraining.
        top_fraction: Share of the map's pixels averaged by ``top_mean``.
        map_strides: Teacher feature strides whose distance maps form the anomaly map (the papers: 4, 8, 16).
            The recipe's head (strides 8 and 16, mean of the top 0.1 %) was chosen on held-out good images with
            synthetic defects, never on test images (``benchmarks/results/scores.md``); ``--map-strides 4,8,16
            --image-score max`` is the papers' head.
        map_sigma: Gaussian σ of the anomaly map's blur, in pixels of the model input (the papers: 4). σ = 8
            raised image and pixel AUROC on KolektorSDD's cracks and cost AUPRO on tire and bottle
            (``benchmarks/results/blur.md``). ``rdedge export --map-sigma`` changes it without retraining.
        map_pool: Side of the neighbourhood (odd) over which the head averages teacher and student features before
            their cosine distance: 1 (the papers') compares single positions, 3 compares 3x3 neighbourhoods as
            PatchCore does. ``rdedge export --map-pool`` changes it without retraining.
        feature_norm: ``none`` (the papers: raw teacher features) or ``standardize`` (every teacher channel
            standardised with its mean and standard deviation over the good training images, fitted once before
            training and exported inside the graph; see :mod:`train.components.feature_norm`). Measured worse
            than ``none`` with RD4AD on all four public sets (``benchmarks/results/accuracy.md``).
        embedding_channels: Channels of the student's one-class embedding φ, from which the decoder restores the
            teacher's features: ``None`` (the papers') is twice the teacher's deepest channels (224 for Lite0, 512
            for ResNet-18, 2048 for the wide ResNet). Fewer channels make a tighter bottleneck, which restores less
            of what the good images never showed (and costs less to run); see the README's accuracy section.
        max_train_images: Use only the first N training images (quick runs and tests); all when None.
        method_options: Method-specific options (e.g. ``{"refinement": False}`` for DRD).
        test_good: Plain-folder data only: good test images (for ``rdedge evaluate``; never trained on).
        test_defect: Plain-folder data only: defective test images.
        masks: Plain-folder data only: masks of the defective test images, matched by file stem.
        device: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        amp: Mixed precision on CUDA: ``auto`` (bf16 where the GPU supports it, else fp16 with loss scaling),
            ``bf16``, ``fp16`` or ``off``; the CPU always trains in FP32.
    """

    data: str
    out: str
    category: str | None = None
    method: str = "rd4ad"
    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    epochs: int | None = None
    steps: int | None = None
    image_size: int | str | tuple[int, int] = "auto"
    batch_size: int = 16
    lr: float | None = None
    lr_schedule: str = "constant"
    weight_average: float = 0.0
    augment: str = "none"
    hard_images: float = 0.0
    bn_freeze: float = 0.1
    seed: int = 0
    validation_fraction: float = 0.1
    sigmas: float = 3.0
    image_score: str = "top_mean"
    top_fraction: float = 0.001
    map_strides: tuple[int, ...] = (8, 16)
    map_sigma: float = 4.0
    map_pool: int = 1
    feature_norm: str = "none"
    embedding_channels: int | None = None
    max_train_images: int | None = None
    method_options: dict[str, Any] = field(default_factory=dict)
    test_good: str | None = None
    test_defect: str | None = None
    masks: str | None = None
    device: str = "auto"
    amp: str = "auto"


def head_options(config: TrainConfig) -> dict[str, Any]:
    """The anomaly-map head's options of a run (image score, top fraction, map strides, blur σ, feature pooling), as
    :class:`~train.graph.DetectorGraph` takes them and the model's metadata records them."""
    return {"image_score": config.image_score, "top_fraction": config.top_fraction,
            "map_strides": list(config.map_strides), "sigma": config.map_sigma, "feature_pool": config.map_pool}


DEVICES = ("auto", "cpu", "cuda", "cuda:N")
"""What ``--device`` takes."""
AMP_MODES = ("auto", "bf16", "fp16", "off")
"""What ``--amp`` takes."""


FEATURE_NORMS = ("none", "standardize")
"""What ``feature_norm`` takes (see :mod:`train.components.feature_norm`)."""
LR_SCHEDULES = ("constant", "cosine")
"""What ``lr_schedule`` takes (see :func:`train.trainer.lr_factor`)."""
AUGMENTATIONS = ("none", "flip")
"""What ``augment`` takes (see :func:`train.trainer.augment_batch`)."""


AUTO_SIZE = "auto"
"""``image_size`` that follows the training images' aspect (see :func:`auto_short_side`)."""
AUTO_SHORT_SIDE = 256
"""The short side of an ``auto`` size unless ``auto:N`` says otherwise."""


def auto_short_side(value: object) -> int | None:
    """The short side an ``auto`` / ``auto:N`` image size asks for; None for a fixed size.

    Raises:
        ValueError: ``auto:N`` with N not a multiple of 32 of at least 64.
    """
    if not isinstance(value, str) or not value.strip().lower().startswith(AUTO_SIZE):
        return None
    _, _, side = value.strip().lower().partition(":")
    if not side:
        return AUTO_SHORT_SIDE
    if not side.isdigit():
        raise ValueError(f"not an image size: {value!r} (auto, or auto:N with N the short side)")
    ImageSize.parse(int(side)).check_trainable()
    return int(side)


def parse_key_values(items: Sequence[str], what: str = "option") -> dict[str, object]:
    """``["a=1", "b=true", "c=x"]`` → ``{"a": 1, "b": True, "c": "x"}`` (ints, floats and booleans converted).

    Raises:
        ValueError: An item that is not ``KEY=VALUE``, naming it as ``what``.
    """
    options: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {item!r} is not KEY=VALUE")
        value: object = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    pass
        options[key] = value
    return options


__all__ = ["AMP_MODES", "AUGMENTATIONS", "AUTO_SIZE", "DEFAULT_EPOCHS", "DEFAULT_STEPS", "DEVICES", "FEATURE_NORMS",
           "LR_SCHEDULES", "TrainConfig", "auto_short_side", "parse_key_values"]
