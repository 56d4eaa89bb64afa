"""2-D projections of feature clouds for plotting: UMAP (umap-learn, or cuML's on a GPU when
installed) and PCA.

UMAP's neighbour graph is exact (:func:`geoviz.geometry.knn`: faiss on the CPU, torch on a GPU,
every row certified) or approximate (umap-learn's own NN-descent; recall ≥ 0.999 on the
benchmark's feature clouds). ``knn="auto"`` takes the exact graph up to ``EXACT_KNN_UP_TO`` points
on the CPU, where it costs at most 0.3 s more than NN-descent (measured on two cores: 0.22–0.32 vs
0.16–0.17 s at 5,000 × 256, 0.71–0.74 vs 0.42–0.45 s at 10,000; seeded NN-descent runs on one
thread), and NN-descent above; on a GPU, cuML's UMAP when cuML is installed (optional, from
RAPIDS) and the exact graph otherwise. ``project`` returns an :class:`Embedding` whose ``graph``
says which graph it used, in the words figure titles show.
"""

from __future__ import annotations

import importlib.util
import inspect
import warnings

import numpy as np
import torch

from ._utils import choice
from .geometry import knn as exact_knn

METHODS = ("umap", "pca")
KNN_GRAPHS = ("auto", "exact", "approximate")
EXACT_KNN_UP_TO = 10_000
_UMAP_ALL_PAIRS_BELOW = 4096  # umap-learn computes every distance below this many points


class Embedding(np.ndarray):
    """``project``'s ``(N, 2)`` float32 coordinates. ``graph``: the neighbour graph a UMAP rests on,
    as a caption ("exact 15-NN graph", "approximate 15-NN graph (NN-descent)", ...; "" for PCA).
    Slices keep it; a plain array (e.g. read back from disk) has none, and figures then say
    nothing rather than guess."""

    def __array_finalize__(self, obj):
        self.graph = getattr(obj, "graph", "")


def as_embedding(coords, graph: str = "") -> Embedding:
    """float32 coordinates as an :class:`Embedding` resting on ``graph`` (e.g. read back from a file)."""
    out = np.asarray(coords, dtype=np.float32).view(Embedding)
    out.graph = graph
    return out


def knn_graph(n_points: int, knn: str = "auto", device: str | torch.device = "cpu") -> str:
    """``"exact"``, ``"approximate"`` or ``"cuml"``: the neighbour graph ``project(..., knn=knn)``
    builds for ``n_points`` points on ``device``."""
    choice("knn graph", knn, KNN_GRAPHS)
    if knn != "auto":
        return knn
    if torch.device(device).type == "cuda":
        return "cuml" if importlib.util.find_spec("cuml") is not None else "exact"
    return "exact" if n_points <= EXACT_KNN_UP_TO else "approximate"


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
) -> Embedding:
    """``(N, C)`` → ``(N, 2)`` float32 coordinates, an :class:`Embedding` (its ``graph`` says
    which neighbour graph a UMAP used).

    ``knn`` (UMAP): ``"exact"``, ``"approximate"`` or ``"auto"`` (see the module's docstring and
    ``knn_graph``). With ``seed`` set umap-learn runs on one thread, reproducibly.
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
            out = torch.cat([out, torch.zeros(len(out), 2 - out.shape[1], device=out.device)], 1)
        return as_embedding(out.cpu().numpy())
    k = min(n_neighbors, x.shape[0] - 1)
    graph = knn_graph(len(x), knn, x.device)
    if graph == "cuml":
        return _cuml_umap(x, k, min_dist, metric, seed, n_epochs)
    import umap  # heavy import: only when asked for

    pre, caption = None, f"exact {k}-NN graph"
    if graph == "exact":
        dist, idx = exact_knn(x, k, metric, exclude_self=False)
        pre = (idx.cpu().numpy(), dist.double().cpu().numpy(), None)
    elif len(x) < _UMAP_ALL_PAIRS_BELOW:
        caption += " (umap-learn, all pairs)"
    else:
        caption = f"approximate {k}-NN graph (NN-descent)"
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
        return as_embedding(reducer.fit_transform(x.cpu().numpy()), caption)


def _cuml_umap(x: torch.Tensor, k: int, min_dist: float, metric: str, seed: int, n_epochs) -> Embedding:
    """cuML's UMAP on the GPU (optional: installed with RAPIDS, not by geoviz). Its graph is asked
    to be a brute force where this cuML takes ``build_algo`` (newer ones otherwise switch to
    NN-descent on large inputs); the caption says which."""
    from cuml.manifold import UMAP

    kw = dict(n_neighbors=k, min_dist=min_dist, metric=metric, random_state=seed, n_epochs=n_epochs)
    brute = "build_algo" in inspect.signature(UMAP).parameters
    if brute:
        kw["build_algo"] = "brute_force_knn"
    out = UMAP(**kw).fit_transform(x.detach().float().contiguous())
    out = out.get() if hasattr(out, "get") else np.asarray(out)
    return as_embedding(out, f"cuML's {'brute-force ' if brute else ''}{k}-NN graph (float32)")
