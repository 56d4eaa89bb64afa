"""One training / evaluation loop for every experiment: plain training, KD, geometric transfer and
any sum of loss terms, on one CPU, one GPU, or many under ``torchrun`` (DistributedDataParallel).

``fit`` trains with progress bars, evaluates a validation split each epoch (model selection) and a
test split, writes per-epoch metrics to the run's ``metrics.json``, saves an atomic checkpoint each
epoch and resumes from it exactly, and calls ``callbacks`` with the epoch-end state.
"""
from __future__ import annotations

import copy
import math
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ._utils import choice, progress_disabled, resolve_device, seed_everything
from .capture import ActivationRecorder, resolve_layers
from .losses.terms import Term, TermInputs, build_term
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
    teacher: nn.Module | None = None
    rank: int = 0


@dataclass
class FitResult:
    history: list[dict]
    summary: dict
    model: nn.Module
    run: RunDir | None = None
    best_state: dict | None = field(default=None, repr=False)
    terms: list[Term] = field(default_factory=list, repr=False)


# ----------------------------------------------------------------------------- helpers
class _Indexed(Dataset):
    """Yields (x, y, i) so cached teacher outputs can be looked up by dataset index."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i][:2]
        return x, y, i


def _loader(data, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0, drop_last: bool = False, sampler=None) -> DataLoader | None:
    if data is None or isinstance(data, DataLoader):
        return data
    if not isinstance(data, Dataset):
        raise TypeError(f"expected a torch Dataset or DataLoader, got {type(data).__name__}")
    g = torch.Generator().manual_seed(seed) if shuffle and sampler is None else None
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle and sampler is None, generator=g, sampler=sampler,
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


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def predict(model: nn.Module, data, *, device: str | torch.device = "auto", batch_size: int = 256, amp="auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of a whole data set (model in eval mode, restored afterwards)."""
    dev = resolve_device(device)
    model = _unwrap(model)
    loader = _loader(data, batch_size, False, 0)
    was = model.training
    model.eval()
    amp_dtype = _amp_dtype(amp, dev)
    logits, labels = [], []
    try:
        for batch in loader:
            x, y = batch[0], batch[1]
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


@torch.no_grad()
def evaluate_reconstruction(model: nn.Module, data, *, device: str | torch.device = "auto", batch_size: int = 256) -> dict:
    """``{"loss": mean squared error per pixel}`` of an autoencoder (model(x) reconstructs x)."""
    dev = resolve_device(device)
    model = _unwrap(model)
    was = model.training
    model.eval()
    tot, n = 0.0, 0
    try:
        for batch in _loader(data, batch_size, False, 0):
            x = batch[0].to(dev)
            tot += F.mse_loss(model(x).float(), x.float(), reduction="sum").item()
            n += x.numel()
    finally:
        model.train(was)
    return {"loss": tot / max(1, n)}


OBJECTIVES = ("classification", "reconstruction")


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


# ----------------------------------------------------------------------------- distributed
@dataclass
class _Dist:
    enabled: bool = False
    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @classmethod
    def setup(cls, device: torch.device) -> "_Dist":
        """Under torchrun (WORLD_SIZE > 1) join the process group: NCCL on GPU, gloo on CPU."""
        if dist.is_available() and dist.is_initialized():
            return cls(True, dist.get_rank(), dist.get_world_size(), False)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            return cls(True, dist.get_rank(), dist.get_world_size(), True)
        return cls()

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def close(self):
        if self.owns_group:
            dist.destroy_process_group()


def _ddp_device(device: str | torch.device) -> torch.device:
    if device == "auto" and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return resolve_device(device)


class _Trainable(nn.Module):
    """The student and the terms' own parameters (FitNet regressors), trained and synced together."""

    def __init__(self, student: nn.Module, terms: Sequence[Term]):
        super().__init__()
        self.student = student
        self.terms = nn.ModuleList(terms)

    def forward(self, x):
        return self.student(x)


