"""The training loop: data → method → checkpoint with a calibrated threshold."""

from __future__ import annotations

import contextlib
import json
import math
import platform
import random
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import sdk
from sdk.contract import ImageSize
from sdk.datasets import FOLDER_TEST_KEYS, PACKAGED_SCHEMES, TRAIN_LOG, Sample, load_dataset, load_prepared
from sdk.errors import RdedgeError
from sdk.fileio import write_text_atomic
from sdk.metadata import ModelMetadata, ScoreCalibration

from .backbones import Teacher, TeacherSpec, build_teacher, get_teacher_spec
from .checkpoint import CHECKPOINT_NAME, save_checkpoint
from .components.feature_norm import FeatureStandardizer
from .config import (
    AMP_MODES,
    AUGMENTATIONS,
    DEFAULT_STEPS,
    DEVICES,
    FEATURE_NORMS,
    LR_SCHEDULES,
    TrainConfig,
    auto_short_side,
    head_options,
)
from .graph import DetectorGraph, InputNormalizer
from .methods import Method, get_method
from .model import ReverseDistillationNet
from .resume import (
    ResumePoint,
    TrainingInterrupted,
    check_settings,
    read_state,
    refuse_to_overwrite,
    restore_state,
    save_state,
    state_path,
)
from .weight_average import WeightAverage


class TrainError(RdedgeError, ValueError):
    """A training run that cannot start as asked (device, mixed precision)."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(spec: str) -> torch.device:
    """``auto`` → CUDA when present, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.

    Raises:
        TrainError: An unknown device, or CUDA asked for where PyTorch sees none (with what to check).
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise TrainError(f"unknown device {spec!r}: use {', '.join(DEVICES)}") from None
    if device.type not in ("cpu", "cuda"):
        raise TrainError(f"unknown device {spec!r}: use {', '.join(DEVICES)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"--device {spec}: PyTorch sees no CUDA GPU (torch {torch.__version__}, CUDA build "
                             f"{torch.version.cuda or 'none'}): check the driver and install a CUDA build of torch")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TrainError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device``: ``None`` (FP32) on the CPU and for ``off``.

    Raises:
        TrainError: An unknown mode, or bf16 on a GPU without bf16 support.
    """
    if mode not in AMP_MODES:
        raise TrainError(f"unknown --amp {mode!r}: use {', '.join(AMP_MODES)}")
    if device.type != "cuda" or mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "bf16" and not torch.cuda.is_bf16_supported():
        raise TrainError("--amp bf16: this GPU has no bf16 support; use --amp fp16")
    return torch.bfloat16 if mode == "bf16" else torch.float16


@torch.no_grad()
def score_images(graph: DetectorGraph, images: np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Run the detector graph (on its own device, FP32) on prepared uint8 images → (each map's maximum, scores)."""
    graph.eval()
    device = next(graph.parameters()).device
    map_maxima, scores = [], []
    for start in range(0, len(images), batch_size):
        m, s = graph(torch.from_numpy(images[start : start + batch_size]).to(device))
        map_maxima.append(m.amax(dim=(1, 2)).cpu().numpy())
        scores.append(s.cpu().numpy())
    return np.concatenate(map_maxima), np.concatenate(scores)


LATE_JUMP_FACTOR = 1.5
"""A run warns when its held-out good images score more than this times their best epoch's after its last epoch."""


class LateJumpWarning(UserWarning):
    """The exported weights score the held-out good images much worse than an earlier epoch's did."""


def held_out_score(graph: DetectorGraph, images: np.ndarray, average: WeightAverage | None = None) -> float:
    """Median image score of held-out good images with the weights that would be exported now.

    The moving average's weights where the run keeps one, the network's otherwise. The training is left exactly
    as it was: the network's weights are restored bit for bit and every module's train/eval mode is put back; no
    random number is drawn.
    """
    trained = None
    if average is not None:
        trained = {name: tensor.detach().clone() for name, tensor in graph.net.state_dict().items()
                   if name in average.average}
        average.copy_to(graph.net)
    try:
        _, scores = score_keeping_modes(graph, images)
    finally:
        if trained is not None:
            graph.net.load_state_dict(trained, strict=False)
    return float(np.median(scores))


def first_running_statistics_step(total_steps: int, share: float) -> int:
    """The first optimiser step (0-based) of ``total_steps`` that trains with running batch-norm statistics: the
    last ``share`` of the steps, at least one when ``share`` > 0; ``total_steps`` (none) when it is 0."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"bn_freeze must be in [0, 1) (0: batch statistics at every step), got {share!r}")
    return total_steps - (max(1, math.ceil(share * total_steps)) if share > 0 else 0)


FROZEN_BN_LR_FACTOR = 0.2
"""The learning rate of ``bn_freeze``'s steps, as a share of the run's. With running statistics a layer's output is no
longer invariant to the scale of the weights before it, so a step of the run's size moves it far more: at the full
rate (0.005) KolektorSDD's training loss jumped from 0.62 to 1.35 at the switch and was still 1.18 a hundred steps
later (image AUROC 0.867 → 0.834); at a fifth, with Adam's moments started afresh, it rose to 0.64 in the first
epoch after the switch and ended at 0.59, below the 0.62 before it."""


def use_running_statistics(net: torch.nn.Module) -> None:
    """Every batch-norm layer of ``net`` normalises with its running statistics and stops updating them, as at
    inference; other modules keep their mode. The teacher's layers are in that mode already (ImageNet's
    statistics); for the student it is ``bn_freeze`` (:class:`~train.config.TrainConfig`)."""
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def score_keeping_modes(graph: DetectorGraph, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`score_images` in the middle of training: every module's train/eval mode is put back afterwards."""
    modes = [(module, module.training) for module in graph.modules()]
    try:
        return score_images(graph, images)
    finally:
        for module, mode in modes:
            module.training = mode


