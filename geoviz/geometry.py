"""Geometry of feature point clouds: distances, exact kNN, neighbourhood agreement, CKA, angles.

All functions take ``(N, C)`` torch tensors (NumPy arrays are accepted) on any device. Distance
matrices are built in row chunks of at most ``chunk_bytes``, accumulating in float64 so that
||x||² + ||y||² − 2x·y does not lose the small distances to cancellation. ``knn`` finds candidates
in float32 and certifies them in float64, so it is exact at float32 speed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import sys

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
    "MinibatchCKA",
    "angle_matrix",
    "class_means",
]


def _points(x, name: str = "x") -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(
            f"{name} must be (N, C) points, got shape {tuple(x.shape)}; "
            "use capture.local_features for (B, C, H, W) maps"
        )
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


_U32 = 2.0**-24  # float32 unit roundoff
_RERANK_BYTES = 4 * 2**20


@contextlib.contextmanager
def _float32_matmul_exact():
    """float32 GEMMs in full float32 (no TF32 or bf16 passes), which the error bound assumes."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


class _Float32Blocks:
    """Squared distances from blocks of rows of x to all of y in float32 GEMMs, a per-row bound on
    their error, and the exact float64 values for chosen candidates. Cosine runs as the squared
    euclidean distance of the unit vectors, ||x̂ − ŷ||² = 2(1 − cos), so it is centred too (a
    zero vector is at cosine distance 1 from everything, as in scikit-learn)."""

    def __init__(self, y: torch.Tensor, metric: str):
        self.metric, self.y = metric, y
        # centring keeps the norms, and so the float32 error, small; the median, so outliers do not drag
        # it off, of at most 8,192 evenly spaced rows (any shift is correct: the bound takes the norms)
        sample = self._unit(y[:: max(1, len(y) // 8192)].double())
        self.shift = sample.median(0, keepdim=True).values if len(y) else sample.new_zeros(1, y.shape[1])
        self.y_zero = (y.abs().amax(1) == 0) if metric == "cosine" else None
        # a length-n float32 dot product errs by at most γ_n·Σ|a_i b_i| ≤ γ_n·|a||b| (Higham, γ_n ≈ n·u);
        # the norms and the casts add a few u more
        self.gamma = (y.shape[1] + 8) * _U32 * 1.05

    def _unit(self, v: torch.Tensor) -> torch.Tensor:
        return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-300) if self.metric == "cosine" else v

    @functools.cached_property
    def y_aug(self) -> torch.Tensor:
        """[y, ||y||²] after centring, float32: ranking a row needs ||y||² − 2x·y only (||x||² is the
        row's constant), and one GEMM of [−2x, 1] against it gives that with no elementwise pass.
        Built on first use: a cloud against itself never needs it."""
        y64 = self._unit(self.y.double()) - self.shift
        return torch.cat([y64, (y64 * y64).sum(1, keepdim=True)], 1).float()

    def __call__(self, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 ||y||² − 2x·y (B, M): the squared distances less ||x||²; ||x||² (B,) after
        centring, float64)."""
        x64 = self._unit(xb.double()) - self.shift
        x_sq = (x64 * x64).sum(1)
        key = torch.cat([-2.0 * x64, torch.ones_like(x64[:, :1])], 1).float() @ self.y_aug.T
        if self.metric == "cosine":  # zero vectors: cosine distance 1, squared unit distance 2
            x_zero = xb.abs().amax(1) == 0
            key[:, self.y_zero] = (2.0 - x_sq).float()[:, None]
            key[x_zero] = (2.0 - x_sq[x_zero]).float()[:, None]
        return key, x_sq

    def norms(self, xb: torch.Tensor) -> torch.Tensor:
        """The rows' norms after centring (float64), which the error bound takes."""
        return (self._unit(xb.double()) - self.shift).norm(dim=1)

    def candidates(
        self, x: torch.Tensor, c: int, chunk_bytes: int, self_value: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's c nearest rows of y by float32 values: (the c-th squared distance (N,),
        float64; the candidates (N, c)). ``self_value`` (x is y) replaces each row's value at its
        own column: inf leaves the point out, -inf makes it its own first candidate. Plain row
        blocks: reading each symmetric tile down its columns as well halves the GEMM, but the
        column top-k cost more than the GEMM it saved (1.5 s against 1.1 s per 4,096 × 36,000 tile
        on two cores)."""
        n, m = x.shape[0], self.y.shape[0]
        last = torch.empty(n, dtype=torch.float64, device=x.device)
        cand = torch.empty(n, c, dtype=torch.long, device=x.device)
        step = max(1, int(chunk_bytes // max(1, m * 4 * 2)))
        for s in range(0, n, step):
            key, x_sq = self(x[s : s + step])
            if self_value is not None:
                r = torch.arange(len(key), device=x.device)
                key[r, r + s] = self_value
            v, cand[s : s + step] = torch.topk(key, c, dim=1, largest=False, sorted=True)
            last[s : s + step] = v[:, -1].double() + x_sq
        return last, cand

    def faiss_candidates(self, x: torch.Tensor, c: int, same: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``candidates`` from faiss's brute force (``faiss.knn``: blocked sgemm, heaps, every core)
        on the same centred float32 points. It computes ||x||² + ||y||² − 2x·y in float32 (clamped
        at 0), whose error is within the bound ``certified`` assumes. Of x against itself it
        searches one more, as the point itself may be among them (``rerank`` sets it aside)."""
        import faiss

        # centred in float64, then cast: a float32 subtraction would err by u·|shift|, not u·|y − shift|
        zy = (self._unit(self.y.detach().double()) - self.shift).float().numpy()
        zx = zy if same else (self._unit(x.detach().double()) - self.shift).float().numpy()
        want = min(len(zy), c + 1 if same else c)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(torch.get_num_threads())  # the same threads as torch's GEMMs
        try:
            d, i = faiss.knn(zx, zy, want)
        finally:
            faiss.omp_set_num_threads(threads)
        return torch.from_numpy(d[:, -1]).double(), torch.from_numpy(i)

    def certified(self, kth: torch.Tensor, last: torch.Tensor, x_norm: torch.Tensor) -> torch.Tensor:
        """Rows whose k-th exact squared distance ``kth`` no point outside the candidates can beat,
        given the last candidate's float32 value ``last``. A point z outside either has
        |z| > |x| + √kth, and then |x − z|² > kth, or its float32 value, ≥ last, errs by at most
        4γ(|x| + |z|)² ≤ 4γ(2|x| + √kth)²: so kth < last − 4γ(2|x| + √kth)² suffices (the cloud's
        outliers do not loosen it)."""
        return kth < last - 4.0 * self.gamma * (2.0 * x_norm + kth.clamp_min(0).sqrt()) ** 2

    def exact(self, xb: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """float64 squared distances of each row to its candidates, from the differences."""
        d = self._unit(self.y[cand].double())
        d = d.sub_(self._unit(xb.double())[:, None, :]).square_().sum(2)  # in place: one (B, c, C) buffer
        if self.metric == "cosine":
            d[self.y_zero[cand] | (xb.abs().amax(1) == 0)[:, None]] = 2.0
        return d


def _sort_by_value_then_index(values: torch.Tensor, index: torch.Tensor):
    o = torch.argsort(index, dim=1)
    values, index = values.gather(1, o), index.gather(1, o)
    o = torch.argsort(values, dim=1, stable=True)
    return values.gather(1, o), index.gather(1, o)


def pairwise_distances(
    x, y=None, metric: str = "euclidean", *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, max_bytes: int = 2 * 1024**3
) -> torch.Tensor:
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
        raise MemoryError(
            f"a {n}×{m} distance matrix needs {format_bytes(out_bytes)} (> "
            f"max_bytes={format_bytes(max_bytes)}); use knn() or fewer points"
        )
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


KNN_BACKENDS = ("auto", "faiss", "torch")


def _knn_backend(backend: str, x: torch.Tensor, blocks: _Float32Blocks) -> str:
    """The backend ``knn`` uses: what was asked, checked, or auto's choice."""
    choice("backend", backend, KNN_BACKENDS)
    if backend == "torch":
        return backend
    # cosine zero vectors (x is y, or x's own): their distance 1 is no distance between centred points
    zeros = blocks.y_zero is not None and bool(blocks.y_zero.any() or (x.abs().amax(1) == 0).any())
    if backend == "auto":  # not on macOS, where faiss's libomp and torch's in one process can abort
        usable = x.device.type == "cpu" and sys.platform != "darwin" and importlib.util.find_spec("faiss")
        return "faiss" if usable and not zeros else "torch"
    if x.device.type != "cpu":
        raise ValueError(f"backend='faiss' runs on the CPU but x is on {x.device}; use backend='torch' or 'auto'")
    if zeros:
        raise ValueError("backend='faiss' cannot place zero vectors under the cosine metric; use backend='torch'")
    if importlib.util.find_spec("faiss") is None:
        raise ImportError("backend='faiss' needs faiss-cpu: pip install faiss-cpu (or use backend='torch')")
    return backend


def knn(
    x,
    k: int,
    metric: str = "euclidean",
    *,
    y=None,
    exclude_self: bool = True,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    margin: int | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours: ``(distances, indices)``, each ``(N, k)``, nearest first, ties
    in index order.

    With ``y`` the neighbours are rows of y; otherwise of x itself, the point excluded unless
    ``exclude_self=False`` (then it is its own first neighbour, before its duplicates, as UMAP
    expects). Cosine distance is 1 − cos (a zero vector is at 1 from everything, as in
    scikit-learn).

    The bulk runs at float32 speed and the result is still exact: float32 distances (the points
    centred on the median) give each row ``k + margin`` candidates (margin: max(8, k/2)), which are
    re-ranked by float64 distances computed from the differences themselves. A row is certified
    when no point left out can be nearer than its k-th, by the float32 error bound (Higham's γ_n
    for a length-n dot product; ``_Float32Blocks.certified``); the rest (near-ties at the boundary,
    heavy duplication) are recomputed in float64 against every point. Memory: blocks of at most
    ``chunk_bytes``.

    ``backend`` finds the candidates: ``"faiss"`` (faiss-cpu's brute force, on the CPU), ``"torch"``
    (float32 GEMM blocks and ``torch.topk``, on x's device) or ``"auto"``: faiss for points on the
    CPU (but on macOS), torch on a GPU, and torch for a cosine cloud holding zero vectors (their
    distance, 1 by convention, is not a distance between centred points that faiss could compute).
    The answer is the same either way; only the speed differs.
    """
    x = _points(x, "x").detach()  # a neighbour search is not differentiable
    same = y is None
    y = x if same else _points(y, "y").detach().to(x.device)
    metric = choice("metric", metric, METRICS)
    n, m = x.shape[0], y.shape[0]
    for name, v in [("x", x)] + ([] if same else [("y", y)]):
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} holds NaN or infinite values: no distance to them is defined; drop those rows")
    avail = m - (1 if same and exclude_self else 0)
    if not isinstance(k, int) or not 1 <= k <= avail:
        raise ValueError(f"k must be a whole number in [1, {avail}] for {m} points, got {k!r}")
    c = min(avail, k + (max(8, k // 2) if margin is None else margin))
    blocks = _Float32Blocks(y, metric)
    backend = _knn_backend(backend, x, blocks)
    dist = torch.empty(n, k, dtype=torch.float64, device=x.device)
    idx = torch.empty(n, k, dtype=torch.long, device=x.device)
    failed = []

    def rerank(rows: torch.Tensor, cand: torch.Tensor):
        """The rows' candidates by exact distance, ties in index order."""
        exact = blocks.exact(x[rows], cand)
        if same:
            exact[cand == rows[:, None]] = (
                math.inf if exclude_self else -1.0
            )  # self first (before duplicates) when kept
        return _sort_by_value_then_index(exact, cand)

    if backend == "faiss":
        last, cand = blocks.faiss_candidates(x, c, same)
    else:
        with _float32_matmul_exact():
            self_value = (math.inf if exclude_self else -math.inf) if same else None
            last, cand = blocks.candidates(x, c, chunk_bytes, self_value)
    # rows re-ranked at a time: their (rows, c, C) float64 differences fit in a cache (4 MiB), where
    # 128 MiB blocks ran four times slower
    step = max(1, int(min(chunk_bytes, _RERANK_BYTES) // max(1, c * x.shape[1] * 8)))
    for s in range(0, n, step):
        rows = torch.arange(s, min(n, s + step), device=x.device)
        ev, ei = rerank(rows, cand[rows])
        dist[rows], idx[rows] = ev[:, :k], ei[:, :k]
        if c < avail:  # certified when nothing outside the candidates can be nearer than the k-th
            failed.append(rows[~blocks.certified(ev[:, k - 1], last[rows], blocks.norms(x[rows]))])
    failed = torch.cat(failed) if failed else torch.zeros(0, dtype=torch.long, device=x.device)
    per = max(1, int(chunk_bytes // max(1, m * x.shape[1] * 8 * 2)))
    for a in range(0, len(failed), per):  # rows not certified: exact distances to every point
        rows = failed[a : a + per]
        ev, ei = rerank(rows, torch.arange(m, device=x.device).expand(len(rows), m))
        dist[rows], idx[rows] = ev[:, :k], ei[:, :k]
    dist.clamp_(min=0.0)
    dist = dist.sqrt_() if metric == "euclidean" else dist.mul_(0.5)
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


def _unbiased_hsic(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimator (Song et al. 2012) of Gram matrices stacked as (P, n, n) and
    (Q, n, n): the (P, Q) matrix of HSIC_1, needs n ≥ 4. The diagonals are dropped; in float64."""
    n = K.shape[-1]
    K, L = K.double().clone(), L.double().clone()
    K.diagonal(dim1=1, dim2=2).zero_()
    L.diagonal(dim1=1, dim2=2).zero_()
    trace = torch.einsum("pij,qij->pq", K, L)  # tr(K L) for symmetric L
    k1, l1 = K.sum(2), L.sum(2)  # K 1 and L 1, (P, n) and (Q, n)
    total = k1.sum(1)[:, None] * l1.sum(1)[None, :] / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (k1 @ l1.T)  # 1ᵀ K L 1
    return (trace + total - cross) / (n * (n - 3))


class MinibatchCKA:
    """Linear CKA of every layer of one network against every layer of another, accumulated over
    minibatches (Nguyen, Raghu & Kornblith 2021): the unbiased HSIC of each batch's Gram matrices
    summed over batches, CKA = Σ HSIC(K, L) / √(Σ HSIC(K, K) · Σ HSIC(L, L)). Memory does not grow
    with the number of images; batches need at least 4 images, all of the same size across layers.

    ``update(feats_a, feats_b)`` takes one batch's features per layer (lists of (B, ...) tensors,
    flattened per image); ``value()`` is the (layers of a, layers of b) matrix. The Gram matrices
    are computed in ``gram_dtype`` (float32 by default, from centred features, never TF32: CKA
    within 1e-7 relative of float64 in the tests; ``torch.float64`` for reference values), the estimator in float64.
    """

    def __init__(self, gram_dtype: torch.dtype = torch.float32):
        self.ab = self.aa = self.bb = None
        self.gram_dtype = gram_dtype

    def _grams(self, feats) -> torch.Tensor:
        # Each batch's features are centred first: the unbiased estimator is unchanged by a shift of
        # the features (its kernel is doubly differenced), and centred post-ReLU maps lose far less
        # to float32 rounding in the Gram products, which are the bulk of the work. HSIC is float64.
        grams = []
        with _float32_matmul_exact():  # not TF32: its 10-bit mantissa would cost far more than float32 rounding
            for f in feats:
                f = f.reshape(f.shape[0], -1).to(self.gram_dtype)
                f = f - f.mean(0, keepdim=True)
                grams.append((f @ f.T).double())
        return torch.stack(grams)

    def update(self, feats_a, feats_b) -> None:
        Ka = self._grams(feats_a)
        Kb = self._grams(feats_b).to(Ka.device)
        if Ka.shape[-1] != Kb.shape[-1]:
            raise ValueError(
                f"both networks' features must hold the same images, got batches of {Ka.shape[-1]} and {Kb.shape[-1]}"
            )
        if Ka.shape[-1] < 4:
            raise ValueError(f"the unbiased HSIC needs batches of at least 4 images, got {Ka.shape[-1]}")
        ab = _unbiased_hsic(Ka, Kb)
        aa = torch.diagonal(_unbiased_hsic(Ka, Ka))
        bb = torch.diagonal(_unbiased_hsic(Kb, Kb))
        if self.ab is None:
            self.ab, self.aa, self.bb = ab, aa, bb
        else:
            self.ab, self.aa, self.bb = self.ab + ab, self.aa + aa, self.bb + bb

    def value(self) -> torch.Tensor:
        if self.ab is None:
            raise ValueError("MinibatchCKA has seen no batch yet: call update() first")
        return self.ab / torch.sqrt(self.aa[:, None].clamp_min(1e-300) * self.bb[None, :].clamp_min(1e-300))


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
