"""Cost of the geometric term's variants, measured side by side in one run.

Prints one JSON line: forward + backward time of ``local_geometry_loss`` (affinity_kl) for each
scope × bandwidth on a student / teacher pair of the size the transfer study trains (batch 32,
8×8 maps, 16 and 32 channels, m = 256 positions per cloud), interleaved and as medians, and each
variant's ratio to the default (batch scope, one bandwidth per cloud); plus the RepDistiller
baselines' terms (SP, RKD, PKT, AT) on the same maps for scale.
"""

from __future__ import annotations

import json
import platform
import statistics
import time

import torch
from _common import bench_setup

from geoviz.losses import at_loss, local_geometry_loss, pkt_loss, rkd_loss, sp_loss


def main() -> None:
    args, dev, sync = bench_setup(__doc__, rounds=30, batch=32)
    s = torch.randn(args.batch, 16, 8, 8, device=dev, requires_grad=True)
    t = torch.randn(args.batch, 32, 8, 8, device=dev)
    cases = {
        f"{scope}/{bw}": (lambda scope=scope, bw=bw: local_geometry_loss(s, t, scope=scope, bandwidth=bw, m=256))
        for scope in ("batch", "image")
        for bw in ("global", "perplexity")
    }
    cases.update(
        {
            "sp": lambda: sp_loss(s, t),
            "rkd": lambda: rkd_loss(s, t),
            "pkt": lambda: pkt_loss(s, t),
            "at": lambda: at_loss(s, t),
        }
    )
    times = {k: [] for k in cases}
    for _ in range(3):  # warm-up
        for fn in cases.values():
            fn().backward()
    for _ in range(args.rounds):  # interleaved: drift hits every case alike
        for k, fn in cases.items():
            sync()
            t0 = time.perf_counter()
            fn().backward()
            sync()
            times[k].append(time.perf_counter() - t0)
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    base = ms["batch/global"]
    out = {
        "benchmark": "geometry_variants",
        "device": dev.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.machine(),
        "batch": args.batch,
        "maps": "16 vs 32 channels, 8x8",
        "m": 256,
    }
    out.update({f"ms_{k.replace('/', '_')}": round(v, 3) for k, v in ms.items()})
    out.update(
        {
            f"ratio_{k.replace('/', '_')}_over_batch_global": round(v / base, 2)
            for k, v in ms.items()
            if k != "batch/global"
        }
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
