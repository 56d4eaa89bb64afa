"""2-D projections of feature clouds for plotting: UMAP (umap-learn) and PCA.

UMAP is given the exact kNN graph from :func:`geoviz.geometry.knn` (torch, chunked, GPU when the
features are there), which is both exact and skips umap's own neighbour search and its compile
time.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ._utils import choice
from .geometry import knn

METHODS = ("umap", "pca")


def project(
    features,
    method: str = "umap",
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    seed: int = 0,
    n_epochs: int | None = None,
) -> np.ndarray:
    """``(N, C)`` → ``(N, 2)`` float32 coordinates."""
    choice("projection method", method, METHODS)
    x = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features).float()
    if x.dim() != 2 or x.shape[0] < 3:
        raise ValueError(f"project needs (N, C) features with N >= 3, got shape {tuple(x.shape)}")
    if method == "pca":
        xc = x - x.mean(0, keepdim=True)
        _, _, v = torch.linalg.svd(xc.double(), full_matrices=False)
        out = (xc.double() @ v[:2].T).float()
        if out.shape[1] < 2:
            out = torch.cat([out, torch.zeros(len(out), 2 - out.shape[1])], 1)
        return out.numpy()
    import umap  # heavy import: only when asked for

    k = min(n_neighbors, x.shape[0] - 1)
    dist, idx = knn(x, k, metric, exclude_self=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs / precomputed-knn notices
        reducer = umap.UMAP(
            n_neighbors=k,
            min_dist=min_dist,
            metric=metric,
            random_state=seed,
            n_epochs=n_epochs,
            precomputed_knn=(idx.numpy(), dist.double().numpy(), None),
            init="spectral" if x.shape[0] > k + 2 else "random",
        )
        return reducer.fit_transform(x.numpy()).astype(np.float32)
