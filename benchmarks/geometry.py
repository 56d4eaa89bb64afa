"""Geometry at scale, measured side by side in one run.

Prints one JSON line. Every library runs on the same threads (``--threads``, default torch's),
its first call timed apart as ``*_cold_s`` and then ``--repeats`` warm calls interleaved across
libraries, reported as median / min / max seconds; ratios are of medians.
- exact kNN (k = ``--k``, self excluded) on two clouds at two sizes (``--knn-sizes``: 40,000 ×
  256 and 100,000 × 128): CNN local features (a randomly initialised torchvision resnet18's
  layer3 / layer2 on shapes10 at 32 px, post-ReLU) and a manifold mixture (10 curved 3-D sheets
  plus noise): ``geoviz.geometry.knn`` against faiss-cpu's flat brute force (``faiss.knn``) and
  scikit-learn's brute force, with the share of ``--check-rows`` sampled rows whose k neighbours
  are a true k-nearest set by float64 distances from the differences (ties may go either way);
- UMAP of ``--umap-n`` points of both clouds' kind at width 256: ``geoviz.projection.project``
  (``knn="auto"``, and ``knn="exact"``) against umap-learn, both seeded (one thread), with
  scikit-learn's trustworthiness (15 neighbours) of each. project runs first, so its cold call
  pays umap-learn's layout compilation, and umap-learn's cold call pynndescent's;
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
  streamed to disk, against a bare forward pass (interleaved, ``--repeats`` each), in a child
  process that does only that, with its resident memory polled before and during (its own growth
  apart from the data set's).
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
from _common import bench_setup, cold_then_warm, seconds
from threadpoolctl import threadpool_limits

from geoviz.datasets import get_dataset
from geoviz.engine import fit
from geoviz.geometry import knn
from geoviz.models import build_model


def true_knn_rows(x: np.ndarray, rows: np.ndarray, idx: np.ndarray, k: int) -> float:
    """The share of ``rows`` whose neighbours ``idx[rows]`` (self excluded) are a true k-nearest
    set: their float64 distances, from the differences, sorted, equal the k smallest (so a tie at
    the k-th may go either way)."""
    y = torch.from_numpy(x).double()
    ok = 0
    for r in rows:
        d = (y - y[r]).square_().sum(1)
        d[r] = math.inf
        best = torch.topk(d, k, largest=False).values
        got = [j for j in idx[r] if j != r][:k]
        ok += len(got) == k and torch.equal(torch.sort(d[got]).values, torch.sort(best).values)
    return ok / len(rows)


def knn_comparison(x: np.ndarray, k: int, threads: int, repeats: int, check_rows: int) -> dict:
    """geoviz / faiss / scikit-learn exact kNN of a cloud against itself, cold then warm."""
    import faiss
    from sklearn.neighbors import NearestNeighbors

    faiss.omp_set_num_threads(threads)
    xt = torch.from_numpy(x)

    def sklearn_brute():
        with threadpool_limits(threads):
            nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x)
            return nn.kneighbors(x, return_distance=False)

    def limited(fn):  # faiss's and torch's BLAS held to the same threads as their OpenMP
        def run():
            with threadpool_limits(threads):
                return fn()

        return run

    cases = {
        "geoviz": limited(lambda: knn(xt, k)[1].numpy()),
        "faiss": limited(lambda: faiss.knn(x, x, k + 1)[1]),
        "sklearn": sklearn_brute,
    }
    times = cold_then_warm(cases, repeats)
    rows = np.random.default_rng(0).choice(len(x), check_rows, replace=False)
    out = {}
    for name, r in times.items():
        out.update({f"{name}_{key}": v for key, v in seconds(r).items()})
        out[f"{name}_true_knn_rows"] = true_knn_rows(x, rows, r["result"], k)
    g = times["geoviz"]["median_s"]
    out["geoviz_over_faiss"] = round(g / times["faiss"]["median_s"], 3)
    out["geoviz_over_sklearn"] = round(g / times["sklearn"]["median_s"], 3)
    return out


def cnn_cloud(n: int, width: int) -> np.ndarray:
    """Local features of a randomly initialised torchvision resnet18 on shapes10 at 32 px: layer3
    (256 channels, 2 × 2 positions) or layer2 (128, 4 × 4), after the block's ReLU."""
    from geoviz.capture import collect

    layer, per_image = {256: ("layer3", 4), 128: ("layer2", 16)}[width]
    torch.manual_seed(0)
    model = build_model("tv:resnet18", 10).eval()
    data = get_dataset("shapes10", "train", n=math.ceil(n / per_image))
    bank = collect(model, data, [layer], batch_size=256, progress=False)
    return np.ascontiguousarray(bank.features[layer][:n], dtype=np.float32)


