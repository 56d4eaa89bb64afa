"""Precision shared by every loss: autocast may hand activations over in bf16 / fp16, and sums of
squares, softmaxes and Gram matrices lose too much there."""

from __future__ import annotations

import torch


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16 / fp16 are upcast); float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
