"""CNNMDA's data paths at HMDD v2.0's size (495 miRNAs × 383 diseases), each against a plain
reference in the same run.

Prints one JSON line:
- pair inputs for ``--pairs`` random pairs: ``PairFeatures.pairs`` (batched indexing) against
  building each pair's two rows one at a time, and the ratio;
- MISIM (miRNA functional similarity from associations): ``methods.cnnmda.misim`` (one max per
  miRNA, then a GEMM) against the definition's double loop over miRNA pairs on the first
  ``--misim-mirnas`` miRNAs, with the largest difference, and the ratio;
- the neighbour vote for all 189,585 pairs: two matrix products then a lookup, against gathering
  each pair's rows (the previous code), with the largest difference, and the ratio;
- cross-fitted inputs (10 chunks: an NMF each, components matched, built once) against the shared
  NMF's: building them, then the inputs of one fold's training pairs (as many negatives as
  associations) through each: seconds;
- scoring every one of the 189,585 pairs with an untrained CNNMDA (inputs built per batch): pairs/s.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from _common import bench_setup

from geoviz.datasets.associations import make_synthetic_mda
from geoviz.methods.cnnmda import CNNMDA, CrossFitted, PairFeatures, misim, neighbour_scores, nmf_factors, score_pairs


def misim_reference(A, SD):
    n = len(A)
    S = np.eye(n)
    sets = [np.flatnonzero(r) for r in A]
    for i in range(n):
        for k in range(n):
            if i == k or len(sets[i]) + len(sets[k]) == 0:
                continue
            s1 = sum(SD[d, sets[k]].max() for d in sets[i]) if len(sets[k]) else 0.0
            s2 = sum(SD[d, sets[i]].max() for d in sets[k]) if len(sets[i]) else 0.0
            S[i, k] = (s1 + s2) / (len(sets[i]) + len(sets[k]))
    return S


def neighbour_reference(SM, SD, A, pairs):
    sm, sd = SM.copy(), SD.copy()
    np.fill_diagonal(sm, 0)
    np.fill_diagonal(sd, 0)
    sm /= sm.sum(1, keepdims=True)
    sd /= sd.sum(1, keepdims=True)
    via_mirnas = np.einsum("nm,mn->n", sm[pairs[:, 0]], A[:, pairs[:, 1]])
    via_diseases = np.einsum("nd,nd->n", A[pairs[:, 0]], sd[pairs[:, 1]])
    return (via_mirnas + via_diseases) / 2


def main() -> None:
    args, device, _sync = bench_setup(__doc__, 3, pairs=20000, misim_mirnas=120)
    d = make_synthetic_mda(seed=0)
    W, H = nmf_factors(d.A, 16)
    f = PairFeatures(d.SM, d.SD, d.A, W, H)
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.integers(0, 495, args.pairs), rng.integers(0, 383, args.pairs)], 1)
    t = time.perf_counter()
    fast = f.pairs(pairs)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    slow = torch.stack([f.pairs(p[None])[0] for p in pairs[:2000]])
    t_slow = (time.perf_counter() - t) * len(pairs) / 2000
    assert torch.equal(fast[:2000], slow)
    out = {
        "benchmark": "cnnmda",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "pairs": args.pairs,
        "pair_inputs_s": round(t_fast, 4),
        "pair_inputs_per_pair_s_extrapolated": round(t_slow, 3),
        "pair_inputs_speedup": round(t_slow / t_fast, 1),
    }
    A, SD = d.A[: args.misim_mirnas], d.SD
    t = time.perf_counter()
    got = misim(A, SD)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    ref = misim_reference(A, SD)
    t_ref = time.perf_counter() - t
    out.update(
        {
            "misim_mirnas": args.misim_mirnas,
            "misim_s": round(t_fast, 4),
            "misim_reference_s": round(t_ref, 3),
            "misim_speedup": round(t_ref / t_fast, 1),
            "misim_max_abs_difference": float(np.abs(got - ref).max()),
        }
    )
    t = time.perf_counter()
    full = misim(d.A, SD)
    out["misim_495_s"] = round(time.perf_counter() - t, 4)
    assert full.shape == (495, 495)
    every = np.argwhere(np.ones(d.A.shape, bool))
    t = time.perf_counter()
    votes = neighbour_scores(d.SM, d.SD, d.A, every)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    ref = neighbour_reference(d.SM, d.SD, d.A, every)
    t_ref = time.perf_counter() - t
    out.update(
        {
            "neighbours_s": round(t_fast, 4),
            "neighbours_gather_s": round(t_ref, 3),
            "neighbours_speedup": round(t_ref / t_fast, 1),
            "neighbours_max_abs_difference": float(np.abs(votes - ref).max()),
        }
    )
    pos, unknown = np.argwhere(d.A == 1), np.argwhere(d.A == 0)
    train = np.concatenate([pos, unknown[rng.choice(len(unknown), len(pos), replace=False)]])
    t = time.perf_counter()
    f.pairs(train)
    t_shared = time.perf_counter() - t
    t = time.perf_counter()
    cf = CrossFitted(f, 10)
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    cf.pairs(train)
    t_cross = time.perf_counter() - t
    out.update(
        {
            "train_pairs": len(train),
            "crossfit_build_s": round(t_build, 3),
            "shared_inputs_s": round(t_shared, 3),
            "crossfit_inputs_s": round(t_cross, 3),
        }
    )
    model = CNNMDA(f.n_left, f.n_right).to(device)
    score_pairs(model, f, every[:4096], device=device)
    t = time.perf_counter()
    score_pairs(model, f, every, device=device)
    out["score_all_pairs_per_s"] = round(len(every) / (time.perf_counter() - t), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
