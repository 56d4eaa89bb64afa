import numpy as np
import pytest
import torch

from geoviz.datasets.associations import load_mda, make_synthetic_mda
from geoviz.experiments.cnnmda import CnnmdaConfig, corrected_interval, fold_inputs, fold_positives, run_cnnmda
from geoviz.methods.cnnmda import (
    CNNMDA,
    CrossFitted,
    MisimRows,
    PairFeatures,
    auc_aupr,
    misim,
    neighbour_scores,
    nmf_factors,
    nmf_scores,
)


def write_mda(
    root,
    *,
    mirnas=("miR-1", "miR-2", "miR-3"),
    diseases=("flu", "gout"),
    pairs=(("miR-1", "flu"), ("miR-3", "gout")),
    sm=None,
    sd=None,
    sep="\t",
):
    root.mkdir(parents=True, exist_ok=True)
    (root / "mirna_names.txt").write_text("\n".join(mirnas) + "\n")
    (root / "disease_names.txt").write_text("\n".join(diseases) + "\n")
    (root / "associations.txt").write_text("\n".join(f"{a}{sep}{b}" for a, b in pairs) + "\n")
    sm = np.eye(len(mirnas)) if sm is None else np.asarray(sm)
    sd = np.eye(len(diseases)) if sd is None else np.asarray(sd)
    (root / "mirna_similarity.csv").write_text("\n".join(",".join(f"{v:g}" for v in r) for r in sm))
    (root / "disease_similarity.txt").write_text("\n".join(" ".join(f"{v:g}" for v in r) for r in sd))
    return root


def test_loader_reads_names_or_indices_and_every_bad_file_gives_its_message(tmp_path):
    d = load_mda(write_mda(tmp_path / "ok", sd=[[1, 0.3], [0.3, 1]]))
    np.testing.assert_array_equal(d.A, [[1, 0], [0, 0], [0, 1]])
    assert d.SD[0, 1] == 0.3 and d.mirnas == ["miR-1", "miR-2", "miR-3"]
    by_index = load_mda(write_mda(tmp_path / "idx", pairs=(("2", "1"),), sep=" "))  # 1-based indices
    np.testing.assert_array_equal(by_index.A, [[0, 0], [1, 0], [0, 0]])
    cases = [
        (
            dict(pairs=(("miR-1", "flu"), ("miR-9", "flu"), ("miR-2", "cold"))),
            r"names entities .*\(2 lines\).*miR-9, flu.*miR-2, cold",
        ),
        (dict(sm=[[1, 0.2, 0], [0.5, 1, 0], [0, 0, 1]]), "symmetric; entry"),
        (dict(sm=[[1, 2, 0], [2, 1, 0], [0, 0, 1]]), r"in \[0, 1\]"),
        (dict(sm=np.eye(2)), "but the names file lists 3 miRNAs"),
        (dict(mirnas=("miR-1", "miR-1", "miR-3")), "unique; repeated: \\['miR-1'\\]"),
        (dict(pairs=(("9", "1"),)), "names entities"),
        (dict(pairs=(("0", "1"),)), "1-based"),
    ]
    for k, (kw, msg) in enumerate(cases):
        with pytest.raises(ValueError, match=msg):
            load_mda(write_mda(tmp_path / f"bad{k}", **kw))
    (tmp_path / "ragged").mkdir()
    write_mda(tmp_path / "ragged")
    (tmp_path / "ragged" / "mirna_similarity.csv").write_text("1,0\n0,1,0\n0,0,1\n")
    with pytest.raises(ValueError, match="must be square"):
        load_mda(tmp_path / "ragged")
    with pytest.raises(FileNotFoundError, match="mirna_names.txt .* is missing"):
        load_mda(tmp_path / "empty")
    # MeSH-like names with commas (tab-separated or quoted CSV) and a header line
    root = write_mda(
        tmp_path / "mesh",
        diseases=("Carcinoma, Hepatocellular", "gout"),
        pairs=(("miRNA", "disease"), ("miR-2", "Carcinoma, Hepatocellular")),
    )
    np.testing.assert_array_equal(load_mda(root).A, [[0, 0], [1, 0], [0, 0]])
    (root / "associations.txt").write_text('miR-3,"Carcinoma, Hepatocellular"\nmiR-1,gout\n')
    np.testing.assert_array_equal(load_mda(root).A, [[0, 1], [0, 0], [1, 0]])


