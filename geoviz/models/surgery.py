"""Structural edits that pruning makes, replayable from a plain spec so that a pruned model saves as
a config plus a state dict (no pickled modules) and ``build_model("pruned", ...)`` rebuilds it.

Two edits, applied to a freshly built base model:

- ``lowrank``: ``{conv path: [mode, r, bn path or None]}``. ``mode="outputs"`` replaces the conv by
  a k×k conv into r channels then a 1×1 conv (with bias) back out; ``mode="inputs"`` by a 1×1
  conv into r channels then the k×k conv (with bias). The BatchNorm after it keeps its shape (its
  values are the pruner's: see ``methods.pruning``).
- ``shapes``: ``{module path: [out, in]}`` for convs, linears and BatchNorms whose channel counts
  a structured pruner (Torch-Pruning) shrank; the modules are recreated at those sizes.
"""

from __future__ import annotations

from torch import nn

from ._registry import build_model, register_model


def get_module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def lowrank_pair(conv: nn.Conv2d, mode: str, r: int) -> nn.Sequential:
    """The two convolutions that re-express ``conv`` through r intermediate channels (weights to be
    filled by the caller)."""
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    if mode == "outputs":
        return nn.Sequential(
            nn.Conv2d(conv.in_channels, r, k, s, p, d, bias=True), nn.Conv2d(r, conv.out_channels, 1, bias=True)
        )
    if mode == "inputs":
        return nn.Sequential(
            nn.Conv2d(conv.in_channels, r, 1, bias=False), nn.Conv2d(r, conv.out_channels, k, s, p, d, bias=True)
        )
    raise ValueError(f"mode must be 'outputs' or 'inputs', got {mode!r}")


def apply_lowrank(model: nn.Module, spec: dict) -> nn.Module:
    for path, (mode, r, _bn) in spec.items():
        set_module(model, path, lowrank_pair(get_module(model, path), mode, int(r)))
    return model


def _resized(m: nn.Module, out: int, inp: int) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        return nn.Conv2d(inp, out, m.kernel_size, m.stride, m.padding, m.dilation, groups=1, bias=m.bias is not None)
    if isinstance(m, nn.Linear):
        return nn.Linear(inp, out, bias=m.bias is not None)
    if isinstance(m, nn.BatchNorm2d):
        return nn.BatchNorm2d(
            out, eps=m.eps, momentum=m.momentum, affine=m.affine, track_running_stats=m.track_running_stats
        )
    raise TypeError(f"cannot resize a {type(m).__name__}")


def channel_shapes(model: nn.Module) -> dict:
    """``{path: [out, in]}`` of every conv, linear and BatchNorm (BatchNorm: [channels, channels])."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            out[name] = [m.out_channels, m.in_channels]
        elif isinstance(m, nn.Linear):
            out[name] = [m.out_features, m.in_features]
        elif isinstance(m, nn.BatchNorm2d):
            out[name] = [m.num_features, m.num_features]
    return out


def apply_shapes(model: nn.Module, spec: dict) -> nn.Module:
    for path, (out, inp) in spec.items():
        set_module(model, path, _resized(get_module(model, path), int(out), int(inp)))
    return model


@register_model("pruned")
def pruned(base: dict, num_classes: int = 10, lowrank: dict | None = None, shapes: dict | None = None) -> nn.Module:
    """A pruned model: ``base`` (the unpruned model's build_args) with the edits replayed."""
    args = dict(base)
    model = build_model(args.pop("name"), args.pop("num_classes", num_classes), **args)
    apply_shapes(model, shapes or {})
    return apply_lowrank(model, lowrank or {})


class InputResize(nn.Module):
    """Runs ``net`` on the input resized to ``size`` × ``size`` (bilinear, antialiased): the same
    network at another input resolution, as paper 4's students at two input sizes."""

    def __init__(self, net: nn.Module, size: int):
        super().__init__()
        self.net, self.size = net, int(size)

    def forward(self, x):
        import torch.nn.functional as F

        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return self.net(x)


@register_model("resized")
def resized(base: dict, size: int, num_classes: int = 10) -> nn.Module:
    """``base`` (a model's build_args) fed images resized to ``size`` px."""
    args = dict(base)
    return InputResize(build_model(args.pop("name"), args.pop("num_classes", num_classes), **args), size)
