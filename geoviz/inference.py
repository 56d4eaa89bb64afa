"""Running a trained model over a data set: logits, accuracy, reconstruction error.

It sits below both ``analysis`` (the angle tracker predicts every epoch) and ``engine`` (which
evaluates for model selection), so neither has to import the other.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._utils import eval_mode, resolve_device

__all__ = ["AMP_MODES", "amp_dtype", "unwrap", "as_loader", "predict", "evaluate", "evaluate_reconstruction", "evaluate_regression"]

AMP_MODES = ("auto", "off", "bf16", "fp16")


def amp_dtype(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: full precision).

    ``"auto"``: bf16 on a CUDA device that supports it, full precision elsewhere (the CPU gains
    nothing from it). ``"fp16"`` needs loss scaling, which ``fit`` adds (a ``GradScaler``).
    """
    if amp in (False, "off", None):
        return None
    if amp in ("auto", True):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    raise ValueError(f"unknown amp {amp!r}; allowed: {', '.join(map(repr, AMP_MODES))}")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def as_loader(data, batch_size: int, *, shuffle: bool = False, seed: int = 0, num_workers: int = 0,
              drop_last: bool = False, sampler=None, pin_memory: bool = False) -> DataLoader | None:
    """A DataLoader over ``data`` (a Dataset), ``data`` itself when it is one already, None for None."""
    if data is None or isinstance(data, DataLoader):
        return data
    if not isinstance(data, Dataset):
        raise TypeError(f"expected a torch Dataset or DataLoader, got {type(data).__name__}")
    g = torch.Generator().manual_seed(seed) if shuffle and sampler is None else None
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle and sampler is None, generator=g, sampler=sampler,
                      num_workers=num_workers, drop_last=drop_last and len(data) > batch_size, pin_memory=pin_memory)
    # no persistent_workers: persistent workers draw their base seed once, so a resumed run's first
    # epoch would see other worker random streams than the uninterrupted run's


@torch.no_grad()
def predict(model: nn.Module, data, *, device: str | torch.device = "auto", batch_size: int = 256, amp="auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on the CPU) and labels of a whole data set; the model runs in eval mode and
    gets its own mode back afterwards."""
    dev = resolve_device(device)
    model = unwrap(model)
    dtype = amp_dtype(amp, dev)
    logits, labels = [], []
    with eval_mode(model):
        for batch in as_loader(data, batch_size):
            x, y = batch[0], batch[1]
            with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                out = model(x.to(dev, non_blocking=True))
            logits.append(out.float().cpu())
            labels.append(torch.as_tensor(y))
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, data, *, device: str | torch.device = "auto", batch_size: int = 256) -> dict:
    """``{"loss": mean cross-entropy, "acc": top-1 accuracy}`` on a data set."""
    logits, labels = predict(model, data, device=device, batch_size=batch_size)
    return {"loss": F.cross_entropy(logits, labels).item(), "acc": (logits.argmax(1) == labels).float().mean().item()}


def evaluate_regression(model: nn.Module, data, *, device: str | torch.device = "auto", batch_size: int = 256) -> dict:
    """``{"loss": mean squared error, "mae": mean absolute error}`` of a one-output regressor
    (its first output is the prediction), in full precision: bf16 would round a prediction of
    10 to 0.03–0.06."""
    out, y = predict(model, data, device=device, batch_size=batch_size, amp="off")
    pred = out.reshape(len(y), -1)[:, 0]
    y = y.float()
    return {"loss": F.mse_loss(pred, y).item(), "mae": (pred - y).abs().mean().item()}


@torch.no_grad()
def evaluate_reconstruction(model: nn.Module, data, *, device: str | torch.device = "auto", batch_size: int = 256) -> dict:
    """``{"loss": mean squared error per pixel}`` of an autoencoder (model(x) reconstructs x)."""
    dev = resolve_device(device)
    model = unwrap(model)
    tot, n = 0.0, 0
    with eval_mode(model):
        for batch in as_loader(data, batch_size):
            x = batch[0].to(dev)
            tot += F.mse_loss(model(x).float(), x.float(), reduction="sum").item()
            n += x.numel()
    return {"loss": tot / max(1, n)}
