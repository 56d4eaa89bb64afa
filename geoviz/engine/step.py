"""One optimisation step: forward of student (and teacher, or its cached outputs), every loss
term, backward with loss scaling where fp16 needs it, update."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import torch
from torch import nn

from .._utils import choice
from ..capture import ActivationRecorder
from ..losses.terms import Term, TermInputs
from .teacher_cache import TeacherCache

OBJECTIVES = ("classification", "reconstruction", "regression")


class Trainable(nn.Module):
    """The student and the terms' own parameters (FitNet regressors), trained and synced together."""

    def __init__(self, student: nn.Module, terms: Sequence[Term]):
        super().__init__()
        self.student = student
        self.terms = nn.ModuleList(terms)

    def forward(self, x):
        return self.student(x)


def _non_finite_message(loss, parts, x, t_logits) -> str:
    """Say whether the data or the optimisation made the loss non-finite: the advice differs."""
    values = ", ".join(f"{t.name}={v.item():.3g}" for t, v in parts)
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        return (
            f"the input batch holds {bad} NaN/inf value(s), so the loss became {loss.item()} ({values}): the data are "
            f"broken, not the training; check the data set (e.g. torch.isfinite(ds[i][0]).all() for each item)"
        )
    if t_logits is not None and not torch.isfinite(t_logits).all():
        return (
            f"the teacher's outputs hold NaN/inf, so the loss became {loss.item()} "
            f"({values}): check the teacher's checkpoint and its inputs"
        )
    return f"the loss became {loss.item()} ({values}): lower the learning rate or the term weights"


class TrainStep:
    """One optimisation step of ``fit``: the student's forward pass (captured layers kept with their
    graph), the teacher's (or its cached outputs), every loss term, backward, update. Use it as a
    context manager: the layer hooks live inside the ``with`` block only.

    ``scaler`` (a ``torch.amp.GradScaler``) scales the loss for fp16 autocast, whose small
    gradients would otherwise underflow; steps with inf/NaN gradients are then skipped by it.
    """

    def __init__(
        self,
        wrapped: nn.Module,
        student: nn.Module,
        terms: Sequence[Term],
        opt,
        sched=None,
        *,
        teacher=None,
        teacher_cache: TeacherCache | None = None,
        device="cpu",
        amp_dtype=None,
        objective: str = "classification",
        scaler: torch.amp.GradScaler | None = None,
    ):
        self.wrapped, self.student, self.terms, self.opt, self.sched = wrapped, student, list(terms), opt, sched
        self.reconstruct = choice("objective", objective, OBJECTIVES) == "reconstruction"
        self.regression = objective == "regression"
        self.teacher, self.cache, self.dev, self.amp_dtype = teacher, teacher_cache, torch.device(device), amp_dtype
        self.scaler = scaler
        self.student_layers = sorted({l for t in self.terms for l in t.student_layers})
        self.teacher_layers = sorted({l for t in self.terms for l in t.teacher_layers})
        self.needs_teacher = any(t.needs_teacher for t in self.terms)
        self._stack = ExitStack()
        self.rec_s = self.rec_t = None

    def __enter__(self) -> TrainStep:
        if self.student_layers:
            self.rec_s = self._stack.enter_context(
                ActivationRecorder(self.student, self.student_layers, detach=False, device=None)
            )
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

    def __call__(self, batch, unlabelled=None) -> tuple[torch.Tensor, list, torch.Tensor, torch.Tensor]:
        """Returns (loss, [(term, value), ...], logits of the labelled images, targets).

        ``unlabelled`` (a batch whose labels are ignored) joins the forward pass: the teacher terms
        act on every image, the label terms on the labelled ones only."""
        dev = self.dev
        x = batch[0].to(dev, non_blocking=True)
        y = x if self.reconstruct else batch[1].to(dev, non_blocking=True)
        if self.regression:
            y = y.float()
        n_labelled = x.shape[0]
        if unlabelled is not None:
            x = torch.cat([x, unlabelled[0].to(dev, non_blocking=True)])
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = self.wrapped(x)
            t_logits, t_feats = None, {}
            if self.cache is not None:
                idx = (
                    batch[2]
                    if unlabelled is None
                    else torch.cat([torch.as_tensor(batch[2]), torch.as_tensor(unlabelled[2])])
                )
                t_logits, t_feats = self.cache.lookup(idx, dev)
            elif self.needs_teacher:
                with torch.no_grad():
                    t_logits = self.teacher(x)
                t_feats = self.rec_t.activations if self.rec_t else {}
            inp = TermInputs(logits, y, self.rec_s.activations if self.rec_s else {}, t_logits, t_feats, self.student)
            parts = [(t, t(inp)) for t in self.terms]
            loss = sum(t.weight * v for t, v in parts)
        if not torch.isfinite(loss):
            raise FloatingPointError(_non_finite_message(loss, parts, x, t_logits))
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        if self.sched is not None:
            self.sched.step()
        return loss, parts, logits[:n_labelled], y
