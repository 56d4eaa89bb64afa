"""Inter-class angles vs confusion (Hui et al., AAAI 2019): the confusion between two classes
tracks the angle between their class vectors — smaller angle, more confusion.

- ``class_vector_angles``: angles (degrees) between the rows of the final linear layer;
- ``class_mean_angles``: angles between class-mean features (a view that needs no classifier);
- ``confusion_rates``: the confusion matrix, by default made symmetric per pair;
- ``angle_confusion_correlation``: Pearson and Spearman r over class pairs, with p-values and a
  bootstrap interval over pairs;
- ``AngleConfusionTracker``: an ``engine.fit`` callback recording all of it every epoch;
- ``class_geometry``: the same relation for any classifier on any labelled images, no training
  (the head's class vectors when its classes are the data's, else class means of its features).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..geometry import angle_matrix, class_means
from ..inference import predict

NORMALIZE = ("pair", "true", "none")


def _final_linear(model: nn.Module) -> torch.Tensor:
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Module) and hasattr(head, "weight"):
        return head.weight
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise ValueError("the model has no linear classifier: pass its class-vector matrix (C, D) instead")
    return last.weight


def class_vector_angles(model_or_weight) -> torch.Tensor:
    """``(C, C)`` angles in degrees between class vectors: the rows of the final linear layer
    (a model's ``classifier``, else its last ``nn.Linear``), or of a given ``(C, D)`` matrix."""
    w = _final_linear(model_or_weight) if isinstance(model_or_weight, nn.Module) else torch.as_tensor(model_or_weight)
    w = w.detach().cpu()
    if w.dim() != 2 or w.shape[0] < 2:
        raise ValueError(f"class vectors must be a (C, D) matrix with at least 2 classes, got shape {tuple(w.shape)}")
    return angle_matrix(w)


def class_mean_angles(features, labels, num_classes: int | None = None, *, center: bool = False) -> torch.Tensor:
    """Angles (degrees) between the mean features of each class; ``center=True`` subtracts the
    global mean first (angles around the data's centre rather than the origin)."""
    f = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features).double()
    means = class_means(f, labels, num_classes)
    if torch.isnan(means).any():
        empty = torch.isnan(means).any(1).nonzero()[:, 0].tolist()
        raise ValueError(f"classes {empty} have no samples: their mean (and angle) is undefined")
    if center:
        means = means - f.mean(0, keepdim=True)
    return angle_matrix(means)


def _labels(y, name: str) -> np.ndarray:
    a = np.asarray(y.cpu() if torch.is_tensor(y) else y)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D array of integer class labels")
    return a.astype(np.int64)


