"""Knowledge distillation and the image-level feature-transfer baselines, in their standard
definitions. Each is a pure function of student and teacher tensors (the teacher side is treated
as a constant); ``FitNet`` is the one that owns parameters (its regressor).

- ``kd_loss``: Hinton et al. 2015: KL(softmax(t/T) ‖ softmax(s/T)) · T² (batch mean).
- ``fitnet_loss``: Romero et al. 2015: MSE between a 1×1-conv regression of the student's map
  and the teacher's map.
- ``at_loss``: Zagoruyko & Komodakis 2017: mean squared difference of the L2-normalised spatial
  attention maps mean_c(|a|^p).
- ``sp_loss``: Tung & Mori 2019: ‖G_s − G_t‖_F² / B², G = row-normalised batch Gram matrix.
- ``rkd_loss``: Park et al. 2019: Huber loss on mean-normalised pairwise distances (weight 25)
  and on the cosines of all triplet angles (weight 50).
- ``pkt_loss``: Passalis & Tefas 2018: KL between the row-normalised cosine-kernel ((cos+1)/2)
  distributions of teacher and student (sum over neighbours, mean over samples).

Map-level losses (FitNet, AT) align different resolutions by area-pooling the finer map;
embedding-level ones (RKD, PKT) global-average-pool a ``(B, C, H, W)`` input first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import align_maps
from ._precision import full_precision


def _embed(x: torch.Tensor) -> torch.Tensor:
    return full_precision(x).mean(dim=(2, 3)) if x.dim() == 4 else full_precision(x).flatten(1)


def _same_batch(s: torch.Tensor, t: torch.Tensor) -> None:
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"student and teacher tensors must come from the same batch: batch sizes {s.shape[0]} and {t.shape[0]} differ")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 4.0) -> torch.Tensor:
    _same_batch(student_logits, teacher_logits)
    if T <= 0:
        raise ValueError(f"temperature T must be > 0, got {T}")
    log_q = F.log_softmax(full_precision(student_logits) / T, dim=1)
    p = F.softmax(full_precision(teacher_logits).detach() / T, dim=1)
    return F.kl_div(log_q, p, reduction="batchmean") * T * T


def fitnet_loss(s: torch.Tensor, t: torch.Tensor, regressor: nn.Module) -> torch.Tensor:
    s, t = align_maps(s, t.detach(), "pool")
    return F.mse_loss(full_precision(regressor(s)), full_precision(t))


class FitNet(nn.Module):
    """FitNet hint loss with its 1×1 convolutional regressor (student channels → teacher channels)."""

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.regressor = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return fitnet_loss(s, t, self.regressor)


def _attention(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.normalize(full_precision(x).abs().pow(p).mean(1).flatten(1), dim=1)


def at_loss(s: torch.Tensor, t: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    s, t = align_maps(s, t.detach(), "pool")
    return (_attention(s, p) - _attention(t, p)).square().mean()


def _gram(x: torch.Tensor) -> torch.Tensor:
    f = full_precision(x).flatten(1)
    return F.normalize(f @ f.T, dim=1)


def sp_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    _same_batch(s, t)
    b = s.shape[0]
    return (_gram(s) - _gram(t.detach())).square().sum() / (b * b)


def _pdist(e: torch.Tensor) -> torch.Tensor:
    sq = (e * e).sum(1)
    return (sq[:, None] + sq[None, :] - 2 * e @ e.T).clamp_min(1e-12).sqrt()


def rkd_loss(s: torch.Tensor, t: torch.Tensor, w_dist: float = 25.0, w_angle: float = 50.0) -> torch.Tensor:
    _same_batch(s, t)
    es, et = _embed(s), _embed(t.detach())
    b = es.shape[0]
    off = ~torch.eye(b, dtype=torch.bool, device=es.device)
    dt, ds = _pdist(et), _pdist(es)
    dt = dt / dt[off].mean()
    ds = ds / ds[off].mean()
    loss_d = F.smooth_l1_loss(ds[off], dt[off])

    def angles(e):
        d = F.normalize(e[None, :, :] - e[:, None, :], dim=2)  # d[j, i] = unit vector from e_j to e_i
        return torch.bmm(d, d.transpose(1, 2)).flatten()  # cos of the angle at e_j between e_i and e_k

    loss_a = F.smooth_l1_loss(angles(es), angles(et))
    return w_dist * loss_d + w_angle * loss_a


def _cosine_kernel(e: torch.Tensor) -> torch.Tensor:
    u = F.normalize(e, dim=1)
    k = (u @ u.T + 1.0) / 2.0
    return k / k.sum(1, keepdim=True)


def pkt_loss(s: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    _same_batch(s, t)
    p, q = _cosine_kernel(_embed(t.detach())), _cosine_kernel(_embed(s))
    return (p * torch.log((p + eps) / (q + eps))).sum(1).mean()
