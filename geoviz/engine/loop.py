"""``fit``: the one training loop — plain training, KD, geometric transfer, any weighted sum of loss
terms — on one CPU, one GPU, or many under ``torchrun``.

Every argument is checked before anything is moved, allocated or written. Each epoch trains,
evaluates the validation split (model selection), calls the callbacks, logs its metrics to the
run's ``metrics.json`` and saves an atomic checkpoint from which a rerun resumes (see
``engine.checkpoints`` for what is exact where).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from .._io import to_jsonable
from .._utils import check_number, choice, eval_mode, progress_bar, seed_everything
from ..capture import ActivationRecorder, resolve_layers
from ..datasets._batched import batch_source
from ..inference import (
    AMP_MODES,
    DeviceLoader,
    amp_dtype,
    as_loader,
    evaluate,
    evaluate_reconstruction,
    evaluate_regression,
)
from ..losses.terms import Term, build_term
from ..runs import RunDir
from .checkpoints import check_settings, deterministic_mode, load_model_state, model_signature, rng_state, set_rng_state
from .distributed import DistContext, ddp_device, under_torchrun
from .optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from .step import OBJECTIVES, Trainable, TrainStep
from .teacher_cache import TeacherCache


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


@dataclass
class _Options:
    epochs: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    schedule: str
    milestones: tuple
    warmup_epochs: float
    batch_size: int
    seed: int
    eval_every: int
    num_workers: int
    amp: str | bool
    objective: str
    epoch_size: int | None = None
    device_data: bool = True
    compile: bool | str = False

    @property
    def recon(self) -> bool:
        return self.objective == "reconstruction"

    @property
    def regression(self) -> bool:
        return self.objective == "regression"

    @property
    def metric(self) -> str:
        """What an epoch reports and selects on: accuracy (higher is better), MSE or MAE (lower)."""
        return {"classification": "acc", "reconstruction": "loss", "regression": "mae"}[self.objective]


# ----------------------------------------------------------------------------- checks
def _check_options(o: _Options) -> None:
    for name, low in (("epochs", 1), ("eval_every", 1), ("batch_size", 1), ("num_workers", 0)):
        check_number(name, getattr(o, name), low=low, integer=True)
    check_number("seed", o.seed, low=0, high=2**32 - 1, integer=True)
    check_number("lr", o.lr, low=0, low_open=True)
    check_number("momentum", o.momentum, low=0, high=1, high_open=True)
    check_number("weight_decay", o.weight_decay, low=0)
    check_number("warmup_epochs", o.warmup_epochs, low=0, high=o.epochs)
    choice("optimizer", o.optimizer, OPTIMIZERS)
    choice("schedule", o.schedule, SCHEDULES)
    choice("objective", o.objective, OBJECTIVES)
    if o.amp not in (True, False, None) and o.amp not in AMP_MODES:
        raise ValueError(f"unknown amp {o.amp!r}; allowed: {', '.join(map(repr, AMP_MODES))}")
    for m in o.milestones:
        check_number("each of milestones (fractions of training)", m, low=0, high=1, low_open=True, high_open=True)
    check_number("epoch_size", o.epoch_size, low=o.batch_size, integer=True, allow_none=True)
    if not isinstance(o.device_data, bool):
        raise TypeError(f"device_data must be True or False, got {o.device_data!r}")
    if not isinstance(o.compile, (bool, str)):
        raise TypeError(f"compile must be True, False or a torch.compile backend name, got {o.compile!r}")


def _check_data(name: str, data, required: bool) -> None:
    if data is None:
        if required:
            raise ValueError(f"{name} data are required")
        return
    if not isinstance(data, (Dataset, DataLoader)):
        raise TypeError(f"{name}: expected a torch Dataset or DataLoader, got {type(data).__name__}")
    n = len(data.dataset if isinstance(data, DataLoader) else data)
    if n == 0:
        raise ValueError(f"the {name} data set is empty")


def build_terms(
    terms,
    model: nn.Module,
    teacher: nn.Module | None,
    teacher_cache: TeacherCache | None,
    objective: str = "classification",
) -> list[Term]:
    """The loss terms from their specs, checked against the models: names, settings, layer paths
    (unknown ones fail with the closest names) and whether a teacher is there when one is needed."""
    if isinstance(terms, (str, dict, Term)):
        terms = [terms]
    terms = list(terms)
    if objective == "reconstruction" and [t for t in terms] == ["ce"]:
        terms = ["reconstruction"]
    if objective == "regression" and [t for t in terms] == ["ce"]:
        terms = ["mse"]
    terms = [build_term(t) for t in terms]
    if not terms:
        raise ValueError("no loss terms: pass at least terms=['ce']")
    if any(t.needs_teacher for t in terms) and teacher is None and teacher_cache is None:
        raise ValueError(f"loss terms {[t.name for t in terms if t.needs_teacher]} need a teacher: pass teacher=")
    student_layers = sorted({l for t in terms for l in t.student_layers})
    teacher_layers = sorted({l for t in terms for l in t.teacher_layers})
    if student_layers:
        resolve_layers(model, student_layers)
    if teacher_layers and teacher is not None:
        resolve_layers(teacher, teacher_layers)
    if teacher_cache is not None and not set(teacher_layers) <= set(teacher_cache.layers):
        raise ValueError(f"teacher_cache holds layers {teacher_cache.layers}, the terms need {teacher_layers}")
    return terms


# ----------------------------------------------------------------------------- the loop
class _Training:
    """One call of ``fit``: its state and the steps of the loop, each small enough to read."""

    def __init__(
        self,
        model,
        train,
        val,
        test,
        teacher,
        terms,
        opts: _Options,
        teacher_cache,
        callbacks,
        run,
        progress,
        dev,
        ctx,
        unlabelled=None,
        unlabelled_batch_size=None,
    ):
        self.model, self.teacher, self.terms, self.o = model, teacher, terms, opts
        self.cache, self.callbacks, self.dev, self.ctx = teacher_cache, list(callbacks), dev, ctx
        self.show = progress and ctx.rank == 0
        self._loaders(train, val, test)
        self._unlabelled_loader(unlabelled, unlabelled_batch_size or opts.batch_size)
        self.run = RunDir(run) if isinstance(run, str) else run  # created once everything above passed
        self.run_w = self.run if ctx.rank == 0 else None  # only rank 0 writes
        self.history: list[dict] = []
        self.start_epoch, self.best_score, self.best_state = 1, -math.inf, None
        self.best_key = [-math.inf, -math.inf]

    def _loaders(self, train, val, test) -> None:
        o, ctx = self.o, self.ctx
        if o.batch_size % ctx.world:
            raise ValueError(f"batch_size {o.batch_size} must divide evenly over {ctx.world} processes")
        if ctx.enabled and isinstance(train, DataLoader):
            raise TypeError(
                "under torchrun fit needs the training Dataset, not "
                "a DataLoader: it shards it with a DistributedSampler"
            )
        self.train_data = self.cache.indexed(train) if self.cache is not None else train
        self.sampler = (
            DistributedSampler(self.train_data, ctx.world, ctx.rank, shuffle=True, seed=o.seed, drop_last=True)
            if ctx.enabled
            else None
        )
        self.order = None  # the generator of an epoch_size sampler
        if (
            o.epoch_size is not None
        ):  # passes over the data, each in its own order, concatenated (no repeats within a pass)
            self.order = torch.Generator().manual_seed(o.seed)
            self.sampler = RandomSampler(
                self.train_data, replacement=False, num_samples=o.epoch_size, generator=self.order
            )
        pin = self.dev.type == "cuda"
        dev = self.dev if o.device_data else None
        self.train_loader = as_loader(
            self.train_data,
            o.batch_size // ctx.world,
            shuffle=True,
            seed=o.seed,
            num_workers=o.num_workers,
            drop_last=True,
            sampler=self.sampler,
            pin_memory=pin,
            device=dev,
        )
        self.val_loader = as_loader(val, 2 * o.batch_size, num_workers=o.num_workers, pin_memory=pin, device=dev)
        self.test_loader = as_loader(test, 2 * o.batch_size, num_workers=o.num_workers, pin_memory=pin, device=dev)

    def _unlabelled_loader(self, data, batch_size: int) -> None:
        self.u_sampler = self.u_loader = None
        if data is None:
            return
        o, ctx = self.o, self.ctx
        data = self.cache.indexed(data) if self.cache is not None else data
        if ctx.enabled:
            self.u_sampler = DistributedSampler(
                data, ctx.world, ctx.rank, shuffle=True, seed=o.seed + 1, drop_last=True
            )
        self.u_loader = as_loader(
            data,
            max(1, batch_size // ctx.world),
            shuffle=True,
            seed=o.seed + 1,
            num_workers=o.num_workers,
            drop_last=True,
            sampler=self.u_sampler,
            pin_memory=self.dev.type == "cuda",
            device=self.dev if o.device_data else None,
        )
        self.u_size = (len(data), batch_size)

    def _unlabelled_batches(self, epoch: int):
        """Unlabelled batches without end, in an order that depends on (seed, epoch) only."""
        if self.u_loader is None:
            return None

        def batches():
            rounds = 0
            if self.u_sampler is None:
                self.u_loader.generator.manual_seed(self.o.seed * 1_000_003 + epoch + 500_009)
            while True:
                if self.u_sampler is not None:
                    self.u_sampler.set_epoch(epoch * 10_000 + rounds)
                yield from self.u_loader
                rounds += 1

        return batches()

    def _example_batch(self):
        if isinstance(self.train_data, DataLoader):
            return next(iter(self.train_data))
        return next(iter(DataLoader(self.train_data, batch_size=min(4, len(self.train_data)))))

    def setup(self) -> None:
        """Models onto the device, the terms' own parameters sized by one example batch, the optimiser."""
        dev, o = self.dev, self.o
        self.model.to(dev)
        if self.teacher is not None:
            self.teacher.to(dev).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        if dev.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        feats, tfeats = self._example_features()
        for t in self.terms:
            t.setup(feats, tfeats)
        self.trainable = Trainable(self.model, self.terms).to(dev)
        self.wrapped = nn.parallel.DistributedDataParallel(self.trainable) if self.ctx.enabled else self.trainable
        if o.compile:  # the forward only: checkpoints keep saving the uncompiled module's state
            self.wrapped = torch.compile(self.wrapped, **({"backend": o.compile} if isinstance(o.compile, str) else {}))
        self.opt = make_optimizer(self.trainable.parameters(), o.optimizer, o.lr, o.momentum, o.weight_decay)
        self.sched = make_schedule(
            self.opt, o.schedule, o.epochs, len(self.train_loader), o.warmup_epochs, o.milestones
        )
        self.amp_dtype = amp_dtype(o.amp, dev)
        self.scaler = torch.amp.GradScaler(dev.type) if self.amp_dtype == torch.float16 else None
        self.settings = to_jsonable(
            {
                "epochs": o.epochs,
                "lr": o.lr,
                "optimizer": o.optimizer,
                "momentum": o.momentum,
                "weight_decay": o.weight_decay,
                "schedule": o.schedule,
                "milestones": list(o.milestones),
                "warmup_epochs": o.warmup_epochs,
                "batch_size": o.batch_size,
                "seed": o.seed,
                "eval_every": o.eval_every,
                "objective": o.objective,
                "epoch_size": o.epoch_size,
                "terms": [t.spec() for t in self.terms],
                "model": model_signature(self.model),
                **({"unlabelled": list(self.u_size)} if self.u_loader is not None else {}),
                **self._augmentation_setting(),
            }
        )

    def _augmentation_setting(self) -> dict:
        """Random augmentation draws in another order batched than item by item: a resume must not switch."""
        src = batch_source(self.train_data)
        if src is None or not src.random:
            return {}
        return {"augmentation_draws": "batched" if isinstance(self.train_loader, DeviceLoader) else "per item"}

    def _example_features(self) -> tuple[dict, dict]:
        student_layers = sorted({l for t in self.terms for l in t.student_layers})
        teacher_layers = sorted({l for t in self.terms for l in t.teacher_layers})
        xb = self._example_batch()
        feats, tfeats = {}, {}
        with torch.no_grad(), ExitStack() as stack:
            if student_layers:
                rs = stack.enter_context(ActivationRecorder(self.model, student_layers, device=None))
                with eval_mode(self.model):
                    self.model(xb[0].to(self.dev))
                feats = rs.activations
            if teacher_layers and self.cache is not None:
                tfeats = self.cache.lookup(xb[2], self.dev)[1]
            elif teacher_layers:
                with ActivationRecorder(self.teacher, teacher_layers, device=None) as rt:
                    self.teacher(xb[0].to(self.dev))
                    tfeats = rt.activations
        return feats, tfeats

    def resume(self) -> None:
        """Continue from the run's last checkpoint, if it has one and the settings match."""
        run = self.run
        if run is None or not run.has_checkpoint():
            return
        ck = run.load_checkpoint(map_location="cpu")  # CPU always: RNG states must be CPU ByteTensors
        check_settings(run.name, ck.get("settings", {}), self.settings)
        load_model_state(self.trainable, ck["model"], f"the checkpoint of run {run.name!r} ({run.checkpoint_path()})")
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        if self.scaler is not None and ck.get("scaler"):  # amp may change between runs: no scaler state, a fresh scale
            self.scaler.load_state_dict(ck["scaler"])
        self.history = list(run.read_metrics()["epochs"])[: ck["epoch"]]
        self.start_epoch, self.best_score = ck["epoch"] + 1, ck.get("best_score", -math.inf)
        self.best_key = list(ck.get("best_key", [self.best_score, -math.inf]))
        best = run.load_checkpoint("best.pt", map_location="cpu")
        self.best_state = best["model"] if best else None
        set_rng_state(ck["rng"], self.ctx.rank)

    def train_epoch(self, step: TrainStep, epoch: int) -> dict:
        o = self.o
        self.wrapped.train()
        # the epoch's order depends on (seed, epoch) only: exact resume
        if self.order is not None:
            self.order.manual_seed(o.seed * 1_000_003 + epoch)
        elif self.sampler is not None:
            self.sampler.set_epoch(epoch)
        elif self.train_loader.generator is not None:
            self.train_loader.generator.manual_seed(o.seed * 1_000_003 + epoch)
        t0 = time.perf_counter()
        sums = {t.name: 0.0 for t in self.terms}
        tot_loss, tot_correct, seen = 0.0, 0, 0
        bar = progress_bar(self.train_loader, desc=f"epoch {epoch}/{o.epochs}", leave=False, enabled=self.show)
        unlabelled = self._unlabelled_batches(epoch)
        for batch in bar:
            try:
                loss, parts, logits, y = step(batch, next(unlabelled) if unlabelled is not None else None)
            except FloatingPointError as err:
                raise FloatingPointError(f"epoch {epoch}: {err} (lr is {o.lr})") from None
            n = y.shape[0]
            tot_loss += loss.item() * n
            for t, v in parts:
                sums[t.name] += v.item() * n
            if o.regression:  # tot_correct holds the summed absolute error
                tot_correct += (logits.reshape(n, -1)[:, 0].float() - y).abs().sum().item()
            elif not o.recon:
                tot_correct += (logits.argmax(1) == y).sum().item()
            seen += n
            bar.set_postfix(
                loss=f"{tot_loss / seen:.4f}", **({} if o.recon else {o.metric: f"{tot_correct / seen:.3f}"})
            )
        metrics = {
            "epoch": epoch,
            "train_loss": tot_loss / max(1, seen),
            "lr": self.opt.param_groups[0]["lr"],
            "epoch_seconds": time.perf_counter() - t0,
        }
        if not o.recon:
            metrics[f"train_{o.metric}"] = tot_correct / max(1, seen)
        if len(self.terms) > 1:
            metrics.update({f"loss/{k}": v / max(1, seen) for k, v in sums.items()})
        if self.scaler is not None:
            metrics["loss_scale"] = self.scaler.get_scale()
        return metrics

    def validate(self, epoch: int, metrics: dict) -> None:
        """Evaluate the validation split (every ``eval_every`` epochs and after the last) and keep the best model."""
        o = self.o
        if self.val_loader is None or not (epoch % o.eval_every == 0 or epoch == o.epochs):
            return
        if o.recon:  # select on -MSE, so that "larger is better" holds for both objectives
            v = evaluate_reconstruction(self.model, self.val_loader, device=self.dev)
            metrics.update(val_loss=v["loss"])
            score, key = -v["loss"], [-v["loss"], -v["loss"]]
        elif o.regression:  # select on -MAE (the metric reported), ties to the lower MSE
            v = evaluate_regression(self.model, self.val_loader, device=self.dev)
            metrics.update(val_loss=v["loss"], val_mae=v["mae"])
            score, key = -v["mae"], [-v["mae"], -v["loss"]]
        else:
            v = evaluate(self.model, self.val_loader, device=self.dev)
            metrics.update(val_loss=v["loss"], val_acc=v["acc"])
            # accuracy first; equal accuracy (a small or saturated validation set) goes to the lower
            # loss, not to the earliest epoch that reached it
            score, key = v["acc"], [v["acc"], -v["loss"]]
        if key > self.best_key:
            self.best_score, self.best_key = score, key
            self.best_state = {k: t.detach().cpu().clone() for k, t in self.model.state_dict().items()}
            if self.run_w is not None:
                self.run_w.save_checkpoint(
                    {"model": self.best_state, "epoch": epoch, "val_score": self.best_score}, "best.pt"
                )

    def save(self, epoch: int, metrics: dict) -> None:
        self.history.append(metrics)
        if self.run is None:
            return
        rng = {"ranks": self.ctx.gather(rng_state())}  # each process's generators: every rank resumes its own
        if self.run_w is None:
            return
        self.run_w.log_epoch(metrics)
        state = {
            "model": self.trainable.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "epoch": epoch,
            "best_score": self.best_score,
            "best_key": self.best_key,
            "rng": rng,
            "settings": self.settings,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        self.run_w.save_checkpoint(state)

    def loop(self) -> None:
        o = self.o
        with TrainStep(
            self.wrapped,
            self.model,
            self.terms,
            self.opt,
            self.sched,
            teacher=self.teacher,
            teacher_cache=self.cache,
            device=self.dev,
            amp_dtype=self.amp_dtype,
            objective=o.objective,
            scaler=self.scaler,
        ) as step:
            epochs = progress_bar(
                range(self.start_epoch, o.epochs + 1),
                desc="epochs",
                enabled=self.show and o.epochs > 1,
                initial=self.start_epoch - 1,
                total=o.epochs,
            )
            for epoch in epochs:
                metrics = self.train_epoch(step, epoch)
                with step.paused():  # evaluation and callbacks need no recorded layers
                    self.validate(epoch, metrics)
                    for cb in self.callbacks:
                        cb(
                            EpochState(
                                epoch,
                                o.epochs,
                                self.model,
                                metrics,
                                self.history,
                                self.run_w,
                                self.dev,
                                self.val_loader,
                                self.test_loader,
                                self.teacher,
                                self.ctx.rank,
                            )
                        )
                self.save(epoch, metrics)
                self.ctx.barrier()
                epochs.set_postfix(val_acc=f"{metrics.get('val_acc', float('nan')):.3f}")
        self.ctx.broadcast_buffers(self.trainable)  # the student and the terms (FitNet regressors carry BN too)

    def summary(self) -> dict:
        """Final numbers: the last epoch's, the selected epoch's, and test scores of both models."""
        o, history = self.o, self.history
        key = o.metric
        sel = f"val_{key}"
        lower = o.recon or o.regression
        last = history[-1] if history else {}
        summary = {"epochs": o.epochs, f"train_{key}_last": last.get(f"train_{key}")}
        if self.val_loader is not None:
            summary[f"val_{key}_best"] = -self.best_score if lower else self.best_score
            evaluated = [r for r in history if sel in r]
            order = (
                (lambda r: (r[sel], r["val_loss"]))
                if o.regression
                else (lambda r: r[sel])
                if o.recon
                else (lambda r: (r[sel], -r["val_loss"]))
            )
            pick = (min if lower else max)(evaluated, key=order) if evaluated else None
            summary["best_epoch"] = pick["epoch"] if pick else None
        if self.test_loader is not None:

            def score(m):
                if o.recon:
                    return evaluate_reconstruction(m, self.test_loader, device=self.dev)["loss"]
                if o.regression:
                    return evaluate_regression(m, self.test_loader, device=self.dev)["mae"]
                return evaluate(m, self.test_loader, device=self.dev)["acc"]

            summary[f"test_{key}_last"] = score(self.model)
            if self.best_state is not None:
                probe = copy.deepcopy(self.model)
                probe.load_state_dict(self.best_state)
                summary[f"test_{key}_best_val"] = score(probe)
        if self.run_w is not None:
            self.run_w.write_summary(**summary)
        return summary


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
    deterministic: bool = False,
    unlabelled=None,
    unlabelled_batch_size: int | None = None,
    epoch_size: int | None = None,
    device_data: bool = True,
    compile: bool | str = False,
) -> FitResult:
    """Train ``model`` (the student) on the weighted sum of ``terms``.

    ``terms`` are Term objects or specs (``"ce"``, ``{"name": "kd", "T": 4}``, ``{"name": "geometric",
    "pairs": {"layer2": "layer2"}}``, ...); layer pairs map student module paths to ``teacher``
    module paths. The teacher is put in eval mode and frozen. ``val`` selects the model (best
    validation accuracy); with ``test``, both the test accuracy of that model
    (``test_acc_best_val``) and of the last epoch (``test_acc_last``) are reported, named as such.

    ``run`` (a RunDir or a name) gets per-epoch metrics and a checkpoint after every epoch; a call
    with a run that has a checkpoint resumes from it, and refuses when the training settings
    (schedule, optimiser, terms, seed, batch size, the model's architecture) differ. ``amp``:
    ``"auto"`` (bf16 on a GPU that has it), ``"bf16"``, ``"fp16"`` (with loss scaling), ``"off"``.
    ``deterministic=True`` asks for deterministic kernels (for bit-exact resumes on a GPU; see
    ``geoviz.engine.checkpoints``).

    Under ``torchrun`` (WORLD_SIZE > 1) the same call trains with DistributedDataParallel (NCCL with
    a GPU per process, else gloo); ``batch_size`` stays the global batch, split over the
    processes, and only rank 0 writes to the run. ``eval_every`` evaluates the validation split
    every that many epochs (and always after the last one); model selection sees only those epochs.

    ``epoch_size`` (images per epoch) makes an epoch several passes over a small data set, each
    pass in its own random order (no image twice within a pass): a budget in steps then has as
    many epoch ends — validation, checkpoint — per step at every data set size.

    ``unlabelled`` (a Dataset whose labels are ignored) adds a batch of ``unlabelled_batch_size``
    (default ``batch_size``) images to every step: the teacher terms (KD, geometric, the
    baselines) act on them as on the labelled images, cross-entropy only on the labelled ones.

    ``objective="reconstruction"`` trains an autoencoder: the targets are the inputs (use a term
    such as ``"reconstruction"``), the model with the lowest validation MSE is selected, and the
    summary reports ``test_loss_best_val`` / ``test_loss_last`` (MSE per pixel) instead of accuracies.

    ``device_data`` (default True): a data set held in tensors (``geoviz.datasets.batch_source``:
    shapes, digits, CIFAR-10, MNIST, defects, probe tasks, Subsets of them) is moved to the device
    once and batched there by index, augmentation included, instead of a per-item DataLoader — the
    same batches, much less Python per image. Other data sets, and ``device_data=False``, use a
    DataLoader (``num_workers``; pinned memory on a GPU).

    ``compile=True`` runs the training forward through ``torch.compile`` (the first steps pay the
    compilation; ``benchmarks/geometry.py`` measures whether it pays off); a string names the backend
    (``"eager"`` traces without compiling, for debugging).
    """
    opts = _Options(
        epochs,
        lr,
        optimizer,
        momentum,
        weight_decay,
        schedule,
        tuple(milestones),
        warmup_epochs,
        batch_size,
        seed,
        eval_every,
        num_workers,
        amp,
        objective,
        epoch_size,
        device_data,
        compile,
    )
    _check_options(opts)
    _check_data("train", train, required=True)
    _check_data("val", val, required=False)
    _check_data("test", test, required=False)
    if teacher_cache is not None and isinstance(train, DataLoader):
        teacher_cache.indexed(train)  # raises with the reason
    terms = build_terms(terms, model, teacher, teacher_cache, objective)
    if unlabelled is not None:
        _check_data("unlabelled", unlabelled, required=True)
        if isinstance(unlabelled, DataLoader):
            raise TypeError("unlabelled: pass a Dataset (fit batches it alongside the training data), not a DataLoader")
        if objective != "classification" or not any(t.needs_teacher for t in terms):
            raise ValueError(
                "unlabelled data feed the terms that need a teacher (kd, "
                "geometric, fitnet, ...): add one, or leave unlabelled=None"
            )
        if teacher_cache is not None:
            teacher_cache.indexed(
                unlabelled
            )  # the cache must cover them too (a Subset of its data set), else: no cache
        check_number("unlabelled_batch_size", unlabelled_batch_size, low=1, integer=True, allow_none=True)
    if epoch_size is not None and (isinstance(train, DataLoader) or under_torchrun()):
        raise ValueError("epoch_size needs the training Dataset and one process (under torchrun an epoch is one pass)")
    if under_torchrun() and isinstance(train, DataLoader):
        raise TypeError(
            "under torchrun fit needs the training Dataset, not a DataLoader: it shards it with a DistributedSampler"
        )

    dev = ddp_device(device)
    ctx = DistContext.setup(dev)
    try:
        with deterministic_mode(deterministic):
            seed_everything(seed)
            training = _Training(
                model,
                train,
                val,
                test,
                teacher,
                terms,
                opts,
                teacher_cache,
                callbacks,
                run,
                progress,
                dev,
                ctx,
                unlabelled,
                unlabelled_batch_size,
            )
            training.setup()
            training.resume()
            training.loop()
            summary = training.summary()
    finally:
        ctx.close()
    return FitResult(training.history, summary, model, training.run_w, training.best_state, terms)
