"""Robustness to common corruptions: errors per corruption × severity, and ImageNet-C's summary
numbers (Hendrycks & Dietterich 2019):

- corruption error of model f on corruption c, normalised by a reference model:
  ``CE_c = Σ_s E_{s,c}(f) / Σ_s E_{s,c}(ref)``; the mean corruption error ``mCE`` averages CE_c
  over the corruptions;
- relative: ``relative CE_c = Σ_s (E_{s,c}(f) − E_clean(f)) / Σ_s (E_{s,c}(ref) − E_clean(ref))``,
  averaged into ``relative mCE`` (how much a model degrades, not how good it is). Where the
  reference hardly degrades, that ratio divides by a number near 0 and swings wildly (CIFAR-10-C's
  pixelate at severity 1 barely moves a small network, and single terms turn negative): a
  corruption whose reference degrades by less than ``min_degradation`` per severity on average
  (default: 0.01, or 5 % of the reference's clean error where that is larger — a percentage point
  of classification error; a twentieth of a regression's clean MAE) gets no relative CE (NaN),
  is listed in ``relative_excluded``, and relative mCE averages the others;
- without a reference, the unnormalised mean error per corruption and overall.

E is the error rate for classification and the mean absolute error for regression.
"""

from __future__ import annotations

import numpy as np
import torch

from .._utils import choice, progress_bar
from ..datasets.corruptions import CORRUPTIONS, GROUP_OF, GROUPS, SEVERITIES, CorruptedImages
from ..inference import predict

TASKS = ("classification", "regression")


