"""Overhead of ActivationRecorder and speed of the procedural shape generator.

Prints one JSON line: the time of a plain no_grad forward of torchvision resnet18 (batch 64,
32×32) and of the same forward under ActivationRecorder on 4 layers (timed interleaved, median of
repeats), their ratio (target <= 1.10), and make_shapes("shapes10", 10000) images per second.
"""

from __future__ import annotations

import json
import platform
import statistics
import time

import torch
import torchvision
from _common import bench_setup

from geoviz.capture import ActivationRecorder
from geoviz.datasets import make_shapes


def _time(fn, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main() -> None:
    args, dev, sync = bench_setup(__doc__, rounds=15, shapes=10000)
    model = torchvision.models.resnet18(num_classes=10).eval().to(dev)
    x = torch.randn(64, 3, 32, 32, device=dev)
    layers = ["layer1", "layer2", "layer3", "layer4"]

    def plain():
        with torch.no_grad():
            model(x)
        sync()

    rec = ActivationRecorder(model, layers, device=None)

    def recorded():
        with torch.no_grad():
            model(x)
            rec.activations
        sync()

    for _ in range(5):
        plain()
    with rec:
        for _ in range(5):
            recorded()
        t_plain, t_rec = [], []
        for _ in range(args.rounds):  # interleaved, so drift hits both equally
            t_plain.append(_time(plain, 3))
            t_rec.append(_time(recorded, 3))
    p, r = statistics.median(t_plain), statistics.median(t_rec)

    make_shapes("shapes10", 256, return_meta=False)  # warm-up
    t = time.perf_counter()
    make_shapes("shapes10", args.shapes, seed=1, return_meta=False)
    shapes_s = time.perf_counter() - t
    print(
        json.dumps(
            {
                "benchmark": "capture",
                "device": str(dev),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine(),
                "resnet18_b64_32px_plain_ms": round(p * 1e3, 3),
                "resnet18_b64_32px_recorder_4_layers_ms": round(r * 1e3, 3),
                "recorder_overhead_ratio": round(r / p, 4),
                "target_ratio": 1.10,
                "shapes10_n": args.shapes,
                "shapes10_seconds": round(shapes_s, 3),
                "shapes10_images_per_s": round(args.shapes / shapes_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
