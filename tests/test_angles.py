"""Inter-class angles, confusion, their correlation, and ICAL — against NumPy / SciPy / scikit-learn."""

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import confusion_matrix
from torch import nn

from geoviz.analysis import (
    AngleConfusionTracker,
    angle_confusion_correlation,
    class_mean_angles,
    class_vector_angles,
    confusion_rates,
    pair_values,
)
from geoviz.engine import fit
from geoviz.losses import NormalizedLinear, ical_loss, use_normalized_head
from geoviz.models import build_model

rng = np.random.default_rng(0)


def np_angles(v):
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    a = np.degrees(np.arccos(np.clip(u @ u.T, -1, 1)))
    np.fill_diagonal(a, 0)
    return a


def test_class_vector_angles_of_a_model_and_a_matrix():
    m = build_model("resnet8", 5)
    ref = np_angles(m.fc.weight.detach().numpy().astype(np.float64))
    assert np.allclose(class_vector_angles(m).numpy(), ref, atol=1e-6)
    w = rng.normal(size=(4, 7))
    assert np.allclose(class_vector_angles(w).numpy(), np_angles(w))
    with pytest.raises(ValueError, match="no linear classifier"):
        class_vector_angles(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(ValueError, match="at least 2 classes"):
        class_vector_angles(np.ones((1, 3)))
    with pytest.raises(ValueError, match="zero vector"):
        class_vector_angles(np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]))


def test_class_mean_angles():
    f = rng.normal(size=(60, 5)) + 2.0
    y = np.arange(60) % 3
    means = np.stack([f[y == c].mean(0) for c in range(3)])
    assert np.allclose(class_mean_angles(f, y).numpy(), np_angles(means))
    assert np.allclose(class_mean_angles(f, y, center=True).numpy(), np_angles(means - f.mean(0)))
    with pytest.raises(ValueError, match=r"classes \[3\] have no samples"):
        class_mean_angles(f, y, num_classes=4)


def test_confusion_rates_against_sklearn():
    t = rng.integers(0, 4, size=300)
    p = np.where(rng.random(300) < 0.7, t, rng.integers(0, 4, size=300))
    cm = confusion_matrix(t, p, labels=range(4))
    assert np.array_equal(confusion_rates(t, p, 4, normalize="none"), cm)
    assert np.allclose(
        confusion_rates(t, p, 4, normalize="true"), confusion_matrix(t, p, labels=range(4), normalize="true")
    )
    pair = confusion_rates(t, p, 4)
    n = cm.sum(1)
    for i in range(4):
        for j in range(4):
            ref = 0.0 if i == j else (cm[i, j] + cm[j, i]) / (n[i] + n[j])
            assert abs(pair[i, j] - ref) < 1e-12
    assert np.allclose(pair, pair.T)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.array([0, 1, 5]), np.array([0, 1, 1]), 3), r"y_true holds labels outside \[0, 3\)"),
        ((np.array([0, 1]), np.array([0, 1, 1]), 3), "differ in length"),
        ((np.array([0, 0]), np.array([0, 0]), 1), "at least 2 classes"),
        ((np.array([0.5, 1]), np.array([0, 1]), 2), "integer class labels"),
    ],
)
def test_confusion_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        confusion_rates(*args)


def test_correlation_matches_scipy_and_finds_the_papers_sign():
    c = 8
    ang = np_angles(rng.normal(size=(c, 16)))
    conf = np.exp(-ang / 30.0) + 0.01 * rng.random((c, c))  # smaller angle, more confusion
    conf = (conf + conf.T) / 2
    np.fill_diagonal(conf, 0)
    out = angle_confusion_correlation(ang, conf, n_boot=500)
    a, b = pair_values(ang), pair_values(conf)
    assert out["n_pairs"] == 28
    assert (
        abs(out["pearson"] - stats.pearsonr(a, b)[0]) < 1e-12
        and abs(out["pearson_p"] - stats.pearsonr(a, b)[1]) < 1e-12
    )
    assert abs(out["spearman"] - stats.spearmanr(a, b)[0]) < 1e-12
    assert out["pearson"] < -0.8 and out["pearson_ci"][0] <= out["pearson"] <= out["pearson_ci"][1] < 0
    with pytest.raises(ValueError, match="at least 3 pairs"):
        angle_confusion_correlation(np.zeros((2, 2)), np.zeros((2, 2)))


