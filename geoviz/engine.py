"""One training / evaluation loop for every experiment.

``fit`` trains a model with progress bars, evaluates on a validation split each epoch (model
selection) and on a test split, writes per-epoch metrics to the run's ``metrics.json``, saves an
atomic checkpoint each epoch, resumes from it, and calls ``callbacks`` with the epoch-end state.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._utils import choice, progress_disabled, resolve_device, seed_everything
from .runs import RunDir

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")


@dataclass
class EpochState:
    """What callbacks see at the end of each epoch. Values a callback puts in ``metrics`` are
    logged with the epoch (plain JSON types: numbers, lists, nested lists)."""

    epoch: int
    epochs: int
    model: nn.Module
    metrics: dict
    history: list
    run: RunDir | None
    device: torch.device
    val_loader: DataLoader | None = None
    test_loader: DataLoader | None = None


@dataclass
class FitResult:
    history: list[dict]
    summary: dict
    model: nn.Module
    run: RunDir | None = None
    best_state: dict | None = field(default=None, repr=False)


def _loader(data, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0, drop_last: bool = False) -> DataLoader | None:
    if data is None or isinstance(data, DataLoader):
        return data
    if not isinstance(data, Dataset):
        raise TypeError(f"expected a torch Dataset or DataLoader, got {type(data).__name__}")
    g = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=g if shuffle else None,
                      num_workers=num_workers, drop_last=drop_last and len(data) > batch_size)


def _amp_dtype(amp: str | bool, device: torch.device) -> torch.dtype | None:
    if amp in (False, "off", None):
        return None
    if amp in ("auto", True):
        return torch.bfloat16 if device.type == "cuda" else None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    raise ValueError(f"unknown amp {amp!r}; allowed: 'auto', 'off', 'bf16', 'fp16'")


@torch.no_grad()
def predict(model: nn.Module, data, *, device: str | torch.device = "auto", batch_size: int = 256, amp="auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of a whole data set (model in eval mode, restored afterwards)."""
    dev = resolve_device(device)
    loader = _loader(data, batch_size, False, 0)
    was = model.training
    model.eval()
    amp_dtype = _amp_dtype(amp, dev)
    logits, labels = [], []
    try:
        for x, y in loader:
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                out = model(x.to(dev, non_blocking=True))
            logits.append(out.float().cpu())
            labels.append(torch.as_tensor(y))
    finally:
        model.train(was)
    return torch.cat(logits), torch.cat(labels)


def evaluate(model: nn.Module, data, *, device: str | torch.device = "auto", batch_size: int = 256) -> dict:
    """``{"loss": mean cross-entropy, "acc": top-1 accuracy}`` on a data set."""
    logits, labels = predict(model, data, device=device, batch_size=batch_size)
    return {"loss": F.cross_entropy(logits, labels).item(), "acc": (logits.argmax(1) == labels).float().mean().item()}


