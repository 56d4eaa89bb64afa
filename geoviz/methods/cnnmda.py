"""CNNMDA (Xuan et al., IJMS 2019): miRNA–disease association scores from a dual-branch CNN.

For a pair (miRNA i, disease j):
- the **left** branch sees the pair's biological premises as a 2 × (n_m + n_d) matrix: row 1, the
  miRNA's similarities to every miRNA and its associations with every disease; row 2, the
  disease's associations with every miRNA and its similarities to every disease;
- the **right** branch sees the two nodes' low-dimensional representations from a non-negative
  factorisation of the whole association matrix, ``A ≈ W H`` (scikit-learn's ``NMF``, rank k):
  a 2 × k matrix, ``W[i]`` over ``H[:, j]``.
Each branch is a small convolution module (a 2-row kernel joins the two rows, then 1-D
convolutions along them); their features are concatenated and a linear head scores the pair
(two logits: unknown / associated).

Everything that reads associations takes the training associations only (``A_train``: the test
fold's associations set to 0): the left rows, the NMF factors and, where the miRNA similarity is
derived from associations (``misim``, Wang et al. 2010's functional similarity), that too.

A test pair's association is never in its inputs; a training pair's must not be either, or the CNN
learns from a signal no test pair carries. The left rows hide the pair's own entry, in the
association rows and, where the miRNA similarity is derived from associations, in the similarity
row too (``MisimRows``: the miRNA's MISIM row recomputed with that one association removed; a
probe on the plain row alone tells a pair's label at AUC ~0.59 on a permuted matrix). The NMF
cannot hide one entry per pair, so pairs are *cross-fitted* (``CrossFitted``): each pair is read
through inputs built with its chunk of the associations set to 0 (rows, NMF, a derived
similarity), training and evaluation pairs alike; each chunk's factors are put in a canonical form
of their own (``canonical_factors``: components ordered by energy, balanced scale), so nothing a
chunk's pairs read was fitted on that chunk's associations. The paper factorises once, every
training association included (``PairFeatures`` alone, ``crossfit=0``): its right branch sees the
pair's association through the shared NMF; its left rows do not.

Baselines: the NMF reconstruction ``(W H)[i, j]``; a similarity-weighted neighbour score; a
logistic regression on the left branch's flattened rows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .._utils import eval_mode


def misim(A: np.ndarray, SD: np.ndarray) -> np.ndarray:
    """miRNA functional similarity from associations (Wang et al. 2010): for miRNAs i, k with
    disease sets D_i, D_k, (Σ_{d∈D_i} max_{d'∈D_k} SD[d, d'] + Σ_{d∈D_k} max_{d'∈D_i} SD[d, d'])
    / (|D_i| + |D_k|); 0 where both sets are empty, 1 on the diagonal."""
    A = np.asarray(A, dtype=bool)
    best = np.zeros(A.shape, np.float64)  # best[k, d] = max over d' ∈ D_k of SD[d, d']
    for k in np.flatnonzero(A.any(1)):
        best[k] = SD[:, A[k]].max(1)
    cross = A.astype(np.float64) @ best.T  # cross[i, k] = Σ_{d∈D_i} best[k, d]
    deg = A.sum(1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        S = (cross + cross.T) / (deg[:, None] + deg[None, :])
    S = np.nan_to_num(S, nan=0.0)
    np.fill_diagonal(S, 1.0)
    return S


class MisimRows:
    """``misim(A, SD)`` row by row, with the pair's own association hidden: ``rows(i, j)`` is row
    ``i`` of ``misim(A′, SD)`` where ``A′`` is ``A`` with ``A[i, j] = 0``, for every pair of a batch at
    once. With ``D_i`` the miRNA's diseases, removing ``j`` takes ``best[k, j]`` out of the cross sum
    ``Σ_{d∈D_i} best[k, d]``, 1 out of ``|D_i|``, and replaces ``max_{d'∈D_i} SD[d, d']`` by the
    runner-up wherever ``j`` was the maximum (top two kept per (miRNA, disease)); no row is refitted."""

    def __init__(self, A: np.ndarray, SD: np.ndarray):
        A = np.asarray(A, dtype=bool)
        self.A = torch.as_tensor(A, dtype=torch.float32)
        n_m, n_d = A.shape
        best, second = np.zeros((n_m, n_d)), np.zeros((n_m, n_d))
        arg = np.full((n_m, n_d), -1)
        for k in np.flatnonzero(A.any(1)):
            cols = np.flatnonzero(A[k])
            vals = SD[:, cols]  # (n_d, |D_k|)
            top = np.argmax(vals, 1)
            best[k], arg[k] = vals[np.arange(n_d), top], cols[top]
            if len(cols) > 1:  # the runner-up: ties keep the maximum
                second[k] = np.partition(vals, -2, axis=1)[:, -2]
        self.best, self.second, self.arg = (torch.as_tensor(a) for a in (best, second, arg))
        self.cross = self.A.double() @ self.best.T  # cross[i, k] = Σ_{d∈D_i} best[k, d]
        self.deg = self.A.double().sum(1)
        self.full = torch.as_tensor(misim(A, SD), dtype=torch.float32)

    def rows(self, i, j) -> torch.Tensor:
        """(B, n_m) float32: each pair's MISIM row of miRNA ``i`` without the association (i, j)."""
        i, j = torch.as_tensor(i).reshape(-1), torch.as_tensor(j).reshape(-1)
        out = self.full[i].clone()
        known = self.A[i, j] > 0
        if known.any():
            a, d = i[known], j[known]
            drop = torch.where(self.arg[a] == d[:, None], self.best[a] - self.second[a], 0.0)  # (b, n_d)
            cross = self.cross[a] - self.best[:, d].T  # Σ_{d'∈D_i∖{j}} best[k, d']
            term = self.cross[:, a].T - drop @ self.A.double().T  # Σ_{d'∈D_k} max_{d''∈D_i∖{j}} SD[d', d'']
            den = (self.deg[a] - 1)[:, None] + self.deg[None, :]
            S = torch.where(den > 0, (cross + term) / den.clamp_min(1e-12), 0.0)
            S[torch.arange(len(a)), a] = 1.0
            out[known] = S.float()
        return out


