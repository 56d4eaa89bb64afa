"""Geometry of feature point clouds: distances, exact kNN, neighbourhood agreement, CKA, angles.

All functions take ``(N, C)`` torch tensors (NumPy arrays are accepted) on any device. Distance
matrices are built in row chunks of at most ``chunk_bytes``, accumulating in float64 so that
||x||² + ||y||² − 2x·y does not lose the small distances to cancellation.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ._utils import choice, format_bytes

DEFAULT_CHUNK_BYTES = 128 * 2**20
METRICS = ("euclidean", "cosine")

__all__ = [
    "pairwise_distances",
    "knn",
    "knn_agreement",
    "linear_cka",
    "angle_matrix",
    "class_means",
]


def _points(x, name: str = "x") -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be (N, C) points, got shape {tuple(x.shape)}; use capture.local_features for (B, C, H, W) maps")
    if not x.is_floating_point():
        x = x.float()
    return x


def _rows_per_chunk(m: int, chunk_bytes: int, width: int = 3) -> int:
    return max(1, int(chunk_bytes // max(1, m * 8 * width)))


class _DistanceBlocks:
    """Distances from blocks of rows of x to all of y, float64 inside."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, metric: str):
        self.metric = choice("metric", metric, METRICS)
        self.x, self.y = x, y
        y64 = y.double()
        if metric == "cosine":
            self.y64 = y64 / y64.norm(dim=1, keepdim=True).clamp_min(1e-300)  # zero rows stay zero
        else:
            # distances are translation-invariant: centring both clouds keeps ||x||² small, so the
            # expansion does not cancel away distances that are small next to the cloud's offset
            self.shift = y64.mean(0, keepdim=True)
            self.y64 = y64 - self.shift
            self.y_sq = (self.y64 * self.y64).sum(1)

    def __call__(self, s: int, e: int) -> torch.Tensor:
        xb = self.x[s:e].double()
        if self.metric == "euclidean":
            xb = xb - self.shift
        if self.metric == "cosine":
            xb = xb / xb.norm(dim=1, keepdim=True).clamp_min(1e-300)
            return (1.0 - xb @ self.y64.T).clamp_(0.0, 2.0)
        d2 = (xb * xb).sum(1, keepdim=True) + self.y_sq[None, :] - 2.0 * (xb @ self.y64.T)
        return d2.clamp_(min=0.0).sqrt_()


def pairwise_distances(x, y=None, metric: str = "euclidean", *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, max_bytes: int = 2 * 1024**3) -> torch.Tensor:
    """``(N, M)`` distances between the rows of x and y (y = x when None).

    ``metric="cosine"`` gives 1 − cos (a zero vector has distance 1 to everything, as in
    scikit-learn). The result, in x's dtype, is refused up front when larger than ``max_bytes``:
    use ``knn`` for neighbourhoods of large clouds.
    """
    x = _points(x, "x")
    same = y is None
    y = x if same else _points(y, "y").to(x.device)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same width, got {x.shape[1]} and {y.shape[1]}")
    n, m = x.shape[0], y.shape[0]
    out_bytes = n * m * x.element_size()
    if out_bytes > max_bytes:
        raise MemoryError(f"a {n}×{m} distance matrix needs {format_bytes(out_bytes)} (> max_bytes={format_bytes(max_bytes)}); use knn() or fewer points")
    blocks = _DistanceBlocks(x, y, metric)
    out = torch.empty(n, m, dtype=x.dtype, device=x.device)
    step = _rows_per_chunk(m, chunk_bytes)
    for s in range(0, n, step):
        e = min(n, s + step)
        d = blocks(s, e)
        if same:  # a point's distance to itself is exactly zero
            r = torch.arange(s, e, device=x.device)
            d[r - s, r] = 0.0
        out[s:e] = d.to(x.dtype)
    return out


