"""Geometry against independent computations (scikit-learn, NumPy)."""

import numpy as np
import pytest
import torch
from hsic_reference import _unbiased_hsic_numpy
from sklearn.metrics import pairwise_distances as sk_pairwise
from sklearn.neighbors import NearestNeighbors

from geoviz.geometry import angle_matrix, class_means, knn, knn_agreement, linear_cka, pairwise_distances

rng = np.random.default_rng(0)
X = rng.normal(size=(257, 12)).astype(np.float32)
Y = rng.normal(size=(61, 12)).astype(np.float32)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pairwise_distances_match_sklearn_in_tiny_chunks(metric):
    d = pairwise_distances(torch.from_numpy(X), torch.from_numpy(Y), metric, chunk_bytes=4096)
    assert d.shape == (257, 61) and d.dtype == torch.float32
    assert np.allclose(d.numpy(), sk_pairwise(X, Y, metric=metric), atol=1e-5)
    self_d = pairwise_distances(X, metric=metric, chunk_bytes=10_000).numpy()
    assert np.allclose(self_d, sk_pairwise(X, metric=metric), atol=1e-5) and np.all(np.diag(self_d) == 0)


def test_float64_keeps_small_distances():
    base = np.full((2, 4), 1e4)
    base[1, 0] += 1e-3
    d = pairwise_distances(torch.from_numpy(base.astype(np.float64)))
    assert abs(d[0, 1].item() - 1e-3) < 1e-9


def test_cosine_zero_vector_has_distance_one_like_sklearn():
    z = np.vstack([np.zeros(3), [1.0, 2, 3]]).astype(np.float32)
    assert np.allclose(pairwise_distances(z, metric="cosine").numpy()[0, 1], sk_pairwise(z, metric="cosine")[0, 1])


def test_pairwise_refuses_huge_results_and_bad_input():
    with pytest.raises(MemoryError, match="distance matrix needs"):
        pairwise_distances(X, max_bytes=1000)
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        pairwise_distances(X, metric="manhattan")
    with pytest.raises(ValueError, match=r"\(N, C\) points"):
        pairwise_distances(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="same width"):
        pairwise_distances(X, Y[:, :5])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_is_exact(metric):
    d, i = knn(torch.from_numpy(X), 7, metric, chunk_bytes=5000)
    sd, si = NearestNeighbors(n_neighbors=8, metric=metric, algorithm="brute").fit(X).kneighbors(X)
    assert np.array_equal(i.numpy(), si[:, 1:]) and np.allclose(d.numpy(), sd[:, 1:], atol=1e-5)
    d2, i2 = knn(X, 3, y=Y)
    sd2, si2 = NearestNeighbors(n_neighbors=3).fit(Y).kneighbors(X)
    assert np.array_equal(i2.numpy(), si2)
    _, own = knn(X, 4, exclude_self=False)
    assert np.array_equal(own[:, 0].numpy(), np.arange(len(X)))
    with pytest.raises(ValueError, match=r"k must be a whole number in \[1, 256\]"):
        knn(X, 257)


def _jaccard_numpy(a, b, k):
    na = NearestNeighbors(n_neighbors=k + 1).fit(a).kneighbors(a, return_distance=False)[:, 1:]
    nb = NearestNeighbors(n_neighbors=k + 1).fit(b).kneighbors(b, return_distance=False)[:, 1:]
    return np.mean([len(set(p) & set(q)) / len(set(p) | set(q)) for p, q in zip(na, nb)])


def test_knn_agreement_matches_numpy_jaccard_across_widths():
    B = (X @ rng.normal(size=(12, 30)) + 0.5 * rng.normal(size=(257, 30))).astype(np.float32)
    got = knn_agreement(torch.from_numpy(X), torch.from_numpy(B), 8).item()
    assert abs(got - _jaccard_numpy(X, B, 8)) < 1e-12
    assert knn_agreement(X, X * 3.0 + 1.0, 8).item() == 1.0
    per_point = knn_agreement(X, B, 8, reduction="none")
    assert per_point.shape == (257,) and abs(per_point.mean().item() - got) < 1e-12
    with pytest.raises(ValueError, match="same points"):
        knn_agreement(X, Y, 5)


