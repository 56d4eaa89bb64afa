"""The ensembles study's hot paths, each against a plain reference in the same run.

Prints one JSON line:
- pairwise diversity (disagreement, Yule's Q, error correlation) of ``--members`` members over
  ``--images`` images: ``methods.ensemble.pairwise_diversity`` (three GEMMs over all pairs)
  against a loop over pairs counting each contingency table with NumPy, and the ratio;
- fusion: fitting and applying every rule (mean, vote, weighted, stack) on 2,000 validation and
  ``--images`` test images' probabilities (8 classes), seconds each;
- procedural leather: images/s of ``make_leather`` at 64 px (the generator every study draws);
- Grad-CAM through captum on one 48 px image (what one click in the notebook's panel costs), for
  resnet14, median of ``--rounds``.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from _common import bench_setup

from geoviz.analysis.cam import grad_cam
from geoviz.datasets.defects import make_leather
from geoviz.methods.ensemble import FUSIONS, Ensemble, pairwise_diversity
from geoviz.models import build_model


def per_pair_reference(correct: np.ndarray) -> dict:
    m = len(correct)
    out = {k: np.eye(m) for k in ("q", "error_correlation")}
    out["disagreement"] = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            a, b = correct[i], correct[j]
            n11, n00 = np.sum(a & b), np.sum(~a & ~b)
            n10, n01 = np.sum(a & ~b), np.sum(~a & b)
            out["disagreement"][i, j] = (n10 + n01) / len(a)
            out["q"][i, j] = (n11 * n00 - n01 * n10) / (n11 * n00 + n01 * n10)
            out["error_correlation"][i, j] = np.corrcoef(~a, ~b)[0, 1]
    return out


def timed(fn, rounds: int = 1):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return value, float(np.median(times))


def main() -> None:
    args, device, _sync = bench_setup(__doc__, 5, members=12, images=100_000, leather=200)
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 8, args.images)
    skill = rng.uniform(0.4, 0.9, (args.members, 1))
    correct = rng.random((args.members, args.images)) < skill
    fast, t_fast = timed(lambda: pairwise_diversity(correct), 3)
    ref, t_ref = timed(lambda: per_pair_reference(correct))
    iu = np.triu_indices(args.members, 1)
    err = max(float(np.max(np.abs(fast[k][iu] - ref[k][iu]))) for k in fast)
    out = {
        "benchmark": "ensembles",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "members": args.members,
        "images": args.images,
        "diversity_s": round(t_fast, 4),
        "diversity_reference_s": round(t_ref, 4),
        "diversity_speedup": round(t_ref / t_fast, 1),
        "diversity_max_abs_difference": err,
    }

    def probs(n, y):
        logits = rng.normal(size=(5, n, 8)) + 1.5 * np.eye(8)[y][None]
        e = np.exp(logits - logits.max(2, keepdims=True))
        return e / e.sum(2, keepdims=True)

    yv = rng.integers(0, 8, 2000)
    pv, pt = probs(2000, yv), probs(args.images, truth)
    for f in FUSIONS:
        _, s = timed(lambda: Ensemble(8, f, seed=0).fit(pv, yv).predict(pt))
        out[f"fusion_{f}_s"] = round(s, 4)
    _, s = timed(lambda: make_leather(args.leather, size=64, seed=0))
    out["leather_64px_images_per_s"] = round(args.leather / s, 1)
    net = build_model("resnet14", 8).to(device).eval()
    x = torch.rand(1, 3, 48, 48)
    grad_cam(net, x)  # warm-up
    _, s = timed(lambda: grad_cam(net, x), args.rounds)
    out["grad_cam_resnet14_48px_ms"] = round(1000 * s, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
