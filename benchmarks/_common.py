"""What every benchmark script shares: its device/rounds arguments and a device-wide sync.

Run as scripts (``python benchmarks/x.py``), so this sits next to them and is imported by name.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch


def bench_parser(description: str | None, rounds: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=rounds)
    return ap


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for queued kernels, so wall-clock timings measure work rather than launches."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def bench_setup(
    description: str | None, rounds: int, **options
) -> tuple[argparse.Namespace, torch.device, Callable[[], None]]:
    """Parses ``--device``, ``--rounds`` and one ``--name`` per keyword (its default's type), seeds 0.

    Returns the arguments, the device and its synchronizer.
    """
    ap = bench_parser(description, rounds)
    for name, default in options.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    return args, device, synchronizer(device)


def cold_then_warm(cases: dict[str, Callable[[], object]], repeats: int, sync=lambda: None) -> dict[str, dict]:
    """Times each case's first call in this process (cold: JIT compilation, caches and pools paid
    there; a later case may find what an earlier one compiled) in the order given, then
    ``repeats`` warm calls interleaved across cases, the order rotated each round, so drift and
    other load hit every case alike. Returns {case: {"cold_s", "median_s", "min_s", "max_s", "result"}} (the
    last warm call's result)."""
    import statistics
    import time

    out: dict[str, dict] = {}

    def once(name):
        sync()
        t = time.perf_counter()
        result = cases[name]()
        sync()
        return time.perf_counter() - t, result

    for name in cases:
        out[name] = {"cold_s": once(name)[0], "warm": []}
    names = list(cases)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # each case leads in turn
            took, out[name]["result"] = once(name)
            out[name]["warm"].append(took)
    for r in out.values():
        w = r.pop("warm")
        r.update(median_s=statistics.median(w), min_s=min(w), max_s=max(w))
    return out


def seconds(r: dict) -> dict:
    """A ``cold_then_warm`` entry as JSON fields (seconds, rounded)."""
    return {k: round(r[k], 3) for k in ("median_s", "min_s", "max_s", "cold_s")}
