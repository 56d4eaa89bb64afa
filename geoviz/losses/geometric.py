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
SCOPES = ("batch", "image")
BANDWIDTHS = ("global", "perplexity")


def paired_local_features(
    s: torch.Tensor,
    t: torch.Tensor,
    m: int | None = 256,
    *,
    align: str = "pool",
    positions: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
):
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
        positions = torch.randperm(n, generator=generator, device="cpu" if generator is not None else fs.device)[:m].to(
            fs.device
        )
    return fs[positions], ft[positions]


def paired_image_clouds(
    s: torch.Tensor,
    t: torch.Tensor,
    m: int | None = 256,
    *,
    align: str = "pool",
    positions: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
):
    """One cloud per image: ``(B, n, Cs)`` and ``(B, n, Ct)``, the same ``n = min(m, H·W)`` positions
    of each image in both maps (sampled per image; ``positions`` (n,) takes the same ones in every image)."""
    s, t = align_maps(s, t, align)
    B, hw = s.shape[0], s.shape[2] * s.shape[3]
    fs = s.flatten(2).transpose(1, 2)
    ft = t.flatten(2).transpose(1, 2)
    if positions is not None:
        return fs[:, positions], ft[:, positions]
    if m is None or m >= hw:
        return fs, ft
    keys = torch.rand(B, hw, generator=generator, device="cpu" if generator is not None else fs.device).to(fs.device)
    idx = keys.argsort(dim=1)[:, :m]
    return fs.gather(1, idx[..., None].expand(-1, -1, fs.shape[2])), ft.gather(
        1, idx[..., None].expand(-1, -1, ft.shape[2])
    )


# Every kind works on a batch of clouds (G, n, C): one cloud of the whole batch (scope "batch")
# or one per image (scope "image"); the loss is the mean over clouds.
def _sq_dists(f: torch.Tensor) -> torch.Tensor:
    sq = (f * f).sum(-1)
    return (sq[..., :, None] + sq[..., None, :] - 2.0 * (f @ f.transpose(-1, -2))).clamp_min(0.0)


def _off_diagonal_mean(a: torch.Tensor) -> torch.Tensor:
    m = a.shape[-1]
    return ((a.sum((-1, -2)) - a.diagonal(dim1=-2, dim2=-1).sum(-1)) / (m * (m - 1)))[..., None, None]


def _eye(f: torch.Tensor) -> torch.Tensor:
    return torch.eye(f.shape[-2], dtype=torch.bool, device=f.device)


def perplexity_precisions(d: torch.Tensor, perplexity: float, iters: int = 40) -> torch.Tensor:
    """Per-row precisions β (G, n, 1) such that the row distribution ∝ exp(−β·d) over the other
    points has the given perplexity (exp(entropy) in nats), found by bisection on log β as t-SNE
    does. ``d`` (G, n, n) is treated as a constant. 40 halvings of the log-β range leave it known
    to about 2e-11.

    A row whose nearest distance is shared by k points (duplicates at distance 0 — positions a
    ReLU zeroes alike — or a cluster of them around a point) cannot get below perplexity k however
    large β is; its target is raised to 2k, else β runs to its cap and the student's tiny
    differences among those k points become huge logit differences (measured: a loss of ~1000 and
    gradients ~150 where a faithful student should give ~0)."""
    d = d.detach()
    n = d.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=d.device)
    off = d.masked_fill(eye, float("inf"))
    nearest = off.min(-1, keepdim=True).values
    tied = (off <= nearest + 1e-6 * (1 + nearest)).sum(-1, keepdim=True).to(d.dtype)
    target = torch.log(torch.clamp(torch.clamp(2 * tied, min=perplexity), max=n - 1 - 1e-6))
    # the diagonal far away instead of masked: exp(-β·big) = 0 and 0·big = 0 in the entropy
    d = d + eye.to(d.dtype) * 1e30
    # log β in [-12, 8]: d has mean 1, so real clouds need far less; the cap only binds for a
    # degenerate row (all distances equal), where an unbounded β would turn rounding noise into
    # one-hot distributions and huge gradients
    lo = torch.full(d.shape[:-1] + (1,), -12.0, dtype=d.dtype, device=d.device)
    hi = torch.full_like(lo, 8.0)
    for _ in range(iters):
        mid = (lo + hi) / 2
        beta = mid.exp()
        logits = -beta * d
        log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
        entropy = log_z + beta * ((logits - log_z).exp() * d).sum(-1, keepdim=True)  # H = log Z + β·E[d]
        too_flat = entropy > target  # entropy falls as β grows
        lo, hi = torch.where(too_flat, mid, lo), torch.where(too_flat, hi, mid)
    return ((lo + hi) / 2).exp()