def canonical_factors(W: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``W``, ``H`` in a form read off the factorisation alone: components ordered by their energy
    ``‖W[:, k]‖ · ‖H[k]‖`` (largest first) and each balanced (``‖W[:, k]‖ = ‖H[k]‖``; ``W H``
    unchanged). NMF's components have no order or scale of their own; this fixes both without a
    reference factorisation (which would have seen the associations a cross-fitted chunk hides)."""
    wn, hn = np.linalg.norm(W, axis=0), np.linalg.norm(H, axis=1)
    order = np.argsort(-(wn * hn), kind="stable")
    s = np.sqrt(np.maximum(wn, 1e-12) / np.maximum(hn, 1e-12))[order]
    return W[:, order] / s, H[order] * s[:, None]


def nmf_factors(
    A_train: np.ndarray, rank: int, *, seed: int = 0, max_iter: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """``W`` (n_m, rank) and ``H`` (rank, n_d) with ``A_train ≈ W H`` (scikit-learn NMF, NNDSVDa start)."""
    from sklearn.decomposition import NMF

    model = NMF(n_components=rank, init="nndsvda", random_state=seed, max_iter=max_iter)
    W = model.fit_transform(np.asarray(A_train, dtype=np.float64))
    return W, model.components_


class PairFeatures:
    """The inputs of every pair, built on demand from one fold's training inputs."""

    def __init__(
        self,
        SM: np.ndarray,
        SD: np.ndarray,
        A_train: np.ndarray,
        W: np.ndarray,
        H: np.ndarray,
        *,
        scale: float | None = None,
        similarity_rows: MisimRows | None = None,
    ):
        self.SM = torch.as_tensor(SM, dtype=torch.float32)
        self.similarity_rows = similarity_rows  # a derived similarity: rows that hide the pair's association
        self.SD = torch.as_tensor(SD, dtype=torch.float32)
        self.A = torch.as_tensor(np.asarray(A_train), dtype=torch.float32)
        # one scale for both factors keeps W[i]·H[:, j] comparable; a cross-fitted part takes its own
        self.scale = scale or max(float(np.max(W)), float(np.max(H)), 1e-12)
        self.W = torch.as_tensor(W / self.scale, dtype=torch.float32)
        self.H = torch.as_tensor(H.T / self.scale, dtype=torch.float32)
        self.n_left = self.SM.shape[0] + self.SD.shape[0]
        self.n_right = self.W.shape[1]

    def left(self, i, j) -> torch.Tensor:
        """(B, 2, n_m + n_d): [SM[i], A[i]] over [A[:, j], SD[j]], the pair's own entry A[i, j]
        set to 0 in both rows: a training positive would otherwise carry its label in its input
        (a 1 that no test pair, masked, ever shows), and the CNN would learn that shortcut. A
        derived similarity's row is recomputed without it (``MisimRows``)."""
        i, j = torch.as_tensor(i).reshape(-1), torch.as_tensor(j).reshape(-1)
        sm = self.similarity_rows.rows(i, j) if self.similarity_rows is not None else self.SM[i]
        x = torch.stack([torch.cat([sm, self.A[i]], 1), torch.cat([self.A[:, j].T, self.SD[j]], 1)], 1)
        b = torch.arange(len(i))
        x[b, 0, self.SM.shape[0] + j] = 0
        x[b, 1, i] = 0
        return x

    def right(self, i, j) -> torch.Tensor:
        """(B, 2, rank): W[i] over H[:, j]."""
        i, j = torch.as_tensor(i), torch.as_tensor(j)
        return torch.stack([self.W[i], self.H[j]], 1)

    def pairs(self, pairs) -> torch.Tensor:
        """(B, 1, 2, n_left + n_right): both branches' inputs side by side, as ``CNNMDA`` takes them."""
        p = torch.as_tensor(np.asarray(pairs), dtype=torch.long).reshape(-1, 2)
        return torch.cat([self.left(p[:, 0], p[:, 1]), self.right(p[:, 0], p[:, 1])], 2)[:, None]


class CrossFitted:
    """Pair inputs in which no pair's association is in its own inputs, training pair or not: every
    pair (i, j) gets a chunk ``chunk[i, j]`` (uniform at random over ``chunks``), and is read
    through inputs built from the training associations with that chunk's associations set to 0:
    its rows, its NMF (at ``features``' rank, in ``canonical_factors``' form and scaled by its own
    largest factor) and, where the miRNA similarity is derived from associations, ``similarity(A)``
    (e.g. ``lambda A: MisimRows(A, SD)``, or a function returning a matrix). A known association
    sits in one chunk and is hidden from everything that chunk's pairs read, the chunk's
    factorisation, its order, scale and similarity included: flipping an association changes no
    input of its chunk's pairs (tested). An unknown pair is 0 in all. ``alignment``: per chunk,
    each component's cosine with the shared factorisation's in the same canonical form (a
    diagnostic: how consistently the chunks order their components; nothing is fitted on it).
    The paper factorises once, with every training association in it (``PairFeatures`` alone).
    Same interface as ``PairFeatures``: ``left``, ``pairs``, ``n_left``, ``n_right``."""

    def __init__(self, features: PairFeatures, chunks: int, *, seed: int = 0, similarity=None):
        A = features.A.numpy().astype(np.float64)
        self.chunk = torch.as_tensor(np.random.default_rng(seed).integers(0, chunks, A.shape))
        self.n_left, self.n_right, self.parts, self.alignment = features.n_left, features.n_right, [], []
        _, H_shared = canonical_factors(features.W.numpy().astype(np.float64), features.H.numpy().T.astype(np.float64))
        for c in range(chunks):
            hidden = np.where(self.chunk.numpy() == c, 0.0, A)
            W, H = canonical_factors(*nmf_factors(hidden, features.n_right, seed=seed))
            self.alignment.append(_row_cosines(H, H_shared))
            sim = similarity(hidden) if similarity is not None else features.SM.numpy()
            rows = sim if isinstance(sim, MisimRows) else None
            SM = rows.full.numpy() if rows is not None else sim
            self.parts.append(PairFeatures(SM, features.SD.numpy(), hidden, W, H, similarity_rows=rows))

    def _by_chunk(self, read, i, j) -> torch.Tensor:
        """``read(part, i, j)`` for every pair, each through its chunk's part."""
        i, j = torch.as_tensor(i).reshape(-1), torch.as_tensor(j).reshape(-1)
        if len(i) == 0:
            return read(self.parts[0], i, j)
        chunk = self.chunk[i, j]
        out = None
        for c, part in enumerate(self.parts):
            idx = torch.nonzero(chunk == c).flatten()
            if len(idx):
                x = read(part, i[idx], j[idx])
                if out is None:
                    out = x.new_empty((len(i), *x.shape[1:]))
                out[idx] = x
        return out

    def left(self, i, j) -> torch.Tensor:
        return self._by_chunk(PairFeatures.left, i, j)

    def right(self, i, j) -> torch.Tensor:
        return self._by_chunk(PairFeatures.right, i, j)

    def pairs(self, pairs) -> torch.Tensor:
        p = torch.as_tensor(np.asarray(pairs), dtype=torch.long).reshape(-1, 2)
        return self._by_chunk(lambda part, i, j: part.pairs(torch.stack([i, j], 1)), p[:, 0], p[:, 1])


def _row_cosines(H: np.ndarray, H_ref: np.ndarray) -> np.ndarray:
    """Cosine similarity of each component (row of ``H``) with its reference partner."""
    return (H * H_ref).sum(1) / np.maximum(np.linalg.norm(H, axis=1) * np.linalg.norm(H_ref, axis=1), 1e-12)


class CNNMDA(nn.Module):
    """The dual-branch CNN. Input (B, 1, 2, n_left + n_right), split at ``n_left``."""

    def __init__(self, n_left: int, n_right: int, *, channels: int = 16, hidden: int = 64, dropout: float = 0.3):
        super().__init__()
        self.n_left, self.n_right = n_left, n_right
        c = channels
        self.left = nn.Sequential(
            nn.Conv2d(1, c, (2, 8), stride=(1, 2)),
            nn.ReLU(inplace=True),
            nn.MaxPool2d((1, 4), ceil_mode=True),
            nn.Conv2d(c, 2 * c, (1, 5), padding=(0, 2)),
            nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d((1, 8)),
            nn.Flatten(),
        )
        k = min(3, n_right)
        self.right = nn.Sequential(
            nn.Conv2d(1, c, (2, k), padding=(0, k // 2)),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, 2 * c, (1, 3), padding=(0, 1)),
            nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d((1, 4)),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(2 * c * 12, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, 2)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The fused pair embedding (before the head): the left and right branches' features."""
        return torch.cat([self.left(x[..., : self.n_left]), self.right(x[..., self.n_left :])], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@torch.no_grad()
def score_pairs(model: CNNMDA, features: PairFeatures, pairs, *, batch_size: int = 4096, device="cpu") -> np.ndarray:
    """P(associated) for every pair, in batches (inputs built per batch, so memory stays bounded)."""
    pairs = np.asarray(pairs).reshape(-1, 2)
    out = []
    with eval_mode(model):
        for s in range(0, len(pairs), batch_size):
            x = features.pairs(pairs[s : s + batch_size]).to(device)
            out.append(torch.softmax(model(x).float(), 1)[:, 1].cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def nmf_scores(W: np.ndarray, H: np.ndarray, pairs) -> np.ndarray:
    p = np.asarray(pairs).reshape(-1, 2)
    return np.einsum("nk,kn->n", W[p[:, 0]], H[:, p[:, 1]])


def neighbour_scores(SM: np.ndarray, SD: np.ndarray, A_train: np.ndarray, pairs) -> np.ndarray:
    """The mean of two similarity-weighted votes: how strongly the miRNA's similar miRNAs are
    associated with the disease, and the disease's similar diseases with the miRNA (self-similarity
    left out, each row's weights summing to 1)."""
    A = np.asarray(A_train, dtype=np.float64)
    sm, sd = SM.astype(np.float64).copy(), SD.astype(np.float64).copy()
    np.fill_diagonal(sm, 0)
    np.fill_diagonal(sd, 0)
    sm /= np.maximum(sm.sum(1, keepdims=True), 1e-12)
    sd /= np.maximum(sd.sum(1, keepdims=True), 1e-12)
    p = np.asarray(pairs).reshape(-1, 2)
    votes = (sm @ A + A @ sd.T) / 2  # every pair's two votes at once: n_m × n_d, cheaper than gathering rows per pair
    return votes[p[:, 0], p[:, 1]]


def auc_aupr(scores, labels) -> dict:
    """ROC AUC and average precision (scikit-learn) of scores against 0/1 labels."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if y.min() == y.max():
        raise ValueError("AUC needs both associated and unknown pairs among the scored ones")
    return {"auc": float(roc_auc_score(y, s)), "aupr": float(average_precision_score(y, s))}


__all__ = [
    "misim",
    "MisimRows",
    "nmf_factors",
    "canonical_factors",
    "PairFeatures",
    "CrossFitted",
    "CNNMDA",
    "score_pairs",
    "nmf_scores",
    "neighbour_scores",
    "auc_aupr",
]