def recorded_epochs(held_out: Sequence[float | None]) -> list[tuple[int, float]]:
    """``(epoch, score)`` of every epoch with a held-out score (1-based epochs; None entries are skipped)."""
    return [(epoch, score) for epoch, score in enumerate(held_out, start=1) if score is not None]


def late_jump(held_out: Sequence[float | None], factor: float | None = None) -> str | None:
    """Why the last epoch's weights look worse than an earlier epoch's, or None.

    Args:
        held_out: Median held-out good score after each epoch (None: not recorded).
        factor: How many times the best earlier score the last one may be (default: :data:`LATE_JUMP_FACTOR`).

    Returns:
        A sentence for the user when the last score exceeds ``factor`` times the lowest earlier one; None otherwise
        (also with fewer than two recorded epochs).
    """
    factor = LATE_JUMP_FACTOR if factor is None else factor
    recorded = recorded_epochs(held_out)
    if len(recorded) < 2:
        return None
    best_epoch, best = min(recorded[:-1], key=lambda item: item[1])
    last_epoch, last = recorded[-1]
    if last <= factor * best:
        return None
    return (f"held-out good images score {last:.4g} (median) with the weights of the last epoch ({last_epoch}), "
            f"{last / best:.1f}x the {best:.4g} of epoch {best_epoch}: the loss jumped late in the run and the "
            "exported weights are worse than earlier ones. Train again with --weight-average 0.995 (or another "
            "--seed), or check the run's held_out_score_history in its train_log.json")


LAST_STEP_DIR = "last_step"
"""Sub-folder of a run trained with a weight average (``weight_average`` > 0) holding the same training's last step's
weights as a run of its own (checkpoint and log, calibrated on the same held-out images): ``rdedge export
RUN/last_step`` exports them, to compare with the average's without training twice."""


def write_run(out_dir: Path, graph: DetectorGraph, val_images: np.ndarray, sigmas: float, model: dict[str, Any],
              training: dict[str, Any]) -> Path:
    """Calibrate the graph's current weights on the held-out good images and write ``out_dir``'s checkpoint and
    ``train_log.json`` (atomically) → the checkpoint's path.

    Args:
        model: The :class:`~sdk.metadata.ModelMetadata` fields that describe the model (all but the calibration
            and the training record).
        training: The training record; the held-out images' scores are added to it.
    """
    calibration, val_scores = calibrate(graph, val_images, sigmas)  # FP32, on the training device
    metadata = ModelMetadata(**model, calibration=calibration,
                             training={**training, "validation_scores": [round(float(v), 6) for v in val_scores]})
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save_checkpoint(out_dir / CHECKPOINT_NAME, graph.net, metadata)
    write_text_atomic(out_dir / TRAIN_LOG, json.dumps(json.loads(metadata.to_json()), indent=2) + "\n")
    return path


