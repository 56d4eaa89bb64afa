"""Shape probe experiments: definitions, transfer sets, the probe pipeline, bad input."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from geoviz.analysis import linear_probe, probe_layers
from geoviz.datasets import TASKS, make_shapes
from geoviz.datasets.probe_tasks import EXPERIMENTS, TRANSFER_SCALE, ProbeDataset, get_experiment
from geoviz.experiments.probes import ProbesConfig, check_pretrained_weights, resolve_architecture
from geoviz.models import build_model

from test_shapes import EIGHT, n_holes, n_parts  # tests/ is on sys.path (pytest rootdir)


def test_six_experiments_two_local_four_global():
    assert list(EXPERIMENTS) == ["E1", "E2", "E3", "E4", "E5", "E6"]
    assert [e.invariant for e in EXPERIMENTS.values()] == ["local"] * 2 + ["global"] * 4
    assert get_experiment("hole") is EXPERIMENTS["E3"] and EXPERIMENTS["E6"].classes == ["no_hole", "hole", "connected", "disconnected", "inside", "outside"]
    with pytest.raises(KeyError, match="unknown probe experiment 'holes'; closest: 'hole'"):
        get_experiment("holes")


@pytest.mark.parametrize("key", list(EXPERIMENTS))
def test_datasets_are_balanced_and_hold_the_named_classes(key):
    exp = EXPERIMENTS[key]
    ds = ProbeDataset(key, "train", n_per_class=6, split="val")
    assert np.bincount(ds.labels.numpy()).tolist() == [6] * len(exp.classes) and ds[0][0].shape == (3, 32, 32)
    # image j of class c is image (c_task + k*j) of the source task: regenerate and check its class
    for label, (task, cls) in enumerate(exp.sources):
        k, c = len(TASKS[task]), TASKS[task].index(cls)
        from geoviz.datasets.shapes import SPLIT_OFFSET

        _, _, meta = make_shapes(task, 1, size=32, indices=[SPLIT_OFFSET["val"] + c + k * 3])
        assert meta[0]["class"] == cls == ds.classes[label]


def _area(ds):
    return (ds.images[:, 0].float() > 127).float().mean(dim=(1, 2))


def test_transfer_sets_differ_as_documented():
    tr, te = ProbeDataset("E2", "train", n_per_class=40, split="test"), ProbeDataset("E2", "transfer", n_per_class=40, split="test")
    assert not any(torch.equal(a, b) for a, b in zip(tr.images, te.images))
    # quadrilaterals: hand-drawn outlines (more vertices) and smaller (TRANSFER_SCALE)
    _, _, meta_tr = make_shapes("quad", 8, size=32)
    _, _, meta_te = make_shapes("quad", 8, size=32, variant="irregular", scale=TRANSFER_SCALE["quad"])
    assert all(m["vertices"][0].shape[0] == 4 for m in meta_tr) and all(m["vertices"][0].shape[0] > 4 for m in meta_te)
    assert max(m["scale"] for m in meta_te) <= TRANSFER_SCALE["quad"][1] * 32 < min(m["scale"] for m in meta_tr)
    assert _area(te).mean() < 0.6 * _area(tr).mean()
    holes_tr, holes_te = ProbeDataset("E3", "train", n_per_class=40), ProbeDataset("E3", "transfer", n_per_class=40)
    assert _area(holes_te).mean() > _area(holes_tr).mean()  # larger shapes
    assert "irregular" in EXPERIMENTS["E3"].tests_on


@pytest.mark.parametrize("size", [32, 48])
def test_transfer_set_labels_are_true(size):
    for key in ("E3", "E4"):
        ds = ProbeDataset(key, "transfer", n_per_class=150, size=size, channels=1)
        for x, y in zip(ds.images, ds.labels):
            b = x[0].numpy() > 127
            assert (n_holes(b) == int(y)) if key == "E3" else (n_parts(b) == (1 if y == 0 else 2))
    images, labels, meta = make_shapes("inside", 200, size=size, variant="irregular", scale=TRANSFER_SCALE["inside"])
    for img, y, m in zip(images, labels, meta):
        b = img[0].numpy() > 0.5
        comp, n = ndimage.label(b, structure=EIGHT)
        dx, dy = (int(v) for v in m["dot"])
        bg, _ = ndimage.label(~(b & (comp != comp[dy, dx])))
        border = set(np.unique(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]])))
        assert n == 2 and (bg[dy, dx] not in border) == (int(y) == 0)


def test_linear_probe_separable_vs_random():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    x = rng.normal(size=(120, 5)) + 4.0 * y[:, None]
    assert linear_probe(x, y, x, y)["cv_acc"] == 1.0
    noise = linear_probe(rng.normal(size=(120, 5)), rng.permutation(y), folds=4)
    assert 0.25 < noise["cv_acc"] < 0.75 and noise["folds"] == 4
    with pytest.raises(ValueError, match="at least two classes"):
        linear_probe(x, np.zeros(120, int))


def test_probe_pipeline_on_a_small_net():
    torch.manual_seed(0)
    net = build_model("resnet14", 2).eval()
    rows = probe_layers(net, ProbeDataset("E3", "train", n_per_class=20), ProbeDataset("E3", "transfer", n_per_class=10), folds=2)
    assert [r["layer"] for r in rows] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1"]
    assert rows[0]["relative_depth"] == 0 and rows[-1]["relative_depth"] == 1 and rows[-1]["channels"] == 64
    # the same numbers, independently: a plain forward hook, pooling by hand, scikit-learn's probe
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def pooled(ds, layer):
        out = []
        h = net.get_submodule(layer).register_forward_hook(lambda m, i, o: out.append(o.mean(dim=(2, 3)).double()))
        with torch.no_grad():
            net(torch.stack([ds[i][0] for i in range(len(ds))]))
        h.remove()
        return out[0].numpy(), ds.labels.numpy()

    train, transfer = ProbeDataset("E3", "train", n_per_class=20), ProbeDataset("E3", "transfer", n_per_class=10)
    for row in (rows[1], rows[4]):
        xtr, ytr = pooled(train, row["layer"])
        xte, yte = pooled(transfer, row["layer"])
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        cv = cross_val_score(probe, xtr, ytr, cv=StratifiedKFold(2, shuffle=True, random_state=0)).mean()
        assert row["cv_acc"] == pytest.approx(cv, abs=1e-9)
        assert row["transfer_acc"] == pytest.approx(probe.fit(xtr, ytr).score(xte, yte), abs=1e-9)


def test_bad_configs_fail_clearly(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="unknown probe experiment 'E7'"):
        ProbesConfig(experiments=("E7",))
    with pytest.raises(KeyError, match="unknown architecture 'resnet9'; closest: "):
        ProbesConfig(architectures=("resnet9",))
    with pytest.raises(ValueError, match="unknown starts \\['imagenet'\\]"):
        ProbesConfig(starts=("imagenet",))
    assert ProbesConfig(experiments=("hole", "quad4")).experiments == ("E3", "E2")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = ProbesConfig(architectures=("tv:resnet18", "resnet8"), starts=("pretrained",))
    with pytest.raises(FileNotFoundError, match=r"(?s)pretrained weights are missing .*tv:resnet18: .*resnet18-f37072fd.pth \(from https://download.pytorch.org"):
        check_pretrained_weights(cfg)
    check_pretrained_weights(ProbesConfig(architectures=("tv:resnet18",), starts=("scratch",)))  # nothing needed
    name, note = resolve_architecture("inception_resnet_v2")
    assert (name, note is None) in {("timm:inception_resnet_v2", True), ("tv:inception_v3", False)}
