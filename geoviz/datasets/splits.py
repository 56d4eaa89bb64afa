"""Class-balanced, seeded subsets: the validation hold-out and the limited-data fractions."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Subset


def labels_of(dataset: Dataset) -> torch.Tensor:
    """The labels of a data set without loading its images (Subsets are followed)."""
    if isinstance(dataset, Subset):
        return labels_of(dataset.dataset)[torch.as_tensor(dataset.indices)]
    for attr in ("labels", "targets"):
        if hasattr(dataset, attr):
            return torch.as_tensor(getattr(dataset, attr)).long()
    return torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))])


def balanced_holdout(labels, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, chosen) with ``n`` chosen, as equal per class as possible."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    quota = {c: n // len(classes) for c in classes}
    for c in rng.permutation(classes)[: n % len(classes)]:
        quota[c] += 1
    chosen = np.concatenate([per_class[c][: quota[c]] for c in classes])
    rest = np.setdiff1d(np.arange(len(labels)), chosen)
    return rest, np.sort(chosen)


def train_fraction(dataset: Dataset, fraction: float, seed: int = 0) -> Dataset:
    """A class-balanced, seeded ``fraction`` of ``dataset`` (the limited-data study).

    Fractions are nested for a given seed: the 10 % subset is inside the 25 % one, and so on, so
    runs at different fractions differ only by the added images."""
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {fraction!r}")
    if fraction == 1:
        return dataset
    labels = labels_of(dataset).numpy()
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        keep.append(idx[: max(1, int(round(fraction * len(idx))))])
    return Subset(dataset, np.sort(np.concatenate(keep)).tolist())
