"""What a training checkpoint holds, and putting it back.

A checkpoint is always loaded onto the CPU: the random-generator states must be CPU ByteTensors
(``torch.set_rng_state`` rejects anything else), and ``load_state_dict`` copies weights and
optimiser state onto the model's device by itself. It holds the CPU **and every CUDA** generator
state, NumPy's and Python's, so a resumed run draws the same random numbers (augmentation,
dropout, sampling inside loss terms) as an uninterrupted one.

What is exact where:
- CPU: a resumed run ends with bit-identical weights (the tests check it).
- CUDA: the same random numbers are drawn; bit-identical weights also need deterministic kernels,
  ``fit(..., deterministic=True)`` (cuDNN autotuning off, ``torch.use_deterministic_algorithms``).
  Ops without a deterministic CUDA kernel only warn there, and runs that use them may differ in
  the last bits, resumed or not.
- A checkpoint written on a GPU machine resumes on a CPU-only one (its CUDA states are skipped,
  with a warning), and the other way round.
"""

from __future__ import annotations

import contextlib
import os
import random
import warnings

import numpy as np
import torch
from torch import nn

from .._io import to_jsonable

__all__ = ["rng_state", "set_rng_state", "model_signature", "check_settings", "load_model_state", "deterministic_mode"]


def rng_state() -> dict:
    """Every random generator's state, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }


def _byte_tensor(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", torch.uint8)


def set_rng_state(state, rank: int = 0) -> None:
    """Restore what ``rng_state`` returned. A checkpoint of a distributed run holds one state per
    rank (``{"ranks": [...]}``): each process takes its own. Older checkpoints' single states (a
    bare CPU state, or one dict) are restored as they are."""
    if isinstance(state, dict) and "ranks" in state:
        ranks = state["ranks"]
        if rank >= len(ranks):
            warnings.warn(
                f"the checkpoint holds generator states of {len(ranks)} process(es), this is rank {rank}: it takes "
                f"rank 0's (the run continues, but not exactly as it would have)",
                stacklevel=2,
            )
            rank = 0
        state = ranks[rank]
    if torch.is_tensor(state):
        torch.set_rng_state(_byte_tensor(state))
        return
    torch.set_rng_state(_byte_tensor(state["torch"]))
    cuda = state.get("cuda") or []
    if cuda:
        if not torch.cuda.is_available():
            warnings.warn(
                "the checkpoint holds CUDA generator states but CUDA is not available here: only the CPU, NumPy "
                "and Python generators are restored",
                stacklevel=2,
            )
        elif len(cuda) != torch.cuda.device_count():
            warnings.warn(
                f"the checkpoint holds {len(cuda)} CUDA generator states but {torch.cuda.device_count()} GPUs are "
                f"visible: CUDA generators are restored for the first {min(len(cuda), torch.cuda.device_count())}",
                stacklevel=2,
            )
            for i, s in enumerate(cuda[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(_byte_tensor(s), i)
        else:
            torch.cuda.set_rng_state_all([_byte_tensor(s) for s in cuda])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))


def model_signature(model: nn.Module) -> dict:
    """What identifies the architecture: ``build_args`` for zoo models, else the class and the
    parameter shapes (so resuming with another model is refused by name, not by a load error)."""
    args = getattr(model, "build_args", None)
    if args is not None:
        return to_jsonable(args)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return {
        "class": type(model).__name__,
        "n_tensors": len(shapes),
        "n_values": int(sum(np.prod(s) for s in shapes.values())),
    }


def check_settings(run_name: str, old: dict, new: dict) -> None:
    """Refuse to resume when the settings that shape training differ (keys an older checkpoint
    lacks are not compared)."""
    diff = {k: (old.get(k), v) for k, v in new.items() if k in old and old.get(k) != v}
    if diff:
        raise ValueError(
            f"run {run_name!r} was started with other training settings {diff} (old, new): resuming would "
            f"not continue the same training. Resume with the same settings, or use a new run name."
        )


def load_model_state(module: nn.Module, state: dict, what: str) -> None:
    """``load_state_dict`` with a message that says what did not fit, instead of torch's wall of text."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{what} does not fit this model (another architecture or other loss "
            f"terms?): missing {missing[:4]}, unexpected {unexpected[:4]}, other "
            f"shapes {shapes[:4]}. Use a new run name, or the model it was made with."
        )
    module.load_state_dict(state)


@contextlib.contextmanager
def deterministic_mode(enabled: bool):
    """Deterministic kernels for the block (cuDNN autotuning off; ops without a deterministic
    kernel warn), the previous global settings restored afterwards."""
    if not enabled:
        yield
        return
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    # cuBLAS reads this when it first starts; set before any CUDA matmul for it to take effect
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]
