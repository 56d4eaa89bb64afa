"""The geometry atlas against independent computations: CKA from a NumPy transcription of the
unbiased HSIC over the same batches, kNN agreement from scikit-learn on area-pooled maps, the
random-set overlap by simulation; blocks of real architectures; the CLI end to end."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hsic_reference import minibatch_cka_numpy
from sklearn.neighbors import NearestNeighbors

from geoviz.atlas import Atlas, _batches, compare, random_jaccard
from geoviz.capture import as_maps as _as_maps
from geoviz.capture import record
from geoviz.cli import main
from geoviz.datasets import get_dataset
from geoviz.models import block_layers, build_model


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return build_model("resnet8", 10).eval(), build_model("resnet14", 10).eval()


@pytest.fixture(scope="module")
def data():
    return get_dataset("shapes10", "test", n=40)


def test_cka_matches_numpy_over_the_same_batches(nets, data):
    a, b = nets
    atlas = compare(a, b, data, batch_size=16, pairs=None, embedding=None, progress=False, knn_images=12, device="cpu")
    assert atlas.layers_a == ["layer1.0", "layer2.0", "layer3.0"] and len(atlas.layers_b) == 6 and atlas.n_images == 40
    x = torch.stack([data[i][0] for i in range(40)])
    ra, rb = record(a, x, atlas.layers_a), record(b, x, atlas.layers_b)
    batches = [list(range(0, 16)), list(range(16, 32)), list(range(32, 40))]
    want = np.array(
        [[minibatch_cka_numpy(ra[p].numpy(), rb[q].numpy(), batches) for q in atlas.layers_b] for p in atlas.layers_a]
    )
    np.testing.assert_allclose(atlas.cka, want, rtol=1e-6)
    assert atlas.best_match()[0] == (
        "layer1.0",
        atlas.layers_b[int(np.argmax(want[0]))],
        pytest.approx(want[0].max(), rel=1e-6),
    )


def test_a_network_against_itself(nets, data):
    a, _ = nets
    atlas = compare(
        a, a, data, batch_size=16, embedding="pca", progress=False, knn_images=12, knn_points=200, device="cpu"
    )
    np.testing.assert_allclose(np.diag(atlas.cka), 1.0, rtol=1e-6)
    assert [b for _, b, _ in atlas.best_match()] == atlas.layers_a
    assert all(v == pytest.approx(1.0) for v in atlas.knn.values())  # the same points in the same space
    assert set(atlas.embeddings) == {(s, l) for s in "ab" for l in atlas.layers_a}
    assert all(len(atlas.embeddings[k]) == len(atlas.embedding_labels[k]) <= 200 for k in atlas.embeddings)
    assert atlas.classes == list(data.classes)


def test_knn_agreement_at_a_pair_matches_scikit_learn_on_pooled_maps(nets, data):
    a, b = nets
    # every position of every image (knn_points ≥ all of them), so the sample is the whole grid
    atlas = compare(
        a,
        b,
        data,
        ["layer1"],
        ["layer3.1"],
        pairs=[("layer1", "layer3.1")],
        embedding=None,
        progress=False,
        knn_images=20,
        knn_points=10_000,
        k=5,
        device="cpu",
    )
    x = torch.stack([data[i][0] for i in range(20)])
    fa, fb = record(a, x, ["layer1"])["layer1"], record(b, x, ["layer3.1"])["layer3.1"]
    assert fa.shape[-1] == 32 and fb.shape[-1] == 8
    fa = F.avg_pool2d(fa, 4)  # the finer map averaged over each cell of the coarser grid
    pa, pb = (f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).numpy().astype(np.float64) for f in (fa, fb))
    na = NearestNeighbors(n_neighbors=6).fit(pa).kneighbors(pa, return_distance=False)[:, 1:]
    nb = NearestNeighbors(n_neighbors=6).fit(pb).kneighbors(pb, return_distance=False)[:, 1:]
    jac = [len(set(u) & set(v)) / len(set(u) | set(v)) for u, v in zip(na, nb)]
    assert atlas.knn_points[("layer1", "layer3.1")] == 20 * 64
    assert atlas.knn[("layer1", "layer3.1")] == pytest.approx(np.mean(jac), abs=1e-12)


def test_random_neighbour_sets_overlap_as_simulated():
    r = np.random.default_rng(0)
    for m, k in ((40, 5), (300, 10)):
        sims = []
        for _ in range(20000):
            u, v = set(r.choice(m, k, replace=False)), set(r.choice(m, k, replace=False))
            sims.append(len(u & v) / len(u | v))
        assert random_jaccard(m, k) == pytest.approx(np.mean(sims), abs=4 * np.std(sims) / np.sqrt(len(sims)))
    atlas = Atlas(
        "a", "b", ["x"], ["y"], np.ones((1, 1)), 10, knn={("x", "y"): 0.5}, knn_k=5, knn_points={("x", "y"): 41}
    )
    assert atlas.knn_chance(("x", "y")) == pytest.approx(random_jaccard(40, 5))


def test_blocks_of_real_architectures():
    assert block_layers(build_model("resnet8", 10)) == ["layer1.0", "layer2.0", "layer3.0"]
    assert block_layers(build_model("vgg8", 10)) == [f"block{i}" for i in range(5)]
    assert block_layers(build_model("tv:vgg11", 10))[0] == "features.1"  # its stages are activations: kept
    assert block_layers(build_model("resnet20", 10)) == [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    assert block_layers(build_model("tv:resnet18", 10)) == [f"layer{s}.{i}" for s in (1, 2, 3, 4) for i in range(2)]
    assert block_layers(build_model("tv:mobilenet_v2", 10)) == [
        f"features.{i}" for i in range(19)
    ]  # residual blocks, not their .conv
    v3 = build_model("tv:mobilenet_v3_small", 10)
    assert block_layers(v3) == [
        f"features.{i}" for i in range(len(v3.features))
    ]  # not the parts of each block (.block.0, ...)
    g = block_layers(build_model("tv:googlenet", 10))
    assert "inception3a" in g and not any(
        n.startswith(("aux", "inception3a.")) for n in g
    )  # branches run side by side; aux heads train only
    vit = block_layers(build_model("tv:vit_b_16", 10))
    assert (
        vit[0] == "conv_proj"
        and vit[1:13] == [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
        and "heads" not in vit
    )


def test_layer_outputs_become_maps():
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)  # a class token and a 4 × 4 grid
    m = _as_maps(tokens)
    assert m.shape == (2, 3, 4, 4) and torch.equal(m[1, :, 0, 1], tokens[1, 2])
    assert _as_maps(torch.zeros(2, 16, 3)).shape == (2, 3, 4, 4) and _as_maps(torch.zeros(2, 7, 3)).shape == (
        2,
        3,
        7,
        1,
    )
    assert _as_maps(torch.zeros(2, 5)).shape == (2, 5, 1, 1)
    assert _batches(13, 5) == [[0, 1, 2, 3, 4], list(range(5, 13))] and _batches(12, 4) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 10, 11],
    ]


def test_save_and_load_round_trip(nets, data, tmp_path):
    atlas = compare(*nets, data, embedding="pca", progress=False, knn_images=12, knn_points=100, device="cpu")
    atlas.save(tmp_path / "a.json")
    back = Atlas.load(tmp_path / "a.json")
    assert np.array_equal(back.cka, atlas.cka) and back.knn == atlas.knn and back.knn_points == atlas.knn_points
    assert back.best_match() == atlas.best_match() and back.classes == atlas.classes
    assert all(np.allclose(back.embeddings[k], atlas.embeddings[k], atol=1e-4) for k in atlas.embeddings)
    assert all(np.array_equal(back.embedding_labels[k], atlas.embedding_labels[k]) for k in atlas.embeddings)


def test_bad_input_is_named(nets, data):
    a, b = nets
    with pytest.raises(ValueError, match="not among the compared layers"):
        compare(a, b, data, pairs=[("layer1", "fc")], progress=False)
    with pytest.raises(ValueError, match="holds 40 images"):
        compare(a, b, data, n_images=41, progress=False)
    with pytest.raises(ValueError, match="knn_images"):
        compare(a, b, data, knn_images=5, k=10, progress=False)
    tv = build_model("tv:resnet18", 10)
    with pytest.raises(ValueError, match="runs 2 times in one forward pass"):
        compare(tv, tv, data, ["layer1.0.relu"], ["layer1.0"], embedding=None, pairs=None, progress=False)
    with pytest.raises(KeyError, match="closest"):
        compare(a, b, data, ["layer9"], progress=False)


def test_cli_writes_a_report_with_a_floor(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert (
        main(["atlas", "resnet8", "resnet8", "--n-images", "16", "--embedding", "pca", "--floor", "--out", str(out)])
        == 0
    )
    html = out.read_text(encoding="utf-8")
    assert html.count("plotly.js v") == 1 and "floor: resnet8 vs resnet8 (untrained)" in html and "atlas-pair" in html
    best = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["best_match"]
    assert len(best) == 3 and all(0 <= c <= 1 + 1e-9 for _, _, c in best)
    with pytest.raises(SystemExit, match="closest"):
        main(["atlas", "resnet8", "resnetX", "--n-images", "16"])
    with pytest.raises(SystemExit, match="at least 4"):
        main(["atlas", "resnet8", "resnet8", "--n-images", "0"])


def test_run_atlas_reuses_a_saved_atlas_only_for_the_same_weights(tmp_path):
    from geoviz.experiments.atlas import AtlasConfig, run_atlas

    cfg = AtlasConfig.from_profile(
        "smoke", model_b="resnet8", n_train=64, n_val=32, n_images=32, knn_images=16, knn_points=100
    )
    first = run_atlas(cfg, run_root=tmp_path, progress=False)
    assert first.atlas.weights["a"] != first.atlas.weights["b"]  # the same architecture, another seed
    assert first.floor.weights["a"] == first.atlas.weights["a"] and first.floor.weights["b"] != first.atlas.weights["b"]
    path = first.run.path / "atlas.json"
    d = json.loads(path.read_text())
    d["cka"] = np.zeros_like(first.atlas.cka).tolist()
    path.write_text(json.dumps(d))
    assert np.all(
        run_atlas(cfg, run_root=tmp_path, progress=False).atlas.cka == 0
    )  # measured on these weights: read back
    for stale in ({**d, "weights": {**d["weights"], "b": "other"}}, {**d, "format": 1}):
        path.write_text(json.dumps(stale))
        np.testing.assert_allclose(
            run_atlas(cfg, run_root=tmp_path, progress=False).atlas.cka, first.atlas.cka, rtol=1e-6
        )
