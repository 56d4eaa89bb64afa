"""Ensembles of CNNs with knowledge transfer for leather defects (paper 2, Aslam et al. 2020).

Several CNNs, pre-trained on a source task, are fine-tuned to classify defect types and combined.
Per seed and start: every member (zoo networks of different families) is trained on the defect
training set, either from weights trained once on the source task (``transfer``: shapes10, a
procedural shape task, at the same image size; fine-tuning the whole network or only its last
stage and head) or from random initialisation (``scratch``); members are scored at their last
epoch. Their probabilities on the validation split fit the fused rules that need fitting (weights,
stacking) — validation never chose a checkpoint — and on the test split give each member's and
each fusion's accuracy, confusion matrices and the members' pairwise diversity.

Claims, paired by seed (t interval, three-valued): transfer beats scratch (each member, and the
mean-fused ensemble); the ensemble beats its best member, the best chosen on validation (each
start × fusion rule); every member beats the image-statistics floor. The floors: chance, and a
gradient-boosted classifier on whole-image statistics (``analysis.floors.image_statistics``).
What the seeds vary: the members' initialisation (heads included) and data order; the source
networks (one per member family) and the data sets are the same for every seed, so the intervals
hold for these images and these source networks. Many claims at 95 % each: read them as a family
(no multiplicity correction).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .._utils import progress_bar, resolve_device, seed_everything
from ..analysis.floors import image_statistics, shortcut_floor
from ..analysis.statistics import mean_std, paired_difference
from ..config import ExperimentConfig
from ..datasets import get_dataset
from ..datasets.shapes import ShapesDataset
from ..engine import fit
from ..inference import predict
from ..methods.ensemble import FUSIONS, Ensemble, mean_pairwise, pairwise_diversity
from ..models import build_model, load_backbone
from ..runs import RunDir, config_hash
from . import SavesSummary, pretrained_once

STARTS = ("transfer", "scratch")
FINETUNE = ("all", "last")


@dataclass(frozen=True)
class EnsemblesConfig(ExperimentConfig):
    dataset: str = "leather"  # or "mvtec_leather", "defect_folder" (files in data/)
    image_size: int = 48
    n_train: int = 1600
    n_val: int = 320
    n_test: int = 640
    members: tuple = ("resnet8", "wrn_16_1", "resnet14")
    starts: tuple = STARTS
    finetune: str = "all"  # "last": only the last stage and the head are trained after transfer
    epochs: int = 60  # resnet8 from scratch at 48 px: 0.25 test accuracy after 30 epochs, 0.56 after 60 (flat over the last 15)
    lr: float = 0.05
    batch_size: int = 32
    source_n: int = 3000  # shapes10 images for the source task
    source_epochs: int = 8
    fusions: tuple = FUSIONS
    seeds: tuple = (0, 1, 2)
    floor_n: int = 1600
    confidence: float = 0.95
    device: str = "auto"

    PROFILE_OVERRIDES = {
        "smoke": dict(image_size=32, n_train=64, n_val=48, n_test=48, members=("resnet8", "resnet14"), epochs=1, source_n=100, source_epochs=1,
                      seeds=(0, 1), floor_n=96),
        "full": dict(image_size=96, n_train=8000, n_val=1600, n_test=3200, members=("resnet20", "wrn_16_2", "vgg11", "mobilenetv2"), epochs=80,
                     source_n=20000, source_epochs=30, batch_size=128, seeds=(0, 1, 2, 3, 4), floor_n=8000),
    }

    def __post_init__(self):
        super().__post_init__()
        bad = [s for s in self.starts if s not in STARTS]
        if bad or not self.starts:
            raise ValueError(f"unknown starts {bad}; allowed: {STARTS}")
        bad = [f for f in self.fusions if f not in FUSIONS]
        if bad or not self.fusions:
            raise ValueError(f"unknown fusions {bad}; allowed: {FUSIONS}")
        if self.finetune not in FINETUNE:
            raise ValueError(f"finetune must be one of {FINETUNE}, got {self.finetune!r}")
        if len(self.members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {self.members}")


@dataclass
class EnsemblesResult(SavesSummary):
    config: EnsemblesConfig
    rows: list[dict]  # per (seed, start, name): kind member | fusion, test accuracy (and val accuracy for members)
    diversity: list[dict]  # per (seed, start): mean pairwise disagreement, Q, error correlation; gains
    floors: dict
    classes: list
    histories: dict
    confusion: dict = field(default_factory=dict)  # first seed: (start, name) → (C, C) counts, rows true
    models: dict = field(default_factory=dict)  # first seed: (start, member) → model (for the CAMs)
    test_images: torch.Tensor | None = None
    test_labels: np.ndarray | None = None
    source_val_acc: dict = field(default_factory=dict)  # member → the source network's last validation accuracy on shapes10
    experiment: RunDir | None = None

    def table(self) -> list[dict]:
        """Per (start, name): test accuracy, mean ± std over seeds."""
        out = []
        for key in dict.fromkeys((r["start"], r["name"], r["kind"]) for r in self.rows):
            rs = [r for r in self.rows if (r["start"], r["name"], r["kind"]) == key]
            m, s = mean_std([r["acc"] for r in rs])
            out.append({"start": key[0], "name": key[1], "kind": key[2], "acc": m, "acc_std": s, "n": len(rs)})
        return out

    def _per_seed(self, start, name):
        return [next(r["acc"] for r in self.rows if r["seed"] == sd and r["start"] == start and r["name"] == name) for sd in self.config.seeds]


    def claims(self) -> list[dict]:
        cfg, out = self.config, []
        res = 1.0 / max(1, len(self.test_labels)) if self.test_labels is not None else 0.0

        def claim(text, a, b):
            d = paired_difference(a, b, confidence=cfg.confidence, resolution=res) if len(cfg.seeds) > 1 else None
            out.append({"claim": text, "mean": d["mean"] if d else float("nan"), "ci": d["ci"] if d else [float("nan")] * 2,
                        "n_seeds": len(cfg.seeds), "verdict": d["verdict"] if d else "undecided"})

        if set(STARTS) <= set(cfg.starts):
            tune = "whole network" if cfg.finetune == "all" else "last stage only"
            for name in (*cfg.members, *(["mean"] if "mean" in cfg.fusions else [])):
                what = "the mean-fused ensemble" if name == "mean" else name
                claim(f"transfer ({tune}) beats scratch: {what} (test accuracy, transfer minus scratch)", self._per_seed("transfer", name),
                      self._per_seed("scratch", name))
        for start in cfg.starts:  # every member must clear the image-statistics floor
            for name in cfg.members:
                acc = self._per_seed(start, name)
                claim(f"{start}: {name} beats the image-statistics floor ({self.floors['image_statistics']:.3f})", acc,
                      [self.floors["image_statistics"]] * len(acc))
        for start in cfg.starts:
            best = [best_member(self.rows, sd, start)["acc"] for sd in cfg.seeds]
            for f in cfg.fusions:
                claim(f"{start}: the {f} ensemble beats its best member (chosen on validation)", self._per_seed(start, f), best)
        return out

    def diversity_vs_gain(self, fusion: str = "mean") -> dict:
        """Spearman's rank correlation of the members' mean pairwise disagreement with the
        ensemble's gain over its best member, over every (seed, start): descriptive."""
        from scipy.stats import spearmanr

        x = [d["disagreement"] for d in self.diversity]
        y = [d[f"gain_{fusion}"] for d in self.diversity]
        if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            return {"fusion": fusion, "n": len(x), "rho": float("nan"), "p": float("nan")}
        r = spearmanr(x, y)
        return {"fusion": fusion, "n": len(x), "rho": float(r.statistic), "p": float(r.pvalue)}

    def summary(self) -> dict:
        return {"table": self.table(), "claims": self.claims(), "floors": self.floors, "diversity": self.diversity, "classes": self.classes,
                "diversity_vs_gain": {f: self.diversity_vs_gain(f) for f in self.config.fusions}, "source_val_acc": self.source_val_acc,
                "confusion": {f"{s}/{n}": c.tolist() for (s, n), c in self.confusion.items()}}


