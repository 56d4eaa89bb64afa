"""What a network costs, measured, never hand-counted: FLOPs of one image by
``torch.utils.flop_counter``, parameters and bytes, wall-clock latency per batch (and per image)
on a chosen device. Shared by the pruning and the compact-students studies and their benchmarks."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ._utils import resolve_device
from .inference import unwrap


def measure_flops(model: nn.Module, input_size=(3, 32, 32)) -> int:
    """FLOPs of one image's forward pass, counted by ``torch.utils.flop_counter``."""
    net = unwrap(model)
    p = next(net.parameters())
    was = net.training
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, *input_size, device=p.device, dtype=p.dtype))
    net.train(was)
    return int(counter.get_total_flops())


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


def model_costs(model: nn.Module, input_size=(3, 32, 32), *, batches=(1, 64), device="cpu", repeats: int = 20) -> dict:
    """FLOPs per image, parameters, bytes of parameters and buffers, latency (ms per batch and per
    image)."""
    net = unwrap(model)
    out = {
        "flops": measure_flops(net, input_size),
        "params": int(sum(p.numel() for p in net.parameters())),
        "bytes": int(sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])),
    }
    for b in batches:
        out[f"latency_ms_b{b}"] = measure_latency(net, input_size, batch=b, device=device, repeats=repeats)
        out[f"latency_ms_per_image_b{b}"] = out[f"latency_ms_b{b}"] / b
    return out


__all__ = ["measure_flops", "measure_latency", "model_costs"]