# ----------------------------------------------------------------------------- teacher cache
class TeacherCache:
    """A frozen teacher's logits and captured layers for every image of a deterministic data set,
    computed once: students trained on it (or on subsets of it) skip the teacher's forward pass."""

    def __init__(self, teacher: nn.Module, dataset: Dataset, layers: Sequence[str], *, device, batch_size: int = 256, amp="auto"):
        if not getattr(dataset, "deterministic", False):
            raise ValueError("TeacherCache needs a deterministic data set (no random augmentation): its items must not change between epochs")
        dev = resolve_device(device)
        self.layers = list(layers)
        amp_dtype = _amp_dtype(amp, dev)
        teacher.eval()
        logits, feats = [], {l: [] for l in self.layers}
        with torch.no_grad(), ActivationRecorder(teacher, self.layers, device="cpu") as rec:
            for x, _ in DataLoader(dataset, batch_size=batch_size):
                with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits.append(teacher(x.to(dev)).float().cpu())
                acts = rec.activations
                for l in self.layers:
                    feats[l].append(acts[l].float())
        self.logits = torch.cat(logits)
        self.feats = {l: torch.cat(v) for l, v in feats.items()}
        self.dataset = dataset

    def nbytes(self) -> int:
        return self.logits.nbytes + sum(v.nbytes for v in self.feats.values())

    def lookup(self, idx: torch.Tensor, device) -> tuple[torch.Tensor, dict]:
        return self.logits[idx].to(device), {l: v[idx].to(device) for l, v in self.feats.items()}


def _base_indices(data: Dataset, cache: TeacherCache) -> Dataset:
    """Map ``data`` (the cached data set or a Subset of it) to items carrying base indices."""
    from torch.utils.data import Subset

    if data is cache.dataset:
        return _Indexed(data)
    if isinstance(data, Subset) and data.dataset is cache.dataset:
        return Subset(_Indexed(cache.dataset), data.indices)
    raise ValueError("teacher_cache was computed on another data set than the one being trained on")


# ----------------------------------------------------------------------------- one step
class TrainStep:
    """One optimisation step of ``fit``: the student's forward pass (captured layers kept with their
    graph), the teacher's (or its cached outputs), every loss term, backward, update. Use it as a
    context manager: the layer hooks live inside the ``with`` block only."""

    def __init__(self, wrapped: nn.Module, student: nn.Module, terms: Sequence[Term], opt, sched=None, *, teacher=None,
                 teacher_cache: TeacherCache | None = None, device="cpu", amp_dtype=None, objective: str = "classification"):
        self.wrapped, self.student, self.terms, self.opt, self.sched = wrapped, student, list(terms), opt, sched
        self.reconstruct = choice("objective", objective, OBJECTIVES) == "reconstruction"
        self.teacher, self.cache, self.dev, self.amp_dtype = teacher, teacher_cache, torch.device(device), amp_dtype
        self.student_layers = sorted({l for t in self.terms for l in t.student_layers})
        self.teacher_layers = sorted({l for t in self.terms for l in t.teacher_layers})
        self.needs_teacher = any(t.needs_teacher for t in self.terms)
        self._stack = ExitStack()
        self.rec_s = self.rec_t = None

    def __enter__(self) -> "TrainStep":
        if self.student_layers:
            self.rec_s = self._stack.enter_context(ActivationRecorder(self.student, self.student_layers, detach=False, device=None))
        if self.teacher_layers and self.cache is None:
            self.rec_t = self._stack.enter_context(ActivationRecorder(self.teacher, self.teacher_layers, device=None))
        return self

    def __exit__(self, *exc):
        self._stack.close()

    def paused(self) -> ExitStack:
        """Stop recording (evaluation, callbacks): their forwards need no copies of the layers."""
        stack = ExitStack()
        for rec in (self.rec_s, self.rec_t):
            if rec is not None:
                stack.enter_context(rec.paused())
        return stack

    def __call__(self, batch) -> tuple[torch.Tensor, list, torch.Tensor, torch.Tensor]:
        """Returns (loss, [(term, value), ...], logits, targets)."""
        dev = self.dev
        x = batch[0].to(dev, non_blocking=True)
        y = x if self.reconstruct else batch[1].to(dev, non_blocking=True)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = self.wrapped(x)
            t_logits, t_feats = None, {}
            if self.cache is not None:
                t_logits, t_feats = self.cache.lookup(batch[2], dev)
            elif self.needs_teacher:
                with torch.no_grad():
                    t_logits = self.teacher(x)
                t_feats = self.rec_t.activations if self.rec_t else {}
            inp = TermInputs(logits, y, self.rec_s.activations if self.rec_s else {}, t_logits, t_feats, self.student)
            parts = [(t, t(inp)) for t in self.terms]
            loss = sum(t.weight * v for t, v in parts)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} ({', '.join(f'{t.name}={v.item():.3g}' for t, v in parts)}): "
                                     f"lower the learning rate or the term weights")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        return loss, parts, logits, y


