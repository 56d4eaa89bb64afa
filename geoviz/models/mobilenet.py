"""A MobileNetV2-like student for 32×32 inputs (Sandler et al. 2018; the CIFAR adaptation of
RepDistiller: stride-1 stem and first stages). ``width=0.5`` is the usual "MobileNetV2 (half)"."""

from __future__ import annotations

from torch import nn

from ._base import FeatureNet, init_weights
from ._registry import register_model

# expansion t, channels c, repeats n, stride s
_CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _ch(c: float) -> int:
    return max(8, int(c + 4) // 8 * 8)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(FeatureNet):
    # the stages end where the resolution drops next (32, 16, 8, 4 px for a 32 px input)
    stage_names = ("stage1", "stage2", "stage3", "stage4")
    stage_reductions = (1, 2, 4, 8)

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: float = 1.0):
        super().__init__()
        cin = _ch(32 * width)
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True)
        )
        groups = ((0, 1), (2,), (3, 4), (5, 6))
        chans = []
        for si, cfg_ids in enumerate(groups):
            blocks = []
            for ci in cfg_ids:
                t, c, n, s = _CFG[ci]
                cout = _ch(c * width)
                for j in range(n):
                    blocks.append(InvertedResidual(cin, cout, s if j == 0 else 1, t))
                    cin = cout
            setattr(self, f"stage{si + 1}", nn.Sequential(*blocks))
            chans.append(cin)
        last = _ch(1280 * max(1.0, width))
        self.conv_last = nn.Sequential(
            nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)
        )
        self.fc = nn.Linear(last, num_classes)
        self.stage_channels = tuple(chans)
        init_weights(self)

    def forward_stem(self, x):
        return self.stem(x)

    def forward_final(self, x):
        return self.conv_last(x)

    @property
    def cam_layer(self) -> nn.Module:
        return self.conv_last  # the last stage is a linear bottleneck; conv_last's map is the one pooled


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 10, in_chans: int = 3, width: float = 1.0) -> MobileNetV2:
    return MobileNetV2(num_classes, in_chans, width)


register_model("mobilenetv2_half", defaults={"width": 0.5})(mobilenetv2)
