"""How alike are two networks' local geometries, layer pair by layer pair?"""

from __future__ import annotations

import torch
from torch import nn

from .._utils import eval_mode
from ..capture import ActivationRecorder, align_maps
from ..geometry import knn_agreement, linear_cka


@torch.no_grad()
def layer_alignment(
    student: nn.Module,
    teacher: nn.Module,
    images: torch.Tensor,
    pairs: dict[str, str],
    *,
    k: int = 10,
    max_points: int = 2048,
    align: str = "pool",
    seed: int = 0,
    batch_size: int = 128,
) -> dict[str, dict[str, float]]:
    """For each ``{student layer: teacher layer}`` pair: ``knn_agreement`` (mean Jaccard of the
    k-neighbour sets) and ``linear_cka`` between the two nets' local features at the same
    positions of the same images (aligned by relative coordinate, at most ``max_points`` positions,
    seeded). Returns ``{"s_layer→t_layer": {"knn_agreement": .., "cka": ..}}``."""
    dev_s = next(student.parameters()).device
    dev_t = next(teacher.parameters()).device
    fs = {p: [] for p in pairs}
    ft = {p: [] for p in pairs}
    with (
        eval_mode(student, teacher),
        ActivationRecorder(student, list(pairs), device="cpu") as rs,
        ActivationRecorder(teacher, list(pairs.values()), device="cpu") as rt,
    ):
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size]
            student(x.to(dev_s))
            teacher(x.to(dev_t))
            sa, ta = rs.activations, rt.activations
            for s_layer, t_layer in pairs.items():
                a, b = align_maps(sa[s_layer].float(), ta[t_layer].float(), align)
                fs[s_layer].append(a.permute(0, 2, 3, 1).reshape(-1, a.shape[1]))
                ft[s_layer].append(b.permute(0, 2, 3, 1).reshape(-1, b.shape[1]))
    g = torch.Generator().manual_seed(seed)
    out = {}
    for s_layer, t_layer in pairs.items():
        a, b = torch.cat(fs[s_layer]), torch.cat(ft[s_layer])
        if len(a) > max_points:
            keep = torch.randperm(len(a), generator=g)[:max_points]
            a, b = a[keep], b[keep]
        out[f"{s_layer}→{t_layer}"] = {
            "knn_agreement": knn_agreement(a, b, min(k, len(a) - 1)).item(),
            "cka": linear_cka(a, b).item(),
        }
    return out