def test_normalized_linear_gives_norm_times_cosine():
    head = NormalizedLinear(6, 3).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    w = head.weight.detach().numpy()
    cos = (x.numpy() @ w.T) / (np.linalg.norm(x.numpy(), axis=1, keepdims=True) * np.linalg.norm(w, axis=1))
    assert np.allclose(head(x).detach().numpy(), np.linalg.norm(x.numpy(), axis=1, keepdims=True) * cos)
    assert torch.allclose(NormalizedLinear(16, 10).weight.norm(dim=1), torch.ones(10))  # see the init comment
    m = use_normalized_head(build_model("resnet8", 3))
    assert isinstance(m.fc, NormalizedLinear) and m.classifier is m.fc and m.build_args["head"] == "normalized"


def test_ical_golden_values():
    w = rng.normal(size=(5, 8))
    u = w / np.linalg.norm(w, axis=1, keepdims=True)
    ref = 5.0 / 25 * np.sum(u.sum(0) ** 2)
    assert abs(ical_loss(torch.from_numpy(w), 5.0).item() - ref) < 1e-12
    cos = u @ u.T
    off = ~np.eye(5, dtype=bool)
    assert abs(ref - 5.0 / 25 * (5 + cos[off].sum())) < 1e-12  # the pairwise form
    conf = rng.random((5, 5))
    conf = (conf + conf.T) / 2
    wts = 0.5 * (1 + conf / conf[off].mean()) * off
    ref_c = 5.0 / 25 * (5 + (wts * cos).sum())
    assert (
        abs(ical_loss(torch.from_numpy(w), 5.0, pairs="confused", confusion=torch.from_numpy(conf)).item() - ref_c)
        < 1e-12
    )
    # capped: one pair dominates the confusion; its weight is cut to 2, then all rescaled to mean 1
    conf[0, 1] = conf[1, 0] = 50.0
    wts = np.minimum(0.5 * (1 + conf / conf[off].mean()) * off, 2.0)
    wts = wts / wts[off].mean() * off
    assert (
        wts.max() < 3
        and abs(
            ical_loss(torch.from_numpy(w), 5.0, pairs="confused_capped", confusion=torch.from_numpy(conf)).item()
            - 5.0 / 25 * (5 + (wts * cos).sum())
        )
        < 1e-12
    )
    # hinge: ICAL's term whole, plus min(c / mean, 2) · relu(cos + 1/(C−1)) on every ordered pair
    push = np.minimum(conf / conf[off].mean(), 2.0) * off
    ref_h = 5.0 / 25 * (np.sum(u.sum(0) ** 2) + (push * np.maximum(cos + 1 / 4, 0)).sum())
    assert (
        abs(
            ical_loss(torch.from_numpy(w), 5.0, pairs="confused_hinge", confusion=torch.from_numpy(conf)).item() - ref_h
        )
        < 1e-12
    )
    with pytest.raises(ValueError, match="needs a \\(5, 5\\) confusion"):
        ical_loss(torch.from_numpy(w), pairs="confused")
    with pytest.raises(ValueError, match=r"class vectors \[1\] are zero"):
        ical_loss(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_ical_minimum_is_vectors_summing_to_zero_and_sgd_pushes_them_apart():
    c = 4
    simplex = np.eye(c) - 1.0 / c  # a regular simplex: unit-length after normalising, summing to zero
    w = torch.tensor(simplex, requires_grad=True)
    loss = ical_loss(w, 5.0)
    loss.backward()
    assert loss.item() < 1e-20 and w.grad.abs().max() < 1e-10
    torch.manual_seed(0)
    crowded = torch.nn.functional.normalize(torch.randn(6, 10) * 0.2 + torch.randn(1, 10), dim=1)
    w = crowded.clone().requires_grad_(True)

    def mean_angle():
        return pair_values(class_vector_angles(w.detach())).mean()

    losses, angle0 = [ical_loss(w, 5.0).item()], mean_angle()
    opt = torch.optim.SGD([w], lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        ical_loss(w, 5.0).backward()
        opt.step()
        losses.append(ical_loss(w, 5.0).item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.5 * losses[0]
    assert mean_angle() > angle0 + 10


def test_ical_term_and_tracker_in_fit(tmp_path):
    from geoviz.datasets import get_dataset
    from geoviz.runs import RunDir

    train, val = get_dataset("shapes10", "train", n=64), get_dataset("shapes10", "val", n=40)
    m = use_normalized_head(build_model("resnet8", 10))
    res = fit(
        m,
        train,
        val,
        terms=["ce", {"name": "ical", "weight": 10, "pairs": "confused"}],
        epochs=2,
        batch_size=16,
        lr=0.05,
        callbacks=[AngleConfusionTracker(10)],
        run=RunDir("ical", tmp_path),
    )
    last = res.history[-1]
    assert np.array(last["angles"]).shape == (10, 10) and np.array(last["confusion"]).shape == (10, 10)
    assert set(last["angle_confusion"]) >= {"pearson", "spearman", "pearson_ci", "n_pairs"} and "loss/ical" in last
    saved = RunDir("ical", tmp_path).read_metrics()["epochs"][-1]
    assert saved["angle_confusion"]["n_pairs"] == 45
    with pytest.raises(ValueError, match="needs the student's classifier"):
        fit(nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)), train, terms=["ce", "ical"], epochs=1)


def test_angles_config_and_most_confused_selection():
    from geoviz.experiments.angles import AnglesConfig, AnglesResult, AnglesRun

    assert AnglesConfig().methods == ("ce", "normalized_ce", "ical", "ical_confused", "ical_confused_hinge")
    with pytest.raises(ValueError, match=r"unknown methods \['fical'\]"):
        AnglesConfig(methods=("ce", "fical"))
    with pytest.raises(ValueError, match="lam must be >= 0"):
        AnglesConfig(lam=-1)
    assert AnglesConfig().terms("ical_confused")[1] == {"name": "ical", "weight": 10.0, "pairs": "confused"}
    assert (
        AnglesConfig().terms("normalized_ce") == ["ce"]
        and AnglesConfig().terms("ical_confused_capped")[1]["pairs"] == "confused_capped"
    )
    # 6 test images of classes 0/1/2; the model mistakes images 1 (0→1, p=0.7) and 3 (1→0, p=0.9)
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.1, 0.1, 0.8], [0.3, 0.1, 0.6]]
    )
    run = AnglesRun("ce", 0, [], {}, np.zeros((3, 3)), np.zeros((3, 3)), probs, {})
    res = AnglesResult(AnglesConfig(), [run], ["a", "b", "c"], torch.zeros(6, 3, 4, 4, dtype=torch.uint8), labels)
    assert [n for n, _, _ in res.most_confused(run, 0, 1)] == [3, 1]
    assert [n for n, _, _ in res.most_confused(run, 0, 2)] == [
        5,
        0,
        1,
        4,
    ]  # no mistakes: the closest calls (ties by index)


