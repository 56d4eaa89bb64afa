"""Small shared helpers: seeding, device choice, friendly error messages, sizes."""
from __future__ import annotations

import difflib
import os
import random
from typing import Iterable, Sequence

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one integer."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; anything else is passed to torch."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here: use device='auto' or 'cpu'")
    return dev


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """The candidates closest to ``name``: difflib's ratio first, then substring hits."""
    candidates = list(candidates)
    hits = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if len(hits) < n:
        stem = name.split("*")[0].split(".")[-1]
        hits += [c for c in candidates if stem and stem in c and c not in hits][: n - len(hits)]
    return hits


def unknown_name_message(kind: str, name: str, candidates: Sequence[str]) -> str:
    """'unknown layer 'x'; did you mean: a, b? ...' with the close matches named."""
    hits = close_matches(name, candidates)
    msg = f"unknown {kind} {name!r}"
    if hits:
        msg += f"; closest: {', '.join(repr(h) for h in hits)}"
    else:
        shown = ", ".join(repr(c) for c in list(candidates)[:12])
        msg += f"; available: {shown}{', ...' if len(candidates) > 12 else ''}"
    return msg


def choice(kind: str, value: str, allowed: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``allowed``; otherwise a ValueError naming them all."""
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; allowed: {', '.join(map(repr, allowed))}")
    return value


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def progress_disabled() -> bool:
    """Progress bars are off when GEOVIZ_PROGRESS=0 (batch logs stay readable)."""
    return os.environ.get("GEOVIZ_PROGRESS", "1") == "0"
