"""The whole corruption suite, batched torch vs the per-image NumPy/SciPy/PIL reference formulas.

Prints one JSON line: images/s of ``geoviz.datasets.corruptions`` over all 15 corruptions × 5
severities on a batch of ``--n`` 32×32 images, beside the per-image reference formulas
(``tests/corruption_refs.py``, run on ``--n-ref`` of the images: a rate), per corruption and for
the 12 corruptions both have (motion blur, snow and frost need ImageMagick or photographs in the
reference: ours alone), with the speed-up ratios.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import bench_setup

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import corruption_refs as ref  # noqa: E402

from geoviz.datasets import get_dataset  # noqa: E402
from geoviz.datasets.corruptions import CORRUPTIONS, PARAMS, SEVERITIES, corrupt  # noqa: E402


def main() -> None:
    args, device, sync = bench_setup(__doc__, 1, n=1000, n_ref=50)
    ds = get_dataset("shapes10", "test", n=args.n, seed=0)
    x = torch.stack([ds[i][0] for i in range(args.n)]).to(device)
    xs = x[: args.n_ref].permute(0, 2, 3, 1).double().cpu().numpy()
    rng = np.random.default_rng(0)
    out = {
        "benchmark": "corruptions",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "images": args.n,
        "reference_images": args.n_ref,
    }
    ours_t, ref_t, both_ours, both_ref = {}, {}, 0.0, 0.0
    for name in CORRUPTIONS:
        corrupt(x[:8], name, 1)  # warm-up
        sync()
        t = time.perf_counter()
        for s in SEVERITIES:
            corrupt(x, name, s)
        sync()
        ours_t[name] = (time.perf_counter() - t) / (args.n * len(SEVERITIES))
        if name in ref.REFERENCES:
            t = time.perf_counter()
            for s in SEVERITIES:
                for img in xs:
                    ref.REFERENCES[name](img, PARAMS[name][s - 1], rng)
            ref_t[name] = (time.perf_counter() - t) / (args.n_ref * len(SEVERITIES))
            both_ours += ours_t[name]
            both_ref += ref_t[name]
        out[f"{name}_images_per_s"] = round(1 / ours_t[name], 1)
        if name in ref_t:
            out[f"{name}_reference_images_per_s"] = round(1 / ref_t[name], 1)
            out[f"{name}_speedup"] = round(ref_t[name] / ours_t[name], 2)
    out["suite_images_per_s"] = round(1 / sum(ours_t.values()), 2)  # one image through all 15 × 5
    out["common12_images_per_s"] = round(1 / both_ours, 2)
    out["common12_reference_images_per_s"] = round(1 / both_ref, 2)
    out["common12_speedup"] = round(both_ref / both_ours, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
