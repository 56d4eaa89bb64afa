"""Geometric regularisation of local activations (Theodorakopoulos, Fotopoulou & Economou,
Information 12(8):333, 2021): the student's local features at a layer should have the same
neighbourhood geometry as the instructor's at the paired layer.

A local feature is the C-vector at one spatial position. The paper does not publish its exact
losses (see ``shared/PAPERS.md``); these are faithful reconstructions of its description — losses
"inspired by manifold-to-manifold distance measures" that "compare the neighboring information"
with no restriction on the two widths:

``"affinity_kl"`` (default)
    Gaussian affinities between the sampled local features, normalised per row into neighbour
    distributions (SNE-style), teacher vs student compared with KL(P_t ‖ P_s). The bandwidth of
    each cloud is its mean squared pairwise distance, kept in the autograd graph, so the loss and
    its gradient are scale-invariant (no pressure to shrink or grow the features).
    ``affinity="cosine"`` uses softmax(cos / tau) instead. This is PKT made local.
``"cosine_pairwise"``
    Mean squared difference of the two pairwise cosine-similarity matrices: the pair-wise term of
    structured KD (Liu et al., CVPR 2019) applied to local features.
``"knn_soft"``
    Neighbourhood preservation: on the union of the teacher's and the student's k nearest
    neighbours of each point, the student's normalised distances must match the teacher's,
    each neighbour weighted by its closeness in the teacher. It ignores far pairs, as a
    manifold (geodesic) comparison should, and is zero when the neighbourhoods agree.

All three are invariant to orthogonal transforms and scaling of either channel space, zero when
student = teacher, and cost O(m²·C) for m sampled positions — never O((B·H·W)²). Positions of
the two maps correspond by relative spatial coordinate (``align``, see ``capture.align_maps``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import ALIGN_MODES, align_maps
from ._precision import full_precision

KINDS = ("affinity_kl", "cosine_pairwise", "knn_soft")
DEFAULT_KIND = "affinity_kl"
AFFINITIES = ("gaussian", "cosine")


def paired_local_features(s: torch.Tensor, t: torch.Tensor, m: int | None = 256, *, align: str = "pool",
                          positions: torch.Tensor | None = None, generator: torch.Generator | None = None):
    """Sample the same ``m`` positions of two aligned maps: ``(m, Cs)`` and ``(m, Ct)`` features.

    ``positions`` (indices into the flattened aligned grid B·H·W) overrides the random sample.
    """
    s, t = align_maps(s, t, align)
    fs = s.permute(0, 2, 3, 1).reshape(-1, s.shape[1])
    ft = t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    n = fs.shape[0]
    if positions is None:
        if m is None or m >= n:
            return fs, ft
        positions = torch.randperm(n, generator=generator, device="cpu" if generator is not None else fs.device)[:m].to(fs.device)
    return fs[positions], ft[positions]


def _sq_dists(f: torch.Tensor) -> torch.Tensor:
    sq = (f * f).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * (f @ f.T)).clamp_min(0.0)


def _off_diagonal_mean(a: torch.Tensor) -> torch.Tensor:
    m = a.shape[0]
    return (a.sum() - a.diagonal().sum()) / (m * (m - 1))


def _neighbour_logprobs(f: torch.Tensor, affinity: str, tau: float) -> torch.Tensor:
    m = f.shape[0]
    if affinity == "gaussian":
        d2 = _sq_dists(f)
        # the bandwidth stays in the graph: the loss is then exactly scale-invariant and its
        # gradient has no radial part; a detached bandwidth lets each step shrink the cloud a
        # little further (the loss can always be lowered by rescaling), until the features collapse
        logits = -d2 / _off_diagonal_mean(d2).clamp_min(1e-12)
    else:
        u = F.normalize(f, dim=1)
        logits = (u @ u.T) / tau
    eye = torch.eye(m, dtype=torch.bool, device=f.device)
    return torch.log_softmax(logits.masked_fill(eye, float("-inf")), dim=1).masked_fill(eye, 0.0)


def affinity_kl(fs: torch.Tensor, ft: torch.Tensor, *, affinity: str = "gaussian", tau: float = 0.1) -> torch.Tensor:
    """mean_i KL(P_t,i ‖ P_s,i) of the two clouds' neighbour distributions."""
    if affinity not in AFFINITIES:
        raise ValueError(f"unknown affinity {affinity!r}; allowed: {AFFINITIES}")
    log_p = _neighbour_logprobs(ft, affinity, tau).detach()
    log_q = _neighbour_logprobs(fs, affinity, tau)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


