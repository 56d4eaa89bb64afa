"""Robustness to common corruptions: errors per corruption × severity, and ImageNet-C's summary
numbers (Hendrycks & Dietterich 2019):

- corruption error of model f on corruption c, normalised by a reference model:
  ``CE_c = Σ_s E_{s,c}(f) / Σ_s E_{s,c}(ref)``; the mean corruption error ``mCE`` averages CE_c
  over the corruptions;
- relative: ``relative CE_c = Σ_s (E_{s,c}(f) − E_clean(f)) / Σ_s (E_{s,c}(ref) − E_clean(ref))``,
  averaged into ``relative mCE`` (how much a model degrades, not how good it is);
- without a reference, the unnormalised mean error per corruption and overall.

E is the error rate for classification and the mean absolute error for regression.
"""
from __future__ import annotations

import numpy as np

from .._utils import choice, progress_bar
from ..datasets.corruptions import CORRUPTIONS, GROUP_OF, GROUPS, SEVERITIES, CorruptedImages
from ..inference import predict

TASKS = ("classification", "regression")


def model_error(model, data, *, task: str = "classification", device="auto", batch_size: int = 256) -> float:
    """1 − accuracy (classification) or the mean absolute error (regression) on ``data``."""
    choice("task", task, TASKS)
    out, y = predict(model, data, device=device, batch_size=batch_size)
    if task == "classification":
        return float((out.argmax(1) != y).float().mean())
    return float((out.reshape(len(y), -1)[:, 0] - y.float()).abs().mean())


def summarize_errors(errors: dict, clean: float, reference: dict | None = None) -> dict:
    """ImageNet-C's numbers from ``errors[corruption][severity]`` and the clean error; ``reference``
    is another model's summary (or ``{"errors": ..., "clean": ...}``) to normalise by."""
    names = list(errors)
    out = {"errors": errors, "clean": clean, "mean_error": {c: float(np.mean(list(errors[c].values()))) for c in names}}
    out["mean_corruption_error"] = float(np.mean(list(out["mean_error"].values())))
    groups = {g: [c for c in cs if c in errors] for g, cs in GROUPS.items()}
    out["group_mean_error"] = {g: float(np.mean([out["mean_error"][c] for c in cs])) for g, cs in groups.items() if cs}
    if reference is not None:
        ref, ref_clean = reference["errors"], reference["clean"]
        missing = [c for c in names if c not in ref or set(errors[c]) - set(ref[c])]
        if missing:
            raise ValueError(f"the reference lacks corruptions/severities {missing}: run it on the same table")
        ce = {c: sum(errors[c].values()) / max(sum(ref[c][s] for s in errors[c]), 1e-12) for c in names}
        rel = {}
        for c in names:
            den = sum(ref[c][s] - ref_clean for s in errors[c])
            rel[c] = sum(errors[c][s] - clean for s in errors[c]) / den if abs(den) > 1e-12 else float("nan")
        out.update(ce=ce, mce=float(np.mean(list(ce.values()))), relative_ce=rel, relative_mce=float(np.mean(list(rel.values()))),
                   group_ce={g: float(np.mean([ce[c] for c in cs])) for g, cs in groups.items() if cs})
    return out


def robustness_report(model, dataset, corruptions=CORRUPTIONS, severities=SEVERITIES, *, task: str = "classification", reference: dict | None = None,
                      seed: int = 0, device="auto", batch_size: int = 256, progress: bool = True) -> dict:
    """``model``'s error on ``dataset`` (images in [0, 1] with targets) clean and under each
    corruption × severity (corrupted on the fly, deterministic per seed), summarised as above;
    ``reference``: another model's report on the same table, for CE / mCE and their relative forms."""
    choice("task", task, TASKS)
    for c in corruptions:
        choice("corruption", c, CORRUPTIONS)
    clean = model_error(model, dataset, task=task, device=device, batch_size=batch_size)
    errors = {c: {} for c in corruptions}
    jobs = [(c, s) for c in corruptions for s in severities]
    for c, s in progress_bar(jobs, desc="corruptions", enabled=progress, leave=False):
        # the corrupted images do not depend on batch_size (a fixed block size): a reference scored
        # with another batch size saw the same images
        errors[c][s] = model_error(model, CorruptedImages(dataset, c, s, seed=seed), task=task, device=device, batch_size=batch_size)
    rep = summarize_errors(errors, clean, reference)
    rep["groups"] = {c: GROUP_OF[c] for c in corruptions}
    return rep


__all__ = ["model_error", "summarize_errors", "robustness_report", "TASKS"]
