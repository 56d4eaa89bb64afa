"""Knowledge transfer by geometric regularisation of local activations (paper 1), with KD, under
limited data: accuracy vs train fraction for CE / KD / geometric / geometric+KD over seeds, and
how close each student's local geometry comes to the teacher's.

Protocol (our reconstruction; the paper gives no tables): one teacher is trained on the full
training split; each student run trains from scratch on a class-balanced, seeded fraction of it,
selects its model on a fixed validation split, and reports test accuracy of that model
(``test_acc_best_val``) and of the last epoch (``test_acc_last``).

The loss of each method:

- ``ce``: cross-entropy;
- ``kd``: ``ce_weight_with_kd`` · CE + ``kd_weight`` · KD(T) (Hinton; 0.1 / 0.9 as in RepDistiller);
- ``geometric``: CE + ``geometric_weight`` · mean over layer pairs of ``local_geometry_loss``;
- ``geometric+kd``: the KD loss plus the geometric term.

Training budget: ``student_steps`` gives every student run the same number of optimiser steps
whatever its fraction (so a smaller fraction means more epochs over fewer images); with
``student_steps=None`` every run trains ``epochs`` epochs, as in the paper-scale profile.
"""
from __future__ import annotations

import math
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np
import torch

from .._utils import progress_bar, resolve_device, seed_everything
from ..analysis import layer_alignment
from ..config import ExperimentConfig
from ..datasets import get_dataset, num_classes, train_fraction
from ..engine import TeacherCache, build_terms, evaluate, fit
from ..losses.geometric import KINDS
from ..models import build_model, load_state
from ..paths import resolve_in_root
from ..runs import RunDir, config_hash, default_root
from . import SavesSummary

METHODS = ("ce", "kd", "geometric", "geometric+kd")
# Default weight per geometric kind: each term then starts near 1 nat (about half of the
# cross-entropy at chance) with a trained teacher and a fresh student (measured: affinity_kl
# ≈ 0.14, cosine_pairwise ≈ 0.045, knn_soft ≈ 0.18). A scale normalisation, fixed before any result.
DEFAULT_GEOMETRIC_WEIGHT = {"affinity_kl": 10.0, "cosine_pairwise": 30.0, "knn_soft": 10.0}


def _pairs(p) -> tuple[tuple[str, str], ...]:
    if isinstance(p, dict):
        p = p.items()
    return tuple((str(a), str(b)) for a, b in p)


@dataclass(frozen=True)
class TransferConfig(ExperimentConfig):
    dataset: str = "shapes10"
    teacher: str = "resnet14"
    student: str = "resnet8"
    student_kwargs: dict = field(default_factory=lambda: {"width": 0.5})  # build_model keywords
    teacher_kwargs: dict = field(default_factory=dict)
    pairs: tuple = (("layer2", "layer2"), ("layer3", "layer3"))  # (student layer, teacher layer)
    kind: str = "affinity_kl"
    geometric_weight: float | None = None  # None: DEFAULT_GEOMETRIC_WEIGHT[kind]
    kd_weight: float = 0.9
    ce_weight_with_kd: float = 0.1
    kd_T: float = 4.0
    m: int = 256
    k: int = 8
    methods: tuple = METHODS
    train_fractions: tuple = (0.1, 0.25, 0.5, 1.0)
    seeds: tuple = (0, 1, 2)
    n_train: int | None = 2000
    n_val: int | None = 300
    n_test: int | None = 1000
    teacher_epochs: int = 12
    teacher_checkpoint: str | None = None  # reuse a trained teacher instead of training one
    student_steps: int | None = 80
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.05
    schedule: str = "cosine"
    probe_images: int = 64
    evaluations: int = 5  # validation passes per student run (model selection)
    device: str = "auto"

    PROFILE_OVERRIDES = {
        "smoke": dict(train_fractions=(0.25, 1.0), seeds=(0,), n_train=256, n_val=64, n_test=128, teacher_epochs=2,
                      student_steps=8, probe_images=16, m=64),
        "full": dict(dataset="cifar10", teacher="resnet56", student="resnet20",
                     student_kwargs={}, pairs=(("layer1", "layer1"), ("layer2", "layer2"), ("layer3", "layer3")),
                     n_train=None, n_val=None, n_test=None, teacher_epochs=200, student_steps=None, epochs=200,
                     batch_size=128, lr=0.1, probe_images=256),
    }

    def __post_init__(self):
        object.__setattr__(self, "pairs", _pairs(self.pairs))  # a {student: teacher} mapping is fine too
        super().__post_init__()
        if not self.pairs:
            raise ValueError("pairs must name at least one (student layer, teacher layer)")
        if self.kind not in KINDS:
            raise ValueError(f"unknown geometric loss kind {self.kind!r}; allowed: {KINDS}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown methods {bad}; allowed: {METHODS}")
        for f in self.train_fractions:
            if not 0 < f <= 1:
                raise ValueError(f"train_fraction must be in (0, 1], got {f}")

    def terms(self, method: str) -> list:
        w = DEFAULT_GEOMETRIC_WEIGHT[self.kind] if self.geometric_weight is None else self.geometric_weight
        geo = {"name": "geometric", "weight": w, "pairs": dict(self.pairs), "kind": self.kind, "m": self.m, "k": self.k}
        kd = [{"name": "ce", "weight": self.ce_weight_with_kd}, {"name": "kd", "weight": self.kd_weight, "T": self.kd_T}]
        return {"ce": ["ce"], "kd": kd, "geometric": ["ce", geo], "geometric+kd": kd + [geo]}[method]


