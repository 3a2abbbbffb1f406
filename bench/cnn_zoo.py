"""The compile benchmark's models: torchvision's MobileNetV2, ResNet-50/152, a U-Net and a reduced-width
YOLOv4, random weights.

torchvision's wheel cannot load against the CPU build of torch used here, so the architectures are
written out (same layer layout and widths as torchvision's definitions).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU):
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6), conv_bn(hidden, cout, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(classes: int = 1000) -> nn.Module:
    settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    layers: list[nn.Module] = [conv_bn(3, 32, 3, 2, act=nn.ReLU6)]
    cin = 32
    for expand, cout, repeats, stride in settings:
        for i in range(repeats):
            layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    layers += [conv_bn(cin, 1280, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes)]
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(
            conv_bn(cin, width, 1), conv_bn(width, width, 3, stride), conv_bn(width, cout, 1, act=None)
        )
        self.shortcut = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def resnet(blocks: tuple[int, int, int, int], classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for stage, (repeats, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
        for i in range(repeats):
            layers.append(Bottleneck(cin, width, 2 if i == 0 and stage > 0 else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Ronneberger et al.'s layout (padded convolutions): 4 downs, 4 ups with skip connections."""

    def __init__(self, classes: int = 2, widths: tuple[int, ...] = (64, 128, 256, 512, 1024)) -> None:
        super().__init__()

        def double(cin: int, cout: int) -> nn.Module:
            return nn.Sequential(conv_bn(cin, cout, 3), conv_bn(cout, cout, 3))

        self.downs = nn.ModuleList([double(3, widths[0])] + [double(a, b) for a, b in itertools.pairwise(widths)])
        self.ups = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, 2) for a, b in itertools.pairwise(widths))
        self.merges = nn.ModuleList(double(2 * a, a) for a in widths[:-1])
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, down in enumerate(self.downs):
            x = down(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(reversed(self.ups), reversed(self.merges), strict=True):
            x = merge(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def yolov4_reduced() -> nn.Module:
    """YOLOv4 at 3/8 of the channel widths (~1/7 of the FLOPs): the issue's "reduced-width YOLOv4" row."""
    from models.yolov4.network import build

    return build(width=0.375)


def yolov4_tiny() -> nn.Module:
    """Darknet's yolov4-tiny (6.1M parameters, two heads): the detector CPU users deploy."""
    from models.yolov4.network import build

    return build(arch="yolov4-tiny")


MODELS = {
    "mobilenet_v2": (mobilenet_v2, [1, 3, 224, 224]),
    "resnet50": (lambda: resnet((3, 4, 6, 3)), [1, 3, 224, 224]),
    "resnet152": (lambda: resnet((3, 8, 36, 3)), [1, 3, 224, 224]),
    "unet": (UNet, [1, 3, 256, 256]),
    "yolov4_reduced": (yolov4_reduced, [1, 3, 416, 416]),
    "yolov4_tiny": (yolov4_tiny, [1, 3, 416, 416]),
}