def confusion_rates(y_true, y_pred, num_classes: int | None = None, normalize: str = "pair") -> np.ndarray:
    """Confusion between classes.

    ``normalize="pair"`` (default): the symmetric pairwise rate
    ``(n_ij + n_ji) / (n_i + n_j)`` — the share of the two classes' samples mistaken for the other
    one (diagonal 0). ``"true"``: the usual row-normalised matrix. ``"none"``: counts.
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"unknown normalize {normalize!r}; allowed: {NORMALIZE}")
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {len(t)} and {len(p)}")
    k = int(max(t.max(initial=-1), p.max(initial=-1)) + 1) if num_classes is None else num_classes
    if k < 2:
        raise ValueError("confusion needs at least 2 classes")
    for name, a in (("y_true", t), ("y_pred", p)):
        if len(a) and (a.min() < 0 or a.max() >= k):
            raise ValueError(f"{name} holds labels outside [0, {k}): from {a.min()} to {a.max()}")
    counts = np.zeros((k, k), np.int64)
    np.add.at(counts, (t, p), 1)
    if normalize == "none":
        return counts
    n = counts.sum(1).astype(np.float64)
    if normalize == "true":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n[:, None] > 0, counts / n[:, None], np.nan)
    pair = counts + counts.T
    denom = n[:, None] + n[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(denom > 0, pair / denom, np.nan)
    np.fill_diagonal(rate, 0.0)
    return rate


def pair_values(m) -> np.ndarray:
    """The upper triangle (i < j) of a symmetric matrix, as a flat array."""
    a = np.asarray(m.cpu() if torch.is_tensor(m) else m, dtype=np.float64)
    return a[np.triu_indices(a.shape[0], k=1)]


def angle_confusion_correlation(angles, confusion, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> dict:
    """Correlation over class pairs between angle (degrees) and symmetric confusion.

    Returns Pearson r and Spearman rho with their two-sided p-values, and percentile bootstrap
    intervals from resampling the C(C−1)/2 pairs with replacement. A negative r is the paper's
    finding (smaller angle, more confusion). Pairs with an undefined confusion (no samples) are
    dropped; a constant input gives NaN correlations.
    """
    from scipy import stats

    a, c = pair_values(angles), pair_values(confusion)
    if a.shape != c.shape:
        raise ValueError(
            "angles and confusion must be matrices over the same "
            f"classes, got {np.shape(angles)} and {np.shape(confusion)}"
        )
    ok = np.isfinite(a) & np.isfinite(c)
    a, c = a[ok], c[ok]
    if len(a) < 3:
        raise ValueError(f"a correlation over class pairs needs at least 3 pairs (3 classes); got {len(a)}")
    out = {"n_pairs": int(len(a))}
    const = np.ptp(a) == 0 or np.ptp(c) == 0
    if const:
        out.update(
            pearson=float("nan"),
            pearson_p=float("nan"),
            spearman=float("nan"),
            spearman_p=float("nan"),
            pearson_ci=[float("nan")] * 2,
            spearman_ci=[float("nan")] * 2,
        )
        return out
    pr, pp = stats.pearsonr(a, c)
    sr, sp = stats.spearmanr(a, c)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    ab, cb = a[idx], c[idx]
    good = (np.ptp(ab, axis=1) > 0) & (np.ptp(cb, axis=1) > 0)
    ab, cb = ab[good], cb[good]

    def pearson_rows(x, y):
        x = x - x.mean(1, keepdims=True)
        y = y - y.mean(1, keepdims=True)
        return (x * y).sum(1) / np.sqrt((x * x).sum(1) * (y * y).sum(1))

    def ranks(x):
        return np.apply_along_axis(stats.rankdata, 1, x)

    lo, hi = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
    pb, sb = pearson_rows(ab, cb), pearson_rows(ranks(ab), ranks(cb))
    out.update(
        pearson=float(pr),
        pearson_p=float(pp),
        spearman=float(sr),
        spearman_p=float(sp),
        pearson_ci=[float(np.percentile(pb, lo)), float(np.percentile(pb, hi))],
        spearman_ci=[float(np.percentile(sb, lo)), float(np.percentile(sb, hi))],
    )
    return out


class AngleConfusionTracker:
    """``engine.fit`` callback: every epoch, the class-vector angles, the pairwise confusion on
    ``data`` (the validation split when None) and their correlation go into the epoch's metrics
    (``angles``, ``confusion``, ``angle_confusion``) and hence into ``metrics.json``."""

    def __init__(self, num_classes: int, data=None, *, n_boot: int = 200, batch_size: int = 256):
        self.num_classes, self.data, self.n_boot, self.batch_size = num_classes, data, n_boot, batch_size

    def __call__(self, state) -> None:
        data = self.data if self.data is not None else state.val_loader
        if data is None:
            raise ValueError("AngleConfusionTracker needs data=, or fit(..., val=...)")
        logits, labels = predict(state.model, data, device=state.device, batch_size=self.batch_size)
        pred = logits.argmax(1)
        ang = class_vector_angles(state.model)
        conf = confusion_rates(labels.numpy(), pred.numpy(), self.num_classes)
        state.metrics["angles"] = np.round(ang.numpy(), 4).tolist()
        state.metrics["confusion"] = np.round(conf, 6).tolist()
        state.metrics["angle_confusion"] = angle_confusion_correlation(ang, conf, n_boot=self.n_boot, seed=state.epoch)
        state.metrics["tracked_acc"] = float((pred == labels).float().mean())


def most_confused(probs, labels, i: int, j: int, k: int = 8) -> list[tuple[int, int, float]]:
    """The images of classes i and j a classifier most mistakes for the other one: (row, true
    class, probability given to the other class), most confident mistakes first; when it makes no
    such mistake, the closest calls instead."""
    p, y = np.asarray(probs), np.asarray(labels)
    cand = [(int(n), int(y[n]), float(p[n, j if y[n] == i else i])) for n in np.flatnonzero((y == i) | (y == j))]
    wrong = [c for c in cand if p[c[0]].argmax() == (j if c[1] == i else i)]
    return sorted(wrong if wrong else cand, key=lambda c: -c[2])[:k]


@dataclass
class ClassGeometry:
    """Class angles against confusion for one classifier on a labelled image set.

    ``mode``: "class vectors" (the head's rows for the data's classes) or "class means" (angles of
    the class means of the penultimate features; the confusion of a logistic probe on them).
    ``angles`` (C, C) degrees; ``confusion`` (C, C) symmetric pair rates on the images counted
    (``rows``: their indices into the data set, ``labels``, ``probs`` (rows, C) over the data's
    classes); ``correlation`` over class pairs (descriptive) and ``mantel`` (the test; None below 4
    classes); ``accuracy`` on those images, among the data's classes only; ``note`` says what was done."""

    mode: str
    class_names: list
    angles: np.ndarray
    confusion: np.ndarray
    correlation: dict
    mantel: dict | None
    accuracy: float
    rows: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    note: str = ""

    def most_confused(self, i: int, j: int, k: int = 8) -> list[tuple[int, int, float]]:
        """(data index, true class, probability of the other class) of the k most confused images of i and j."""
        return [(int(self.rows[r]), t, p) for r, t, p in most_confused(self.probs, self.labels, i, j, k)]

    def summary(self) -> dict:
        m = self.mantel or {}
        return {
            "mode": self.mode,
            "accuracy": self.accuracy,
            "n_images": int(len(self.rows)),
            "pearson": self.correlation.get("pearson"),
            "spearman": self.correlation.get("spearman"),
            "mantel_r": m.get("r"),
            "mantel_p": m.get("p_value"),
            "verdict": m.get("verdict", "undecided"),
            "note": self.note,
        }