@dataclass
class TransferResult(SavesSummary):
    config: TransferConfig
    teacher_summary: dict
    runs: list[dict]  # one row per (method, fraction, seed)
    geometry_init: dict  # student at initialisation vs teacher, per seed
    class_names: list[str]
    experiment: RunDir | None = None
    histories: dict = field(default_factory=dict)

    def table(self, metric: str = "test_acc_best_val") -> list[dict]:
        """Mean ± std over seeds per (method, fraction)."""
        out = []
        for method in self.config.methods:
            for f in self.config.train_fractions:
                vals = [r[metric] for r in self.runs if r["method"] == method and r["fraction"] == f]
                if vals:
                    out.append({"method": method, "fraction": f, "mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "n": len(vals), "values": vals})
        return out

    def geometry_table(self, fraction: float | None = None) -> dict[str, dict[str, dict[str, float]]]:
        """``{row: {pair: {measure: mean over seeds}}}`` with rows "init" and one per method,
        at ``fraction`` (default: the largest)."""
        f = max(self.config.train_fractions) if fraction is None else fraction

        def mean(rows):
            pairs = rows[0].keys()
            return {p: {m: float(np.mean([r[p][m] for r in rows])) for m in ("knn_agreement", "cka")} for p in pairs}

        out = {"init": mean(list(self.geometry_init.values()))}
        for method in self.config.methods:
            rows = [r["geometry"] for r in self.runs if r["method"] == method and r["fraction"] == f]
            if rows:
                out[method] = mean(rows)
        return out

    def summary(self) -> dict:
        s = {"teacher": self.teacher_summary, "table_test_acc_best_val": self.table(), "table_test_acc_last": self.table("test_acc_last"),
             "geometry": self.geometry_table()}
        return s


def _epochs_for(cfg: TransferConfig, n_images: int) -> int:
    if cfg.student_steps is None:
        return cfg.epochs
    per_epoch = max(1, n_images // cfg.batch_size)
    return max(1, math.ceil(cfg.student_steps / per_epoch))


def _teacher_checkpoint(cfg: TransferConfig, run_root) -> Path | None:
    """``teacher_checkpoint`` as a path: absolute as given, relative inside the runs root."""
    if not cfg.teacher_checkpoint:
        return None
    p = Path(cfg.teacher_checkpoint).expanduser()
    if not p.is_absolute():
        p = (resolve_in_root(run_root) if run_root is not None else default_root()) / p
    if not p.is_file():
        raise FileNotFoundError(f"teacher_checkpoint {cfg.teacher_checkpoint!r} → {p} does not exist (a relative path is "
                                f"taken inside the runs root); train the teacher first or leave teacher_checkpoint=None")
    return p


def run_transfer(cfg: TransferConfig, *, run_root=None, progress: bool = True) -> TransferResult:
    device = resolve_device(cfg.device)
    train = get_dataset(cfg.dataset, "train", n=cfg.n_train, seed=0)
    val = get_dataset(cfg.dataset, "val", n=cfg.n_val, seed=0)
    test = get_dataset(cfg.dataset, "test", n=cfg.n_test, seed=0)
    k_cls, in_chans = num_classes(train), train[0][0].shape[0]
    pairs = dict(cfg.pairs)
    seed_everything(1000)
    teacher = build_model(cfg.teacher, k_cls, in_chans=in_chans, **cfg.teacher_kwargs)
    checkpoint = _teacher_checkpoint(cfg, run_root)
    for method in cfg.methods:  # names, settings and layer pairs checked before anything is written
        build_terms(cfg.terms(method), build_model(cfg.student, k_cls, in_chans=in_chans, **cfg.student_kwargs), teacher, None)
    exp = RunDir(f"transfer-{cfg.teacher}-{cfg.student}-{cfg.dataset}-{config_hash(cfg)}", run_root)
    exp.write_config(cfg)

    # the teacher: trained once on the whole training split (or loaded), resumable
    if checkpoint is not None:
        load_state(teacher, checkpoint)
        teacher_summary = {"checkpoint": str(checkpoint), "test_acc": None}
    else:
        teacher_summary = fit(teacher, train, val, test=test, epochs=cfg.teacher_epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                              schedule=cfg.schedule, device=device, run=RunDir("teacher", exp.path), seed=1000, progress=progress).summary
        best = RunDir("teacher", exp.path).load_checkpoint("best.pt")
        if best is not None:  # the teacher is the model selected on validation
            teacher.load_state_dict(best["model"])
    teacher.to(device).eval()
    teacher_summary["test_acc"] = evaluate(teacher, test, device=device)["acc"]
    cache = TeacherCache.if_it_fits(teacher, train, list(pairs.values()), device=device)

    probe = torch.stack([test[i][0] for i in range(min(cfg.probe_images, len(test)))])
    geometry_init = {}
    for seed in cfg.seeds:
        seed_everything(seed)
        geometry_init[seed] = layer_alignment(build_model(cfg.student, k_cls, in_chans=in_chans, **cfg.student_kwargs).to(device), teacher, probe, pairs, seed=seed)

    rows, histories = [], {}
    jobs = [(s, f, m) for s in cfg.seeds for f in cfg.train_fractions for m in cfg.methods]
    bar = progress_bar(jobs, desc="student runs", enabled=progress)
    for seed, frac, method in bar:
        name = f"{method}-f{frac:g}-s{seed}"
        bar.set_postfix_str(name)
        rd = RunDir(name, exp.path)
        done = rd.read_metrics()
        if done["status"] == "finished" and "geometry" in done["summary"]:
            summary, history = done["summary"], done["epochs"]
        else:
            seed_everything(seed)
            student = build_model(cfg.student, k_cls, in_chans=in_chans, **cfg.student_kwargs)
            subset = train_fraction(train, frac, seed=seed)
            epochs = _epochs_for(cfg, len(subset))
            res = fit(student, subset, val, test=test, teacher=teacher, terms=cfg.terms(method), epochs=epochs,
                      lr=cfg.lr, batch_size=cfg.batch_size, schedule=cfg.schedule, device=device, run=rd, seed=seed,
                      progress=False, teacher_cache=cache, eval_every=max(1, epochs // cfg.evaluations))
            geometry = layer_alignment(student, teacher, probe, pairs, seed=seed)
            summary = rd.write_summary(geometry=geometry, n_train_images=len(subset))["summary"]
            history = res.history
        rows.append({"method": method, "fraction": frac, "seed": seed, "n_train_images": summary["n_train_images"],
                     "epochs": summary["epochs"], "test_acc_best_val": summary["test_acc_best_val"],
                     "test_acc_last": summary["test_acc_last"], "val_acc_best": summary["val_acc_best"], "geometry": summary["geometry"]})
        histories[name] = history
    return TransferResult(cfg, teacher_summary, rows, geometry_init, list(train.classes), exp, histories)