def best_member(rows: list[dict], seed: int, start: str) -> dict:
    """The member row of (seed, start) with the highest validation accuracy: chosen on
    validation, scored on test."""
    return max((r for r in rows if r["seed"] == seed and r["start"] == start and r["kind"] == "member"), key=lambda r: r["val_acc"])


def _probabilities(model, data, device) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = predict(model, data, device=device)
    return torch.softmax(logits.float(), 1).numpy().astype(np.float64), labels.numpy()


def _freeze_all_but_last(model) -> None:
    """Fine-tune only the last stage and what follows it (a final BN or 1×1 conv, the head) after
    transfer: the stem and the earlier stages keep their source weights and, in their BatchNorm
    layers, their source statistics (evaluated in eval mode even while the model trains)."""
    names = [n for n, _ in model.named_children()]
    first = names.index(model.stage_names[0])
    frozen = set(names[:first]) | set(model.stage_names[:-1])
    for name, child in model.named_children():
        if name not in frozen:
            continue
        for p in child.parameters():
            p.requires_grad_(False)
        for m in child.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.register_forward_pre_hook(_keep_eval)


def _keep_eval(module, _inputs):
    module.training = False  # fit() calls model.train() every epoch; a frozen BN keeps its running statistics


def image_floor(cfg: EnsemblesConfig, train, test) -> float:
    """Held-out accuracy of a gradient-boosted classifier on whole-image statistics, fitted on the
    first ``floor_n`` training images (generated again only when the training set is smaller)."""
    if cfg.floor_n > len(train):
        train = get_dataset(cfg.dataset, "train", n=cfg.floor_n, size=cfg.image_size)
    images, labels = train.images[: cfg.floor_n], train.labels[: cfg.floor_n]
    return shortcut_floor(image_statistics(images), labels.numpy(), image_statistics(test.images), test.labels.numpy())


