"""Layer-wise linear probes: where in a frozen network does an invariant become linearly decodable?

For each block, the globally average-pooled activations of every image are captured with
``capture.collect(pool=True)``; a logistic-regression probe (scikit-learn, standardised features)
is scored by stratified k-fold cross-validation on the training distribution, then refitted on
all of it and scored on the transfer set.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from ..capture import collect
from ..models import block_layers


def pooled_features(model: nn.Module, data, layers, *, batch_size: int = 128, device=None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    bank = collect(model, data, layers, pool=True, batch_size=batch_size, device=device, progress=False)
    return {l: np.asarray(bank.features[l], dtype=np.float64) for l in bank.layers}, np.asarray(bank.labels)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray | None = None, test_y: np.ndarray | None = None,
                 *, folds: int = 3, seed: int = 0, C: float = 1.0) -> dict:
    """Cross-validated accuracy of a logistic-regression probe on (train_x, train_y); with a test
    set, the accuracy there of the probe fitted on all training data."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(train_y)
    if len(counts[counts > 0]) < 2:
        raise ValueError("a probe needs at least two classes in its training data")
    k = int(min(folds, counts[counts > 0].min()))
    if k < 2:
        raise ValueError(f"every class needs at least 2 images for cross-validation; the smallest has {counts[counts > 0].min()}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    out = {"cv_acc": float(cross_val_score(probe, train_x, train_y, cv=cv).mean()), "folds": k}
    if test_x is not None:
        probe.fit(train_x, train_y)
        out["transfer_acc"] = float(probe.score(test_x, test_y))
    return out


def probe_layers(model: nn.Module, train, transfer=None, layers=None, *, folds: int = 3, seed: int = 0, device=None, batch_size: int = 128) -> list[dict]:
    """One row per block (input to output): layer, depth index, relative depth in [0, 1], channels,
    cross-validated probe accuracy on ``train`` and, with ``transfer``, accuracy there."""
    layers = list(layers or block_layers(model))
    ftr, ytr = pooled_features(model, train, layers, batch_size=batch_size, device=device)
    fte, yte = pooled_features(model, transfer, layers, batch_size=batch_size, device=device) if transfer is not None else ({}, None)
    rows = []
    for i, layer in enumerate(layers):
        res = linear_probe(ftr[layer], ytr, fte.get(layer), yte, folds=folds, seed=seed)
        rows.append({"layer": layer, "depth": i, "relative_depth": i / max(1, len(layers) - 1), "channels": int(ftr[layer].shape[1]), **res})
    return rows
