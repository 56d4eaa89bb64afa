"""A small CNN for 28×28-ish inputs (digits, keypoint maps): two conv-BN-ReLU-pool stages."""

from __future__ import annotations

from torch import nn

from ._base import FeatureNet, init_weights
from ._registry import register_model


class SmallCNN(FeatureNet):
    stage_names = ("block1", "block2")
    stage_reductions = (2, 4)

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 32):
        super().__init__()
        w1, w2 = width // 2, width
        self.block1 = nn.Sequential(
            nn.Conv2d(in_chans, w1, 3, padding=1, bias=False),
            nn.BatchNorm2d(w1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(w1, w2, 3, padding=1, bias=False), nn.BatchNorm2d(w2), nn.ReLU(inplace=True), nn.MaxPool2d(2)
        )
        self.fc = nn.Linear(w2, num_classes)
        self.stage_channels = (w1, w2)
        init_weights(self)


@register_model("smallcnn")
def smallcnn(num_classes: int = 10, in_chans: int = 1, width: int = 32) -> SmallCNN:
    return SmallCNN(num_classes, in_chans, width)
