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


_HEADS = {
    "fc",
    "head",
    "heads",
    "classifier",
    "classif",
    "head_drop",
    "fc_norm",
    "global_pool",
    "avgpool",
    "aux1",
    "aux2",
    "AuxLogits",
}  # heads, and auxiliary heads that run in training only


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def _param_children(m: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, c) for n, c in m.named_children() if _has_params(c)]


def _is_block(m: nn.Module) -> bool:
    """A module with parts of its own, other than a plain run of layers (conv-BN-activation)."""
    kids = list(m.children())
    return bool(kids) and not (isinstance(m, nn.Sequential) and all(not list(c.children()) for c in kids))


def _is_block_sequence(m: nn.Module) -> bool:
    """A container of blocks, e.g. a ResNet stage; not the conv-BN-activation runs inside one block."""
    kids = _param_children(m)
    return isinstance(m, (nn.Sequential, nn.ModuleList)) and len(kids) > 0 and all(_is_block(c) for _, c in kids)


def _blocks(path: str, m: nn.Module, depth: int) -> list[str]:
    kids = _param_children(m)
    if _is_block_sequence(m):
        return [f"{path}.{n}" for n, _ in kids]
    # one level down only where a stage holds exactly one sequence of several blocks (torchvision's
    # ViT encoder.layers), not into a block's own parts (MobileNetV3's .block, Inception's branches)
    inner = [c for _, c in kids if _is_block_sequence(c) and len(_param_children(c)) > 1]
    if depth > 0 and len(inner) == 1:
        return [b for n, c in kids for b in _blocks(f"{path}.{n}", c, depth - 1)]
    return [path]


def block_layers(model: nn.Module) -> list[str]:
    """The blocks of a network, in forward order. Stages are the model's ``stage_names`` (every
    geoviz, ``tv:`` and ``timm:`` model has them; else its top-level children), without identities
    and dropout (they repeat their input at inference) and without the classifier. A stage that is a sequence of blocks
    (residual blocks, transformer
    layers; also one level down, as in torchvision's ViT ``encoder.layers``) gives its blocks."""
    # without stage names (any other network): the top-level children that hold weights (not the
    # flatten, permute, pooling and activation modules between them, which reshape or repeat their input)
    names = list(getattr(model, "stage_names", ()) or [n for n, c in model.named_children() if _has_params(c)])
    out = []
    for name in names:
        stage = model.get_submodule(name)
        if name.split(".")[-1] in _HEADS or isinstance(stage, (nn.Linear, nn.Identity, nn.Dropout, nn.Dropout2d)):
            continue
        out += _blocks(name, stage, depth=1)
    return out


def weight_layers(model: nn.Module) -> int:
    """Depth as the number of convolution and linear layers (a structural count)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
