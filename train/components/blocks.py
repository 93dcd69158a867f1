"""Residual blocks for the one-class embedding (downsampling) and the reverse decoder (upsampling).

Downsampling blocks are torchvision's ``BasicBlock`` / ``Bottleneck``. The decoder's blocks mirror them, with the
stride-2 3x3 convolution (and the shortcut's 1x1 stride-2 convolution) replaced by a 2x2 stride-2 transposed
convolution, as in RD4AD's ``de_resnet``.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck


def conv3x3(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


def deconv2x2(inplanes: int, planes: int) -> nn.ConvTranspose2d:
    """2x2 stride-2 transposed convolution, no bias: doubles the resolution."""
    return nn.ConvTranspose2d(inplanes, planes, kernel_size=2, stride=2, bias=False)


class UpBasicBlock(nn.Module):
    """Basic residual block that optionally doubles the resolution (conv1 becomes a 2x2 transposed conv).

    Args:
        inplanes: Input channels.
        planes: Output channels.
        upsample: Double the resolution (with a transposed-conv shortcut).
        final_relu: End with ReLU (off for teachers whose features are signed).
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, upsample: bool = False, final_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = deconv2x2(inplanes, planes) if upsample else conv3x3(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = (
            nn.Sequential(deconv2x2(inplanes, planes), nn.BatchNorm2d(planes)) if upsample else None
        )
        self.final_relu = final_relu

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (self.shortcut(x) if self.shortcut is not None else x)
        return self.relu(out) if self.final_relu else out


class UpBottleneck(nn.Module):
    """Bottleneck residual block (1x1, 3x3 or 2x2 transposed, 1x1) that optionally doubles the resolution.

    Args:
        inplanes: Input channels.
        planes: Output channels divided by the expansion (4).
        upsample: Double the resolution (the middle conv and the shortcut become 2x2 transposed convs).
        width_per_group: ResNet ``base_width``: the middle width is ``planes * width_per_group / 64``.
        final_relu: End with ReLU.
    """

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, upsample: bool = False, width_per_group: int = 64, final_relu: bool = True
    ) -> None:
        super().__init__()
        width = planes * width_per_group // 64
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = deconv2x2(width, width) if upsample else conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential(deconv2x2(inplanes, out), nn.BatchNorm2d(out)) if upsample else None
        self.final_relu = final_relu

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + (self.shortcut(x) if self.shortcut is not None else x)
        return self.relu(out) if self.final_relu else out


def down_stage(block: str, inplanes: int, planes: int, blocks: int, width_per_group: int) -> nn.Sequential:
    """A ResNet stage of ``blocks`` torchvision blocks; the first halves the resolution (1x1 conv shortcut)."""
    block_class = Bottleneck if block == "bottleneck" else BasicBlock
    out = planes * block_class.expansion
    shortcut = nn.Sequential(nn.Conv2d(inplanes, out, kernel_size=1, stride=2, bias=False), nn.BatchNorm2d(out))
    kwargs = {"base_width": width_per_group} if block == "bottleneck" else {}
    layers = [block_class(inplanes, planes, stride=2, downsample=shortcut, **kwargs)]
    layers += [block_class(out, planes, **kwargs) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def up_stage(
    block: str, inplanes: int, planes: int, blocks: int, width_per_group: int, final_relu: bool = True
) -> nn.Sequential:
    """A decoder stage of ``blocks`` blocks; the first doubles the resolution. ``final_relu`` applies to the last."""
    layers: list[nn.Module] = []
    for i in range(blocks):
        last = i == blocks - 1
        relu = final_relu or not last
        if block == "bottleneck":
            layers.append(UpBottleneck(inplanes, planes, upsample=i == 0, width_per_group=width_per_group,
                                       final_relu=relu))
            inplanes = planes * UpBottleneck.expansion
        else:
            layers.append(UpBasicBlock(inplanes, planes, upsample=i == 0, final_relu=relu))
            inplanes = planes
    return nn.Sequential(*layers)


def init_resnet_weights(module: nn.Module) -> None:
    """ResNet initialisation: Kaiming-normal (fan_out, ReLU) for ``Conv2d``, BN weight 1 / bias 0.

    ``ConvTranspose2d`` keeps PyTorch's default initialisation, as in the official decoders.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