def test_synthetic_set_has_its_sizes_a_hidden_truth_and_valid_similarities():
    d = make_synthetic_mda(80, 50, 400, rank=4, hidden=0.2, seed=3)
    assert d.A.shape == (80, 50) and d.A.sum() == 400 and d.truth.sum() == 500
    assert ((d.A == 1) <= (d.truth == 1)).all() and len(d.held_out()) == 100
    for S in (d.SM, d.SD):
        assert np.allclose(S, S.T) and S.min() >= 0 and S.max() <= 1 and np.all(np.diag(S) == 1)
    np.testing.assert_array_equal(make_synthetic_mda(80, 50, 400, rank=4, seed=3).A, d.A)  # deterministic per seed
    # the hidden truth is recoverable from A's low-rank structure, beyond what popularity alone gives
    from geoviz.experiments.cnnmda import popularity_scores
    from geoviz.methods.cnnmda import nmf_factors

    d = make_synthetic_mda(200, 150, 2000, rank=4, hidden=0.2, seed=3)
    hidden = d.held_out()
    outside = np.argwhere(d.truth == 0)
    pairs, labels = np.concatenate([hidden, outside]), np.r_[np.ones(len(hidden)), np.zeros(len(outside))]
    nmf = auc_aupr(nmf_scores(*nmf_factors(d.A, 4), pairs), labels)["auc"]
    pop = auc_aupr(popularity_scores(d.A, pairs), labels)["auc"]
    assert nmf > pop + 0.02 and nmf > 0.8, (nmf, pop)


def test_misim_matches_its_definition_pair_by_pair():
    rng = np.random.default_rng(0)
    A = (rng.random((7, 6)) < 0.3).astype(int)
    A[3] = 0  # a miRNA without associations
    R = rng.random((6, 6))
    SD = (R + R.T) / 2
    np.fill_diagonal(SD, 1)
    got = misim(A, SD)
    for i in range(7):
        for k in range(7):
            Di, Dk = np.flatnonzero(A[i]), np.flatnonzero(A[k])
            if i == k:
                want = 1.0
            elif len(Di) + len(Dk) == 0:
                want = 0.0
            else:
                s1 = sum(max(SD[d, e] for e in Dk) for d in Di) if len(Dk) else 0.0
                s2 = sum(max(SD[d, e] for e in Di) for d in Dk) if len(Di) else 0.0
                want = (s1 + s2) / (len(Di) + len(Dk))
            assert got[i, k] == pytest.approx(want), (i, k)


