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
