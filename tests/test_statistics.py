"""Verdicts from seeds: three-valued on synthetic result tables, and the Mantel test."""

import numpy as np
import pytest

from geoviz.analysis.statistics import mantel, paired_difference, verdict


def test_verdicts_on_synthetic_result_tables():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.8, size=5)  # five seeds of a baseline
    win = paired_difference(base + 0.05 + rng.normal(0, 0.005, 5), base)
    assert win["verdict"] == "supported" and win["ci"][0] > 0 and win["p_value"] < 0.05
    loss = paired_difference(base - 0.05 + rng.normal(0, 0.005, 5), base)
    assert loss["verdict"] == "contradicted" and loss["ci"][1] < 0
    overlap = paired_difference(base + rng.normal(0, 0.03, 5), base)  # seeds on both sides of zero
    assert overlap["verdict"] == "undecided" and overlap["ci"][0] < 0 < overlap["ci"][1]
    # a threshold: "within one point of" (a - b > -0.01)
    close = paired_difference(base - 0.002 + rng.normal(0, 0.001, 5), base, threshold=-0.01)
    assert close["verdict"] == "supported" and close["mean"] < 0
    same = paired_difference([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])  # identical differences: a point interval
    assert same["ci"] == pytest.approx([0.1, 0.1]) and same["verdict"] == "supported"
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference([1, 2, 3], [1, 2])


def test_a_quantised_metric_needs_more_than_a_constant_one_image_difference():
    """Test accuracies over 360 images move in steps of 1/360: three seeds that each differ by
    the same count of images must not give a zero-width interval."""
    q = 1 / 360
    base = np.array([0.80, 0.81, 0.805])
    one = paired_difference(base + q, base, resolution=q)
    assert one["verdict"] == "undecided" and one["ci"][0] < 0 < one["ci"][1]
    # independently: mean ± t(0.975, 2) · q / sqrt(3), the spread floored at one image
    half = 4.302652729911275 * q / np.sqrt(3)
    assert one["ci"] == pytest.approx([q - half, q + half], abs=1e-12)
    many = paired_difference(base + 31 * q, base, resolution=q)
    assert many["verdict"] == "supported" and many["ci"][0] > 0.07


def test_the_permutation_p_value_tests_against_the_threshold():
    d = np.array([0.02, 0.03, 0.025, 0.035, 0.03])
    assert paired_difference(d, np.zeros(5), n_resamples=999)["p_value"] < 0.05
    assert paired_difference(d, np.zeros(5), threshold=0.05, n_resamples=999)["p_value"] > 0.5


def test_the_intervals_are_the_paired_t_and_the_percentile_bootstrap_of_the_mean_difference():
    d = np.array([0.03, -0.01, 0.02, 0.05, 0.0, 0.01])
    res = paired_difference(d, np.zeros(6), n_resamples=20000, seed=3)
    # independently: mean ± t(0.975, 5) · sd / sqrt(6), with the t quantile from its table value
    half = 2.570581835636314 * d.std(ddof=1) / np.sqrt(6)
    assert res["ci"] == pytest.approx([d.mean() - half, d.mean() + half], abs=1e-12)
    # resample seeds with replacement, take the 2.5 / 97.5 percentiles of the mean
    rng = np.random.default_rng(11)
    means = d[rng.integers(0, 6, size=(200000, 6))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    assert res["bootstrap_ci"][0] == pytest.approx(lo, abs=2e-3) and res["bootstrap_ci"][1] == pytest.approx(
        hi, abs=2e-3
    )
    assert res["mean"] == pytest.approx(d.mean())


@pytest.mark.parametrize("n", [3, 5])
def test_verdicts_without_an_effect_are_rarely_decided(n):
    """Under no effect, 'supported' or 'contradicted' must come out about 5 % of the time (the
    percentile bootstrap over so few seeds gave 24 % / 16 %)."""
    rng = np.random.default_rng(n)
    decided = sum(
        paired_difference(rng.normal(0, 1, n), np.zeros(n), n_resamples=200)["verdict"] != "undecided"
        for _ in range(400)
    )
    assert decided / 400 < 0.09


def test_verdict_edges():
    assert (
        verdict(0.01, 0.02) == "supported"
        and verdict(-0.02, -0.01) == "contradicted"
        and verdict(-0.01, 0.01) == "undecided"
    )
    assert verdict(float("nan"), 1.0) == "undecided"


def _sym(m):
    m = (m + m.T) / 2
    np.fill_diagonal(m, 0)
    return m


def test_mantel_finds_a_planted_negative_relation_and_not_a_random_one():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(10, 3))
    angle = np.linalg.norm(pts[:, None] - pts[None], axis=2)  # classes far apart ...
    confusion = _sym(np.exp(-angle) + 0.02 * rng.random((10, 10)))  # ... are confused less
    res = mantel(angle, confusion, n_resamples=2000)
    assert res["r"] < -0.5 and res["p_value"] < 0.01 and res["verdict"] == "supported"
    opposite = mantel(angle, -confusion, n_resamples=2000)
    assert opposite["verdict"] == "contradicted"
    noise = mantel(_sym(rng.random((10, 10))), _sym(rng.random((10, 10))), n_resamples=2000)
    assert noise["p_value"] > 0.05 and noise["verdict"] == "undecided"


def test_mantel_p_value_matches_an_independent_label_permutation():
    rng = np.random.default_rng(2)
    a, b = _sym(rng.random((6, 6))), _sym(rng.random((6, 6)))
    b = _sym(b - 0.8 * a)
    iu = np.triu_indices(6, 1)
    r0 = np.corrcoef(a[iu], b[iu])[0, 1]
    import itertools

    rs = np.array([np.corrcoef(a[iu], b[np.ix_(p, p)][iu])[0, 1] for p in itertools.permutations(range(6))])
    exact = (rs <= r0 + 1e-12).mean()  # all 720 relabellings: the exact one-sided p
    res = mantel(a, b, n_resamples=9999)
    assert res["r"] == pytest.approx(r0) and res["p_value"] == pytest.approx(exact, abs=1e-9)


def test_mcnemar_is_the_exact_binomial_on_the_discordant_items():
    from math import comb

    from geoviz.analysis.statistics import mcnemar

    a = np.array([1] * 30 + [1] * 9 + [0] * 2 + [0] * 9, bool)  # 9 right by A alone, 2 by B alone
    b = np.array([1] * 30 + [0] * 9 + [1] * 2 + [0] * 9, bool)
    r = mcnemar(a, b)
    p = sum(comb(11, k) for k in range(9, 12)) / 2**11
    assert (r["a_only"], r["b_only"]) == (9, 2) and r["p_value"] == pytest.approx(p) and r["verdict"] == "supported"
    assert mcnemar(b, a)["verdict"] == "contradicted" and mcnemar(a, a)["verdict"] == "undecided"


def test_mantel_with_a_constant_matrix_is_undecided():
    """No pair confused at all: no correlation to test (it once read as p = 0, "supported")."""
    angles = np.random.default_rng(0).random((5, 5))
    res = mantel(angles + angles.T, np.zeros((5, 5)))
    assert res["verdict"] == "undecided" and np.isnan(res["r"]) and "constant" in res["note"]


def test_holm_adjusts_as_the_step_down_procedure_does():
    from geoviz.analysis.statistics import holm

    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert np.allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