def _cka_numpy(x, y):
    """CKA from centred Gram matrices (the kernel form, independent of the feature-space code)."""
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))


def test_linear_cka_matches_the_gram_formula_and_its_invariances():
    x, y = X.astype(np.float64), (X @ rng.normal(size=(12, 5))).astype(np.float64) + rng.normal(size=(257, 5))
    assert abs(linear_cka(x, y).item() - _cka_numpy(x, y)) < 1e-10
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert abs(linear_cka(x, 2.5 * x @ q).item() - 1.0) < 1e-10
    with pytest.raises(ValueError, match="zero variance"):
        linear_cka(x, np.ones((257, 3)))


def test_angle_matrix_in_degrees():
    v = rng.normal(size=(6, 4))
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    ref = np.degrees(np.arccos(np.clip(u @ u.T, -1, 1)))
    np.fill_diagonal(ref, 0)
    a = angle_matrix(torch.from_numpy(v))
    assert a.dtype == torch.float64 and np.allclose(a.numpy(), ref, atol=1e-9)
    assert angle_matrix(np.array([[1.0, 0], [0, 1], [-1, 0]]))[0].tolist() == [0.0, 90.0, 180.0]
    with pytest.raises(ValueError, match=r"zero vector is undefined: rows \[1\]"):
        angle_matrix(np.array([[1.0, 0], [0, 0]]))