def test_pair_inputs_and_baselines_against_loops():
    rng = np.random.default_rng(1)
    SM, SD = rng.random((5, 5)), rng.random((4, 4))
    SM, SD = (SM + SM.T) / 2, (SD + SD.T) / 2
    A = (rng.random((5, 4)) < 0.4).astype(float)
    A[2, 1], A[2, 0], A[3, 1] = 1, 1, 1  # the pair (2, 1) is a known association
    W, H = rng.random((5, 3)), rng.random((3, 4))
    f = PairFeatures(SM, SD, A, W, H)
    x = f.pairs([[2, 1], [4, 3]])
    assert x.shape == (2, 1, 2, 9 + 3)
    own = A.copy()
    own[2, 1] = 0  # the pair's own entry never shows in its input (it would be its label)
    np.testing.assert_allclose(x[0, 0, 0, :9].numpy(), np.r_[SM[2], own[2]], rtol=1e-6)
    np.testing.assert_allclose(x[0, 0, 1, :9].numpy(), np.r_[own[:, 1], SD[1]], rtol=1e-6)
    assert x[0, 0, 0, 5 + 0] == 1 and x[0, 0, 1, 3] == 1  # the other associations of the miRNA and the disease stay
    scale = max(W.max(), H.max())
    np.testing.assert_allclose(x[1, 0, :, 9:].numpy(), np.stack([W[4], H[:, 3]]) / scale, rtol=1e-6)
    pairs = np.array([[0, 0], [2, 1], [4, 3]])
    np.testing.assert_allclose(nmf_scores(W, H, pairs), [(W @ H)[i, j] for i, j in pairs])
    want = []
    for i, j in pairs:
        wm = np.array([SM[i, k] if k != i else 0 for k in range(5)])
        wd = np.array([SD[j, e] if e != j else 0 for e in range(4)])
        want.append((wm @ A[:, j] / wm.sum() + A[i] @ wd / wd.sum()) / 2)
    np.testing.assert_allclose(neighbour_scores(SM, SD, A, pairs), want)
    out = CNNMDA(9, 3, channels=4)(x)
    assert out.shape == (2, 2)


def test_popularity_is_the_product_of_degrees():
    from geoviz.experiments.cnnmda import popularity_scores

    A = np.array([[1, 0, 1], [0, 0, 1]])
    np.testing.assert_array_equal(popularity_scores(A, [[0, 2], [1, 0], [1, 1]]), [2 * 2, 1 * 1, 1 * 0])


def test_auc_and_aupr_on_hand_cases():
    # 2 positives, 3 negatives; of the 6 positive-negative pairs the positive ranks higher in 5 → AUC 5/6
    r = auc_aupr([0.9, 0.4, 0.5, 0.3, 0.1], [1, 1, 0, 0, 0])
    assert r["auc"] == pytest.approx(5 / 6)
    # average precision: positives at ranks 1 and 3 → (1/1 + 2/3) / 2
    assert r["aupr"] == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="both"):
        auc_aupr([0.1, 0.2], [1, 1])


def test_corrected_interval_is_the_nadeau_bengio_formula():
    from scipy import stats

    d = np.array([0.02, 0.03, 0.01, 0.04, 0.025])
    r = corrected_interval(d, folds=5)
    half = stats.t.ppf(0.975, 4) * d.std(ddof=1) * np.sqrt(1 / 5 + 1 / 4)
    assert r["ci"] == pytest.approx([d.mean() - half, d.mean() + half]) and r["verdict"] == "supported"
    assert corrected_interval(-d, folds=5)["verdict"] == "contradicted"
    assert corrected_interval(np.array([0.02, -0.03, 0.01, -0.01, 0.0]), folds=5)["verdict"] == "undecided"
    # repeated k-fold (Bouckaert & Frank): n = r·k differences, variance × (1/n + 1/(k − 1)), n − 1 df
    d2 = np.r_[d, d[::-1] + 0.01]
    half = stats.t.ppf(0.975, 9) * d2.std(ddof=1) * np.sqrt(1 / 10 + 1 / 4)
    assert corrected_interval(d2, folds=5)["ci"] == pytest.approx([d2.mean() - half, d2.mean() + half])


def test_misim_rows_hide_the_pairs_own_association_as_a_recomputation_would():
    d = make_synthetic_mda(40, 30, 200, rank=3, seed=2)
    rows = MisimRows(d.A, d.SD)
    pos, unknown = np.argwhere(d.A == 1), np.argwhere(d.A == 0)
    pairs = np.concatenate([pos[:60], unknown[:20]])
    got = rows.rows(pairs[:, 0], pairs[:, 1]).numpy()
    for (i, j), row in zip(pairs, got):
        A = d.A.copy()
        A[i, j] = 0  # recomputed from scratch without the pair's association
        np.testing.assert_allclose(row, misim(A, d.SD)[i], rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[:60], misim(d.A, d.SD)[pairs[:60, 0]])  # the plain rows did carry it
    # a miRNA whose only association is the pair's: its row is 0 off the diagonal
    A = np.zeros((4, 3), int)
    A[0, 1], A[1, 1], A[2, 2] = 1, 1, 1
    r = MisimRows(A, np.eye(3) * 0.5 + 0.5).rows([0], [1]).numpy()[0]
    np.testing.assert_allclose(r, [1, 0, 0, 0])


