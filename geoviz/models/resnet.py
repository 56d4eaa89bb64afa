"""CIFAR-style ResNets (He et al. 2016, section 4.2): depth 6n+2, three stages of 16/32/64 channels.

Shortcuts that change shape use a 1×1 convolution + BN (option B), as RepDistiller's resnet8–110.
``width`` multiplies every channel count (``width=4`` gives the common "resnet8x4").
Module paths follow torchvision (``layer2.0.conv1``, ``layer3.4.bn2``), and each block calls its
one ``relu`` twice, so the capture code's ``name#0``/``name#1`` path is exercised by the zoo itself.
"""

from __future__ import annotations

from torch import nn

from ._base import FeatureNet, init_weights
from ._registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class CifarResNet(FeatureNet):
    stage_names = ("layer1", "layer2", "layer3")
    stage_reductions = (1, 2, 4)

    def __init__(self, depth: int = 20, num_classes: int = 10, in_chans: int = 3, width: float = 1.0):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth}"
            )
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        n = (depth - 2) // 6
        w = [max(1, round(c * width)) for c in (16, 16, 32, 64)]
        self.conv1 = nn.Conv2d(in_chans, w[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(w[0], w[1], n, 1)
        self.layer2 = self._stage(w[1], w[2], n, 2)
        self.layer3 = self._stage(w[2], w[3], n, 2)
        self.fc = nn.Linear(w[3], num_classes)
        self.stage_channels = tuple(w[1:])
        init_weights(self)

    @staticmethod
    def _stage(cin, cout, n, stride):
        return nn.Sequential(*[BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)])

    def forward_stem(self, x):
        return self.relu(self.bn1(self.conv1(x)))


@register_model("resnet")
def resnet(depth: int = 20, num_classes: int = 10, in_chans: int = 3, width: float = 1.0) -> CifarResNet:
    return CifarResNet(depth, num_classes, in_chans, width)


for _d in (8, 14, 20, 32, 44, 56, 110):
    register_model(f"resnet{_d}", defaults={"depth": _d})(resnet)
register_model("resnet8x4", defaults={"depth": 8, "width": 4.0})(resnet)
register_model("resnet32x4", defaults={"depth": 32, "width": 4.0})(resnet)
