"""Cost of geometric transfer per training step.

Prints one JSON line: the time of one training step of the engine (``geoviz.engine.TrainStep``,
batch 128 of shapes10 32×32, resnet20 student, resnet56 teacher run online) for CE, KD, and
KD + geometric loss on two layer pairs (layer2, layer3; m = 256 sampled positions each), timed
interleaved (median of rounds), the ratio (KD+geometric)/KD (target <= 1.30), the time of the
geometric term's forward + backward alone (its cost can hide in the step-time noise), and the peak memory
of the geometric term: on CUDA from the allocator, on the CPU from the profiler's allocation
events (running sum of what the term's forward and backward allocate and free).
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from _common import bench_setup, synchronizer

from geoviz.datasets import get_dataset
from geoviz.engine import TrainStep, make_optimizer
from geoviz.losses import build_term, local_geometry_loss
from geoviz.models import build_model

PAIRS = {"layer2": "layer2", "layer3": "layer3"}
SETUPS = {
    "ce": ["ce"],
    "kd": [{"name": "ce", "weight": 0.1}, {"name": "kd", "weight": 0.9, "T": 4}],
    "kd+geometric": [
        {"name": "ce", "weight": 0.1},
        {"name": "kd", "weight": 0.9, "T": 4},
        {"name": "geometric", "weight": 10.0, "pairs": PAIRS, "m": 256},
    ],
}


def geometric_peak_bytes(student, teacher, x, dev) -> int:
    from geoviz.capture import record

    # leaves: the backward measured is the term's own, not the student network's behind it
    s = {k: v.detach().requires_grad_(True) for k, v in record(student, x, list(PAIRS), device=None).items()}
    t = record(teacher, x, list(PAIRS.values()), device=None)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        loss = sum(local_geometry_loss(s[a], t[b]) for a, b in PAIRS.items())
        loss.backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss = sum(local_geometry_loss(s[a], t[b]) for a, b in PAIRS.items())
        loss.backward()
    events = sorted((e for e in prof.events() if e.cpu_memory_usage != 0), key=lambda e: e.time_range.start)
    running = peak = 0
    for e in events:  # self allocations minus frees, in time order
        running += e.self_cpu_memory_usage
        peak = max(peak, running)
    return peak


def geometric_term_ms(student, teacher, x, dev, reps: int = 20) -> float:
    """Forward + backward of the geometric term alone (both pairs), median over reps."""
    from geoviz.capture import record

    s = {k: v.detach().requires_grad_(True) for k, v in record(student, x, list(PAIRS), device=None).items()}
    t = record(teacher, x, list(PAIRS.values()), device=None)
    sync = synchronizer(dev)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sum(local_geometry_loss(s[a], t[b]) for a, b in PAIRS.items()).backward()
        sync()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e3


def measure(dev: torch.device, rounds: int = 9, n_steps: int = 3, batch_size: int = 128) -> dict:
    """Step times of CE, KD and KD + geometric, interleaved (median of ``rounds``), with the ratios,
    the term alone and its peak memory (the fields of this benchmark's line; benchmarks/geometry.py
    reports them too)."""
    sync = synchronizer(dev)
    data = get_dataset("shapes10", "train", n=batch_size)
    batch = (
        torch.stack([data[i][0] for i in range(batch_size)]),
        torch.tensor([data[i][1] for i in range(batch_size)]),
    )
    teacher = build_model("resnet56", 10).to(dev).eval()
    steps = {}
    for name, spec in SETUPS.items():
        student = build_model("resnet20", 10).to(dev)
        terms = [build_term(t) for t in spec]
        opt = make_optimizer(student.parameters(), "sgd", 0.05, 0.9, 5e-4)
        steps[name] = TrainStep(student, student, terms, opt, teacher=teacher, device=dev).__enter__()
    times = {k: [] for k in steps}
    for name, step in steps.items():  # warm-up
        step(batch)
    sync()
    for _ in range(rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            for _ in range(n_steps):
                step(batch)
            sync()
            times[name].append((time.perf_counter() - t) / n_steps)
    for step in steps.values():
        step.__exit__(None, None, None)
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    student = build_model("resnet20", 10).to(dev)
    peak = geometric_peak_bytes(student, teacher, batch[0].to(dev), dev)
    term_ms = geometric_term_ms(student, teacher, batch[0].to(dev), dev)
    return {
        "batch": batch_size,
        "student": "resnet20",
        "teacher": "resnet56",
        "pairs": list(PAIRS),
        "m": 256,
        "step_ms_ce": round(ms["ce"], 1),
        "step_ms_kd": round(ms["kd"], 1),
        "step_ms_kd_geometric": round(ms["kd+geometric"], 1),
        "ratio_kd_geometric_over_kd": round(ms["kd+geometric"] / ms["kd"], 4),
        "target_ratio": 1.15 if dev.type == "cuda" else 1.30,
        "ratio_kd_over_ce": round(ms["kd"] / ms["ce"], 4),
        "geometric_term_alone_ms": round(term_ms, 2),
        "geometric_term_share_of_kd_step": round(term_ms / ms["kd"], 4),
        "geometric_term_peak_bytes": int(peak),
        "geometric_term_peak_mib": round(peak / 2**20, 2),
    }


def main() -> None:
    args, dev, _ = bench_setup(__doc__, rounds=9, steps=3, batch=128)
    print(
        json.dumps(
            {
                "benchmark": "transfer_step",
                "device": str(dev),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                **measure(dev, args.rounds, args.steps, args.batch),
            }
        )
    )


if __name__ == "__main__":
    main()
