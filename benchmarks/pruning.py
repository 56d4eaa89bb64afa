"""Decorrelated pruning vs Torch-Pruning's L1 on resnet56: time to analyse and prune, and what a
FLOPs cut buys in measured latency.

Prints one JSON line: seconds to prune resnet56 to 3× fewer FLOPs by the decorrelated method
(outputs and inputs; the calibration pass over ``--calibration`` shapes10 images included) and by
Torch-Pruning's L1 (its channel ratio found by bisection on measured FLOPs, as in the study: up to
20 prune-and-count rounds; and, for Torch-Pruning's own cost, one step at the ratio found), the
ratios, and for each pruned model the measured FLOPs cut against its latency cut at batch 1 and 64
(median of ``--rounds`` forward passes, interleaved with the unpruned model's). A FLOPs cut of 3×
that gives less than 1.5× in latency is flagged. The networks are untrained (BatchNorm statistics
from a few batches): costs do not depend on the weights' values.
"""

from __future__ import annotations

import json
import time

import torch
from _common import bench_setup

from geoviz.costs import measure_flops, measure_latency
from geoviz.datasets import get_dataset
from geoviz.methods.pruning import prune_decorrelated, prune_structured
from geoviz.models import build_model


def main() -> None:
    args, device, _sync = bench_setup(__doc__, 20, model="resnet56", speedup=3.0, calibration=256)
    torch.manual_seed(0)
    data = get_dataset("shapes10", "train", n=max(args.calibration, 512), seed=0)
    model = build_model(args.model, 10)
    model.train()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for i in range(0, 256, 64):
            model(torch.stack([data[j][0] for j in range(i, i + 64)]))
    model.eval()
    calib = torch.utils.data.Subset(data, list(range(args.calibration)))
    out = {
        "benchmark": "pruning",
        "model": args.model,
        "speedup_target": args.speedup,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    pruned = {}
    for name, run in (
        (
            "decorrelated_outputs",
            lambda: prune_decorrelated(
                model, calib, mode="outputs", speedup=args.speedup, device=device, progress=False
            ),
        ),
        (
            "decorrelated_inputs",
            lambda: prune_decorrelated(
                model, calib, mode="inputs", speedup=args.speedup, device=device, progress=False
            ),
        ),
        ("torch_pruning_l1", lambda: prune_structured(model, "l1", args.speedup)),
    ):
        t = time.perf_counter()
        pruned[name] = run().model
        out[f"{name}_prune_s"] = round(time.perf_counter() - t, 3)
    out["prune_time_ratio_outputs_vs_l1"] = round(
        out["decorrelated_outputs_prune_s"] / out["torch_pruning_l1_prune_s"], 3
    )
    # Torch-Pruning's own cost without our bisection: one MetaPruner step at the ratio it found
    import copy

    import torch_pruning as tp

    ratio = prune_structured(model, "l1", args.speedup).channel_ratio
    net = copy.deepcopy(model)
    t = time.perf_counter()
    tp.pruner.MetaPruner(
        net,
        torch.zeros(1, 3, 32, 32),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=[net.fc],
    ).step()
    out["torch_pruning_l1_one_step_s"] = round(time.perf_counter() - t, 3)
    out["prune_time_ratio_outputs_vs_l1_one_step"] = round(
        out["decorrelated_outputs_prune_s"] / out["torch_pruning_l1_one_step_s"], 3
    )
    base_flops = measure_flops(model)
    for b in (1, 64):
        lat = {k: [] for k in ("unpruned", *pruned)}
        for _ in range(3):  # interleaved: drift in the machine's speed hits every model alike
            lat["unpruned"].append(measure_latency(model, batch=b, device=device, repeats=max(3, args.rounds // 3)))
            for k, m in pruned.items():
                lat[k].append(measure_latency(m, batch=b, device=device, repeats=max(3, args.rounds // 3)))
        base = sorted(lat["unpruned"])[1]
        out[f"unpruned_latency_ms_b{b}"] = round(base, 3)
        for k in pruned:
            out[f"{k}_latency_ms_b{b}"] = round(sorted(lat[k])[1], 3)
            out[f"{k}_latency_cut_b{b}"] = round(base / sorted(lat[k])[1], 3)
    for k, m in pruned.items():
        cut = base_flops / measure_flops(m)
        out[f"{k}_flops_cut"] = round(cut, 3)
        out[f"{k}_latency_below_half_the_flops_cut"] = bool(
            cut >= 0.97 * args.speedup and args.speedup >= 3.0 and out[f"{k}_latency_cut_b64"] < 1.5
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