def cosine_pairwise(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the pairwise cosine-similarity matrices."""
    us, ut = F.normalize(fs, dim=1), F.normalize(ft, dim=1)
    return ((us @ us.T) - (ut @ ut.T).detach()).square().mean()


def knn_soft(fs: torch.Tensor, ft: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Weighted squared differences of normalised distances over both clouds' kNN graphs."""
    m = fs.shape[0]
    if not 1 <= k < m:
        raise ValueError(f"k must be in [1, {m - 1}] for {m} sampled positions, got {k}")
    eye = torch.eye(m, dtype=torch.bool, device=fs.device)
    dt = (_sq_dists(ft) + 1e-12).sqrt().detach()
    ds = (_sq_dists(fs) + 1e-12).sqrt()
    dt = dt / _off_diagonal_mean(dt).clamp_min(1e-12)
    ds = ds / _off_diagonal_mean(ds).clamp_min(1e-12)  # normaliser in the graph: see _neighbour_logprobs
    big = torch.finfo(dt.dtype).max
    nt = dt.masked_fill(eye, big).topk(k, dim=1, largest=False).indices
    ns = ds.detach().masked_fill(eye, big).topk(k, dim=1, largest=False).indices
    mask = torch.zeros(m, m, dtype=torch.bool, device=fs.device)
    mask.scatter_(1, nt, True).scatter_(1, ns, True)
    h = dt.gather(1, nt).mean()  # a typical neighbour distance sets the closeness scale
    w = torch.exp(-(dt / h).square()) * mask
    w = w / w.sum(1, keepdim=True)
    return (w * (ds - dt).square()).sum(1).mean()


def local_geometry_loss(s: torch.Tensor, t: torch.Tensor, kind: str = DEFAULT_KIND, k: int = 8, m: int | None = 256, *,
                        align: str = "pool", affinity: str = "gaussian", tau: float = 0.1,
                        positions: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Geometry loss between student ``s (B, Cs, Hs, Ws)`` and teacher ``t (B, Ct, Ht, Wt)``.

    ``m`` positions (the same relative positions in both maps) are sampled per call; ``k`` is the
    neighbourhood size of ``knn_soft``. Computed in at least float32 whatever the autocast dtype.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown geometric loss kind {kind!r}; allowed: {KINDS} (default {DEFAULT_KIND!r})")
    if m is not None and m < 3:
        raise ValueError(f"m (sampled positions) must be >= 3, got {m}")
    fs, ft = paired_local_features(full_precision(s), full_precision(t).detach(), m, align=align, positions=positions, generator=generator)
    if kind == "affinity_kl":
        return affinity_kl(fs, ft, affinity=affinity, tau=tau)
    if kind == "cosine_pairwise":
        return cosine_pairwise(fs, ft)
    return knn_soft(fs, ft, k)


class LocalGeometryLoss(nn.Module):
    """``local_geometry_loss`` with its settings held (it owns no parameters)."""

    def __init__(self, kind: str = DEFAULT_KIND, k: int = 8, m: int | None = 256, align: str = "pool", affinity: str = "gaussian", tau: float = 0.1):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown geometric loss kind {kind!r}; allowed: {KINDS}")
        if align not in ALIGN_MODES:
            raise ValueError(f"unknown align mode {align!r}; allowed: {ALIGN_MODES}")
        if affinity not in AFFINITIES:
            raise ValueError(f"unknown affinity {affinity!r}; allowed: {AFFINITIES}")
        self.kind, self.k, self.m, self.align, self.affinity, self.tau = kind, k, m, align, affinity, tau

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return local_geometry_loss(s, t, self.kind, self.k, self.m, align=self.align, affinity=self.affinity, tau=self.tau)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, k={self.k}, m={self.m}, align={self.align!r}"