def umap_comparison(u: np.ndarray, repeats: int) -> dict:
    """project (knn="auto") against umap-learn, both seeded, cold then warm, and trustworthiness."""
    import umap
    from sklearn.manifold import trustworthiness

    from geoviz.projection import project

    cases = {
        "project": lambda: project(u, "umap", seed=0),
        "umap_learn": lambda: umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=0).fit_transform(u),
        "project_exact": lambda: project(u, "umap", seed=0, knn="exact"),
    }
    times = cold_then_warm(cases, repeats)
    out = {"project_knn_graph": times["project"]["result"].graph}
    for name, r in times.items():
        out.update({f"{name}_{key}": v for key, v in seconds(r).items()})
        out[f"{name}_trustworthiness"] = round(float(trustworthiness(u, np.asarray(r["result"]), n_neighbors=15)), 4)
    for name in ("project", "project_exact"):
        out[f"{name}_over_umap_learn"] = round(times[name]["median_s"] / times["umap_learn"]["median_s"], 3)
    return out


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


def collect_child(dev: torch.device, sync, n: int, repeats: int) -> dict:
    """Run in a fresh process: collect streamed to disk vs a bare forward, interleaved, and the
    resident memory (the data set itself, generated in memory, is reported apart: it is not
    collect's)."""
    import tempfile

    from geoviz.capture import collect

    with PeakRSS() as gen:
        data = get_dataset("shapes10", "train", n=n)
    model = build_model("tv:resnet18", 10).eval().to(dev)
    layers = ["layer1", "layer2", "layer3", "layer4"]
    with tempfile.TemporaryDirectory() as out, PeakRSS() as during:
        before = PeakRSS.now()
        runs = iter(range(10**6))

        def collect_to_disk():
            target = Path(out) / f"bank{next(runs)}"
            bank = collect(
                model, data, layers, positions_per_image=16, out_dir=target, batch_size=256, device=dev, progress=False
            )
            written = sum(f.stat().st_size for f in target.glob("*"))
            return written, int(sum(len(bank.point_labels(l)) for l in layers))

        cases = {"bare_forward": lambda: bare_forward_s([model], data, 256, dev, sync), "collect": collect_to_disk}
        times = cold_then_warm(cases, repeats, sync)
    written, points = times["collect"]["result"]
    return {
        "collect_n": n,
        "collect_layers": len(layers),
        **{f"bare_forward_{k}": v for k, v in seconds(times["bare_forward"]).items()},
        **{f"collect_{k}": v for k, v in seconds(times["collect"]).items()},
        "collect_over_bare_forward": round(times["bare_forward"]["median_s"] / times["collect"]["median_s"], 3),
        "collect_written_mib": round(written / 2**20, 1),
        "collect_points": points,
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


def main() -> None:
    args, device, sync = bench_setup(
        __doc__,
        2,
        threads=torch.get_num_threads(),
        repeats=3,
        k=10,
        knn_sizes="40000x256,100000x128",
        check_rows=200,
        umap_n=20000,
        fit_n=5120,
        fit_epochs=3,
        compile=1,
        step=1,
        atlas_n=10000,
        collect_n=20000,
        collect_child=0,
    )
    torch.set_num_threads(args.threads)
    if args.collect_child:
        print(json.dumps(collect_child(device, sync, args.collect_n, args.repeats)))
        return
    out = {"benchmark": "geometry", "device": str(device), "threads": args.threads, "repeats": args.repeats}
    clouds = {"cnn": cnn_cloud, "manifold": structured_cloud}
    for size in filter(None, args.knn_sizes.split(",")):
        n, width = map(int, size.split("x"))
        for cloud, make in clouds.items():
            x = make(n, width)
            got = knn_comparison(x, args.k, args.threads, args.repeats, args.check_rows)
            out.update({f"knn_{cloud}_{size}_{key}": v for key, v in got.items()})
            if device.type == "cuda":
                xt = torch.from_numpy(x).to(device)
                gpu = cold_then_warm({"cuda": lambda: knn(xt, args.k)}, args.repeats, sync)["cuda"]
                out[f"knn_{cloud}_{size}_geoviz_cuda_median_s"] = round(gpu["median_s"], 3)
                out[f"knn_{cloud}_{size}_cuda_speedup_over_cpu"] = round(got["geoviz_median_s"] / gpu["median_s"], 1)
    if args.umap_n:
        out["umap_n"] = args.umap_n
        for cloud, make in clouds.items():
            out.update(
                {f"umap_{cloud}_{k}": v for k, v in umap_comparison(make(args.umap_n, 256), args.repeats).items()}
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
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
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