def test_class_means():
    labels = rng.integers(0, 4, size=257)
    m = class_means(torch.from_numpy(X), torch.from_numpy(labels), num_classes=5)
    for c in range(4):
        assert np.allclose(m[c].numpy(), X[labels == c].mean(0), atol=1e-6)
    assert torch.isnan(m[4]).all()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        class_means(X, labels, num_classes=3)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _brute_force(x, y, k, metric, same, exclude_self):
    """float64 distances from the differences, neighbours ordered by (distance, index)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    if metric == "cosine":
        unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)  # noqa: E731
        D = ((unit(x)[:, None] - unit(y)[None]) ** 2).sum(2) / 2  # = 1 − cos, with less rounding near 0
        D[np.abs(x).max(1) == 0] = 1
        D[:, np.abs(y).max(1) == 0] = 1
    else:
        D = np.sqrt(((x[:, None] - y[None]) ** 2).sum(2))
    if same:
        np.fill_diagonal(D, np.inf if exclude_self else -1)
    idx = np.array([np.lexsort((np.arange(len(r)), r))[:k] for r in D])
    return np.take_along_axis(D, idx, 1), idx


def _hard_cloud(metric, zero_vector=True):
    r = np.random.default_rng(3)
    x = r.normal(size=(500, 24)) * 0.01 + 50.0  # far from the origin: the expansion ||x||² + ||y||² − 2x·y cancels
    if metric == "euclidean":  # lattice points: many exactly equal distances, broken by index (cosine's ties
        x[:40, :3] = r.integers(0, 3, size=(40, 3))  # by symmetry are not exact in floating point)
        x[:40, 3:] = 50.0
    x[100:112] = x[7]  # duplicates
    x[200:205] = x[9] * np.array([1.0, 2.0, 0.5, 4.0, 8.0])[:, None]  # parallel: cosine ties
    x[300] = 1e4  # an outlier
    if metric == "cosine" and zero_vector:
        x[301] = 0.0  # at cosine distance 1 from everything
    return x.astype(np.float32)


BACKENDS = [("cpu", "torch"), ("cpu", "faiss")] + ([("cuda", "torch")] if torch.cuda.is_available() else [])


@pytest.mark.parametrize(("device", "backend"), BACKENDS)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_knn_float32_candidates_reranked_in_float64_are_exact_on_hard_clouds(metric, device, backend):
    x = _hard_cloud(metric, zero_vector=backend == "torch")  # faiss has no place for a zero vector's cosine
    y = x[::3] + np.float32(0.001)
    for margin in (None, 0, 3):  # margin 0: most rows are not certified and take the float64 path
        for exclude_self in (True, False):
            d, i = knn(
                torch.from_numpy(x).to(device),
                12,
                metric,
                exclude_self=exclude_self,
                margin=margin,
                chunk_bytes=200_000,
                backend=backend,
            )
            want_d, want_i = _brute_force(x, x, 12, metric, True, exclude_self)
            assert np.array_equal(i.cpu().numpy(), want_i), (metric, margin, exclude_self)
            np.testing.assert_allclose(d.cpu().numpy(), np.maximum(want_d, 0), rtol=1e-6, atol=1e-6)
        d, i = knn(
            torch.from_numpy(x).to(device), 5, metric, y=torch.from_numpy(y).to(device), margin=margin, backend=backend
        )
        assert np.array_equal(i.cpu().numpy(), _brute_force(x, y, 5, metric, False, True)[1])
        few = x[95:102]  # under 20 queries faiss sums squared differences instead of its sgemm path
        _, i = knn(torch.from_numpy(few).to(device), 5, metric, y=torch.from_numpy(x).to(device), margin=margin)
        assert np.array_equal(i.cpu().numpy(), _brute_force(few, x, 5, metric, False, True)[1])
    _, own = knn(torch.from_numpy(x).to(device), 3, metric, exclude_self=False, backend=backend)
    assert (own[:, 0].cpu().numpy() == np.arange(len(x))).all()  # itself first, before its duplicates


def test_knn_backends_agree_on_a_duplicated_cloud_and_refuse_what_they_cannot_do():
    r = np.random.default_rng(5)
    x = np.repeat(r.normal(size=(60, 16)).astype(np.float32), 30, axis=0)  # each point 30 times: more than k + margin
    for exclude_self in (True, False):
        want = _brute_force(x, x, 10, "euclidean", True, exclude_self)[1]
        for backend in ("torch", "faiss"):
            _, i = knn(x, 10, exclude_self=exclude_self, backend=backend)
            assert np.array_equal(i.numpy(), want), (backend, exclude_self)
    z = x.copy()
    z[3] = 0.0
    with pytest.raises(ValueError, match="zero vectors under the cosine metric"):
        knn(z, 3, "cosine", backend="faiss")
    assert np.array_equal(knn(z, 3, "cosine")[1].numpy(), _brute_force(z, z, 3, "cosine", True, True)[1])  # auto: torch
    with pytest.raises(ValueError, match="unknown backend .annoy."):
        knn(x, 3, backend="annoy")
    with pytest.raises(ValueError, match="x holds NaN or infinite values"):
        knn(np.r_[x[:5], [[np.nan] * 16]], 2)
    grad = torch.from_numpy(x[:50]).requires_grad_()
    assert np.array_equal(knn(grad, 3)[1].numpy(), _brute_force(x[:50], x[:50], 3, "euclidean", True, True)[1])


def test_knn_float64_input_keeps_small_distances_next_to_a_large_offset():
    base = np.full((6, 4), 1e6)
    base[:, 0] += np.array([0, 1e-4, 3e-4, 7e-4, 1.5e-3, 3.1e-3])
    d, i = knn(torch.from_numpy(base), 2)
    want_d, want_i = _brute_force(base, base, 2, "euclidean", True, True)
    assert np.array_equal(i.numpy(), want_i) and np.allclose(d.numpy(), want_d, rtol=1e-6)


def test_minibatch_cka_matches_summed_unbiased_hsic_and_known_invariances():
    from geoviz.geometry import MinibatchCKA

    r = np.random.default_rng(4)
    base = r.normal(size=(160, 20))
    layers_a = [base @ r.normal(size=(20, w)) + 0.3 * r.normal(size=(160, w)) for w in (8, 30)]
    layers_b = [np.tanh(base[:, :10]), r.normal(size=(160, 12)), np.c_[base, base[:, :3] ** 2]]
    cka = MinibatchCKA(gram_dtype=torch.float64)
    for s in range(0, 160, 32):
        cka.update(
            [
                torch.from_numpy(a[s : s + 32]).float().reshape(32, 2, -1)
                if a.shape[1] % 2 == 0
                else torch.from_numpy(a[s : s + 32]).float()
                for a in layers_a
            ],
            [torch.from_numpy(b[s : s + 32]).float() for b in layers_b],
        )
    got = cka.value().numpy()
    x32 = lambda m: m.astype(np.float32).astype(np.float64)  # noqa: E731  (the features went in as float32)
    for p, a in enumerate(layers_a):
        for q, b in enumerate(layers_b):

            def hsic(u, v):
                return sum(_unbiased_hsic_numpy(x32(u[s : s + 32]), x32(v[s : s + 32])) for s in range(0, 160, 32))

            assert got[p, q] == pytest.approx(hsic(a, b) / np.sqrt(hsic(a, a) * hsic(b, b)), rel=1e-6, abs=1e-9)
    # a layer against itself is 1; orthogonal maps and isotropic scaling leave CKA at 1; a general invertible map does
    # not
    X = r.normal(size=(256, 16))
    Q, _ = np.linalg.qr(r.normal(size=(16, 16)))
    M = np.diag(np.linspace(0.05, 5, 16)) @ r.normal(size=(16, 16))
    c = MinibatchCKA()
    for s in range(0, 256, 64):
        xs = X[s : s + 64]
        c.update([torch.from_numpy(xs)], [torch.from_numpy(f) for f in (xs, 3.0 * xs @ Q, xs @ M)])
    same, rotated, general = c.value()[0].tolist()
    assert same == pytest.approx(1.0) and rotated == pytest.approx(1.0) and general < 0.95
    # unbiased: independent features score near 0 (a biased per-batch estimate would not)
    c, g = MinibatchCKA(), torch.Generator().manual_seed(0)
    for _ in range(20):
        c.update(
            [torch.randn(64, 64, dtype=torch.float64, generator=g)],
            [torch.randn(64, 64, dtype=torch.float64, generator=g)],
        )
    assert abs(float(c.value()[0, 0])) < 0.03
    with pytest.raises(ValueError, match="at least 4"):
        MinibatchCKA().update([torch.randn(3, 5)], [torch.randn(3, 5)])


def test_minibatch_cka_in_float32_grams_stays_close_to_float64_on_post_relu_maps():
    """Post-ReLU feature maps: large positive means over a small spread, where float32 Gram products
    of uncentred features lose digits (1.7e-6 relative here); centred ones stay within 1e-7 of float64."""
    from geoviz.geometry import MinibatchCKA

    r = np.random.default_rng(7)
    base = r.normal(size=(192, 6))
    maps_a = [np.maximum(0, 40 + base @ r.normal(size=(6, 512)) + r.normal(size=(192, 512))) for _ in range(2)]
    maps_b = [
        np.maximum(0, 25 + np.tanh(base) @ r.normal(size=(6, 300)) + 2 * r.normal(size=(192, 300))) for _ in range(3)
    ]
    fast, exact = MinibatchCKA(), MinibatchCKA(gram_dtype=torch.float64)
    for s in range(0, 192, 48):
        fa, fb = (
            [torch.from_numpy(m[s : s + 48]).float() for m in maps_a],
            [torch.from_numpy(m[s : s + 48]).float() for m in maps_b],
        )
        fast.update(fa, fb), exact.update(fa, fb)
    want = np.empty((2, 3))
    for p, a in enumerate(
        maps_a
    ):  # the NumPy transcription on the uncentred float64 features: centring changes nothing
        for q, b in enumerate(maps_b):
            a32, b32 = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
            hsic = lambda u, v: sum(_unbiased_hsic_numpy(u[s : s + 48], v[s : s + 48]) for s in range(0, 192, 48))  # noqa: E731
            want[p, q] = hsic(a32, b32) / np.sqrt(hsic(a32, a32) * hsic(b32, b32))
    np.testing.assert_allclose(exact.value().numpy(), want, rtol=1e-9)
    np.testing.assert_allclose(fast.value().numpy(), want, rtol=1e-7)  # uncentred float32 Grams: 1.7e-6 off
    with pytest.raises(ValueError, match="same images"):
        MinibatchCKA().update([torch.randn(8, 5)], [torch.randn(6, 5)])
    with pytest.raises(ValueError, match="no batch yet"):
        MinibatchCKA().value()
