"""Small shared helpers: seeding, device choice, friendly error messages, sizes."""

from __future__ import annotations

import contextlib
import difflib
import os
import random
from collections.abc import Iterable, Sequence

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
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {device!r} asked for, but only {torch.cuda.device_count()} GPU(s) are visible: use 'cuda:0'"
            f"{f' to cuda:{torch.cuda.device_count() - 1}' if torch.cuda.device_count() > 1 else ''} or 'auto'"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device {device!r} asked for, but Apple's MPS is not available here: use device='auto' or 'cpu'"
        )
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
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


@contextlib.contextmanager
def eval_mode(*models):
    """Put models in eval mode for the block and give each back the mode it had, also when the
    block raises (a failed forward must not leave a training model in eval mode)."""
    modes = [(m, m.training) for m in models if m is not None]
    try:
        for m, _ in modes:
            m.eval()
        yield
    finally:
        for m, was in modes:
            m.train(was)


@contextlib.contextmanager
def preserved_modes(model):
    """Give ``model`` back as it was after the block, also when the block raises: every module's
    training flag (a model may hold frozen parts in eval mode) and the device and dtype of every
    parameter, gradient and buffer (a measurement that moves the model to its device moves it back)."""
    modes = [(m, m.training) for m in model.modules()]
    places = [
        (m, kind, name, t.device, t.dtype)
        for m in model.modules()
        for kind in ("_parameters", "_buffers")
        for name, t in getattr(m, kind).items()
        if t is not None
    ]
    try:
        yield model
    finally:
        for m, was in modes:
            m.training = was
        for m, kind, name, device, dtype in places:
            t = getattr(m, kind)[name]
            if t is not None and (t.device != device or t.dtype != dtype):
                if kind == "_parameters":
                    t.data = t.data.to(device, dtype)
                    if t.grad is not None:
                        t.grad = t.grad.to(device, dtype)
                else:
                    m._buffers[name] = t.to(device, dtype)


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A ``tqdm.auto`` bar (a widget in JupyterLab), off when ``enabled`` is False or GEOVIZ_PROGRESS=0."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled or progress_disabled(), **kwargs)


def check_number(
    name: str,
    value,
    *,
    low=None,
    high=None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    allow_none: bool = False,
):
    """``value`` is a finite number (a whole one with ``integer``) within the bounds; otherwise a
    TypeError / ValueError naming ``name``, what it must be and what it got. Returns ``value``."""
    import math

    if value is None and allow_none:
        return value
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise TypeError(f"{name} must be {kind}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return value