def _relative_sq_dists(f: torch.Tensor) -> torch.Tensor:
    """Squared distances over their off-diagonal mean, the mean kept in the graph: a loss built on
    them is exactly scale-invariant and its gradient has no radial part; a detached normaliser
    lets each step shrink the cloud a little further (the loss can always be lowered by
    rescaling), until the features collapse."""
    d2 = _sq_dists(f)
    return d2 / _off_diagonal_mean(d2).clamp_min(1e-12)


def _log_neighbours(logits: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(logits.shape[-1], dtype=torch.bool, device=logits.device)
    return torch.log_softmax(logits.masked_fill(eye, float("-inf")), dim=-1).masked_fill(eye, 0.0)


def affinity_kl(
    fs: torch.Tensor,
    ft: torch.Tensor,
    *,
    affinity: str = "gaussian",
    tau: float = 0.1,
    bandwidth: str = "global",
    perplexity: float = 10.0,
) -> torch.Tensor:
    """mean_i KL(P_t,i ‖ P_s,i) of the clouds' neighbour distributions, averaged over clouds.

    Gaussian affinities on relative squared distances: ``bandwidth="global"`` uses one precision
    for the whole cloud (1, i.e. its mean squared distance); ``"perplexity"`` gives each point the
    precision that makes the teacher's distribution around it cover ``perplexity`` neighbours (as
    t-SNE calibrates its input affinities), and the student's distribution around the same point
    uses that same precision — a fixed kernel for the student, as t-SNE's output side has one, so
    the objective the gradient follows is the objective itself. (Calibrating the student's
    precisions too makes them move with every step, which the gradient cannot see: measured, the
    loss then rose from 6 to 200 and training failed.)
    """
    if affinity not in AFFINITIES:
        raise ValueError(f"unknown affinity {affinity!r}; allowed: {AFFINITIES}")
    if affinity == "cosine":
        us, ut = F.normalize(fs, dim=-1), F.normalize(ft, dim=-1)
        log_p = _log_neighbours((ut @ ut.transpose(-1, -2)) / tau).detach()
        log_q = _log_neighbours((us @ us.transpose(-1, -2)) / tau)
    else:
        rel_t, rel_s = _relative_sq_dists(ft).detach(), _relative_sq_dists(fs)
        beta = 1.0 if bandwidth == "global" else perplexity_precisions(rel_t, perplexity)
        log_p = _log_neighbours(-beta * rel_t)
        log_q = _log_neighbours(-beta * rel_s)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def cosine_pairwise(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the pairwise cosine-similarity matrices."""
    us, ut = F.normalize(fs, dim=-1), F.normalize(ft, dim=-1)
    return ((us @ us.transpose(-1, -2)) - (ut @ ut.transpose(-1, -2)).detach()).square().mean()


def knn_soft(fs: torch.Tensor, ft: torch.Tensor, k: int = 8) -> torch.Tensor:
    """Weighted squared differences of normalised distances over both clouds' kNN graphs."""
    m = fs.shape[-2]
    if not 1 <= k < m:
        raise ValueError(f"k must be in [1, {m - 1}] for {m} sampled positions, got {k}")
    eye = _eye(fs)
    dt = (_sq_dists(ft) + 1e-12).sqrt().detach()
    ds = (_sq_dists(fs) + 1e-12).sqrt()
    dt = dt / _off_diagonal_mean(dt).clamp_min(1e-12)
    ds = ds / _off_diagonal_mean(ds).clamp_min(1e-12)  # normaliser in the graph: see _neighbour_logprobs
    big = torch.finfo(dt.dtype).max
    nt = dt.masked_fill(eye, big).topk(k, dim=-1, largest=False).indices
    ns = ds.detach().masked_fill(eye, big).topk(k, dim=-1, largest=False).indices
    mask = torch.zeros(dt.shape, dtype=torch.bool, device=fs.device)
    mask.scatter_(-1, nt, True).scatter_(-1, ns, True)
    h = dt.gather(-1, nt).mean((-1, -2), keepdim=True)  # a typical neighbour distance sets the closeness scale
    w = torch.exp(-(dt / h).square()) * mask
    w = w / w.sum(-1, keepdim=True)
    return (w * (ds - dt).square()).sum(-1).mean()


def local_geometry_loss(
    s: torch.Tensor,
    t: torch.Tensor,
    kind: str = DEFAULT_KIND,
    k: int = 8,
    m: int | None = 256,
    *,
    align: str = "pool",
    affinity: str = "gaussian",
    tau: float = 0.1,
    scope: str = "batch",
    bandwidth: str = "global",
    perplexity: float = 10.0,
    positions: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Geometry loss between student ``s (B, Cs, Hs, Ws)`` and teacher ``t (B, Ct, Ht, Wt)``.

    ``scope="batch"``: one cloud of ``m`` positions sampled across the batch (a point's neighbours
    come mostly from other images: near-global structure); ``scope="image"``: one cloud per image
    of ``min(m, H·W)`` of its positions, the loss averaged over images (neighbourhoods within an
    image: local structure). ``bandwidth`` (``affinity_kl`` with Gaussian affinities): ``"global"``,
    one per cloud (its mean squared distance), or ``"perplexity"``, one per point calibrated to
    ``perplexity`` neighbours. ``k`` is the neighbourhood size of ``knn_soft``. Computed in at
    least float32 whatever the autocast dtype.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown geometric loss kind {kind!r}; allowed: {KINDS} (default {DEFAULT_KIND!r})")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; allowed: {SCOPES}")
    if bandwidth not in BANDWIDTHS:
        raise ValueError(f"unknown bandwidth {bandwidth!r}; allowed: {BANDWIDTHS}")
    if m is not None and m < 3:
        raise ValueError(f"m (sampled positions) must be >= 3, got {m}")
    s, t = full_precision(s), full_precision(t).detach()
    if scope == "batch":
        fs, ft = paired_local_features(s, t, m, align=align, positions=positions, generator=generator)
        fs, ft = fs[None], ft[None]
    else:
        fs, ft = paired_image_clouds(s, t, m, align=align, positions=positions, generator=generator)
        if fs.shape[1] < 3:
            raise ValueError(f"scope='image' needs at least 3 positions per image; the aligned maps have {fs.shape[1]}")
    if kind == "affinity_kl":
        return affinity_kl(fs, ft, affinity=affinity, tau=tau, bandwidth=bandwidth, perplexity=perplexity)
    if kind == "cosine_pairwise":
        return cosine_pairwise(fs, ft)
    return knn_soft(fs, ft, k)


class LocalGeometryLoss(nn.Module):
    """``local_geometry_loss`` with its settings held (it owns no parameters)."""

    def __init__(
        self,
        kind: str = DEFAULT_KIND,
        k: int = 8,
        m: int | None = 256,
        align: str = "pool",
        affinity: str = "gaussian",
        tau: float = 0.1,
        scope: str = "batch",
        bandwidth: str = "global",
        perplexity: float = 10.0,
    ):
        super().__init__()
        for name, value, allowed in (
            ("geometric loss kind", kind, KINDS),
            ("align mode", align, ALIGN_MODES),
            ("affinity", affinity, AFFINITIES),
            ("scope", scope, SCOPES),
            ("bandwidth", bandwidth, BANDWIDTHS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; allowed: {allowed}")
        if perplexity <= 1:
            raise ValueError(f"perplexity must be > 1 (an effective number of neighbours), got {perplexity}")
        self.kind, self.k, self.m, self.align, self.affinity, self.tau = kind, k, m, align, affinity, tau
        self.scope, self.bandwidth, self.perplexity = scope, bandwidth, perplexity

    def forward(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return local_geometry_loss(
            s,
            t,
            self.kind,
            self.k,
            self.m,
            align=self.align,
            affinity=self.affinity,
            tau=self.tau,
            scope=self.scope,
            bandwidth=self.bandwidth,
            perplexity=self.perplexity,
        )

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, k={self.k}, m={self.m}, align={self.align!r}, "
            f"scope={self.scope!r}, bandwidth={self.bandwidth!r}"
        )
