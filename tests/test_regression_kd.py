import numpy as np
import pytest
import torch

from geoviz.datasets import get_dataset
from geoviz.engine import distill_offline, evaluate_regression, fit, pseudo_label
from geoviz.models import build_model
from geoviz.runs import RunDir


def test_shape_size_targets_are_the_drawn_sizes_with_label_noise_on_training_splits():
    tr, te = get_dataset("shape_size", "train", n=400), get_dataset("shape_size", "test", n=200)
    noise = (tr.targets - tr.true_sizes).numpy()
    assert abs(noise.std() - 0.5) < 0.06 and abs(noise.mean()) < 0.08
    assert (
        torch.equal(te.targets, te.true_sizes)
        and 3.7 < float(tr.true_sizes.min())
        and float(tr.true_sizes.max()) < 14.5
    )
    # bigger shapes cover more pixels: the target is visible in the image
    fg = [(x - x.median()).abs().mean().item() for x, _ in (tr[i] for i in range(200))]
    assert np.corrcoef(fg, tr.true_sizes[:200].numpy())[0, 1] > 0.3
    assert te.mean_predictor_mae(float(tr.targets.mean())) == pytest.approx(
        float((te.targets - tr.targets.mean()).abs().mean())
    )
    with pytest.raises(ValueError, match="label_noise must be >= 0"):
        get_dataset("shape_size", "train", n=4, label_noise=-1)


def test_regression_objective_reports_and_selects_on_mae():
    torch.manual_seed(0)
    x = torch.rand(160, 3, 16, 16)
    y = x[:, 0].mean((1, 2)) * 10
    data = torch.utils.data.TensorDataset(x, y)
    m = build_model("resnet8", 1)
    res = fit(
        m, data, data, test=data, objective="regression", epochs=3, lr=0.02, batch_size=32, device="cpu", progress=False
    )
    h = res.history[-1]
    assert {"train_mae", "val_mae", "val_loss"} <= set(h) and "train_acc" not in h
    got = evaluate_regression(m, data, device="cpu")
    with torch.no_grad():
        pred = m.eval()(x)[:, 0]
    assert got["mae"] == pytest.approx(float((pred - y).abs().mean()), rel=1e-5)
    assert got["loss"] == pytest.approx(float(((pred - y) ** 2).mean()), rel=1e-5)
    best = min(r["val_mae"] for r in res.history)
    assert res.summary["val_mae_best"] == pytest.approx(best)


