import numpy as np
import pytest

from geoviz.methods.ensemble import (
    Ensemble,
    fit_weights,
    mean_fusion,
    mean_pairwise,
    pairwise_diversity,
    vote_fusion,
    weighted_fusion,
)


def _probs():
    # 3 members, 4 images, 3 classes
    return np.array(
        [
            [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.4, 0.35, 0.25], [0.2, 0.3, 0.5]],
            [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.1, 0.5, 0.4], [0.1, 0.1, 0.8]],
            [[0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.2, 0.25, 0.55], [0.5, 0.4, 0.1]],
        ]
    )


def test_mean_and_vote_fusion_on_hand_cases():
    p = _probs()
    np.testing.assert_allclose(mean_fusion(p)[0], [0.5, 0.4, 0.1])
    # top classes per image (no member ties within itself): (0, 0, 1) → 0; (1, 0, 2) → a three-way
    # tie, mean probabilities (0.3, 0.5, 0.2) → 1; (0, 1, 2) → a tie, means (0.233, 0.367, 0.4) → 2; (2, 2, 0) → 2
    assert vote_fusion(p).argmax(1).tolist() == [0, 1, 2, 2]
    # a vote is never overturned by probabilities: two weak votes beat one confident one
    q = np.array([[[0.34, 0.33, 0.33]], [[0.34, 0.33, 0.33]], [[0.0, 1.0, 0.0]]])
    assert vote_fusion(q).argmax(1).tolist() == [0] and mean_fusion(q).argmax(1).tolist() == [1]


def test_weighted_fusion_fits_the_log_loss_minimum_on_validation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    good = np.full((200, 3), 0.1)
    good[np.arange(200), y] = 0.8
    noisy = rng.dirichlet(np.ones(3), 200)
    p = np.stack([good, noisy])
    w = fit_weights(p, y)
    # independently: the log-loss on a fine grid of w0 (two members: w1 = 1 − w0)
    grid = np.linspace(0, 1, 2001)
    losses = [-np.log(g * good[np.arange(200), y] + (1 - g) * noisy[np.arange(200), y]).mean() for g in grid]
    assert w[0] == pytest.approx(grid[int(np.argmin(losses))], abs=2e-3) and w.sum() == pytest.approx(1)
    np.testing.assert_allclose(weighted_fusion(p, w), w[0] * good + w[1] * noisy)
    with pytest.raises(ValueError, match="summing to 1"):
        weighted_fusion(p, [0.7, 0.7])


def test_stacking_is_fitted_on_validation_only_and_matches_sklearn(monkeypatch):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    val, test = rng.dirichlet(np.ones(3), (2, 60)), rng.dirichlet(np.ones(3), (2, 40))
    yv = rng.integers(0, 3, 60)
    seen = []
    original = LogisticRegression.fit

    def spy(self, X, y, *a, **k):
        seen.append(np.array(X))
        return original(self, X, y, *a, **k)

    monkeypatch.setattr(LogisticRegression, "fit", spy)
    ens = Ensemble(3, "stack").fit(val, yv)
    got = ens.predict_proba(test)
    assert len(seen) == 1 and seen[0].shape == (60, 6)
    assert not any(np.isclose(seen[0], row).all(1).any() for row in np.concatenate([test[0], test[1]], 1))
    # independently: member 0's three probabilities then member 1's, one row per image
    ref = original(LogisticRegression(max_iter=2000, random_state=0), np.concatenate([val[0], val[1]], 1), yv)
    np.testing.assert_allclose(got, ref.predict_proba(np.concatenate([test[0], test[1]], 1)), atol=1e-8)
    with pytest.raises(RuntimeError, match="fitted on validation"):
        Ensemble(3, "weighted").predict_proba(test)
    with pytest.raises(ValueError, match="allowed"):
        Ensemble(3, "median")


def test_diversity_measures_match_their_formulas_pair_by_pair():
    from scipy.stats import pearsonr

    rng = np.random.default_rng(2)
    correct = rng.random((4, 80)) < np.array([0.9, 0.7, 0.6, 0.8])[:, None]
    d = pairwise_diversity(correct)
    for i in range(4):
        for j in range(4):
            a, b = correct[i], correct[j]
            n11, n00 = np.sum(a & b), np.sum(~a & ~b)
            n10, n01 = np.sum(a & ~b), np.sum(~a & b)
            assert d["disagreement"][i, j] == pytest.approx((n01 + n10) / 80)
            if i != j:
                assert d["q"][i, j] == pytest.approx((n11 * n00 - n01 * n10) / (n11 * n00 + n01 * n10))
                assert d["error_correlation"][i, j] == pytest.approx(pearsonr(~a, ~b)[0])
    assert mean_pairwise(d["disagreement"]) == pytest.approx(
        np.mean([d["disagreement"][i, j] for i in range(4) for j in range(i + 1, 4)])
    )
    # identical members: no disagreement, Q = 1; a member that is always right has no error correlation
    same = pairwise_diversity(np.stack([correct[1], correct[1], np.ones(80, bool)]))
    assert (
        same["disagreement"][0, 1] == 0
        and same["q"][0, 1] == pytest.approx(1)
        and np.isnan(same["error_correlation"][0, 2])
    )