def calibrate(
    graph: DetectorGraph, validation_images: np.ndarray, sigmas: float
) -> tuple[ScoreCalibration, np.ndarray]:
    """Image and pixel thresholds from the graph's outputs on held-out good images → (calibration, scores).

    The checkpoint's calibration; ``rdedge export`` calibrates each exported graph again on its own outputs.
    """
    map_maxima, scores = score_images(graph, validation_images)
    source = f"fp32 PyTorch graph, {len(scores)} held-out good images"
    return ScoreCalibration.from_scores(scores, sigmas=sigmas, map_maxima=map_maxima, source=source), scores


def local_paths(config: TrainConfig) -> dict[str, str | None]:
    """The config's paths made absolute: the checkpoint is this machine's record, and ``rdedge export`` finds the
    data through it from any working folder (exported models keep names only)."""
    paths: dict[str, str | None] = {"out": str(Path(config.out).resolve())}
    if not config.data.startswith(PACKAGED_SCHEMES):
        paths["data"] = str(Path(config.data).resolve())
    for key in ("weights", *FOLDER_TEST_KEYS):
        if getattr(config, key):
            paths[key] = str(Path(getattr(config, key)).resolve())
    return paths


def software_versions() -> dict[str, str]:
    """Versions recorded in model metadata."""
    versions = {"rdedge": sdk.__version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in ("torchvision", "timm", "onnx", "onnxruntime"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    return versions


def training_hardware(device: torch.device) -> dict[str, object]:
    """Where a run trained: the processor, the kernels PyTorch picked for it and its threads (and the GPU on CUDA).

    Floating-point results of a long training depend on these (vectorised kernels sum in different orders), so two
    runs with the same seed are comparable bit for bit only on the same hardware.
    """
    hardware: dict[str, object] = {
        "cpu": cpu_model_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        hardware["gpu"] = torch.cuda.get_device_name(device)
    return hardware


def cpu_model_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else what :func:`platform.processor` says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def resolve_image_size(value: object, samples: Sequence[Sample], max_read: int = 64) -> ImageSize:
    """The run's input size: a fixed size as given, or ``auto`` / ``auto:N`` fitted to the training images.

    ``auto`` keeps the parts' shape: the median height/width ratio of (at most ``max_read``, evenly spaced) training
    images, the short side 256 (or N), the long side rounded to a multiple of 32 (:meth:`ImageSize.fit_aspect`).
    Square images give a square size; KolektorSDD's 256 x ~645 strips give ``640x256``.
    """
    short_side = auto_short_side(value)
    if short_side is None:
        return ImageSize.parse(value).check_trainable()  # type: ignore[arg-type]
    if not samples:
        raise ValueError("image size auto needs training images to measure")
    picks = samples[:: max(1, len(samples) // max_read)][:max_read]
    aspects = [image.shape[0] / image.shape[1] for image in (sample.load_image() for sample in picks)]
    return ImageSize.fit_aspect(float(np.median(aspects)), 1.0, short_side)


def training_epochs(config: TrainConfig, steps_per_epoch: int) -> int:
    """Epochs to run: ``config.epochs``, or the fewest whole epochs making ``config.steps`` (default
    :data:`~train.config.DEFAULT_STEPS`) optimiser steps."""
    if config.epochs is not None:
        return config.epochs
    steps = DEFAULT_STEPS if config.steps is None else config.steps
    return max(1, -(-steps // steps_per_epoch))


def graph_options(method: Method, config: TrainConfig) -> dict[str, Any]:
    """The deployable graph's head options: the method's, with the run's (:func:`~train.config.head_options`)."""
    return {**method.graph_options(), **head_options(config)}


def build_for_training(method: Method, spec: TeacherSpec, teacher: torch.nn.Module, image_size: ImageSize,
                       device: torch.device, options: dict[str, Any]) -> tuple[ReverseDistillationNet, DetectorGraph]:
    """The method's network and its deployable graph on ``device`` (CUDA: channels-last, cuDNN autotuning)."""
    net = method.build(spec, teacher)
    graph = DetectorGraph(net, image_size, **options).to(device)
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    return net, graph


def fit_feature_norm(teacher: Teacher, spec: TeacherSpec, images: np.ndarray, device: torch.device, *,
                     progress: bool = True) -> FeatureStandardizer:
    """The per-channel standardisation of ``teacher``'s features over the good training ``images`` (FP32; a
    resumed run refits the same values, since the teacher is frozen and the images are the same)."""
    normalize = InputNormalizer(spec.mean, spec.std).to(device)
    standardizer = FeatureStandardizer(spec.channels).to(device)
    return standardizer.fit(teacher.to(device).raw_features, images, normalize, device=device, progress=progress)


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The share of the base learning rate that optimiser step ``step`` (0-based) of ``total`` uses.

    ``constant``: 1 (the papers'). ``cosine``: ``(1 + cos(pi * step / total)) / 2``, from 1 at the first step
    towards 0 at the last. A function of the step alone, so a resumed run takes the same rates as an uninterrupted
    one (a resume that changes the run's length re-shapes the rest of the decay).

    Raises:
        ValueError: An unknown schedule or a ``total`` below 1.
    """
    if total < 1:
        raise ValueError(f"a schedule needs at least one step (got total={total})")
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    raise ValueError(f"unknown lr_schedule {schedule!r}: use {', '.join(LR_SCHEDULES)}")


def augment_batch(batch: torch.Tensor, augment: str, generator: torch.Generator) -> torch.Tensor:
    """A training batch as ``augment`` presents it to the student (host side, before the copy to the device).

    ``none``: the batch itself, and nothing drawn from ``generator`` (runs without augmentation shuffle exactly as
    before the option existed). ``flip``: each image mirrored left-right, then top-bottom, each with probability ½
    (two draws per image from ``generator``, so a resumed run continues the same sequence).

    Args:
        batch: (N, H, W, C) images.
        augment: One of :data:`~train.config.AUGMENTATIONS`.
        generator: The run's shuffling generator.

    Raises:
        ValueError: An unknown augmentation.
    """
    if augment == "none":
        return batch
    if augment != "flip":
        raise ValueError(f"unknown augment {augment!r}: use {', '.join(AUGMENTATIONS)}")
    mirror, upside_down = (torch.rand(2, batch.shape[0], generator=generator) < 0.5).unbind(0)
    batch = torch.where(mirror[:, None, None, None], batch.flip(2), batch)
    return torch.where(upside_down[:, None, None, None], batch.flip(1), batch)


def epoch_order(n_images: int, generator: torch.Generator, hard_share: float = 0.0,
                scores: np.ndarray | None = None) -> torch.Tensor:
    """The training images' indices in the order one epoch draws them (``n_images`` draws).

    Without ``scores`` or with ``hard_share`` 0 it is one random permutation (one draw from ``generator``, as runs
    drew before the option existed). Otherwise the ``k = round(hard_share * n_images)`` highest-scoring images
    take the place of the permutation's last ``k`` draws and the whole is shuffled again (a second draw): each of
    the hardest images is drawn once more than the permutation's kept part holds it (so once or twice), the images
    the replaced draws held are left out that epoch unless they are among the hardest, and the epoch keeps its
    length, so the run's steps and learning rates are as without the option.

    Args:
        n_images: Training images.
        generator: The run's shuffling generator.
        hard_share: Share of the draws given to the hardest images, in [0, 1).
        scores: Each training image's score with the current weights (higher: restored worse), or None.

    Raises:
        ValueError: A share outside [0, 1), or scores that are not one per image.
    """
    if not 0.0 <= hard_share < 1.0:
        raise ValueError(f"hard_images must be in [0, 1) (0: every image once per epoch), got {hard_share!r}")
    order = torch.randperm(n_images, generator=generator)
    if scores is None or hard_share == 0.0:
        return order
    if np.shape(scores) != (n_images,):
        raise ValueError(f"need one score per training image ({n_images}), got shape {np.shape(scores)}")
    k = round(hard_share * n_images)
    if k == 0:
        return order
    hardest = torch.from_numpy(np.argsort(-np.asarray(scores), kind="stable")[:k].copy())
    mixed = torch.cat([order[: n_images - k], hardest])
    return mixed[torch.randperm(n_images, generator=generator)]


class TrainingStep:
    """One optimisation step as training runs it: the method's losses under autocast (``amp_dtype``; None: FP32),
    loss scaling for FP16, gradients accumulated over the method's ``accumulation_steps``, then every optimiser.

    Args:
        method: The method (set up for the graph's device).
        graph: The deployable graph around the network, on its device.
        optimizers: The method's optimisers.
        amp_dtype: Autocast dtype on CUDA (see :func:`resolve_amp`), or None.
        average: A moving average of the weights, updated after every optimiser step; None: none kept.
    """

    def __init__(self, method: Method, graph: DetectorGraph, optimizers: list[torch.optim.Optimizer],
                 amp_dtype: torch.dtype | None, average: WeightAverage | None = None) -> None:
        self.method, self.graph, self.optimizers, self.amp_dtype = method, graph, optimizers, amp_dtype
        self.average = average
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        self.base_lrs = [[group["lr"] for group in opt.param_groups] for opt in optimizers]

    def restart_moments(self) -> None:
        """Forget every optimiser's running state (Adam's moments), as if the optimisers were new."""
        for opt in self.optimizers:
            opt.state.clear()

    def scale_lr(self, factor: float) -> None:
        """Set every optimiser's rates to ``factor`` times the rates they were built with (see :func:`lr_factor`)."""
        for opt, base in zip(self.optimizers, self.base_lrs, strict=True):
            for group, lr in zip(opt.param_groups, base, strict=True):
                group["lr"] = lr * factor

    def __call__(self, batch: torch.Tensor, step: int, *, last: bool = False) -> float:
        """Run step ``step`` (0-based within the epoch; ``last``: the epoch's last) on a batch; returns its loss."""
        device_type = batch.device.type
        autocast = contextlib.nullcontext() if self.amp_dtype is None else torch.autocast(device_type, self.amp_dtype)
        with autocast:
            out = self.method.training_step(self.graph.net, batch, self.graph)
        self.scaler.scale(out["loss"]).backward()
        if (step + 1) % self.method.accumulation_steps == 0 or last:
            for opt in self.optimizers:
                self.scaler.step(opt)
                opt.zero_grad(set_to_none=True)
            self.scaler.update()
            if self.average is not None:
                self.average.update(self.graph.net)
        return float(out["loss"].detach())


def run_settings(config: TrainConfig, size: ImageSize, device: torch.device,
                 amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """What makes a run this run (a resumed one must match; :data:`train.resume.RESUMABLE_CHANGES` may differ):
    the config with paths made absolute, the image size as written, the device and precision actually used."""
    return {**asdict(config), **local_paths(config), "image_size": str(size), "device": str(device),
            "amp": amp_name(amp_dtype)}


def amp_name(amp_dtype: torch.dtype | None) -> str:
    """``off``, ``bfloat16`` or ``float16``."""
    return "off" if amp_dtype is None else str(amp_dtype).removeprefix("torch.")


def train(config: TrainConfig, *, progress: bool = True, resume: bool = False) -> Path:
    """Train a model, calibrate its threshold on held-out good images, and write ``RUN_DIR/checkpoint.pt``.

    The run's state is written atomically to ``RUN_DIR/train_state.pt`` at the end of every epoch
    (:mod:`train.resume`); Ctrl-C keeps the last complete epoch and raises
    :class:`~train.resume.TrainingInterrupted`. The state file is removed once the checkpoint is written.

    After every epoch the held-out good images are scored with the weights that would be exported then
    (:func:`held_out_score`, recorded as ``training.held_out_score_history``); a :class:`LateJumpWarning` is issued
    when the exported weights score them far worse than an earlier epoch's did (:func:`late_jump`).

    Args:
        config: The run's settings.
        progress: Show progress bars.
        resume: Continue the interrupted run in ``config.out`` (same settings; ``epochs`` may change). Without it,
            a folder holding an interrupted run is refused rather than overwritten.

    Returns:
        Path of the checkpoint.

    Raises:
        ResumeError: Nothing to resume, other settings, or an interrupted run in the way of a fresh start.
        TrainingInterrupted: Ctrl-C (a KeyboardInterrupt), after keeping the last complete epoch.
    """
    if config.epochs is not None and config.steps is not None:
        raise ValueError(f"give epochs or steps, not both (got epochs={config.epochs}, steps={config.steps})")
    if any(value is not None and value < 1 for value in (config.epochs, config.steps, config.batch_size)):
        raise ValueError("epochs, steps and batch size must be at least 1")
    if config.feature_norm not in FEATURE_NORMS:
        raise TrainError(f"unknown feature_norm {config.feature_norm!r}: use {', '.join(FEATURE_NORMS)}")
    try:
        spec = get_teacher_spec(config.backbone, config.embedding_channels)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    if config.lr_schedule not in LR_SCHEDULES:
        raise TrainError(f"unknown lr_schedule {config.lr_schedule!r}: use {', '.join(LR_SCHEDULES)}")
    if not 0.0 <= config.weight_average < 1.0:
        raise TrainError(f"weight_average must be in [0, 1) (0: export the last step's weights), got "
                         f"{config.weight_average!r}")
    if config.augment not in AUGMENTATIONS:
        raise TrainError(f"unknown augment {config.augment!r}: use {', '.join(AUGMENTATIONS)}")
    if not 0.0 <= config.hard_images < 1.0:
        raise TrainError(f"hard_images must be in [0, 1) (0: every image once per epoch), got {config.hard_images!r}")
    if not 0.0 <= config.bn_freeze < 1.0:
        raise TrainError(f"bn_freeze must be in [0, 1) (0: batch statistics at every step), got {config.bn_freeze!r}")
    dataset = load_dataset(
        config.data, config.category, validation_fraction=config.validation_fraction, seed=config.seed,
        test_good=config.test_good, test_defect=config.test_defect, masks=config.masks,
    )
    train_samples = dataset.train[: config.max_train_images] if config.max_train_images else dataset.train
    size = resolve_image_size(config.image_size, train_samples)
    device = resolve_device(config.device)
    amp_dtype = resolve_amp(config.amp, device)
    settings = run_settings(config, size, device, amp_dtype)
    saved = read_state(config.out) if resume else None
    if saved is not None:
        check_settings(saved["settings"], settings, state_path(config.out))
    else:
        refuse_to_overwrite(config.out)
    seed_everything(config.seed)
    method = get_method(config.method, **config.method_options)
    method.setup(config.seed, device)
    teacher = build_teacher(config.backbone, config.weights)  # fails loudly when weights are missing
    train_images = load_prepared(train_samples, size, desc="train images", progress=progress)
    val_images = load_prepared(dataset.validation, size, desc="validation images", progress=progress)

    if config.feature_norm == "standardize":
        teacher.feature_norm = fit_feature_norm(teacher, spec, train_images, device, progress=progress)
    options = graph_options(method, config)
    net, graph = build_for_training(method, spec, teacher, size, device, options)
    average = WeightAverage(net, config.weight_average) if config.weight_average else None
    optimize = TrainingStep(method, graph, method.optimizers(net, config.lr or method.default_lr), amp_dtype,
                            average)
    images_on_host = torch.from_numpy(train_images)
    if device.type == "cuda":
        images_on_host = images_on_host.pin_memory()  # asynchronous copies to the GPU
    generator = torch.Generator().manual_seed(config.seed)
    point = ResumePoint(epoch=0, history=[], train_seconds=0.0)
    if saved is not None:
        point = restore_state(saved, settings=settings, net=net, optimizers=optimize.optimizers,
                              scaler=optimize.scaler, shuffle=generator, method=method, out_dir=config.out,
                              average=average)
    history, held_out = list(point.history), list(point.held_out)
    steps_per_epoch = -(-len(train_images) // config.batch_size)
    epochs = training_epochs(config, steps_per_epoch)
    frozen_from = first_running_statistics_step(epochs * steps_per_epoch, config.bn_freeze)
    started = time.perf_counter()
    bar = tqdm(total=epochs * steps_per_epoch, initial=min(point.epoch, epochs) * steps_per_epoch,
               desc=f"train {method.name}", disable=not progress)
    epoch = point.epoch
    try:
        for epoch in range(point.epoch, epochs):
            # The current weights' scores of the training images (from the second epoch on; a resumed run scores
            # the restored weights, which are the interrupted epoch's last).
            scores = score_keeping_modes(graph, train_images)[1] if config.hard_images and epoch > 0 else None
            net.train()
            order = epoch_order(len(train_images), generator, config.hard_images, scores)
            losses = []
            for step, start in enumerate(range(0, len(order), config.batch_size)):
                batch = augment_batch(images_on_host[order[start : start + config.batch_size]], config.augment,
                                      generator).to(device, non_blocking=True)
                global_step = epoch * steps_per_epoch + step
                frozen = global_step >= frozen_from
                if global_step == frozen_from:  # Adam's moments were estimated under batch statistics
                    optimize.restart_moments()
                optimize.scale_lr(lr_factor(config.lr_schedule, global_step, epochs * steps_per_epoch)
                                  * (FROZEN_BN_LR_FACTOR if frozen else 1.0))
                if frozen:
                    use_running_statistics(net)
                losses.append(optimize(batch, step, last=step == steps_per_epoch - 1))
                bar.update(1)
                shown = {"held_out": f"{held_out[-1]:.4f}"} if held_out and held_out[-1] is not None else {}
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}", **shown)
            history.append(float(np.mean(losses)))
            held_out.append(held_out_score(graph, val_images, average))
            save_state(config.out, settings=settings, net=net, optimizers=optimize.optimizers, scaler=optimize.scaler,
                       shuffle=generator, method=method, average=average,
                       point=ResumePoint(epoch + 1, history, point.train_seconds + time.perf_counter() - started,
                                         held_out))
    except KeyboardInterrupt:
        bar.close()
        kept = state_path(config.out)
        done = (f"the first {epoch} epoch(s) are kept in {kept}" if kept.is_file()
                else "no epoch was complete: nothing is kept")
        raise TrainingInterrupted(f"training interrupted in epoch {epoch + 1}/{epochs}; {done}. Continue "
                                  "with the same command and --resume") from None
    bar.close()
    train_seconds = point.train_seconds + time.perf_counter() - started
    out_dir = Path(config.out)
    training = {
        **settings,
        **({"resumed_from_epoch": point.epoch} if saved is not None else {}),
        "dataset": dataset.name,
        "n_train": len(train_images),
        "n_validation": len(val_images),
        "epochs_run": epochs,
        "optimiser_steps": epochs * steps_per_epoch,
        "train_seconds": round(train_seconds, 2),
        "seconds_per_epoch": round(train_seconds / epochs, 3),
        "hardware": training_hardware(device),
        "loss_history": [round(v, 6) for v in history],
    }
    model = {"method": method.name, "backbone": spec.name, "image_size": size, "input_mean": spec.mean,
             "input_std": spec.std, "versions": software_versions(), "graph_options": options}
    last_step_dir = out_dir / LAST_STEP_DIR
    if average is not None:  # the same training's last step, for comparison: a run folder of its own
        write_run(last_step_dir, graph, val_images, config.sigmas, model,
                  {**training, "out": str(last_step_dir.resolve()), "weight_average": 0.0,
                   "last_step_of": str(out_dir.resolve())})
        average.copy_to(net)  # the exported and calibrated weights are the average's
    path = write_run(out_dir, graph, val_images, config.sigmas, model,
                     {**training, "held_out_score_history": [None if v is None else round(v, 6) for v in held_out]})
    if average is None and (last_step_dir / CHECKPOINT_NAME).is_file():
        shutil.rmtree(last_step_dir)  # an earlier run's, in this folder: not this run's last step
    state_path(out_dir).unlink(missing_ok=True)  # the run is complete: nothing left to resume
    jump = late_jump(held_out)
    if jump is not None:
        warnings.warn(f"{path}: {jump}", LateJumpWarning, stacklevel=2)
    return path
