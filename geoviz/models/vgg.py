"""CIFAR-style VGG with batch norm (the vgg8/11/13 of RepDistiller): five conv blocks, max-pool
between them, global average pooling, one linear classifier."""

from __future__ import annotations

from torch import nn

from ._base import FeatureNet, init_weights
from ._registry import register_model

_CFG = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
}


class CifarVGG(FeatureNet):
    stage_names = ("block0", "block1", "block2", "block3", "block4")
    stage_reductions = (1, 2, 4, 8, 16)

    def __init__(self, depth: int = 13, num_classes: int = 10, in_chans: int = 3, width: float = 1.0):
        super().__init__()
        if depth not in _CFG:
            raise ValueError(f"VGG depth must be one of {sorted(_CFG)}, got {depth}")
        cin, chans = in_chans, []
        for i, widths in enumerate(_CFG[depth]):
            layers = [] if i == 0 else [nn.MaxPool2d(2)]
            for c in widths:
                c = max(1, round(c * width))
                layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                cin = c
            setattr(self, f"block{i}", nn.Sequential(*layers))
            chans.append(cin)
        self.stage_channels = tuple(chans)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)


@register_model("vgg")
def vgg(depth: int = 13, num_classes: int = 10, in_chans: int = 3, width: float = 1.0) -> CifarVGG:
    return CifarVGG(depth, num_classes, in_chans, width)


for _d in _CFG:
    register_model(f"vgg{_d}", defaults={"depth": _d})(vgg)
