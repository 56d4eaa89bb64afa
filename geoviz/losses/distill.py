"""Knowledge distillation and the image-level feature-transfer baselines, each equal to RepDistiller's
``distiller_zoo`` (Tian et al., ICLR 2020; github.com/HobbitLong/RepDistiller) on the same inputs —
the tests check it to 1e-6 against NumPy transcriptions of those formulas. Each is a pure function
of student and teacher tensors (the teacher side treated as a constant); ``FitNet`` owns parameters
(its regressor).

- ``kd_loss``: Hinton et al. 2015: KL(softmax(t/T) ‖ softmax(s/T)) · T², summed over classes,
  averaged over the batch.
- ``fitnet_loss`` / ``FitNet``: Romero et al. 2015: MSE between the teacher's map and a regression
  of the student's: RepDistiller's ``ConvReg`` (conv — 3×3 stride 2 when the student map is twice
  the teacher's, a 4×4 stride-2 transposed conv when half, else a valid conv that shrinks it to the
  teacher's size — then BatchNorm and ReLU).
- ``at_loss``: Zagoruyko & Komodakis 2017: mean squared difference of the L2-normalised attention
  maps mean_c(a^p), the larger map area-pooled to the smaller.
- ``sp_loss``: Tung & Mori 2019: ‖G_s − G_t‖_F² / B², G = row-normalised batch Gram matrix.
- ``rkd_loss``: Park et al. 2019: 25 · Huber(distance) + 50 · Huber(angle). Distances are divided by
  the mean of the positive ones; the Huber means run over all B² (distance) and B³ (angle) entries,
  the zero diagonal included, as RepDistiller does.
- ``pkt_loss``: Passalis & Tefas 2018: KL between the row-normalised cosine kernels (cos+1)/2 of
  teacher and student, averaged over all B² entries (RepDistiller's β = 30000 assumes that mean).

RepDistiller feeds RKD and PKT the pooled penultimate features: given a ``(B, C, H, W)`` map, these
functions average-pool it first, so a term pairing the last stage gets exactly that.
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
        raise ValueError(
            "student and teacher tensors must come from the same "
            f"batch: batch sizes {s.shape[0]} and {t.shape[0]} differ"
        )


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 4.0) -> torch.Tensor:
    _same_batch(student_logits, teacher_logits)
    if T <= 0:
        raise ValueError(f"temperature T must be > 0, got {T}")
    log_q = F.log_softmax(full_precision(student_logits) / T, dim=1)
    p = F.softmax(full_precision(teacher_logits).detach() / T, dim=1)
    return F.kl_div(log_q, p, reduction="batchmean") * T * T


def fitnet_loss(s: torch.Tensor, t: torch.Tensor, regressor: nn.Module) -> torch.Tensor:
    r = regressor(s)
    if r.shape != t.shape:
        raise ValueError(
            f"the FitNet regressor maps the student's {tuple(s.shape)} "
            f"to {tuple(r.shape)}, the teacher's is {tuple(t.shape)}"
        )
    return F.mse_loss(full_precision(r), full_precision(t).detach())


def conv_regressor(student_shape, teacher_shape) -> nn.Module:
    """RepDistiller's ``ConvReg``: student map ``(B, Cs, Hs, Ws)`` → teacher map ``(B, Ct, Ht, Wt)``."""
    (_, cs, hs, ws), (_, ct, ht, wt) = tuple(student_shape), tuple(teacher_shape)
    if hs == 2 * ht:
        conv = nn.Conv2d(cs, ct, 3, stride=2, padding=1)
    elif 2 * hs == ht:
        conv = nn.ConvTranspose2d(cs, ct, 4, stride=2, padding=1)
    elif hs >= ht and ws >= wt:
        conv = nn.Conv2d(cs, ct, (1 + hs - ht, 1 + ws - wt))
    else:
        raise ValueError(
            f"FitNet cannot regress a student map of {hs}×{ws} onto a teacher map of {ht}×{wt}: pair layers "
            f"whose student map is at least as large, or half as large"
        )
    return nn.Sequential(conv, nn.BatchNorm2d(ct), nn.ReLU())


class FitNet(nn.Module):
    """FitNet hint loss with its regressor (``conv_regressor``), sized from the two maps' shapes."""

    def __init__(self, student_shape, teacher_shape):
        super().__init__()
        self.regressor = conv_regressor(student_shape, teacher_shape)

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return fitnet_loss(s, t, self.regressor)


def _attention(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.normalize(full_precision(x).pow(p).mean(1).flatten(1), dim=1)


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


def _normalised_distances(e: torch.Tensor) -> torch.Tensor:
    """Pairwise distances (zero diagonal) over the mean of the positive ones."""
    sq = (e * e).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.T).clamp_min(1e-12).sqrt()
    d = d * (1 - torch.eye(len(e), dtype=d.dtype, device=d.device))
    return d / d[d > 0].mean()


def rkd_loss(s: torch.Tensor, t: torch.Tensor, w_dist: float = 25.0, w_angle: float = 50.0) -> torch.Tensor:
    _same_batch(s, t)
    es, et = _embed(s), _embed(t.detach())
    loss_d = F.smooth_l1_loss(_normalised_distances(es), _normalised_distances(et))

    def angles(e):
        d = F.normalize(e[None, :, :] - e[:, None, :], dim=2)  # d[j, i] = unit vector from e_j to e_i
        return torch.bmm(d, d.transpose(1, 2)).flatten()  # cos of the angle at e_j between e_i and e_k

    loss_a = F.smooth_l1_loss(angles(es), angles(et))
    return w_dist * loss_d + w_angle * loss_a


def _cosine_kernel(e: torch.Tensor, eps: float) -> torch.Tensor:
    u = e / (e.norm(dim=1, keepdim=True) + eps)
    u = torch.nan_to_num(u, nan=0.0)
    k = (u @ u.T + 1.0) / 2.0
    return k / k.sum(1, keepdim=True)


def pkt_loss(s: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    _same_batch(s, t)
    p, q = _cosine_kernel(_embed(t.detach()), eps), _cosine_kernel(_embed(s), eps)
    return (p * torch.log((p + eps) / (q + eps))).mean()
