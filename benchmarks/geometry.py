"""Geometry at scale, measured side by side in one run.

Prints one JSON line:
- exact kNN of ``--n`` random points of width ``--width`` (float32, k = ``--k``, self excluded):
  ``geoviz.geometry.knn`` (float32 candidates, float64 re-rank) against scikit-learn's brute force
  (same threads) and a plain float64 torch brute force (chunked expansion + topk: what
  ``knn`` did before), with the share of rows whose neighbour lists are identical to the float64
  one (recall) and faiss's flat index when it is installed;
- UMAP of ``--umap-n`` points: ``geoviz.projection.project(..., "umap")`` (its neighbours from
  ``knn``) against umap-learn's default (its own approximate neighbour search), both at the same
  settings, on a structured cloud (10 curved 3-D sheets in ``--width`` dimensions, plus noise), with
  scikit-learn's trustworthiness of each embedding (15 neighbours);
- training throughput: an epoch of ``geoviz.engine.fit`` (resnet8, shapes10, batch 128, SGD) on
  its default device-resident batches, on the per-item DataLoader (``device_data=False``) and
  with ``compile=True``, against a bare PyTorch loop over the same tensors already on the device
  (same model, batch and optimiser; bf16 autocast and channels_last on a GPU as in fit); median
  of the epochs after the first, interleaved over ``--rounds``. The per-item run uses no worker
  processes (on 2 cores they would compete with the model for the same cores);
- the geometric term's share of a KD step (``transfer_step.measure``: KD vs KD + geometric);
- the atlas: ``geoviz.atlas.compare`` of torchvision resnet18 and resnet34 (all 8 + 16 blocks,
  ``--atlas-n`` shapes10 images of 32 × 32 px, where layer4 is 1 × 1: Gram products are cheap
  next to a 224 px input; kNN agreement at the best pairs, no pictures) against the two bare
  forward passes over the same device-resident images;
- ``collect`` of ``--collect-n`` shapes10 images, 4 layers of resnet18, 16 positions per image,
  streamed to disk, against a bare forward pass, in a child process that does only that, with its
  resident memory polled before and during (its own growth apart from the data set's).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch
from _common import bench_setup
from threadpoolctl import threadpool_limits
from torch.utils.data import Subset

from geoviz.datasets import get_dataset
from geoviz.engine import fit
from geoviz.geometry import knn
from geoviz.models import build_model


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


def bare_epochs(x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, dev: torch.device, sync) -> list[float]:
    """Seconds per epoch of the plainest training loop over tensors already on the device."""
    torch.manual_seed(0)
    model = build_model("resnet8", 10).to(dev)
    amp = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    out = []
    for _ in range(epochs):
        sync()
        t = time.perf_counter()
        perm = torch.randperm(len(x), device=dev)
        for s in range(0, len(x) - batch + 1, batch):
            i = perm[s : s + batch]
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = torch.nn.functional.cross_entropy(model(x[i]), y[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        out.append(time.perf_counter() - t)
    return out


def fit_epochs(data, batch: int, epochs: int, dev: torch.device, **kw) -> list[float]:
    torch.manual_seed(0)
    r = fit(
        build_model("resnet8", 10), data, epochs=epochs, batch_size=batch, lr=0.05, device=dev, progress=False, **kw
    )
    return [h["epoch_seconds"] for h in r.history]


def training_throughput(dev: torch.device, sync, n: int, batch: int, epochs: int, rounds: int, compiled: bool) -> dict:
    data = get_dataset("shapes10", "train", n=n)
    x = (data.images.float() / 255.0).to(dev)
    if dev.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = data.labels.to(dev)
    runs = {
        "bare": lambda: bare_epochs(x, y, batch, epochs, dev, sync),
        "fit": lambda: fit_epochs(data, batch, epochs, dev),
        "fit_per_item": lambda: fit_epochs(data, batch, epochs, dev, device_data=False),
    }
    if compiled:
        runs["fit_compiled"] = lambda: fit_epochs(data, batch, epochs, dev, compile=True)
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, run in runs.items():
            times[k] += run()[1:]  # the first epoch pays warm-up (and compilation)
    per_s = {k: (n // batch) * batch / statistics.median(v) for k, v in times.items()}
    out = {
        "fit_n": n,
        "fit_batch": batch,
        "fit_model": "resnet8",
        **{f"{k}_images_per_s": round(v, 1) for k, v in per_s.items()},
        "fit_over_bare": round(per_s["fit"] / per_s["bare"], 3),
        "fit_per_item_over_bare": round(per_s["fit_per_item"] / per_s["bare"], 3),
        "fit_target": 0.8 if dev.type == "cuda" else 0.9,
    }
    if compiled:
        out["fit_compiled_over_fit"] = round(per_s["fit_compiled"] / per_s["fit"], 3)
    return out


def bare_forward_s(models, data, batch: int, dev: torch.device, sync) -> float:
    from geoviz.inference import as_loader

    sync()
    t = time.perf_counter()
    with torch.no_grad():
        for x, _ in as_loader(data, batch, device=dev):
            for m in models:
                m(x)
    sync()
    return time.perf_counter() - t


def atlas_time(dev: torch.device, sync, n: int) -> dict:
    from geoviz.atlas import compare

    data = get_dataset("shapes10", "test", n=n)
    a, b = (build_model(f"tv:resnet{d}", 10).eval().to(dev) for d in (18, 34))
    compare(
        a, b, get_dataset("shapes10", "test", n=64), embedding=None, pairs=None, device=dev, progress=False
    )  # warm-up
    bare = bare_forward_s([a, b], data, 128, dev, sync)
    sync()
    t = time.perf_counter()
    atlas = compare(a, b, data, embedding=None, device=dev, progress=False, batch_size=128)
    sync()
    took = time.perf_counter() - t
    return {
        "atlas_n": n,
        "atlas_image_px": 32,
        "atlas_layers": [len(atlas.layers_a), len(atlas.layers_b)],
        "atlas_s": round(took, 2),
        "atlas_two_forwards_s": round(bare, 2),
        "atlas_over_two_forwards": round(took / bare, 2),
        "atlas_parts_s": atlas.seconds,
    }


class PeakRSS:
    """The largest resident set size (MiB) of this process while the block runs, polled every 20 ms."""

    @staticmethod
    def now() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def __enter__(self):
        self.peak, self._on = self.now(), True

        def poll():
            while self._on:
                self.peak = max(self.peak, self.now())
                time.sleep(0.02)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._on = False
        self._thread.join()


def collect_child(dev: torch.device, sync, n: int) -> dict:
    """Run in a fresh process: collect streamed to disk vs a bare forward, and the resident memory
    (the data set itself, generated in memory, is reported apart: it is not collect's)."""
    import tempfile

    from geoviz.capture import collect

    with PeakRSS() as gen:
        data = get_dataset("shapes10", "train", n=n)
    model = build_model("tv:resnet18", 10).eval().to(dev)
    layers = ["layer1", "layer2", "layer3", "layer4"]
    bare_forward_s([model], Subset(data, range(512)), 256, dev, sync)  # warm-up (first-use costs)
    bare = bare_forward_s([model], data, 256, dev, sync)
    with tempfile.TemporaryDirectory() as out, PeakRSS() as during:
        before = PeakRSS.now()
        sync()
        t = time.perf_counter()
        bank = collect(
            model, data, layers, positions_per_image=16, out_dir=out, batch_size=256, device=dev, progress=False
        )
        sync()
        took = time.perf_counter() - t
        written = sum(f.stat().st_size for f in Path(out).glob("*"))
    return {
        "collect_n": n,
        "collect_layers": len(layers),
        "collect_images_per_s": round(n / took, 1),
        "bare_forward_images_per_s": round(n / bare, 1),
        "collect_over_bare_forward": round(bare / took, 3),
        "collect_written_mib": round(written / 2**20, 1),
        "collect_points": int(sum(len(bank.point_labels(l)) for l in layers)),
        "collect_rss_before_mib": round(before, 1),
        "collect_peak_rss_mib": round(during.peak, 1),
        "collect_rss_growth_mib": round(during.peak - before, 1),
        "data_generation_peak_rss_mib": round(gen.peak, 1),
    }
    # (not ru_maxrss: a child forked from this benchmark inherits the parent's high-water mark)


def structured_cloud(n: int, width: int, seed: int = 1) -> np.ndarray:
    """A cloud with structure a 2-D picture can keep or lose: 10 clusters, each a curved 3-D sheet
    (random quadratic features of 3 latent coordinates) in ``width`` dimensions, plus noise."""
    r = np.random.default_rng(seed)
    label = r.integers(0, 10, n)
    z = r.normal(size=(n, 3))
    feats = np.c_[z, z**2 - 1, z[:, [0]] * z[:, [1]]]  # (n, 7)
    maps = r.normal(size=(10, 7, width)) / np.sqrt(7)
    centres = 3.0 * r.normal(size=(10, width)) / np.sqrt(width) * np.sqrt(7)
    x = centres[label] + np.einsum("nf,nfw->nw", feats, maps[label]) + 0.3 * r.normal(size=(n, width))
    return x.astype(np.float32)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    args, device, sync = bench_setup(
        __doc__,
        2,
        n=40000,
        width=256,
        k=10,
        umap_n=20000,
        fit_n=5120,
        fit_epochs=3,
        compile=1,
        step=1,
        atlas_n=10000,
        collect_n=50000,
        collect_child=0,
    )
    if args.collect_child:
        print(json.dumps(collect_child(device, sync, args.collect_n)))
        return
    threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.n, args.width)).astype(np.float32)
    out = {
        "benchmark": "geometry",
        "device": str(device),
        "threads": threads,
        "n": args.n,
        "width": args.width,
        "k": args.k,
    }
    if args.n:
        xt = torch.from_numpy(x).to(device)
        knn(xt[:2000], args.k)  # warm-up
        sync()
        (_, ours), t_ours = timed(lambda: (knn(xt, args.k), sync())[0])
        ours = ours.cpu().numpy()
        from sklearn.neighbors import NearestNeighbors

        with threadpool_limits(threads):
            sk, t_sk = timed(
                lambda: NearestNeighbors(n_neighbors=args.k + 1, algorithm="brute")
                .fit(x)
                .kneighbors(x, return_distance=False)
            )
        ref, t_ref = timed(lambda: knn_float64_reference(torch.from_numpy(x), args.k).numpy())
        sk = np.array([[j for j in row if j != i][: args.k] for i, row in enumerate(sk)])
        same_set = lambda a, b: float(np.mean([set(p) == set(q) for p, q in zip(a, b)]))  # noqa: E731
        out.update(
            {
                "knn_s": round(t_ours, 2),
                "sklearn_brute_s": round(t_sk, 2),
                "float64_brute_s": round(t_ref, 2),
                "knn_speedup_over_sklearn": round(t_sk / t_ours, 2),
                "knn_speedup_over_float64": round(t_ref / t_ours, 2),
                "knn_recall_vs_float64": same_set(ours, ref),
                "sklearn_recall_vs_float64": same_set(sk, ref),
            }
        )
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

        u = structured_cloud(args.umap_n, args.width)
        ours_e, t_pu = timed(lambda: project(u, "umap", seed=0))
        ref_e, t_ru = timed(lambda: umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=0).fit_transform(u))
        out.update(
            {
                "umap_n": args.umap_n,
                "umap_project_s": round(t_pu, 2),
                "umap_learn_default_s": round(t_ru, 2),
                "umap_speedup": round(t_ru / t_pu, 2),
                "trustworthiness_project": round(float(trustworthiness(u, ours_e, n_neighbors=15)), 4),
                "trustworthiness_umap_learn": round(float(trustworthiness(u, ref_e, n_neighbors=15)), 4),
            }
        )
    if args.fit_n:
        out.update(training_throughput(device, sync, args.fit_n, 128, args.fit_epochs, args.rounds, bool(args.compile)))
    if args.step:
        from transfer_step import measure

        step = measure(device)
        out.update(
            {
                k: step[k]
                for k in (
                    "step_ms_kd",
                    "step_ms_kd_geometric",
                    "ratio_kd_geometric_over_kd",
                    "geometric_term_alone_ms",
                    "geometric_term_share_of_kd_step",
                )
            }
        )
        out["geometric_target_ratio"] = step["target_ratio"]
    if args.atlas_n:
        out.update(atlas_time(device, sync, args.atlas_n))
    if args.collect_n:
        import subprocess
        import sys

        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--collect-child",
                "1",
                "--collect-n",
                str(args.collect_n),
                "--device",
                str(device),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        out.update(json.loads(child.stdout.strip().splitlines()[-1]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