def test_flipping_an_association_changes_no_input_of_its_chunks_pairs():
    """Cross-fitting's promise, end to end: nothing a chunk's pairs read was fitted on that chunk
    (rows, similarity, the NMF and its order and scale)."""
    d = make_synthetic_mda(50, 36, 260, rank=3, seed=3)
    chunks, seed = 4, 5
    chunk = np.random.default_rng(seed).integers(0, chunks, d.A.shape)
    pos = np.argwhere(d.A == 1)
    i0, j0 = pos[0]
    flipped = d.A.copy()
    flipped[i0, j0] = 0
    same = np.argwhere(chunk == chunk[i0, j0])
    others = np.argwhere(chunk != chunk[i0, j0])
    inputs = []
    for A in (d.A, flipped):
        f = PairFeatures(d.SM, d.SD, A, *nmf_factors(A, 3, seed=seed))
        cf = CrossFitted(f, chunks, seed=seed, similarity=lambda A: MisimRows(A, d.SD))
        inputs.append((cf.pairs(same), cf.pairs(others)))
    assert torch.equal(inputs[0][0], inputs[1][0])  # the flipped pair's chunk: bit for bit the same
    assert not torch.equal(inputs[0][1], inputs[1][1])  # other chunks saw the association, and change
    # the paper's shared mode: the pair's left rows (association and derived similarity) hide it too
    left = [PairFeatures(d.SM, d.SD, A, *nmf_factors(A, 3), similarity_rows=MisimRows(A, d.SD)) for A in (d.A, flipped)]
    assert torch.equal(left[0].left([i0], [j0]), left[1].left([i0], [j0]))