def run_ensembles(cfg: EnsemblesConfig, *, run_root=None, progress: bool = True) -> EnsemblesResult:
    device = resolve_device(cfg.device)
    kw = dict(size=cfg.image_size)
    train = get_dataset(cfg.dataset, "train", n=cfg.n_train, augment=True, **kw)
    val = get_dataset(cfg.dataset, "val", n=cfg.n_val, **kw)
    test = get_dataset(cfg.dataset, "test", n=cfg.n_test, **kw)
    classes, k = list(train.classes), len(train.classes)
    floors = {"chance": 1.0 / k, "image_statistics": image_floor(cfg, train, test)}
    exp = RunDir(f"ensembles-{config_hash(cfg)}", run_root)
    exp.write_config(cfg)
    source = {}
    if "transfer" in cfg.starts:
        def source_data():
            return (ShapesDataset("shapes10", cfg.source_n, size=cfg.image_size, split="train"),
                    ShapesDataset("shapes10", max(100, cfg.source_n // 10), size=cfg.image_size, split="val"))

        settings = {"task": "shapes10", "n": cfg.source_n, "size": cfg.image_size}
        for m in progress_bar(cfg.members, desc="source task", enabled=progress, leave=False):
            source[m] = pretrained_once(m, 10, source_data, name="ensembles-source", settings=settings, epochs=cfg.source_epochs, lr=cfg.lr,
                                        batch_size=cfg.batch_size, device=device, run_root=run_root)
    source_val_acc = {m: _last_val_acc(p) for m, p in source.items()}

    rows, diversity, histories, confusion, models = [], [], {}, {}, {}
    jobs = [(sd, st, m) for sd in cfg.seeds for st in cfg.starts for m in cfg.members]
    bar = progress_bar(total=len(jobs), desc="members", enabled=progress)
    for sd in cfg.seeds:
        for st in cfg.starts:
            pv, pt = [], []
            for m in cfg.members:
                bar.set_postfix_str(f"{m}, {st}, seed {sd}")
                seed_everything(sd)
                net = build_model(m, k)
                if st == "transfer":
                    load_backbone(net, source[m])
                    if cfg.finetune == "last":
                        _freeze_all_but_last(net)
                res = fit(net, train, val, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, device=device,
                          run=RunDir(f"{m}-{st}-s{sd}", exp.path), seed=sd, progress=False)
                histories[f"{m} ({st})-s{sd}"] = res.history
                v, yv = _probabilities(net, val, device)
                t, yt = _probabilities(net, test, device)
                pv.append(v)
                pt.append(t)
                rows.append({"seed": sd, "start": st, "name": m, "kind": "member", "acc": float((t.argmax(1) == yt).mean()),
                             "val_acc": float((v.argmax(1) == yv).mean())})
                if sd == cfg.seeds[0]:
                    models[(st, m)] = net.cpu().eval()
                    confusion[(st, m)] = _confusion(yt, t.argmax(1), k)
                bar.update()
            pv, pt = np.stack(pv), np.stack(pt)
            accs = {}
            for f in cfg.fusions:
                pred = Ensemble(k, f, seed=sd).fit(pv, yv).predict(pt)  # fitted on validation only
                accs[f] = float((pred == yt).mean())
                rows.append({"seed": sd, "start": st, "name": f, "kind": "fusion", "acc": accs[f]})
                if sd == cfg.seeds[0]:
                    confusion[(st, f)] = _confusion(yt, pred, k)
            d = pairwise_diversity(pt.argmax(2) == yt[None])
            best = best_member(rows, sd, st)
            diversity.append({"seed": sd, "start": st, "disagreement": mean_pairwise(d["disagreement"]), "q": mean_pairwise(d["q"]),
                              "error_correlation": mean_pairwise(d["error_correlation"]), "best_member": best["name"], "best_member_acc": best["acc"],
                              **{f"gain_{f}": accs[f] - best["acc"] for f in cfg.fusions}})
    bar.close()
    x = test.images.float() / 255  # as test[i] gives them
    return EnsemblesResult(cfg, rows, diversity, floors, classes, histories, confusion, models, x, test.labels.numpy(), source_val_acc, exp)


def _last_val_acc(model_file: str) -> float:
    from .._io import read_json
    from pathlib import Path

    epochs = read_json(Path(model_file).parent / "metrics.json").get("epochs", [])
    return float(epochs[-1]["val_acc"]) if epochs else float("nan")


def _confusion(y, pred, k) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y, pred, labels=list(range(k)))


__all__ = ["STARTS", "FINETUNE", "EnsemblesConfig", "EnsemblesResult", "run_ensembles", "image_floor", "best_member"]