def class_geometry(
    labels,
    class_names,
    *,
    features,
    outputs=None,
    head_index=None,
    head_weight=None,
    train=None,
    test=None,
    n_resamples: int = 9999,
    seed: int = 0,
) -> ClassGeometry:
    """Relate class geometry to confusion for labelled images (no training of the network).

    With ``head_index`` (for each class, the head output that stands for it) and ``outputs`` (the
    logits of every image): the angles between the head's class vectors (rows ``head_index`` of
    ``head_weight``) and the confusion of the network's own predictions restricted to these classes,
    over every image. Otherwise: the angles between class means of ``features`` (penultimate, one
    row per image) on the ``train`` images, and the confusion of a logistic-regression probe fitted
    on ``train`` and scored on ``test``. Both with the Mantel test (angle vs confusion, negative r
    claimed) from 4 classes on."""
    from .statistics import mantel as mantel_test

    y = np.asarray(labels)
    c = len(class_names)
    if c < 3:
        raise ValueError(f"class geometry needs at least 3 classes (pairs to correlate), got {c}")
    if head_index is not None and outputs is not None:
        logits = torch.as_tensor(np.array(outputs, dtype=np.float32))[:, list(head_index)]
        probs = torch.softmax(logits.double(), 1).numpy()
        rows = np.arange(len(y))
        angles = class_vector_angles(torch.as_tensor(np.asarray(head_weight))[list(head_index)]).numpy()
        mode, note = (
            "class vectors",
            "the head's own class vectors and predictions, restricted "
            f"to the data's {c} classes, on all {len(y)} images",
        )
    else:
        from .probes import logistic_probe

        f = np.asarray(features, dtype=np.float64)
        if train is None or test is None:
            raise ValueError("class means need a train / test split of the images (train=, test=)")
        probe = logistic_probe().fit(f[train], y[train])
        probs = np.zeros((len(test), c))
        probs[:, probe.classes_] = probe.predict_proba(f[test])
        rows = np.asarray(test)
        angles = class_mean_angles(
            f[train], y[train], c, center=True
        ).numpy()  # about the global mean: ReLU features all share one orthant
        mode, note = (
            "class means",
            (
                f"class means of the penultimate features over {len(train)} training images, "
                "centred on their global mean; confusion of a logistic probe on them over "
                f"{len(test)} held-out images (the head's classes are not the data's)"
            ),
        )
    yt = y[rows]
    pred = probs.argmax(1)
    conf = confusion_rates(yt, pred, c)
    corr = angle_confusion_correlation(angles, conf, seed=seed)
    # many classes: fewer permutations (999 still resolve p = 0.001; 9,999 over 1,000 classes' 499,500 pairs take
    # minutes)
    mt = (
        mantel_test(angles, conf, n_resamples=n_resamples if c <= 100 else min(n_resamples, 999), seed=seed)
        if c >= 4
        else None
    )
    return ClassGeometry(
        mode,
        list(class_names),
        angles,
        conf,
        corr,
        mt,
        float((pred == yt).mean()),
        rows,
        yt,
        probs,
        note + ("" if mt is not None else "; the Mantel test needs 4 classes or more"),
    )
