"""2-D projections of feature clouds for plotting: UMAP (umap-learn, or cuML's on a GPU when
installed) and PCA.

UMAP's neighbour graph is exact (:func:`geoviz.geometry.knn`: faiss on the CPU, torch on a GPU,
every row certified) or approximate (umap-learn's own NN-descent, recall about 0.99 on feature
clouds): ``knn="auto"`` takes the exact graph up to ``EXACT_KNN_UP_TO`` points on the CPU (where it
costs no more than NN-descent, measured in ``benchmarks/geometry.py``) and NN-descent above; on a
GPU it takes cuML's UMAP when cuML is installed (optional, from RAPIDS; its own brute-force graph
in float32) and the exact graph otherwise. ``knn_graph`` says which one a call uses, for figure
captions.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import torch

from ._utils import choice
from .geometry import knn as exact_knn

METHODS = ("umap", "pca")
KNN_GRAPHS = ("auto", "exact", "approximate")
EXACT_KNN_UP_TO = 10_000


def knn_graph(n_points: int, knn: str = "auto", device: str | torch.device = "cpu") -> str:
    """``"exact"``, ``"approximate"`` or ``"cuml"``: the neighbour graph ``project(..., knn=knn)``
    builds for ``n_points`` points on ``device``."""
    choice("knn graph", knn, KNN_GRAPHS)
    if knn != "auto":
        return knn
    if torch.device(device).type == "cuda":
        return "cuml" if importlib.util.find_spec("cuml") is not None else "exact"
    return "exact" if n_points <= EXACT_KNN_UP_TO else "approximate"


def knn_caption(n_points: int, knn: str = "auto", device: str | torch.device = "cpu", n_neighbors: int = 15) -> str:
    """A figure caption's words for the graph behind a UMAP, e.g. "exact 15-NN graph"."""
    return {
        "exact": f"exact {n_neighbors}-NN graph",
        "approximate": f"approximate {n_neighbors}-NN graph (NN-descent)",
        "cuml": f"cuML's {n_neighbors}-NN graph (float32)",
    }[knn_graph(n_points, knn, device)]


def project(
    features,
    method: str = "umap",
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "euclidean",
    seed: int = 0,
    n_epochs: int | None = None,
    knn: str = "auto",
) -> np.ndarray:
    """``(N, C)`` → ``(N, 2)`` float32 coordinates.

    ``knn`` (UMAP): ``"exact"``, ``"approximate"`` or ``"auto"`` (see the module's docstring and
    ``knn_graph``). With ``seed`` set umap-learn runs its layout on one thread, reproducibly.
    """
    choice("projection method", method, METHODS)
    choice("knn graph", knn, KNN_GRAPHS)
    x = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features).float()
    if x.dim() != 2 or x.shape[0] < 3:
        raise ValueError(f"project needs (N, C) features with N >= 3, got shape {tuple(x.shape)}")
    if method == "pca":
        xc = x - x.mean(0, keepdim=True)
        _, _, v = torch.linalg.svd(xc.double(), full_matrices=False)
        out = (xc.double() @ v[:2].T).float()
        if out.shape[1] < 2:
            out = torch.cat([out, torch.zeros(len(out), 2 - out.shape[1])], 1)
        return out.cpu().numpy()
    k = min(n_neighbors, x.shape[0] - 1)
    graph = knn_graph(len(x), knn, x.device)
    if graph == "cuml":
        return _cuml_umap(x, k, min_dist, metric, seed, n_epochs)
    import umap  # heavy import: only when asked for

    pre = None
    if graph == "exact":
        dist, idx = exact_knn(x, k, metric, exclude_self=False)
        pre = (idx.cpu().numpy(), dist.double().cpu().numpy(), None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # n_jobs / precomputed-knn notices
        reducer = umap.UMAP(
            n_neighbors=k,
            min_dist=min_dist,
            metric=metric,
            random_state=seed,
            n_epochs=n_epochs,
            precomputed_knn=(None, None, None) if pre is None else pre,
            init="spectral" if x.shape[0] > k + 2 else "random",
        )
        return reducer.fit_transform(x.cpu().numpy()).astype(np.float32)


def _cuml_umap(x: torch.Tensor, k: int, min_dist: float, metric: str, seed: int, n_epochs) -> np.ndarray:
    """cuML's UMAP on the GPU (optional: installed with RAPIDS, not by geoviz), its own neighbour
    graph (brute force on the GPU)."""
    from cuml.manifold import UMAP

    reducer = UMAP(n_neighbors=k, min_dist=min_dist, metric=metric, random_state=seed, n_epochs=n_epochs)
    out = reducer.fit_transform(x.detach().float().contiguous())
    out = out.get() if hasattr(out, "get") else np.asarray(out)
    return np.asarray(out, dtype=np.float32)