def test_offline_pseudo_labels_resume_and_refuse_another_teacher(tmp_path):
    torch.manual_seed(0)
    pool = torch.utils.data.TensorDataset(torch.rand(50, 3, 16, 16), torch.zeros(50))
    teacher = build_model("resnet8", 1).eval()
    run = RunDir("kd", tmp_path)
    labels = pseudo_label(teacher, pool, run, chunk=16, progress=False)
    with torch.no_grad():
        want = teacher(pool.tensors[0])[:, 0].numpy()
    np.testing.assert_allclose(labels, want, rtol=1e-4, atol=1e-5)
    # an interrupted labelling: the final file and one chunk gone, a chunk's values marked
    (run.path / "pseudo_labels.npy").unlink()
    (run.path / "pseudo_labels" / "part-00002.npy").unlink()
    np.save(run.path / "pseudo_labels" / "part-00000.npy", np.full(16, 7.0, np.float32))
    again = pseudo_label(teacher, pool, run, chunk=16, progress=False)
    assert (again[:16] == 7.0).all() and np.allclose(
        again[32:48], want[32:48], atol=1e-5
    )  # kept chunks reused, the missing one recomputed
    other = build_model("resnet8", 1)
    with pytest.raises(ValueError, match="pseudo-labels of another teacher"):
        pseudo_label(other, pool, run, chunk=16, progress=False)
    with pytest.raises(ValueError, match="chunk size"):  # parts written 16 at a time are not read 8 at a time
        pseudo_label(teacher, pool, run, chunk=8, progress=False)
    # following the refusal's advice (record and labels deleted) leaves no stale part behind
    (run.path / "pseudo_labels.json").unlink()
    (run.path / "pseudo_labels.npy").unlink()
    fresh = pseudo_label(other, pool, run, chunk=16, progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(fresh, other.eval()(pool.tensors[0])[:, 0].numpy(), rtol=1e-4, atol=1e-5)


def test_regression_kd_runs_end_to_end_and_resumes(tmp_path):
    tr, va = get_dataset("shape_size", "train", n=96), get_dataset("shape_size", "val", n=48)
    pool = get_dataset("shape_size", "train", n=128, seed=1)
    teacher = build_model("resnet8", 1)
    fit(teacher, tr, va, objective="regression", epochs=1, lr=0.02, batch_size=32, device="cpu", progress=False)
    student = build_model("resnet8", 1, width=0.5)
    run = RunDir("distil", tmp_path)
    out = distill_offline(
        student, teacher, tr, pool, va, run=run, pretrain_epochs=2, finetune_epochs=1, batch_size=32, progress=False
    )
    assert len(out["pseudo_labels"]) == 128 and [h["epoch"] for h in out["history"]["pretrain"]] == [1, 2]
    assert (run.path / "pretrain" / "last.pt").is_file() and (run.path / "finetune" / "last.pt").is_file()
    # a rerun resumes: nothing is trained or labelled again (no checkpoint or label file rewritten)
    files = [run.path / "pretrain" / "last.pt", run.path / "finetune" / "last.pt", run.path / "pseudo_labels.npy"]
    stamps = [f.stat().st_mtime_ns for f in files]
    student2 = build_model("resnet8", 1, width=0.5)
    out2 = distill_offline(
        student2, teacher, tr, pool, va, run=run, pretrain_epochs=2, finetune_epochs=1, batch_size=32, progress=False
    )
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert out2["finetune"]["val_mae_best"] == pytest.approx(out["finetune"]["val_mae_best"])
    np.testing.assert_array_equal(out2["pseudo_labels"], out["pseudo_labels"])
    for a, b in zip(student.state_dict().values(), student2.state_dict().values()):  # the finished student, read back
        assert torch.equal(a, b)
    # another pool in the same labels run is refused, not mixed
    with pytest.raises(ValueError, match="another teacher, pool"):
        pseudo_label(teacher, get_dataset("shape_size", "train", n=128, seed=2), run, progress=False)


def _claim_rows(teacher, distilled, labelled_only):
    rows = []
    for sd, (t, d, lo) in enumerate(zip(teacher, distilled, labelled_only)):
        rows += [
            {"seed": sd, "model": "teacher", "arm": "teacher", "mae": t, "corrupted_mae": 2 * t},
            {"seed": sd, "model": "resnet8", "arm": "distilled", "mae": d, "corrupted_mae": 2 * d},
            {"seed": sd, "model": "resnet8", "arm": "labelled only", "mae": lo, "corrupted_mae": 2 * lo},
        ]
    return rows


@pytest.mark.parametrize(
    "distilled, labelled_only, near, helps",
    [
        (
            [1.03, 1.05, 1.04],
            [1.30, 1.36, 1.33],
            "supported",
            "supported",
        ),  # within 10 % of 1.0; distillation 0.29 px better
        (
            [1.50, 1.62, 1.55],
            [1.20, 1.28, 1.25],
            "contradicted",
            "contradicted",
        ),  # 55 % off the teacher; the labelled set alone better
        (
            [1.02, 1.19, 1.08],
            [1.00, 1.25, 1.02],
            "undecided",
            "undecided",
        ),  # straddles the margin; differences of both signs
    ],
)
def test_student_claims_are_three_valued_with_the_right_signs(distilled, labelled_only, near, helps):
    from scipy import stats

    from geoviz.experiments.students import StudentsConfig, StudentsResult

    cfg = StudentsConfig(students=("resnet8",), seeds=(0, 1, 2), near_teacher_margin=0.10)
    res = StudentsResult(
        cfg, _claim_rows([1.0, 1.0, 1.0], distilled, labelled_only), 2.5, {}, torch.zeros(1), np.zeros(1)
    )
    got = {c.claim: c for c in res.claims()}
    clean = got["resnet8 (distilled) within 10% of the teacher's MAE, clean"]
    # independently: the t interval of 1.1·teacher − student over the three seeds
    d = 1.1 - np.array(distilled)
    lo, hi = stats.t.interval(0.95, 2, loc=d.mean(), scale=d.std(ddof=1) / np.sqrt(3))
    assert clean.interval == pytest.approx((lo, hi)) and clean.verdict == near
    assert clean.extra["gap_mean"] == pytest.approx(np.mean(distilled) - 1.0)
    assert got["resnet8 (distilled) within 10% of the teacher's MAE, corrupted"].verdict == near  # the same rows × 2
    assert got["resnet8: distillation beats the labelled set alone"].verdict == helps
