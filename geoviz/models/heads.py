"""Classifier heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NormalizedLinear(nn.Module):
    """Bias-free linear layer with unit-length rows: ``logit_i = x · ŵ_i = ‖x‖ cos θ_i`` (the class
    vectors of Hui et al.'s ICAL, as in the authors' code). ``weight`` holds the raw rows; the
    normalisation happens in the forward pass, so gradients see it."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        # unit-length random rows: the gradient through the row normalisation scales as 1/‖w_i‖, so
        # small rows (e.g. std 0.01) make the head's effective learning rate ~20x too large and the
        # network never leaves chance level (measured on shapes10)
        self.weight = nn.Parameter(F.normalize(torch.randn(out_features, in_features), dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias=False, rows=unit"


def use_normalized_head(model: nn.Module) -> nn.Module:
    """Replace the model's final linear classifier by a ``NormalizedLinear`` of the same shape (in place)."""
    path = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            path = name
    if path is None:
        raise ValueError("the model has no nn.Linear classifier to replace")
    old = model.get_submodule(path)
    parent, _, leaf = path.rpartition(".")
    setattr(
        model.get_submodule(parent) if parent else model,
        leaf,
        NormalizedLinear(old.in_features, old.out_features).to(old.weight.device),
    )
    if hasattr(model, "build_args"):
        model.build_args = {**model.build_args, "head": "normalized"}
    return model
