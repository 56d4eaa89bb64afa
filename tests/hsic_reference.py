"""The unbiased HSIC estimator of Song et al. (2012), transcribed in NumPy from the paper, and linear
CKA built from it: the golden values for geoviz's minibatch CKA."""

import numpy as np


def _unbiased_hsic_numpy(X, Y):
    """Song et al. (2012), transcribed: linear kernels, diagonals zeroed."""
    n = len(X)
    K, L = X @ X.T, Y @ Y.T
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return (np.trace(K @ L) + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))


def minibatch_cka_numpy(A, B, batches):
    """Σ HSIC(A, B) / √(Σ HSIC(A, A) · Σ HSIC(B, B)) over the given row batches, features flattened."""
    A, B = A.reshape(len(A), -1).astype(np.float64), B.reshape(len(B), -1).astype(np.float64)
    h = lambda u, v: sum(_unbiased_hsic_numpy(u[b], v[b]) for b in batches)  # noqa: E731
    return h(A, B) / np.sqrt(h(A, A) * h(B, B))
