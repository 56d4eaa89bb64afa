"""Geometry at scale, measured side by side in one run.

Prints one JSON line:
- exact kNN of ``--n`` random points of width ``--width`` (float32, k = ``--k``, self excluded):
  ``geoviz.geometry.knn`` (float32 candidates, float64 re-rank) against scikit-learn's brute force
  (same threads) and a plain float64 torch brute force (chunked expansion + topk: what
  ``knn`` did before), with the share of rows whose neighbour lists are identical to the float64
  one (recall) and faiss's flat index when it is installed;
- UMAP of ``--umap-n`` points: ``geoviz.projection.project(..., "umap")`` (its neighbours from
  ``knn``) against umap-learn's default (its own approximate neighbour search), both at the same
  settings, with scikit-learn's trustworthiness of each embedding (15 neighbours).
"""
from __future__ import annotations

import json
import math
import time

import numpy as np
import torch
from _common import bench_setup
from threadpoolctl import threadpool_limits

from geoviz.geometry import knn


def knn_float64_reference(x: torch.Tensor, k: int, chunk_bytes: int = 128 * 2**20):
    """Plain float64 brute force: centred expansion ||x||² + ||y||² − 2x·y in row chunks, topk."""
    y = x.double()
    y = y - y.mean(0, keepdim=True)
    y_sq = (y * y).sum(1)
    idx = torch.empty(len(x), k, dtype=torch.long)
    step = max(1, chunk_bytes // (len(x) * 8 * 3))
    for s in range(0, len(x), step):
        xb = y[s : s + step]
        d = (xb * xb).sum(1, keepdim=True) + y_sq[None] - 2 * xb @ y.T
        r = torch.arange(s, min(len(x), s + step))
        d[r - s, r] = math.inf
        idx[s : s + step] = torch.topk(d, k, dim=1, largest=False).indices
    return idx


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    args, device, sync = bench_setup(__doc__, 1, n=40000, width=256, k=10, umap_n=20000)
    threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, args.width)).astype(np.float32)
    out = {"benchmark": "geometry", "device": str(device), "threads": threads, "n": args.n, "width": args.width, "k": args.k}
    xt = torch.from_numpy(x).to(device)
    knn(xt[:2000], args.k)  # warm-up
    sync()
    (_, ours), t_ours = timed(lambda: (knn(xt, args.k), sync())[0])
    ours = ours.cpu().numpy()
    from sklearn.neighbors import NearestNeighbors

    with threadpool_limits(threads):
        sk, t_sk = timed(lambda: NearestNeighbors(n_neighbors=args.k + 1, algorithm="brute").fit(x).kneighbors(x, return_distance=False))
    ref, t_ref = timed(lambda: knn_float64_reference(torch.from_numpy(x), args.k).numpy())
    sk = np.array([[j for j in row if j != i][: args.k] for i, row in enumerate(sk)])
    same_set = lambda a, b: float(np.mean([set(p) == set(q) for p, q in zip(a, b)]))  # noqa: E731
    out.update({"knn_s": round(t_ours, 2), "sklearn_brute_s": round(t_sk, 2), "float64_brute_s": round(t_ref, 2),
                "knn_speedup_over_sklearn": round(t_sk / t_ours, 2), "knn_speedup_over_float64": round(t_ref / t_ours, 2),
                "knn_recall_vs_float64": same_set(ours, ref), "sklearn_recall_vs_float64": same_set(sk, ref)})
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
        index = faiss.IndexFlatL2(args.width)
        index.add(x)
        (_, fi), t_f = timed(lambda: index.search(x, args.k + 1))
        fi = np.array([[j for j in row if j != i][: args.k] for i, row in enumerate(fi)])
        out.update({"faiss_flat_s": round(t_f, 2), "faiss_recall_vs_float64": same_set(fi, ref)})
    except ImportError:
        out["faiss_flat_s"] = None
    if args.umap_n:
        import umap
        from sklearn.manifold import trustworthiness

        from geoviz.projection import project

        u = x[: args.umap_n]
        ours_e, t_pu = timed(lambda: project(u, "umap", seed=0))
        ref_e, t_ru = timed(lambda: umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=0).fit_transform(u))
        out.update({"umap_n": args.umap_n, "umap_project_s": round(t_pu, 2), "umap_learn_default_s": round(t_ru, 2),
                    "umap_speedup": round(t_ru / t_pu, 2),
                    "trustworthiness_project": round(float(trustworthiness(u, ours_e, n_neighbors=15)), 4),
                    "trustworthiness_umap_learn": round(float(trustworthiness(u, ref_e, n_neighbors=15)), 4)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
