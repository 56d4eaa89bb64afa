"""Layer-wise linear probes: where in a frozen network does an invariant become linearly decodable?

For each block, the globally average-pooled activations of every image are captured with
``capture.collect(pool=True)``; a logistic-regression probe (scikit-learn, standardised features)
is scored by stratified k-fold cross-validation on the training distribution, then refitted on
all of it and scored on the transfer set.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..capture import collect
from ..models import block_layers


def pooled_features(
    model: nn.Module, data, layers, *, batch_size: int = 128, device=None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    bank = collect(model, data, layers, pool=True, batch_size=batch_size, device=device, progress=False)
    return {l: np.asarray(bank.features[l], dtype=np.float64) for l in bank.layers}, np.asarray(bank.labels)


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray | None = None,
    test_y: np.ndarray | None = None,
    *,
    folds: int = 3,
    seed: int = 0,
    C: float = 1.0,
) -> dict:
    """Cross-validated accuracy of a logistic-regression probe on (train_x, train_y); with a test
    set, the accuracy there of the probe fitted on all training data."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    counts = np.bincount(train_y)
    if len(counts[counts > 0]) < 2:
        raise ValueError("a probe needs at least two classes in its training data")
    k = int(min(folds, counts[counts > 0].min()))
    if k < 2:
        raise ValueError(
            f"every class needs at least 2 images for cross-validation; the smallest has {counts[counts > 0].min()}"
        )
    probe = logistic_probe(C)
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    out = {"cv_acc": float(cross_val_score(probe, train_x, train_y, cv=cv).mean()), "folds": k}
    if test_x is not None:
        probe.fit(train_x, train_y)
        out["transfer_acc"] = float(probe.score(test_x, test_y))
    return out


def probe_layers(
    model: nn.Module,
    train,
    transfer=None,
    layers=None,
    *,
    folds: int = 3,
    seed: int = 0,
    device=None,
    batch_size: int = 128,
) -> list[dict]:
    """One row per block (input to output): layer, depth index, relative depth in [0, 1], channels,
    cross-validated probe accuracy on ``train`` and, with ``transfer``, accuracy there."""
    layers = list(layers or block_layers(model))
    ftr, ytr = pooled_features(model, train, layers, batch_size=batch_size, device=device)
    fte, yte = (
        pooled_features(model, transfer, layers, batch_size=batch_size, device=device)
        if transfer is not None
        else ({}, None)
    )
    rows = []
    for i, layer in enumerate(layers):
        res = linear_probe(ftr[layer], ytr, fte.get(layer), yte, folds=folds, seed=seed)
        rows.append(
            {
                "layer": layer,
                "depth": i,
                "relative_depth": i / max(1, len(layers) - 1),
                "channels": int(ftr[layer].shape[1]),
                **res,
            }
        )
    return rows


def logistic_probe(C: float = 1.0):
    """The linear probe every analysis uses: standardised features, multinomial logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))


def held_out_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *, C: float = 1.0
) -> np.ndarray:
    """Whether a logistic-regression probe (standardised features) fitted on the training split gets
    each held-out item right (bool array; its mean is the held-out accuracy): how linearly decodable
    the labels are from these features."""
    if len(np.unique(train_y)) < 2:
        raise ValueError("a probe needs at least two classes in its training split")
    probe = logistic_probe(C).fit(np.asarray(train_x, dtype=np.float64), train_y)
    return probe.predict(np.asarray(test_x, dtype=np.float64)) == np.asarray(test_y)


def stratified_split(labels, test_fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: ``test_fraction`` of every class held out (at least one image of a class
    with two or more), seeded."""
    labels = np.asarray(labels)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(len(idx) - 1, max(1, int(round(test_fraction * len(idx))))) if len(idx) > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def knn_class_purity(features, labels, images, k: int = 10, *, exclude_same_image: bool = True) -> tuple[float, float]:
    """(purity, chance) of a cloud of local features: the share of each point's ``k`` nearest
    neighbours (exact, Euclidean) whose image has the point's class, and what that share is for
    neighbours drawn at random.

    ``exclude_same_image`` leaves a point's own image out of its candidates: positions of one image
    lie close together and share its class, which would make any layer look class-organised.
    Chance is then, per point, the share of the other images' points that have its class."""
    from ..geometry import knn

    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    y = np.asarray(labels)
    img = np.asarray(images)
    per_image = int(np.bincount(img).max()) if exclude_same_image else 0
    kk = min(len(x) - 1, k + max(0, per_image - 1))
    if kk < k:
        raise ValueError(f"{len(x)} points are too few for k={k} neighbours")
    _, idx = knn(x, kk)
    idx = idx.numpy()
    keep = img[idx] != img[:, None] if exclude_same_image else np.ones_like(idx, dtype=bool)
    # the first k kept neighbours of every row (a row has at least k: its image holds at most per_image points)
    order = np.cumsum(keep, axis=1)
    take = keep & (order <= k)
    same = (y[idx] == y[:, None]) & take
    purity = float((same.sum(1) / np.maximum(take.sum(1), 1)).mean())
    counts = np.bincount(y, minlength=y.max() + 1)
    if exclude_same_image:
        own = np.zeros((img.max() + 1, y.max() + 1))
        np.add.at(own, (img, y), 1)
        n_img = np.bincount(img)
        chance = float(((counts[y] - own[img, y]) / (len(y) - n_img[img])).mean())
    else:
        chance = float(((counts[y] - 1) / (len(y) - 1)).mean())
    return purity, chance