def _per_image_error(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    if task == "classification":
        return (out.argmax(1) != y).float()
    return (out.reshape(len(y), -1)[:, 0] - y.float()).abs()


def _amp(task: str) -> str:
    # bf16 keeps 8 bits of mantissa: a 10 px prediction rounds to 0.03–0.06 px, the size of the
    # differences compared; a class decision survives it
    return "off" if task == "regression" else "auto"


def model_error(model, data, *, task: str = "classification", device="auto", batch_size: int = 256) -> float:
    """1 − accuracy (classification) or the mean absolute error (regression) on ``data``."""
    choice("task", task, TASKS)
    out, y = predict(model, data, device=device, batch_size=batch_size, amp=_amp(task))
    return float(_per_image_error(out, y, task).mean())


def summarize_errors(
    errors: dict, clean: float, reference: dict | None = None, *, min_degradation: float | None = None
) -> dict:
    """ImageNet-C's numbers from ``errors[corruption][severity]`` and the clean error; ``reference``
    is another model's summary (or ``{"errors": ..., "clean": ...}``) to normalise by.
    ``min_degradation``: the least mean degradation per severity, ``E_ref − E_clean(ref)``, that a
    corruption needs for a relative CE (default ``max(0.01, 0.05 · E_clean(ref))``)."""
    names = list(errors)
    out = {"errors": errors, "clean": clean, "mean_error": {c: float(np.mean(list(errors[c].values()))) for c in names}}
    out["mean_corruption_error"] = float(np.mean(list(out["mean_error"].values())))
    groups = {g: [c for c in cs if c in errors] for g, cs in GROUPS.items()}
    out["group_mean_error"] = {g: float(np.mean([out["mean_error"][c] for c in cs])) for g, cs in groups.items() if cs}
    if reference is not None:
        out.update(_relative_to(errors, clean, reference, min_degradation))
        out["group_ce"] = {g: float(np.mean([out["ce"][c] for c in cs])) for g, cs in groups.items() if cs}
    return out


def _relative_to(errors: dict, clean: float, reference: dict, min_degradation: float | None) -> dict:
    """CE, mCE and the guarded relative CE / mCE against ``reference``."""
    ref, ref_clean = reference["errors"], reference["clean"]
    missing = [c for c in errors if c not in ref or set(errors[c]) - set(ref[c])]
    if missing:
        raise ValueError(f"the reference lacks corruptions/severities {missing}: run it on the same table")
    floor = max(0.01, 0.05 * ref_clean) if min_degradation is None else float(min_degradation)
    ce = {c: sum(e.values()) / max(sum(ref[c][s] for s in e), 1e-12) for c, e in errors.items()}
    rel, excluded = {}, []
    for c, e in errors.items():
        degradation = sum(ref[c][s] - ref_clean for s in e)
        if degradation < floor * len(e):
            rel[c] = float("nan")
            excluded.append(c)
        else:
            rel[c] = sum(e[s] - clean for s in e) / degradation
    kept = [v for v in rel.values() if np.isfinite(v)]
    return dict(
        ce=ce,
        mce=float(np.mean(list(ce.values()))),
        relative_ce=rel,
        relative_mce=float(np.mean(kept)) if kept else float("nan"),
        relative_excluded=excluded,
        min_degradation=floor,
    )


def robustness_reports(
    models: dict,
    dataset,
    corruptions=CORRUPTIONS,
    severities=SEVERITIES,
    *,
    task: str = "classification",
    reference: str | dict | None = None,
    seed: int = 0,
    device="auto",
    batch_size: int = 256,
    progress: bool = True,
) -> dict:
    """Every model in ``models`` (name → model) scored on the same corrupted images, each corrupted
    set made once (the corruptions cost as much as a small model's forward pass); ``reference``: one
    of the names, or another model's report, to normalise by. Returns name → report."""
    choice("task", task, TASKS)
    for c in corruptions:
        choice("corruption", c, CORRUPTIONS)
    if isinstance(reference, str) and reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the models {list(models)}")
    clean = {k: model_error(m, dataset, task=task, device=device, batch_size=batch_size) for k, m in models.items()}
    errors = {k: {c: {} for c in corruptions} for k in models}
    jobs = [(c, s) for c in corruptions for s in severities]
    for c, s in progress_bar(jobs, desc="corruptions", enabled=progress, leave=False):
        # the corrupted images do not depend on batch_size (a fixed block size): a reference scored
        # with another batch size saw the same images
        data = CorruptedImages(dataset, c, s, seed=seed)
        total, n = dict.fromkeys(models, 0.0), 0
        for lo in range(0, len(data), data.batch):  # one block of corrupted images at a time, shared by all models
            hi = min(len(data), lo + data.batch)
            x, y = torch.utils.data.default_collate([data[i] for i in range(lo, hi)])[:2]
            block = torch.utils.data.TensorDataset(x, y)
            for k, m in models.items():
                out, _ = predict(m, block, device=device, batch_size=batch_size, amp=_amp(task))
                total[k] += float(_per_image_error(out, y, task).sum())
            n += hi - lo
        for k in models:
            errors[k][c][s] = total[k] / n
    ref = {"errors": errors[reference], "clean": clean[reference]} if isinstance(reference, str) else reference
    reps = {}
    for k in models:
        reps[k] = summarize_errors(errors[k], clean[k], ref)
        reps[k]["groups"] = {c: GROUP_OF[c] for c in corruptions}
    return reps


def robustness_report(
    model,
    dataset,
    corruptions=CORRUPTIONS,
    severities=SEVERITIES,
    *,
    task: str = "classification",
    reference: dict | None = None,
    seed: int = 0,
    device="auto",
    batch_size: int = 256,
    progress: bool = True,
) -> dict:
    """``model``'s error on ``dataset`` (images in [0, 1] with targets) clean and under each
    corruption × severity (corrupted on the fly, deterministic per seed), summarised as above;
    ``reference``: another model's report on the same table, for CE / mCE and their relative forms."""
    return robustness_reports(
        {"model": model},
        dataset,
        corruptions,
        severities,
        task=task,
        reference=reference,
        seed=seed,
        device=device,
        batch_size=batch_size,
        progress=progress,
    )["model"]


__all__ = ["model_error", "summarize_errors", "robustness_report", "robustness_reports", "TASKS"]