def knn(x, k: int, metric: str = "euclidean", *, y=None, exclude_self: bool = True, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours: ``(distances, indices)``, each ``(N, k)``, nearest first.

    With ``y`` the neighbours are rows of y; otherwise of x itself, the point excluded unless
    ``exclude_self=False`` (then it is its own first neighbour, as UMAP expects).
    """
    x = _points(x, "x")
    same = y is None
    y = x if same else _points(y, "y").to(x.device)
    n, m = x.shape[0], y.shape[0]
    avail = m - (1 if same and exclude_self else 0)
    if not isinstance(k, int) or not 1 <= k <= avail:
        raise ValueError(f"k must be a whole number in [1, {avail}] for {m} points, got {k!r}")
    blocks = _DistanceBlocks(x, y, metric)
    dist = torch.empty(n, k, dtype=torch.float64, device=x.device)
    idx = torch.empty(n, k, dtype=torch.long, device=x.device)
    step = _rows_per_chunk(m, chunk_bytes)
    for s in range(0, n, step):
        e = min(n, s + step)
        d = blocks(s, e)
        if same:
            r = torch.arange(s, e, device=x.device)
            d[r - s, r] = math.inf if exclude_self else -1.0  # self first when kept
        v, i = torch.topk(d, k, dim=1, largest=False, sorted=True)
        dist[s:e], idx[s:e] = v.clamp_min(0.0), i
    return dist.to(x.dtype), idx


def knn_agreement(a, b, k: int = 10, metric: str = "euclidean", *, reduction: str = "mean"):
    """Mean Jaccard overlap of the k-neighbour sets of the same points in two spaces.

    ``a (N, Ca)`` and ``b (N, Cb)`` are the same N points seen in two feature spaces of any widths
    (a teacher's and a student's layer, two epochs, ...). 1 = identical neighbourhoods; two
    unrelated clouds give about k / N. ``reduction="none"`` returns the per-point values.
    """
    a, b = _points(a, "a"), _points(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must hold the same points (rows), got {a.shape[0]} and {b.shape[0]}")
    choice("reduction", reduction, ("mean", "none"))
    _, ia = knn(a, k, metric)
    _, ib = knn(b.to(a.device), k, metric)
    inter = torch.empty(a.shape[0], dtype=torch.float64, device=a.device)
    step = max(1, (1 << 24) // (k * k))
    for s in range(0, a.shape[0], step):
        inter[s : s + step] = (ia[s : s + step, :, None] == ib[s : s + step, None, :]).sum(dim=(1, 2)).double()
    jac = inter / (2 * k - inter)
    return jac.mean() if reduction == "mean" else jac


def linear_cka(x, y) -> torch.Tensor:
    """Linear centred kernel alignment (Kornblith et al. 2019) of two representations of N points.

    Invariant to orthogonal transforms and isotropic scaling of either space; 1 for identical
    geometry. Computed in float64 in feature space, O(N·Cx·Cy).
    """
    x, y = _points(x, "x").double(), _points(y, "y").double().to(x.device)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same points (rows), got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError("linear_cka needs at least 2 points")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    hsic = (x.T @ y).square().sum()
    nx = (x.T @ x).square().sum().sqrt()
    ny = (y.T @ y).square().sum().sqrt()
    if nx == 0 or ny == 0:
        raise ValueError("linear_cka is undefined for a representation with zero variance")
    return hsic / (nx * ny)


def angle_matrix(v) -> torch.Tensor:
    """Pairwise angles in degrees (float64) between the rows of ``v`` (e.g. class vectors)."""
    v = _points(v, "v").double()
    norms = v.norm(dim=1)
    zero = (norms == 0).nonzero()[:, 0].tolist()
    if zero:
        raise ValueError(f"the angle of a zero vector is undefined: rows {zero} of v are all zeros")
    u = v / norms[:, None]
    cos = (u @ u.T).clamp_(-1.0, 1.0)
    ang = torch.rad2deg(torch.arccos(cos))
    ang.fill_diagonal_(0.0)
    return ang


def class_means(features, labels, num_classes: int | None = None) -> torch.Tensor:
    """``(K, C)`` mean feature of each class (float64 accumulation); NaN rows for empty classes."""
    f = _points(features, "features")
    labels = torch.as_tensor(labels, device=f.device).long().reshape(-1)
    if labels.shape[0] != f.shape[0]:
        raise ValueError(f"features has {f.shape[0]} rows but labels has {labels.shape[0]}")
    K = int(labels.max()) + 1 if num_classes is None else num_classes
    if labels.numel() and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"labels must lie in [0, {K}), got values from {int(labels.min())} to {int(labels.max())}")
    sums = torch.zeros(K, f.shape[1], dtype=torch.float64, device=f.device).index_add_(0, labels, f.double())
    counts = torch.bincount(labels, minlength=K).double()
    return (sums / counts[:, None]).to(f.dtype)
