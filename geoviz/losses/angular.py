"""The Inter-Class Angular Loss (Hui, Li, Gong, Fang, Zhou & Yang, AAAI 2019).

With unit class vectors ŵ_i (``NormalizedLinear``), ``ical_loss = λ / C² · ‖Σ_i ŵ_i‖²``
``= λ / C² · (C + Σ_{i≠j} cos θ_ij)``, as in the authors' code: it pushes the class vectors apart
and is minimal (0) when they sum to zero.

``pairs="confused"`` is a confusion-weighted variant, our reconstruction: FICAL (Wei, Chang, Xie,
Zheng, Gong, Zhang & Ma, "Focal Inter-Class Angular Loss for Image Classification", VCIP 2019,
doi:10.1109/VCIP47243.2019.8965889) "introduces the confusion rate-weighted cosine distance as the
similarity measurement between categories", "dynamically evaluated during each iteration"; its
formula is not public (the abstract is all we could read). Here pair (i, j) gets weight
``w_ij = (1 + c_ij / mean(c)) / 2`` from its running confusion rate c_ij, so weights average 1 (λ
keeps its meaning) and every pair keeps at least half its all-pairs weight. Weights proportional to
confusion alone were tried first and fail: pairs nobody confuses get weight 0, the minimum then lets
their class vectors collapse onto each other, and early in training (one class absorbs most
predictions) the network stayed near chance (18% vs 56% for CE on the quick shapes10 run).

``pairs="confused_capped"`` bounds that weighting: ``w_ij = min((1 + c_ij / mean(c)) / 2, cap)``
(cap 2 by default), rescaled to average 1 — so one pair that dominates the confusion (as early in
training) cannot take over the loss. Both weightings share a flaw, measured: with unequal weights
the minimum of Σ w_ij cos θ_ij is no longer the regular simplex; it pulls the low-weight pairs
together (optimising 10 unit vectors in 32-d alone: smallest angle 79° for ICAL, 27° weighted,
25° capped), and the loss can go below zero.

``pairs="confused_hinge"`` keeps ICAL's term whole and adds a bounded push on confused pairs that
only acts while a pair is closer than the simplex angle:
``λ/C² · (‖Σ ŵ_i‖² + Σ_{i≠j} c̃_ij · relu(cos θ_ij + 1/(C−1)))``, ``c̃_ij = min(c_ij / mean(c), cap)``.
Both parts are ≥ 0 and zero at the simplex, so its minimum is ICAL's (our construction, a
reconstruction of the FICAL idea without its flaw).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.heads import NormalizedLinear, use_normalized_head

PAIRS = ("all", "confused", "confused_capped", "confused_hinge")
__all__ = ["NormalizedLinear", "use_normalized_head", "ical_loss", "PAIRS"]


def ical_loss(
    weight: torch.Tensor,
    lam: float = 5.0,
    *,
    pairs: str = "all",
    confusion: torch.Tensor | None = None,
    cap: float = 2.0,
) -> torch.Tensor:
    """λ/C² ‖Σ ŵ_i‖² for the rows of ``weight`` (C, D); the confusion-weighted ``pairs`` need
    ``confusion``, a (C, C) symmetric matrix of pair confusion rates."""
    if pairs not in PAIRS:
        raise ValueError(f"unknown pairs {pairs!r}; allowed: {PAIRS}")
    if weight.dim() != 2 or weight.shape[0] < 2:
        raise ValueError(f"ical_loss needs class vectors (C, D) with C >= 2, got shape {tuple(weight.shape)}")
    norms = weight.norm(dim=1)
    if (norms == 0).any():
        raise ValueError(
            f"class vectors {(norms == 0).nonzero()[:, 0].tolist()} are zero: their direction is undefined"
        )
    w = F.normalize(weight.float() if weight.dtype != torch.float64 else weight, dim=1)
    c = w.shape[0]
    if pairs == "all":
        return lam / c**2 * w.sum(0).square().sum()
    if confusion is None or tuple(confusion.shape) != (c, c):
        raise ValueError(f"pairs={pairs!r} needs a ({c}, {c}) confusion matrix")
    off = ~torch.eye(c, dtype=torch.bool, device=w.device)
    rates = confusion.to(w).clamp_min(0) * off
    mean = rates[off].mean()
    if pairs == "confused_hinge":
        push = (rates / mean).clamp(max=cap) if mean > 0 else torch.zeros_like(rates)
        hinge = torch.relu(w @ w.T + 1.0 / (c - 1)) * off
        return lam / c**2 * (w.sum(0).square().sum() + (push * hinge).sum())
    weights = 0.5 * (1.0 + rates / mean) * off if mean > 0 else off.to(w)  # no confusion seen yet: all pairs alike
    if pairs == "confused_capped":
        weights = weights.clamp(max=cap)
        weights = weights / weights[off].mean()
    cos = w @ w.T
    return lam / c**2 * (c + (weights * cos).sum())