def test_crossfitted_pairs_are_read_through_inputs_that_never_saw_their_association():
    from sklearn.decomposition import NMF

    d = make_synthetic_mda(60, 40, 300, rank=3, seed=1)
    cfg = CnnmdaConfig.from_profile("smoke", rank=3)
    features = fold_inputs(d, np.zeros((0, 2), int), cfg)["features"]
    pos, unknown = np.argwhere(d.A == 1), np.argwhere(d.A == 0)
    pairs = np.concatenate([pos, unknown[np.random.default_rng(0).choice(len(unknown), len(pos), replace=False)]])
    cf = CrossFitted(features, 4, seed=7)
    x = cf.pairs(pairs)
    right = (
        x[:, 0, :, features.n_left :].numpy().astype(np.float64)
    )  # (n, 2, rank): W[i] over H[:, j], as the pair saw them
    chunk = np.random.default_rng(7).integers(0, 4, d.A.shape)[
        pairs[:, 0], pairs[:, 1]
    ]  # the documented split: uniform per pair
    x_misim = CrossFitted(features, 4, seed=7, similarity=lambda A: misim(A, d.SD)).pairs(pairs)
    for c in range(4):
        p = pairs[chunk == c]
        hidden = np.where(np.random.default_rng(7).integers(0, 4, d.A.shape) == c, 0.0, d.A)
        assert not hidden[
            p[:, 0], p[:, 1]
        ].any()  # the chunk's pairs, positives included, are 0 in what they are read through
        model = NMF(n_components=3, init="nndsvda", random_state=7, max_iter=1000)
        W = model.fit_transform(hidden)
        H = model.components_
        # the documented canonical form, from this factorisation alone: by energy ‖W_k‖‖H_k‖, largest
        # first, each component balanced, then both divided by the larger of their largest entries
        energy = [np.linalg.norm(W[:, k]) * np.linalg.norm(H[k]) for k in range(3)]
        order = sorted(range(3), key=lambda k: -energy[k])
        b = [np.sqrt(np.linalg.norm(W[:, k]) / np.linalg.norm(H[k])) for k in order]
        Wc = np.stack([W[:, k] / bk for k, bk in zip(order, b)], 1)
        Hc = np.stack([H[k] * bk for k, bk in zip(order, b)])
        scale = max(Wc.max(), Hc.max())
        np.testing.assert_allclose(right[chunk == c, 0], Wc[p[:, 0]] / scale, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(right[chunk == c, 1], Hc[:, p[:, 1]].T / scale, rtol=1e-4, atol=1e-6)
        # the left rows read the chunk's matrix; a similarity derived from associations is re-derived from it
        left = x[chunk == c, 0, :, : features.n_left].numpy()
        np.testing.assert_allclose(left[:, 0, 60:], hidden[p[:, 0]], atol=0)
        np.testing.assert_allclose(left[:, 1, :60], hidden[:, p[:, 1]].T, atol=0)
        np.testing.assert_allclose(left[:, 0, :60], d.SM[p[:, 0]], rtol=1e-6)
        np.testing.assert_allclose(
            x_misim[chunk == c, 0, 0, :60].numpy(), misim(hidden, d.SD)[p[:, 0]], rtol=1e-5, atol=1e-6
        )
    assert len(np.concatenate(cf.alignment)) == 12 and np.concatenate(cf.alignment).max() <= 1 + 1e-9
    # what cross-fitting is for: training associations read through it are reconstructed about as
    # weakly as masked test associations are, not as strongly as by the shared NMF that saw them
    test_pos = fold_positives(d.A, 5, seed=0)[0]
    inp = fold_inputs(d, test_pos, cfg)
    f = inp["features"]
    train_pos = np.argwhere(inp["A_train"] == 1)
    dot = lambda r: (r[:, 0] * r[:, 1]).sum(1).mean()  # noqa: E731
    cf = CrossFitted(f, 10, seed=0)
    shared, shared_test = (
        dot(f.right(train_pos[:, 0], train_pos[:, 1]).numpy()),
        dot(f.right(test_pos[:, 0], test_pos[:, 1]).numpy()),
    )
    crossfit, crossfit_test = (
        dot(cf.right(train_pos[:, 0], train_pos[:, 1]).numpy()),
        dot(cf.right(test_pos[:, 0], test_pos[:, 1]).numpy()),
    )
    assert abs(crossfit - crossfit_test) < 0.5 * abs(shared - shared_test), (
        shared,
        shared_test,
        crossfit,
        crossfit_test,
    )


def test_no_test_association_reaches_a_folds_inputs():
    d = make_synthetic_mda(40, 30, 200, rank=3, seed=0)
    for sim in ("given", "misim"):
        cfg = CnnmdaConfig.from_profile("smoke", rank=3, mirna_similarity=sim)
        for test_pos in fold_positives(d.A, 3, seed=0):
            a = fold_inputs(d, test_pos, cfg)
            flipped = d.A.copy()
            flipped[test_pos[:, 0], test_pos[:, 1]] = 0  # the same data without the test associations at all
            other = type(d)(d.mirnas, d.diseases, flipped, d.SM, d.SD)
            b = fold_inputs(other, test_pos, cfg)
            assert not a["A_train"][test_pos[:, 0], test_pos[:, 1]].any()
            for key in ("A_train", "SM", "W", "H"):
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"{sim}: {key} depends on the test associations")
            every = np.argwhere(np.ones_like(d.A))
            assert torch.equal(a["features"].pairs(every), b["features"].pairs(every))
    folds = fold_positives(d.A, 3, seed=0)
    assert sum(len(f) for f in folds) == d.A.sum() and len({tuple(p) for f in folds for p in f}) == d.A.sum()
    # the training and evaluation pairs come from the fold's training associations alone
    from geoviz.experiments.cnnmda import fold_pairs

    A_train = fold_inputs(d, folds[0], CnnmdaConfig.from_profile("smoke", rank=3))["A_train"]
    a = fold_pairs(A_train, 1.0, np.random.default_rng(5))
    b = fold_pairs(A_train.copy(), 1.0, np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    pos, neg, ev = a
    assert len(pos) == A_train.sum() and len(neg) == len(pos) and len(ev) + len(neg) == (A_train == 0).sum()
    assert not {tuple(p) for p in neg} & {tuple(p) for p in ev}  # no training negative is evaluated


def test_study_scores_every_method_on_the_same_pairs_and_reports_claims(tmp_path):
    cfg = CnnmdaConfig.from_profile("smoke")
    r = run_cnnmda(cfg, run_root=tmp_path, progress=False)
    assert [row["method"] for row in r.table()] == ["cnnmda", "nmf", "neighbours", "logistic", "popularity"]
    n_known, folds = int(r.data.A.sum()), fold_positives(r.data.A, cfg.folds, cfg.seed)
    for f, test_pos in zip(r.folds, folds):  # evaluation: every pair A_train shows as unknown, but the drawn negatives
        train_pos = n_known - len(test_pos)
        assert (
            f["n_eval"] == r.data.A.size - 2 * train_pos
            and 0 < f["n_test_pos"] <= len(test_pos)
            and f["nmf_rank"] in (4, 8, 16, 32)
        )
        assert -1 <= f["alignment_min_cosine"] <= 1 and f["alignment_below_half"].endswith(f"of {10 * cfg.rank}")
    table = {row["method"]: row for row in r.table()}
    assert table["neighbours"]["auc"] > 0.7  # the smoke set is learnable: a simple vote recovers it
    assert len(r.claims()) == 8 and {c.verdict for c in r.claims()} <= {"supported", "contradicted", "undecided"}
    assert len(r.top) == cfg.top_k and r.disease in r.data.diseases
    j = r.data.diseases.index(r.disease)
    assert all(r.data.A[r.data.mirnas.index(t["mirna"]), j] == 0 for t in r.top)  # only unknown pairs are candidates
    assert [t["score"] for t in r.top] == sorted((t["score"] for t in r.top), reverse=True)
    assert r.embedding["features"].shape[0] == len(r.embedding["kind"])
    with pytest.raises(KeyError, match="close matches"):
        run_cnnmda(cfg.replace(disease="disease-1x"), run_root=tmp_path, progress=False)
    # the final model's negatives avoid the case study's disease, so none of its candidates was trained towards 0
    negatives = r.final[2]
    assert (
        len(negatives) == n_known
        and not (negatives[:, 1] == j).any()
        and not any(t["trained_as_negative"] for t in r.top)
    )
    assert (r.data.A[negatives[:, 0], negatives[:, 1]] == 0).all()
    other = int(np.bincount(negatives[:, 1]).argmax())
    flagged = {
        t["mirna"] for t in r.top_candidates(r.data.diseases[other], k=r.data.A.shape[0]) if t["trained_as_negative"]
    }
    assert flagged == {r.data.mirnas[i] for i in negatives[negatives[:, 1] == other, 0]}
    with pytest.raises(ValueError, match="crossfit"):
        cfg.replace(crossfit=1)


def test_repeats_are_new_partitions_of_the_same_data(tmp_path):
    from sklearn.metrics import roc_auc_score

    from geoviz.experiments.cnnmda import fold_pairs

    cfg = CnnmdaConfig.from_profile("smoke", repeats=2, crossfit=0)
    r = run_cnnmda(cfg, run_root=tmp_path, progress=False)
    assert [(f["repeat"], f["fold"]) for f in r.folds] == [(a, b) for a in range(2) for b in range(3)]
    assert {arm for arm, _ in r.curves()} == {f"repeat{a}-fold{b}" for a in range(2) for b in range(3)} | {"all"}
    assert all(c.n == 6 and c.unit.startswith("folds") for c in r.claims())
    # repeat 1's first fold is the first fold of the partition drawn with seed + 1, scored on the pairs that leaves
    for repeat in (0, 1):
        test_pos = fold_positives(r.data.A, 3, cfg.seed + repeat)[0]
        A_train = r.data.A.copy()
        A_train[test_pos[:, 0], test_pos[:, 1]] = 0
        _, _, ev = fold_pairs(A_train, cfg.negatives, np.random.default_rng(cfg.seed + repeat))
        labels = r.data.A[ev[:, 0], ev[:, 1]]
        want = roc_auc_score(labels, A_train.sum(1)[ev[:, 0]] * A_train.sum(0)[ev[:, 1]])
        assert r.folds[3 * repeat]["popularity"]["auc"] == pytest.approx(want)
    assert r.folds[0]["popularity"]["auc"] != r.folds[3]["popularity"]["auc"]


def test_roc_pr_figure_and_candidate_explorer(tmp_path):
    from geoviz import viz

    r = run_cnnmda(CnnmdaConfig.from_profile("smoke"), run_root=tmp_path, progress=False)
    fig = viz.roc_pr_curves(r.folds, ["cnnmda", "nmf"], title="t")
    legend = [t.name for t in fig.data if t.showlegend is not False and not t.name.startswith("chance")]
    auc = np.mean([f["cnnmda"]["auc"] for f in r.folds])
    assert len(legend) == 2 and legend[0].startswith(f"cnnmda: AUC {auc:.3f}")
    assert fig.layout.xaxis.title.text and fig.layout.yaxis2.title.text
    prevalence = np.mean([f["n_test_pos"] / f["n_eval"] for f in r.folds])
    assert next(t for t in fig.data if t.name.startswith("chance (PR")).y[0] == pytest.approx(prevalence)
    app = viz.CandidateExplorer(r)
    other = next(d for d in r.data.diseases if d != r.disease)
    app.disease.value = other
    top = r.top_candidates(other)
    assert list(app.fig.data[0].x) == [t["score"] for t in top] and other in app.fig.layout.title.text
    j = r.data.diseases.index(other)
    hits = sum(bool(r.data.truth[r.data.mirnas.index(t["mirna"]), j]) for t in top)
    assert f"{hits} of {len(top)} in the planted truth" in app.fig.layout.title.text
    with pytest.raises(KeyError, match="close matches"):
        r.top_candidates("disease-x")


def test_the_cnn_is_kept_at_the_epoch_best_on_its_held_out_training_pairs(tmp_path):
    from geoviz.experiments.cnnmda import _fit_cnn, cnn_inputs

    d = make_synthetic_mda(60, 40, 300, rank=4, seed=0)
    cfg = CnnmdaConfig.from_profile("smoke", epochs=4, val_share=0.3)
    inp = fold_inputs(d, np.zeros((0, 2), int), cfg)
    pos, unknown = np.argwhere(d.A == 1), np.argwhere(d.A == 0)
    neg = unknown[np.random.default_rng(0).choice(len(unknown), len(pos), replace=False)]
    pairs_in = cnn_inputs(cfg, inp, 0)
    assert isinstance(pairs_in, CrossFitted) and cnn_inputs(cfg.replace(crossfit=0), inp, 0) is inp["features"]
    model, history, chosen = _fit_cnn(cfg, pairs_in, pos, neg, "cpu", None, 0)
    keys = [(h["val_acc"], -h["val_loss"]) for h in history]
    assert len(history) == 4 and chosen == 1 + max(range(4), key=lambda e: keys[e])
    # the kept weights score the held-out pairs as that epoch did
    x = pairs_in.pairs(np.concatenate([pos, neg]))
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    held = np.random.default_rng(0).random(len(y)) < 0.3
    with torch.no_grad():
        acc = (model.eval()(x[held]).argmax(1).numpy() == y[held]).mean()
    assert acc == pytest.approx(history[chosen - 1]["val_acc"], abs=1e-6)
    _, _, last = _fit_cnn(cfg.replace(val_share=0.0), pairs_in, pos, neg, "cpu", None, 0)
    assert last == 4