def make_optimizer(params, name: str, lr: float, momentum: float, weight_decay: float):
    choice("optimizer", name, OPTIMIZERS)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_schedule(opt, name: str, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0, milestones: Iterable[float] = (0.5, 0.75), gamma: float = 0.1):
    """Per-step LR multiplier: linear warm-up, then cosine / step (at fractions of training) / constant."""
    choice("schedule", name, SCHEDULES)
    total = max(1, epochs * steps_per_epoch)
    warm = int(warmup_epochs * steps_per_epoch)
    marks = [int(m * total) for m in milestones]

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if name == "cosine":
            p = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
        if name == "step":
            return gamma ** sum(step >= m for m in marks)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def fit(
    model: nn.Module,
    train,
    val=None,
    *,
    test=None,
    epochs: int = 10,
    lr: float = 0.1,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    warmup_epochs: float = 0.0,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    amp: str | bool = "auto",
    callbacks: Iterable[Callable[[EpochState], None]] = (),
    run: RunDir | str | None = None,
    seed: int = 0,
    progress: bool = True,
    num_workers: int = 0,
) -> FitResult:
    """Train ``model`` with cross-entropy; evaluate each epoch; checkpoint and resume via ``run``.

    ``val`` selects the model (best validation accuracy); with ``test``, both the test accuracy of
    that best-on-validation model (``test_acc_best_val``) and of the last epoch (``test_acc_last``)
    are reported, named as such.
    """
    from tqdm.auto import tqdm

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    dev = resolve_device(device)
    seed_everything(seed)
    run = RunDir(run) if isinstance(run, str) else run
    train_loader = _loader(train, batch_size, True, seed, num_workers, drop_last=True)
    val_loader = _loader(val, 2 * batch_size, False, seed, num_workers)
    test_loader = _loader(test, 2 * batch_size, False, seed, num_workers)
    model.to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    amp_dtype = _amp_dtype(amp, dev)
    opt = make_optimizer(model.parameters(), optimizer, lr, momentum, weight_decay)
    sched = make_schedule(opt, schedule, epochs, len(train_loader), warmup_epochs)

    history: list[dict] = []
    start_epoch, best_acc, best_state = 1, -1.0, None
    settings = {"epochs": epochs, "lr": lr, "optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay,
                "schedule": schedule, "warmup_epochs": warmup_epochs, "batch_size": batch_size, "seed": seed}
    if run is not None and run.has_checkpoint():
        ck = run.load_checkpoint(map_location=dev)
        old = ck.get("settings", settings)
        if old != settings:
            diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
            raise ValueError(f"run {run.name!r} was started with other training settings {diff} (old, new): the schedule "
                             f"would not match. Resume with the same settings, or use a new run name.")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        history = list(run.read_metrics()["epochs"])[: ck["epoch"]]
        start_epoch, best_acc = ck["epoch"] + 1, ck.get("best_acc", -1.0)
        best = run.load_checkpoint("best.pt", map_location="cpu")
        best_state = best["model"] if best else None
        torch.set_rng_state(ck["rng"])

    show = progress and not progress_disabled()
    epoch_bar = tqdm(range(start_epoch, epochs + 1), desc="epochs", disable=not show or epochs == 1, initial=start_epoch - 1, total=epochs)
    for epoch in epoch_bar:
        model.train()
        if train_loader.generator is not None:  # the epoch's order depends on (seed, epoch) only: exact resume
            train_loader.generator.manual_seed(seed * 1_000_003 + epoch)
        t0 = time.perf_counter()
        tot_loss, tot_correct, seen = 0.0, 0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not show)
        for x, y in bar:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch}: lower lr (now {lr}) or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            n = y.shape[0]
            tot_loss += loss.item() * n
            tot_correct += (logits.argmax(1) == y).sum().item()
            seen += n
            bar.set_postfix(loss=f"{tot_loss / seen:.3f}", acc=f"{tot_correct / seen:.3f}")
        metrics = {"epoch": epoch, "train_loss": tot_loss / max(1, seen), "train_acc": tot_correct / max(1, seen), "lr": opt.param_groups[0]["lr"], "epoch_seconds": time.perf_counter() - t0}
        if val_loader is not None:
            v = evaluate(model, val_loader, device=dev)
            metrics.update(val_loss=v["loss"], val_acc=v["acc"])
            if v["acc"] > best_acc:
                best_acc = v["acc"]
                best_state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
                if run is not None:
                    run.save_checkpoint({"model": best_state, "epoch": epoch, "val_acc": best_acc}, "best.pt")
        for cb in callbacks:
            cb(EpochState(epoch, epochs, model, metrics, history, run, dev, val_loader, test_loader))
        history.append(metrics)
        if run is not None:
            run.log_epoch(metrics)
            run.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                 "epoch": epoch, "best_acc": best_acc, "rng": torch.get_rng_state(), "settings": settings})
        epoch_bar.set_postfix(val_acc=f"{metrics.get('val_acc', float('nan')):.3f}")

    summary = {"epochs": epochs, "train_acc_last": history[-1]["train_acc"] if history else None}
    if val_loader is not None:
        summary["val_acc_best"] = best_acc
        summary["best_epoch"] = max(history, key=lambda r: r["val_acc"])["epoch"] if history else None
    if test_loader is not None:
        summary["test_acc_last"] = evaluate(model, test_loader, device=dev)["acc"]
        if best_state is not None:
            probe = copy.deepcopy(model)
            probe.load_state_dict(best_state)
            summary["test_acc_best_val"] = evaluate(probe, test_loader, device=dev)["acc"]
    if run is not None:
        run.write_summary(**summary)
    return FitResult(history, summary, model, run, best_state)
