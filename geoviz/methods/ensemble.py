"""Ensembles of CNNs (paper 2, Aslam et al.): fusion rules and diversity measures.

Pure functions on member probabilities ``probs (M, N, C)`` (M members, N images, C classes):

- ``mean``: the members' probabilities averaged;
- ``vote``: majority vote of the members' top classes; a tie goes to the tied class with the
  highest mean probability (the returned scores are vote shares plus a tie-break below 1/M);
- ``weighted``: a convex combination of the members, the weights fitted on validation images by
  minimising the fused log-loss (``fit_weights``);
- ``stack``: scikit-learn's ``LogisticRegression`` on the members' concatenated probabilities,
  fitted on validation images only (``fit_stacker``).

Diversity, for every pair of members from their oracle outputs (correct / wrong per image;
Kuncheva & Whitaker 2003): the disagreement ``(N01 + N10) / N``, Yule's ``Q = (N11 N00 − N01 N10) /
(N11 N00 + N01 N10)`` and the correlation of their errors (Pearson's r of the error indicators).

``Ensemble`` is the thin class: members (any classifiers), a fusion rule, ``fit`` on validation
data, ``predict_proba`` on any other.
"""

from __future__ import annotations

import numpy as np
import torch

from .._utils import choice

FUSIONS = ("mean", "vote", "weighted", "stack")


def _as_probs(probs) -> np.ndarray:
    p = np.asarray(probs.detach().cpu() if torch.is_tensor(probs) else probs, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError(f"member probabilities must be (members, images, classes), got shape {p.shape}")
    return p


def mean_fusion(probs) -> np.ndarray:
    return _as_probs(probs).mean(0)


def vote_fusion(probs) -> np.ndarray:
    """(N, C) scores whose argmax is the majority vote, ties to the highest mean probability (a
    member's own vote is its argmax, the lowest index among its equal maxima). Scores, not
    probabilities: rows sum to 1 + 1/(2M); do not compute a log-loss on them."""
    p = _as_probs(probs)
    m, _, c = p.shape
    votes = np.eye(c)[p.argmax(2)].sum(0) / m  # (N, C) vote shares
    return votes + p.mean(0) / (2 * m)  # < 1/M: breaks ties, never overturns a vote


def weighted_fusion(probs, weights) -> np.ndarray:
    p, w = _as_probs(probs), np.asarray(weights, dtype=np.float64)
    if w.shape != (p.shape[0],) or (w < 0).any() or not np.isclose(w.sum(), 1):
        raise ValueError(f"weights must be {p.shape[0]} non-negative numbers summing to 1, got {w}")
    return np.einsum("m,mnc->nc", w, p)


def fit_weights(val_probs, val_labels) -> np.ndarray:
    """Convex weights minimising the validation log-loss of ``weighted_fusion`` (a softmax
    parametrisation, L-BFGS from equal weights)."""
    from scipy.optimize import minimize
    from scipy.special import softmax

    p, y = _as_probs(val_probs), np.asarray(val_labels)
    picked = p[:, np.arange(len(y)), y]  # (M, N): each member's probability of the true class

    def loss(theta):
        return -np.log(softmax(theta) @ picked + 1e-12).mean()

    res = minimize(loss, np.zeros(len(p)), method="L-BFGS-B")
    return softmax(res.x)


def _stack_features(probs) -> np.ndarray:
    p = _as_probs(probs)
    return p.transpose(1, 0, 2).reshape(p.shape[1], -1)  # (N, M·C): member 0's classes, then member 1's, ...


def fit_stacker(val_probs, val_labels, *, C: float = 1.0, seed: int = 0):
    """scikit-learn's multinomial ``LogisticRegression`` on the members' validation probabilities."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(
        _stack_features(val_probs), np.asarray(val_labels)
    )


def stack_fusion(probs, stacker, n_classes: int) -> np.ndarray:
    out = np.zeros((_as_probs(probs).shape[1], n_classes))
    out[:, stacker.classes_] = stacker.predict_proba(_stack_features(probs))  # a class absent from validation gets 0
    return out


def pairwise_diversity(correct) -> dict:
    """``correct`` (M, N) bool: member m right on image n. Returns (M, M) matrices
    ``disagreement``, ``q`` (Yule's Q; NaN where its denominator is 0) and ``error_correlation``
    (NaN where a member is always right or always wrong). The diagonals compare a member with
    itself (disagreement 0, Q and r 1): use ``mean_pairwise`` for the distinct pairs."""
    a = np.asarray(correct, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"correct must be (members, images), got shape {a.shape}")
    b = 1 - a
    n11, n00, n10, n01 = a @ a.T, b @ b.T, a @ b.T, b @ a.T
    n = a.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        q = (n11 * n00 - n01 * n10) / (n11 * n00 + n01 * n10)
        e = b - b.mean(1, keepdims=True)
        cov = e @ e.T
        sd = np.sqrt(np.diag(cov))
        r = cov / np.outer(sd, sd)
    return {"disagreement": (n01 + n10) / n, "q": q, "error_correlation": r}


def mean_pairwise(matrix) -> float:
    """The mean over distinct pairs (the upper triangle), NaNs left out."""
    m = np.asarray(matrix)
    iu = np.triu_indices(len(m), 1)
    vals = m[iu]
    return float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")


class Ensemble:
    """Members' probabilities fused by ``fusion``; ``fit`` (validation only) for the fitted rules."""

    def __init__(self, n_classes: int, fusion: str = "mean", *, seed: int = 0):
        choice("fusion", fusion, FUSIONS)
        self.n_classes, self.fusion, self.seed = int(n_classes), fusion, seed
        self.weights, self.stacker = None, None

    def fit(self, val_probs, val_labels) -> Ensemble:
        if self.fusion == "weighted":
            self.weights = fit_weights(val_probs, val_labels)
        elif self.fusion == "stack":
            self.stacker = fit_stacker(val_probs, val_labels, seed=self.seed)
        return self

    def predict_proba(self, probs) -> np.ndarray:
        """(N, C) fused scores (probabilities for mean, weighted and stack; vote shares for vote)."""
        if self.fusion == "mean":
            return mean_fusion(probs)
        if self.fusion == "vote":
            return vote_fusion(probs)
        if (self.fusion == "weighted" and self.weights is None) or (self.fusion == "stack" and self.stacker is None):
            raise RuntimeError(
                f"the {self.fusion!r} fusion is fitted on validation "
                "probabilities first: call .fit(val_probs, val_labels)"
            )
        if self.fusion == "weighted":
            return weighted_fusion(probs, self.weights)
        return stack_fusion(probs, self.stacker, self.n_classes)

    def predict(self, probs) -> np.ndarray:
        return self.predict_proba(probs).argmax(1)


__all__ = [
    "FUSIONS",
    "Ensemble",
    "mean_fusion",
    "vote_fusion",
    "weighted_fusion",
    "fit_weights",
    "fit_stacker",
    "stack_fusion",
    "pairwise_diversity",
    "mean_pairwise",
]
