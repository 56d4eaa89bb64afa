"""geoviz.projection: UMAP on an exact or approximate neighbour graph, PCA, and which graph a call uses."""

import sys
import types

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from geoviz import projection
from geoviz.projection import EXACT_KNN_UP_TO, Embedding, as_embedding, knn_graph, project

umap = pytest.importorskip("umap")
X = np.random.default_rng(0).normal(size=(300, 12)).astype(np.float32)
X[:150] += 3.0  # two clusters


def test_exact_graph_is_scikit_learns_exact_neighbours(monkeypatch):
    graphs = []

    class Recording(umap.UMAP):
        def __init__(self, **kw):
            graphs.append(kw["precomputed_knn"])
            super().__init__(**kw)

    monkeypatch.setattr(umap, "UMAP", Recording)
    out = project(X, "umap", seed=3, knn="exact")
    dist, idx = NearestNeighbors(n_neighbors=15, algorithm="brute").fit(X.astype(np.float64)).kneighbors()
    got_idx, got_dist, _ = graphs[0]
    assert (got_idx[:, 0] == np.arange(len(X))).all() and (got_dist[:, 0] == 0).all()  # itself first, as UMAP expects
    assert np.array_equal(got_idx[:, 1:], idx[:, :14])
    np.testing.assert_allclose(got_dist[:, 1:], dist[:, :14], rtol=1e-5)
    assert out.shape == (300, 2) and out.dtype == np.float32
    assert abs(out[:150].mean(0) - out[150:].mean(0)).max() > 1.0  # the two clusters stay apart
    assert isinstance(out, Embedding) and out.graph == "exact 15-NN graph" and out[:10].graph == out.graph
    small = project(X, "umap", seed=3, knn="approximate", n_neighbors=8)
    assert graphs[1] == (None, None, None)  # umap-learn searches on its own
    assert small.graph == "exact 8-NN graph (umap-learn, all pairs)"  # below 4,096 points it computes every pair
    assert project(X[:5], "umap", knn="exact").graph == "exact 4-NN graph"  # k = N − 1 when N is small
    assert project(X, "pca").graph == "" and as_embedding(np.zeros((3, 2)), "g").graph == "g"


def test_approximate_graph_is_umap_learns_own_search():
    want = umap.UMAP(n_neighbors=15, min_dist=0.1, random_state=4).fit_transform(X)
    np.testing.assert_allclose(project(X, "umap", seed=4, knn="approximate"), want, rtol=1e-5, atol=1e-5)


def test_auto_is_exact_up_to_the_threshold_and_nndescent_above(monkeypatch):
    assert knn_graph(EXACT_KNN_UP_TO) == "exact" and knn_graph(EXACT_KNN_UP_TO + 1) == "approximate"
    assert knn_graph(10**6, "exact") == "exact" and knn_graph(10, "approximate") == "approximate"
    monkeypatch.setattr(projection.importlib.util, "find_spec", lambda name: None)
    assert knn_graph(10**6, device="cuda") == "exact"  # a GPU without cuML: the exact graph in torch
    monkeypatch.setattr(projection.importlib.util, "find_spec", lambda name: object() if name == "cuml" else None)
    assert knn_graph(10**6, device="cuda") == "cuml" and knn_graph(10**6, "exact", device="cuda") == "exact"
    with pytest.raises(ValueError, match="unknown knn graph 'fast'"):
        project(X, knn="fast")


def test_nndescent_graph_above_umaps_all_pairs_size(monkeypatch):
    """Above 4,096 points umap-learn runs NN-descent (its own threshold, read from its source, so a
    new umap-learn that moves it fails here); the embedding says so. The layout is stubbed: its
    numba compilation would cost 40 s of the suite."""
    import inspect

    assert "< 4096" in inspect.getsource(umap.UMAP.fit)
    assert projection._UMAP_ALL_PAIRS_BELOW == 4096

    class Stub(umap.UMAP):
        def fit_transform(self, x, *a, **kw):
            assert self.precomputed_knn == (None, None, None)  # umap-learn's own search
            return np.zeros((len(x), 2))

    monkeypatch.setattr(umap, "UMAP", Stub)
    big = np.zeros((4096, 6), np.float32)
    assert project(big, "umap", knn="approximate").graph == "approximate 15-NN graph (NN-descent)"
    assert project(big[:4095], "umap", knn="approximate").graph == "exact 15-NN graph (umap-learn, all pairs)"


def test_cuml_umap_gets_the_settings_and_its_gpu_array_comes_back(monkeypatch):
    seen = {}

    class FakeUMAP:  # cuML's interface: settings in the constructor, a device array from fit_transform
        def __init__(self, n_neighbors, min_dist, metric, random_state, n_epochs, build_algo="auto"):
            seen.update(n_neighbors=n_neighbors, min_dist=min_dist, metric=metric, random_state=random_state)
            seen.update(n_epochs=n_epochs, build_algo=build_algo)

        def fit_transform(self, x):
            seen["rows"] = len(x)
            return types.SimpleNamespace(get=lambda: np.ones((len(x), 2), np.float64))

    cuml = types.ModuleType("cuml")
    cuml.manifold = types.SimpleNamespace(UMAP=FakeUMAP)
    monkeypatch.setitem(sys.modules, "cuml", cuml)
    monkeypatch.setitem(sys.modules, "cuml.manifold", cuml.manifold)
    out = projection._cuml_umap(torch.from_numpy(X), 9, 0.2, "euclidean", 5, None)
    assert out.dtype == np.float32 and out.shape == (300, 2) and out.graph == "cuML's brute-force 9-NN graph (float32)"
    want = dict(n_neighbors=9, min_dist=0.2, metric="euclidean", random_state=5, n_epochs=None, rows=300)
    assert seen == dict(want, build_algo="brute_force_knn")  # not NN-descent, which cuML takes on large inputs


def test_pca_matches_scikit_learn_up_to_sign():
    got = project(X, "pca")
    want = PCA(2).fit_transform(X.astype(np.float64))
    signs = np.sign((got * want).sum(0))
    np.testing.assert_allclose(got * signs, want, rtol=1e-4, atol=1e-4)
