"""What a network costs, measured, never hand-counted: FLOPs of one image by
``torch.utils.flop_counter``, parameters and bytes, wall-clock latency per batch (and per image)
on a chosen device. Shared by the pruning and the compact-students studies and their benchmarks.

Two FLOP counts, because they disagree where it matters: ``flop_counter`` counts the matrix work
alone (convolutions and matrix products, 2 per multiply–add) and ignores normalisation,
activations, biases, pooling and residual sums; ``all_ops_flops`` adds those (per element: 1 for
an activation, a bias, a sum, a pooled input value; 2 for an inference BatchNorm, its scale and
shift), as ptflops' whole-model count adds them. Units differ from ptflops' and fvcore's (they
count multiply–adds, 1 each, and fvcore leaves activations out by default), so their ratios
are not ours to the digit; what matters here is that the elementwise work is counted at all.
A re-parameterisation that shrinks the convolutions but keeps the normalisation and activations
at full width (the decorrelated pairs of ``methods.pruning``) saves less by the second count."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ._utils import preserved_modes, resolve_device
from .inference import unwrap


def measure_flops(model: nn.Module, input_size=(3, 32, 32)) -> int:
    """FLOPs of one image's forward pass, counted by ``torch.utils.flop_counter`` (matrix work only)."""
    return _count(model, input_size)[0]


def all_ops_flops(model: nn.Module, input_size=(3, 32, 32)) -> int:
    """FLOPs of one image's forward pass counting every operation: ``flop_counter``'s matrix work
    plus normalisation, activations, biases, pooling and elementwise sums (``_ELEMENTWISE``)."""
    flops, extra = _count(model, input_size)
    return flops + extra


# aten op (name before the overload) → (FLOPs per element, counted on the output or the first input)
_ELEMENTWISE = {
    **{op: (2, "out") for op in ("native_batch_norm", "_native_batch_norm_legit_no_training", "cudnn_batch_norm")},
    **{op: (5, "out") for op in ("native_layer_norm", "native_group_norm")},  # mean, variance, scale, shift
    **{
        op: (1, "out")
        for base in ("relu", "hardtanh", "leaky_relu", "gelu", "silu", "sigmoid", "hardswish", "elu", "clamp")
        for op in (base, base + "_")
    },
    **{op: (1, "out") for base in ("add", "sub", "mul", "div") for op in (base, base + "_")},
    **{
        op: (1, "in")
        for op in ("max_pool2d_with_indices", "max_pool2d", "avg_pool2d", "_adaptive_avg_pool2d", "mean", "amax")
    },
}


class _ElementwiseCounter(TorchDispatchMode):
    """The work ``flop_counter`` leaves out: the ``_ELEMENTWISE`` ops, and the bias adds of
    convolutions and ``addmm`` (whose multiply–adds ``flop_counter`` counts)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        first = out[0] if isinstance(out, (tuple, list)) else out
        if name == "convolution" and args[2] is not None or name == "addmm":
            self.flops += first.numel()
        elif name in _ELEMENTWISE:
            per, on = _ELEMENTWISE[name]
            self.flops += per * (args[0].numel() if on == "in" else first.numel())
        return out


def _count(model: nn.Module, input_size) -> tuple[int, int]:
    """(flop_counter's FLOPs, the rest) of one image, the model in eval mode and given back as it was."""
    net = unwrap(model)
    p = next(net.parameters())
    with preserved_modes(net), torch.no_grad():
        net.eval()
        x = torch.zeros(1, *input_size, device=p.device, dtype=p.dtype)
        with FlopCounterMode(display=False) as counter, _ElementwiseCounter() as rest:
            net(x)
    return int(counter.get_total_flops()), int(rest.flops)


def measure_latency(
    model: nn.Module, input_size=(3, 32, 32), *, batch: int = 1, device="cpu", repeats: int = 20, warmup: int = 3
) -> float:
    """Median wall-clock milliseconds per forward pass of a ``batch`` (inference mode)."""
    dev = resolve_device(device)
    net = copy.deepcopy(unwrap(model)).to(dev).eval()
    x = torch.randn(batch, *input_size, device=dev)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t = time.perf_counter()
            net(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def flop_counts(model: nn.Module, input_size=(3, 32, 32)) -> tuple[int, int]:
    """(``measure_flops``, ``all_ops_flops``) of one image from one forward pass."""
    flops, extra = _count(model, input_size)
    return flops, flops + extra


def model_costs(model: nn.Module, input_size=(3, 32, 32), *, batches=(1, 64), device="cpu", repeats: int = 20) -> dict:
    """FLOPs per image (``flops``: flop_counter's; ``flops_all_ops``: every operation), parameters,
    bytes of parameters and buffers, latency (ms per batch and per image)."""
    net = unwrap(model)
    out = {
        **dict(zip(("flops", "flops_all_ops"), flop_counts(net, input_size))),
        "params": int(sum(p.numel() for p in net.parameters())),
        "bytes": int(sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])),
    }
    for b in batches:
        out[f"latency_ms_b{b}"] = measure_latency(net, input_size, batch=b, device=device, repeats=repeats)
        out[f"latency_ms_per_image_b{b}"] = out[f"latency_ms_b{b}"] / b
    return out


__all__ = ["measure_flops", "all_ops_flops", "flop_counts", "measure_latency", "model_costs"]