def synthetic_angles_result(effect: float = 0.05, seeds=(0, 1, 2, 3), classes=("a", "b", "c", "d")):
    """Runs built by hand: ical beats normalized_ce by `effect` in accuracy on every seed (± a
    little), normalized_ce and ce tie; each history holds three epochs of angles and confusion."""
    from geoviz.experiments.angles import AnglesConfig, AnglesResult, AnglesRun

    c = len(classes)
    rng = np.random.default_rng(0)
    cfg = AnglesConfig(methods=("ce", "normalized_ce", "ical"), seeds=seeds)
    runs = []
    for s in seeds:
        base = 0.6 + 0.05 * rng.random()
        for m, acc, angle in (
            ("ce", base, 80.0),
            ("normalized_ce", base + 0.001 * (-1) ** s, 80.0),
            ("ical", base + effect + 0.002 * rng.random(), 95.0),
        ):
            hist = []
            for e in (1, 2, 3):
                ang = np.full((c, c), angle + e + s)
                np.fill_diagonal(ang, 0.0)
                conf = np.full((c, c), 0.1 / e)
                np.fill_diagonal(conf, 0.0)
                conf[0, 1] = conf[1, 0] = 0.3 / e + 0.01 * s
                hist.append(
                    {
                        "epoch": e,
                        "angles": ang.tolist(),
                        "confusion": conf.tolist(),
                        "angle_confusion": {"pearson": -0.5, "spearman": -0.4, "n_pairs": 6, "pearson_ci": [-0.9, 0.1]},
                    }
                )
            runs.append(
                AnglesRun(
                    m,
                    s,
                    hist,
                    {"test_acc_best_val": acc, "test_acc_last": acc},
                    np.asarray(hist[-1]["angles"]),
                    np.asarray(hist[-1]["confusion"]),
                    np.full((400, c), 1.0 / c),
                    {"pearson": -0.5, "spearman": -0.4},
                    {"r": -0.5, "p_value": 0.01, "verdict": "supported"},
                )
            )
    return AnglesResult(cfg, runs, list(classes), torch.zeros(400, 3, 4, 4, dtype=torch.uint8), np.arange(400) % c)


