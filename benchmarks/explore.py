"""Your network on your images at the scale users have: 224 px, ResNet-50.

Prints one JSON line with two parts.

1. ``leaf_capture``: ``collect`` of **every leaf module** of torchvision's ResNet-50 (158 module
   calls: convolutions, norms, each call of a shared ReLU, pooling, the head) at 224 px, 8 sampled
   positions per image and layer, streamed to disk (a fresh ``out_dir`` each time), against a bare
   ``no_grad`` forward over the same batches of the same data set; warm (one untimed pass of each
   first), interleaved, median of ``--rounds``. Goal ≤ 1.5× (TorchLens, which records every
   operation, is ~14×: its own README's figure, not measured here).
2. ``explore``: ``run_explore`` end to end (decode, the one capture pass, pictures, receptive
   fields, probes, pixel floor, random-network floor, class geometry, Grad-CAM; no atlas) on
   ``--images`` JPEG files in 10 class folders, for each of ``--models``, as images/s, with the time
   of each stage and of decoding the folder plus a bare forward pass over it (what any tool must
   do at least once). A small run first pays UMAP's compile (reported as ``first_call_seconds``).
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from _common import bench_setup

from geoviz.capture import collect
from geoviz.datasets import ImageArrays, image_folder
from geoviz.inference import as_loader


def _bare(model, data, batch_size, dev, sync):
    t = time.perf_counter()
    with torch.no_grad():
        for batch in as_loader(data, batch_size, device=dev):
            model(batch[0].to(dev))
    sync()
    return time.perf_counter() - t


def leaf_capture(args, dev, sync) -> dict:
    model = torchvision.models.resnet50().eval().to(dev)
    g = torch.Generator().manual_seed(0)
    data = ImageArrays(
        torch.randint(0, 256, (args.leaf_images, 3, 224, 224), dtype=torch.uint8, generator=g),
        torch.zeros(args.leaf_images),
    )
    work = Path(tempfile.mkdtemp(prefix="geoviz-bench-"))

    def capture(k):
        out = work / f"bank{k}"
        t = time.perf_counter()
        bank = collect(
            model,
            data,
            "leaves",
            positions_per_image=8,
            batch_size=args.batch_size,
            device=dev,
            out_dir=out,
            progress=False,
        )
        sync()
        seconds = time.perf_counter() - t
        size = sum(f.stat().st_size for f in out.glob("*.npy"))
        shutil.rmtree(out)
        return seconds, len(bank.layers), size

    try:
        _bare(model, data, args.batch_size, dev, sync), capture(-1)  # warm-up: allocator, page cache, code paths
        bare, cap = [], []
        for k in range(args.rounds):
            bare.append(_bare(model, data, args.batch_size, dev, sync))
            seconds, n_layers, size = capture(k)
            cap.append(seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    b, c = statistics.median(bare), statistics.median(cap)
    return {
        "model": "torchvision resnet50",
        "image_px": 224,
        "images": args.leaf_images,
        "batch_size": args.batch_size,
        "layers_captured": n_layers,
        "positions_per_image": 8,
        "bank_mb_on_disk": round(size / 2**20, 1),
        "bare_forward_s": round(b, 2),
        "capture_s": round(c, 2),
        "bare_spread_s": [round(min(bare), 2), round(max(bare), 2)],
        "capture_spread_s": [round(min(cap), 2), round(max(cap), 2)],
        "capture_vs_bare_ratio": round(c / b, 3),
        "target_ratio": 1.5,
        "torchlens_ratio_reported": 14,
    }


def _write_folder(root: Path, n: int) -> Path:
    """n JPEG files (256 × 320 textures: a colour, stripes and noise per class) in 10 class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:320]
    for i in range(n):
        c = i % 10
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
        base = np.asarray([(37 * c) % 255, (91 * c) % 255, (53 * c + 80) % 255], np.float32)
        stripes = 60 * np.sin((xx * np.cos(c) + yy * np.sin(c)) / (3 + c))[..., None]
        a = np.clip(base + stripes + rng.normal(0, 40, (256, 320, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(root / f"class{c}" / f"{i:05d}.jpg", quality=90)
    return root


def explore_speed(args, dev, sync) -> list[dict]:
    from geoviz.experiments.explore import ExploreConfig, run_explore
    from geoviz.models import load_network

    work = Path(tempfile.mkdtemp(prefix="geoviz-bench-explore-"))
    rows = []
    try:
        folder = _write_folder(work / "images", args.images)
        for name in args.models.split(","):
            kw = dict(
                model=name,
                data=f"folder:{folder}",
                model_b="none",
                positions_per_image=8,
                batch_size=args.batch_size,
                device=str(dev),
                cam_images=8,
            )
            t = time.perf_counter()
            run_explore(
                ExploreConfig.from_profile("quick", **{**kw, "n_images": 40}), run_root=work / "warm", progress=False
            )
            first = time.perf_counter() - t
            t = time.perf_counter()
            res = run_explore(
                ExploreConfig.from_profile("quick", **{**kw, "n_images": args.images}),
                run_root=work / "runs",
                progress=False,
            )
            sync()
            total = time.perf_counter() - t
            net = load_network(name).to(dev)
            t = time.perf_counter()
            data = image_folder(folder, spec=net.input_spec, progress=False)  # the decoding explore does too
            decode = time.perf_counter() - t
            bare = decode + _bare(net, data, args.batch_size, dev, sync)
            rows.append(
                {
                    "model": name,
                    "images": args.images,
                    "image_px": res.model.input_spec.size,
                    "layers": len(res.layers),
                    "explorer_layers": len(res.explorer_layers),
                    "projection": res.config.projection,
                    "seconds": round(total, 1),
                    "images_per_s": round(args.images / total, 2),
                    "stages_s": res.seconds,
                    "decode_s": round(decode, 1),
                    "bare_forward_with_decode_s": round(bare, 1),
                    "explore_vs_bare_forward": round(total / bare, 2),
                    "first_call_seconds": round(first, 1),
                }
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    args, dev, sync = bench_setup(
        __doc__, rounds=3, leaf_images=256, images=1000, batch_size=32, models="tv:resnet50,tv:resnet18", skip_explore=0
    )
    env = {
        "device": str(dev),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    out = {"benchmark": "explore", **env, "leaf_capture": leaf_capture(args, dev, sync)}
    if not args.skip_explore:
        out["explore"] = explore_speed(args, dev, sync)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
