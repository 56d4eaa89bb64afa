"""Wide ResNets (Zagoruyko & Komodakis 2016): pre-activation blocks, depth 6n+4, widths
16·k, 32·k, 64·k; ``wrn_40_2`` and ``wrn_16_2`` are the usual KD teacher/student pair."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ._base import FeatureNet, init_weights
from ._registry import register_model


class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = self.relu1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(o)
        o = self.relu2(self.bn2(self.conv1(o)))
        if self.dropout > 0:
            o = F.dropout(o, p=self.dropout, training=self.training)
        return self.conv2(o) + shortcut


class WideResNet(FeatureNet):
    stage_names = ("block1", "block2", "block3")
    stage_reductions = (1, 2, 4)

    def __init__(self, depth: int = 16, widen: int = 2, num_classes: int = 10, in_chans: int = 3, dropout: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        w = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_chans, w[0], 3, 1, 1, bias=False)
        for i, stride in enumerate((1, 2, 2)):
            blocks = [
                WideBlock(w[i] if j == 0 else w[i + 1], w[i + 1], stride if j == 0 else 1, dropout) for j in range(n)
            ]
            setattr(self, f"block{i + 1}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(w[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(w[3], num_classes)
        self.stage_channels = tuple(w[1:])
        init_weights(self)

    def forward_stem(self, x):
        return self.conv1(x)

    def forward_final(self, x):
        return self.relu(self.bn(x))


@register_model("wrn")
def wrn(depth: int = 16, widen: int = 2, num_classes: int = 10, in_chans: int = 3, dropout: float = 0.0) -> WideResNet:
    return WideResNet(depth, widen, num_classes, in_chans, dropout)


for _d, _k in ((16, 1), (16, 2), (16, 4), (28, 10), (40, 1), (40, 2)):
    register_model(f"wrn_{_d}_{_k}", defaults={"depth": _d, "widen": _k})(wrn)
