"""The interface every geoviz model shares (timm-like).

- ``forward_features(x)``: the last convolutional feature map ``(B, C, H, W)``;
- ``forward_head(f)``: global pooling and the classifier, giving logits;
- ``forward_intermediates(x)``: ``(logits, {stage name: feature map})``;
- ``feature_info``: one dict per stage: module path, channels, reduction (input px per feature px);
- ``classifier``: the final ``nn.Linear`` (its rows are the class vectors);
- ``build_args``: what ``build_model`` was called with, so checkpoints can rebuild the model.
"""
from __future__ import annotations

import torch
from torch import nn


class FeatureNet(nn.Module):
    """A stem, named stages run in order, then global average pooling and a linear classifier."""

    stage_names: tuple[str, ...] = ()
    stage_channels: tuple[int, ...] = ()
    stage_reductions: tuple[int, ...] = ()
    build_args: dict

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_intermediates(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feats: dict[str, torch.Tensor] = {}
        x = self.forward_stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
            feats[name] = x
        return self.forward_head(self.forward_final(x)), feats

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.forward_final(x)

    def forward_final(self, x: torch.Tensor) -> torch.Tensor:
        """Anything between the last stage and pooling (e.g. a final BN-ReLU)."""
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=(2, 3))  # global average pooling; unlike adaptive_avg_pool2d its CUDA backward is deterministic
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def classifier(self) -> nn.Linear:
        return self.fc

    @property
    def cam_layer(self) -> nn.Module:
        """Grad-CAM's default layer: the last stage (a model with layers after it, such as
        MobileNetV2's ``conv_last``, names its own)."""
        return getattr(self, self.stage_names[-1])

    @property
    def feature_layers(self) -> tuple[str, ...]:
        return self.stage_names

    @property
    def feature_info(self) -> list[dict]:
        return [
            {"module": n, "channels": c, "reduction": r}
            for n, c, r in zip(self.stage_names, self.stage_channels, self.stage_reductions)
        ]


def init_weights(model: nn.Module) -> None:
    """He-normal convolutions, unit BN, small linear layers (the CIFAR ResNet recipe)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def block_layers(model: nn.Module) -> list[str]:
    """Module paths of the model's blocks, input to output: each residual / inverted-residual
    block of a stage made of blocks, else the stage itself (a VGG conv group, a pooling output).
    Works on the zoo and on ``tv:`` models (which carry ``stage_names``)."""
    stages = list(getattr(model, "stage_names", ()) or [n for n, _ in model.named_children()])
    layers = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.Dropout)
    out = []
    for st in stages:
        m = model.get_submodule(st)
        if isinstance(m, nn.Sequential) and len(m) > 0 and not any(isinstance(c, layers) for c in m):
            out += [f"{st}.{i}" for i in range(len(m))]
        else:
            out.append(st)
    return out


def weight_layers(model: nn.Module) -> int:
    """Depth as the number of convolution and linear layers (a structural count)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