# ----------------------------------------------------------------------------- fit
def fit(
    model: nn.Module,
    train,
    val=None,
    *,
    test=None,
    teacher: nn.Module | None = None,
    terms: Sequence = ("ce",),
    epochs: int = 10,
    lr: float = 0.1,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    milestones: Sequence[float] = (0.5, 0.75),
    warmup_epochs: float = 0.0,
    batch_size: int = 128,
    device: str | torch.device = "auto",
    amp: str | bool = "auto",
    callbacks: Iterable[Callable[[EpochState], None]] = (),
    run: RunDir | str | None = None,
    seed: int = 0,
    progress: bool = True,
    num_workers: int = 0,
    teacher_cache: TeacherCache | None = None,
    eval_every: int = 1,
    objective: str = "classification",
) -> FitResult:
    """Train ``model`` (the student) on the weighted sum of ``terms``.

    ``terms`` are Term objects or specs (``"ce"``, ``{"name": "kd", "T": 4}``, ``{"name": "geometric",
    "pairs": {"layer2": "layer2"}}``, ...); layer pairs map student module paths to ``teacher``
    module paths. The teacher is put in eval mode and frozen. ``val`` selects the model (best
    validation accuracy); with ``test``, both the test accuracy of that model
    (``test_acc_best_val``) and of the last epoch (``test_acc_last``) are reported, named as such.

    Under ``torchrun`` (WORLD_SIZE > 1) the same call trains with DistributedDataParallel (NCCL on
    GPU, gloo on CPU); ``batch_size`` stays the global batch, split over the processes, and only
    rank 0 writes to the run. ``eval_every`` evaluates the validation split every that many
    epochs (and always after the last one); model selection sees only those epochs.

    ``objective="reconstruction"`` trains an autoencoder: the targets are the inputs (use a term
    such as ``"reconstruction"``), the model with the lowest validation MSE is selected, and the
    summary reports ``test_loss_best_val`` / ``test_loss_last`` (MSE per pixel) instead of accuracies.
    """
    from tqdm.auto import tqdm

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    recon = choice("objective", objective, OBJECTIVES) == "reconstruction"
    if recon and tuple(terms) == ("ce",):
        terms = ("reconstruction",)
    terms = [build_term(t) for t in terms]
    if not terms:
        raise ValueError("no loss terms: pass at least terms=['ce']")
    needs_teacher = any(t.needs_teacher for t in terms)
    if needs_teacher and teacher is None and teacher_cache is None:
        names = [t.name for t in terms if t.needs_teacher]
        raise ValueError(f"loss terms {names} need a teacher: pass teacher=")
    student_layers = sorted({l for t in terms for l in t.student_layers})
    teacher_layers = sorted({l for t in terms for l in t.teacher_layers})
    if student_layers:
        resolve_layers(model, student_layers)  # unknown paths fail here, with the closest names
    if teacher_layers and teacher is not None:
        resolve_layers(teacher, teacher_layers)
    if teacher_cache is not None and not set(teacher_layers) <= set(teacher_cache.layers):
        raise ValueError(f"teacher_cache holds layers {teacher_cache.layers}, the terms need {teacher_layers}")

    dev = _ddp_device(device)
    ctx = _Dist.setup(dev)
    rank0 = ctx.rank == 0
    seed_everything(seed)
    run = RunDir(run) if isinstance(run, str) else run
    run_w = run if rank0 else None
    if batch_size % ctx.world:
        raise ValueError(f"batch_size {batch_size} must divide evenly over {ctx.world} processes")
    per_rank = batch_size // ctx.world

    train_data = _base_indices(train, teacher_cache) if teacher_cache is not None else train
    sampler = DistributedSampler(train_data, ctx.world, ctx.rank, shuffle=True, seed=seed, drop_last=True) if ctx.enabled else None
    train_loader = _loader(train_data, per_rank, True, seed, num_workers, drop_last=True, sampler=sampler)
    val_loader = _loader(val, 2 * batch_size, False, seed, num_workers)
    test_loader = _loader(test, 2 * batch_size, False, seed, num_workers)

    model.to(dev)
    if teacher is not None:
        teacher.to(dev).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    amp_dtype = _amp_dtype(amp, dev)

    # one example batch sizes the terms' own parameters (FitNet regressors)
    xb = next(iter(DataLoader(train_data, batch_size=min(4, len(train_data)))))
    with torch.no_grad(), ExitStack() as stack:
        rs = stack.enter_context(ActivationRecorder(model, student_layers, device=None)) if student_layers else None
        was = model.training
        model.eval()
        model(xb[0].to(dev))
        model.train(was)
        feats = rs.activations if rs else {}
        if teacher_layers:
            if teacher_cache is not None:
                tfeats = teacher_cache.lookup(torch.as_tensor(xb[2]), dev)[1]
            else:
                with ActivationRecorder(teacher, teacher_layers, device=None) as rt:
                    teacher(xb[0].to(dev))
                    tfeats = rt.activations
        else:
            tfeats = {}
    for t in terms:
        t.setup(feats, tfeats)
    trainable = _Trainable(model, terms).to(dev)
    wrapped = nn.parallel.DistributedDataParallel(trainable) if ctx.enabled else trainable

    opt = make_optimizer(trainable.parameters(), optimizer, lr, momentum, weight_decay)
    sched = make_schedule(opt, schedule, epochs, len(train_loader), warmup_epochs, milestones)
    settings = {"epochs": epochs, "lr": lr, "optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay,
                "schedule": schedule, "warmup_epochs": warmup_epochs, "batch_size": batch_size, "seed": seed, "eval_every": eval_every,
                "terms": [t.spec() for t in terms]}

    history: list[dict] = []
    start_epoch, best_score, best_state = 1, -math.inf, None
    if run is not None and run.has_checkpoint():
        ck = run.load_checkpoint(map_location=dev)
        old = ck.get("settings", settings)
        if old != settings:
            diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
            raise ValueError(f"run {run.name!r} was started with other training settings {diff} (old, new): the schedule "
                             f"would not match. Resume with the same settings, or use a new run name.")
        trainable.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        history = list(run.read_metrics()["epochs"])[: ck["epoch"]]
        start_epoch, best_score = ck["epoch"] + 1, ck.get("best_score", -math.inf)
        best = run.load_checkpoint("best.pt", map_location="cpu")
        best_state = best["model"] if best else None
        torch.set_rng_state(ck["rng"])

    show = progress and not progress_disabled() and rank0
    try:
        with TrainStep(wrapped, model, terms, opt, sched, teacher=teacher, teacher_cache=teacher_cache, device=dev, amp_dtype=amp_dtype,
                       objective=objective) as step:
            epoch_bar = tqdm(range(start_epoch, epochs + 1), desc="epochs", disable=not show or epochs == 1, initial=start_epoch - 1, total=epochs)
            for epoch in epoch_bar:
                wrapped.train()
                if sampler is not None:
                    sampler.set_epoch(epoch)
                elif train_loader.generator is not None:  # the epoch's order depends on (seed, epoch) only: exact resume
                    train_loader.generator.manual_seed(seed * 1_000_003 + epoch)
                t0 = time.perf_counter()
                sums = {t.name: 0.0 for t in terms}
                tot_loss, tot_correct, seen = 0.0, 0, 0
                bar = tqdm(train_loader, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not show)
                for batch in bar:
                    try:
                        loss, parts, logits, y = step(batch)
                    except FloatingPointError as err:
                        raise FloatingPointError(f"epoch {epoch}: {err} (lr is {lr})") from None
                    n = y.shape[0]
                    tot_loss += loss.item() * n
                    for t, v in parts:
                        sums[t.name] += v.item() * n
                    if not recon:
                        tot_correct += (logits.argmax(1) == y).sum().item()
                    seen += n
                    bar.set_postfix(loss=f"{tot_loss / seen:.4f}", **({} if recon else {"acc": f"{tot_correct / seen:.3f}"}))
                metrics = {"epoch": epoch, "train_loss": tot_loss / max(1, seen), "lr": opt.param_groups[0]["lr"],
                           "epoch_seconds": time.perf_counter() - t0}
                if not recon:
                    metrics["train_acc"] = tot_correct / max(1, seen)
                if len(terms) > 1:
                    metrics.update({f"loss/{k}": v / max(1, seen) for k, v in sums.items()})
                with step.paused():  # evaluation and callbacks need no recorded layers
                    if val_loader is not None and (epoch % eval_every == 0 or epoch == epochs):
                        if recon:  # select on -MSE, so that "larger is better" holds for both objectives
                            v = evaluate_reconstruction(model, val_loader, device=dev)
                            metrics.update(val_loss=v["loss"])
                            score = -v["loss"]
                        else:
                            v = evaluate(model, val_loader, device=dev)
                            metrics.update(val_loss=v["loss"], val_acc=v["acc"])
                            score = v["acc"]
                        if score > best_score:
                            best_score = score
                            best_state = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
                            if run_w is not None:
                                run_w.save_checkpoint({"model": best_state, "epoch": epoch, "val_score": best_score}, "best.pt")
                    for cb in callbacks:
                        cb(EpochState(epoch, epochs, model, metrics, history, run_w, dev, val_loader, test_loader, teacher, ctx.rank))
                history.append(metrics)
                if run_w is not None:
                    run_w.log_epoch(metrics)
                    run_w.save_checkpoint({"model": trainable.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                           "epoch": epoch, "best_score": best_score, "rng": torch.get_rng_state(), "settings": settings})
                ctx.barrier()
                epoch_bar.set_postfix(val_acc=f"{metrics.get('val_acc', float('nan')):.3f}")

        if ctx.enabled:  # BN statistics drift apart in the last forward of each rank: take rank 0's
            for b in model.buffers():
                dist.broadcast(b, 0)
        if recon:
            summary = {"epochs": epochs, "train_loss_last": history[-1]["train_loss"] if history else None}
            score_of = lambda m: evaluate_reconstruction(m, test_loader, device=dev)["loss"]
            key, sel = "loss", "val_loss"
        else:
            summary = {"epochs": epochs, "train_acc_last": history[-1]["train_acc"] if history else None}
            score_of = lambda m: evaluate(m, test_loader, device=dev)["acc"]
            key, sel = "acc", "val_acc"
        if val_loader is not None:
            summary[f"val_{key}_best"] = -best_score if recon else best_score
            evaluated = [r for r in history if sel in r]
            pick = (min if recon else max)(evaluated, key=lambda r: r[sel]) if evaluated else None
            summary["best_epoch"] = pick["epoch"] if pick else None
        if test_loader is not None:
            summary[f"test_{key}_last"] = score_of(model)
            if best_state is not None:
                probe = copy.deepcopy(model)
                probe.load_state_dict(best_state)
                summary[f"test_{key}_best_val"] = score_of(probe)
        if run_w is not None:
            run_w.write_summary(**summary)
    finally:
        ctx.close()
    return FitResult(history, summary, model, run_w, best_state, terms)