def test_angles_claims_are_paired_by_seed_and_come_out_either_way():
    res = synthetic_angles_result(0.05)
    by = {c.claim: c for c in res.claims() if c.unit == "seeds"}
    assert by["ICAL beats CE with the same normalised head (the loss's own effect)"].verdict == "supported"
    assert by["the normalised head alone beats plain CE"].verdict == "undecided"
    assert by["ICAL widens the mean class-vector angle (vs the same head without it)"].mean == pytest.approx(15.0)
    assert by["ICAL widens the smallest class-vector angle (vs the same head without it)"].verdict == "supported"
    assert res.relation_counts()["ical"] == {"supported": 4, "contradicted": 0, "undecided": 0}
    mantel_claims = [c for c in res.claims() if c.unit.startswith("classes")]  # one Mantel test per run
    assert (
        len(mantel_claims) == len(res.runs)
        and {c.mean for c in mantel_claims} == {-0.5}
        and {c.p for c in mantel_claims} == {0.01}
    )
    worse = {c.claim: c for c in synthetic_angles_result(-0.05).claims()}
    assert worse["ICAL beats plain CE"].verdict == "contradicted"


def test_pair_trajectory_reads_the_pair_from_every_epoch():
    run = synthetic_angles_result().runs[2]
    traj = run.pair_trajectory(0, 1)
    assert traj["epochs"] == [1, 2, 3] and traj["confusion"] == pytest.approx([0.3, 0.15, 0.1])
    assert traj["angle"] == [h["angles"][0][1] for h in run.history]


@pytest.mark.parametrize(
    "pairs, collapses", [("all", False), ("confused", True), ("confused_capped", True), ("confused_hinge", False)]
)
def test_which_confusion_weightings_keep_their_minimum_away_from_collapse(pairs, collapses):
    """Optimise 10 unit class vectors alone under an uneven confusion: unequal weights on the
    cosines make the loss negative by pulling low-weight pairs together (collapse); ICAL only asks
    the vectors to sum to zero; the hinge variant's minimum stays near the regular simplex."""
    torch.manual_seed(0)
    c = 10
    r = np.random.default_rng(0).random((c, c))
    conf = torch.tensor((r + r.T) / 2, dtype=torch.float32)
    w = torch.randn(c, 32, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(3000):
        opt.zero_grad()
        loss = ical_loss(w, 5.0, pairs=pairs, confusion=conf)
        loss.backward()
        opt.step()
    ang = class_vector_angles(w.detach()).numpy()
    smallest = ang[~np.eye(c, dtype=bool)].min()
    if collapses:
        assert smallest < 30 and loss.item() < -0.1, (smallest, loss.item())
    else:
        assert smallest > 70 and loss.item() > -1e-6, (smallest, loss.item())
    if pairs == "confused_hinge":
        assert smallest > np.degrees(np.arccos(-1 / (c - 1))) - 10  # near the simplex's 96.4°
