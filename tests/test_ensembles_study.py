import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geoviz.analysis.cam import grad_cam
from geoviz.experiments.ensembles import EnsemblesConfig, EnsemblesResult, _freeze_all_but_last, run_ensembles
from geoviz.models import build_model


def test_grad_cam_is_the_formula_at_the_last_stage():
    torch.manual_seed(0)
    net = build_model("resnet8", 8).train()
    x = torch.rand(3, 3, 32, 32)
    got, target = grad_cam(net, x, target=[1, 5, 7])
    assert net.training  # the model's mode is given back
    net.eval()
    # independently, with hooks: α_k = spatial mean of ∂score/∂A_k, map = ReLU(Σ α_k A_k), upsampled, / max
    store = {}
    h = net.layer3.register_forward_hook(lambda m, i, o: store.update(a=o))
    out = net(x)
    h.remove()
    grads = torch.autograd.grad(out[torch.arange(3), torch.tensor([1, 5, 7])].sum(), store["a"])[0]
    cam = F.relu((grads.mean((2, 3), keepdim=True) * store["a"]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(32, 32), mode="bilinear", align_corners=False)[:, 0].detach()
    want = cam / cam.flatten(1).amax(1)[:, None, None]
    assert target.tolist() == [1, 5, 7]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "arch, trainable",
    [
        ("resnet8", {"layer3", "fc"}),
        ("wrn_16_1", {"block3", "bn", "fc"}),
        ("mobilenetv2_half", {"stage4", "conv_last", "fc"}),
    ],
)
def test_freezing_keeps_the_source_weights_and_statistics_before_the_last_stage(arch, trainable):
    from geoviz.engine import fit

    torch.manual_seed(0)
    net = build_model(arch, 4)
    _freeze_all_but_last(net)
    assert {n.split(".")[0] for n, p in net.named_parameters() if p.requires_grad} == trainable
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data = torch.utils.data.TensorDataset(torch.rand(32, 3, 32, 32), torch.arange(32) % 4)
    fit(net, data, epochs=1, lr=0.1, batch_size=16, device="cpu", progress=False)
    after = net.state_dict()
    for k, v in before.items():
        if k.split(".")[0] in trainable:
            continue
        assert torch.equal(v, after[k]), f"{arch}: {k} changed although frozen"
    assert any(not torch.equal(v, after[k]) for k, v in before.items() if k.startswith("fc."))


def test_load_backbone_never_keeps_the_source_head(tmp_path):
    from geoviz.models import load_backbone, save_model

    src = build_model("resnet8", 8)
    save_model(src, tmp_path / "m.pt")
    torch.manual_seed(1)
    dst = build_model("resnet8", 8)
    head = dst.fc.weight.clone()
    load_backbone(dst, tmp_path / "m.pt")
    assert torch.equal(dst.fc.weight, head) and torch.equal(dst.conv1.weight, src.conv1.weight)


def test_pretrained_once_caches_by_everything_that_changes_the_weights(tmp_path):
    from geoviz.experiments import pretrained_once

    calls = []

    def data():
        calls.append(1)
        d = torch.utils.data.TensorDataset(torch.rand(16, 3, 32, 32), torch.arange(16) % 4)
        return d, d

    kw = dict(name="src", settings={"n": 16}, epochs=1, lr=0.05, device="cpu", run_root=tmp_path)
    a = pretrained_once("resnet8", 4, data, batch_size=8, **kw)
    assert pretrained_once("resnet8", 4, data, batch_size=8, **kw) == a and len(calls) == 1  # cached
    assert pretrained_once("resnet8", 4, data, batch_size=16, **kw) != a and len(calls) == 2


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from sklearn.linear_model import LogisticRegression

    import geoviz.experiments.ensembles as study
    import geoviz.methods.ensemble as ens

    seen, weights_seen = [], []
    original, original_weights = LogisticRegression.fit, ens.fit_weights

    def spy(self, X, y, *a, **k):
        if not floor_running:  # the panel floor's own logistic regressions see training images, as they should
            seen.append(np.array(X).shape)
        return original(self, X, y, *a, **k)

    floor_running = False
    original_floor = study.image_floor

    def spy_floor(*a, **k):
        nonlocal floor_running
        floor_running = True
        try:
            return original_floor(*a, **k)
        finally:
            floor_running = False

    def spy_weights(p, y):
        weights_seen.append(np.asarray(p).shape)
        return original_weights(p, y)

    LogisticRegression.fit, ens.fit_weights, study.image_floor = spy, spy_weights, spy_floor
    try:
        cfg = EnsemblesConfig.from_profile("smoke", n_test=40, floor_n=64)
        res = run_ensembles(cfg, run_root=tmp_path_factory.mktemp("runs"), progress=False)
    finally:
        LogisticRegression.fit, ens.fit_weights, study.image_floor = original, original_weights, original_floor
    return cfg, res, seen + weights_seen


def test_study_runs_every_member_and_fusion_and_stacks_on_validation_only(smoke):
    cfg, res, seen = smoke
    assert len(res.rows) == len(cfg.seeds) * len(cfg.starts) * (len(cfg.members) + len(cfg.fusions))
    # one stacker and one set of weights per (seed, start), fitted on the 48 validation images' probabilities, never the
    # 40 test images'
    runs = len(cfg.seeds) * len(cfg.starts)
    assert seen == [(cfg.n_val, len(cfg.members) * 8)] * runs + [(len(cfg.members), cfg.n_val, 8)] * runs
    assert set(res.source_val_acc) == set(cfg.members) and all(0 <= v <= 1 for v in res.source_val_acc.values())
    assert res.test_images.shape[0] == 40 and res.floors["chance"] == pytest.approx(1 / 8)
    assert {c.verdict for c in res.claims()} <= {"supported", "contradicted", "undecided"}
    conf = res.confusion[("scratch", "resnet8")]
    assert conf.sum() == 40 and np.trace(conf) == round(
        next(r["acc"] for r in res.rows if r["seed"] == 0 and r["start"] == "scratch" and r["name"] == "resnet8") * 40
    )


def test_best_member_is_chosen_on_validation_and_claims_have_the_right_signs():
    cfg = EnsemblesConfig.from_profile("smoke", seeds=(0, 1, 2), fusions=("mean",))
    rows = []
    for sd in range(3):
        for st, shift in (("transfer", 0.10), ("scratch", 0.0)):
            # resnet8 looks best on validation but resnet14 is better on test
            rows += [
                {
                    "seed": sd,
                    "start": st,
                    "name": "resnet8",
                    "kind": "member",
                    "acc": 0.50 + shift + 0.01 * sd,
                    "val_acc": 0.9,
                },
                {
                    "seed": sd,
                    "start": st,
                    "name": "resnet14",
                    "kind": "member",
                    "acc": 0.70 + shift + 0.01 * sd,
                    "val_acc": 0.5,
                },
                {"seed": sd, "start": st, "name": "mean", "kind": "fusion", "acc": 0.60 + shift + 0.02 * sd},
            ]
    res = EnsemblesResult(cfg, rows, [], {"panel": 0.3}, [], {}, test_labels=np.zeros(100))
    got = {c.claim: c for c in res.claims()}
    assert (
        got[
            "transfer (from shapes10, whole network; epochs: 1) beats "
            "scratch: resnet8 (test accuracy, transfer minus scratch)"
        ].verdict
        == "supported"
    )
    beats = got["scratch: the mean ensemble beats its best member (chosen on validation)"]
    # against resnet8 (validation's choice): 0.60 + 0.02 sd − (0.50 + 0.01 sd) > 0; against resnet14 it would be < 0
    assert beats.mean == pytest.approx(0.11) and beats.verdict == "supported"
    assert got["scratch: resnet8 beats the panel floor (0.300)"].verdict == "supported"


def test_cam_and_member_probabilities_come_from_the_kept_models(smoke):
    cfg, res, _ = smoke
    c = res.cam(3, "transfer", "resnet14")
    model = res.models[("transfer", "resnet14")]
    with torch.no_grad():
        p = torch.softmax(model.eval()(res.test_images[3:4]), 1)[0].numpy()
    np.testing.assert_allclose(c["probabilities"], p, atol=1e-6)
    assert c["explained"] == int(p.argmax()) and c["label"] == int(res.test_labels[3])
    maps, _ = grad_cam(model, res.test_images[3:4], 5)
    np.testing.assert_allclose(res.cam(3, "transfer", "resnet14", 5)["map"], maps[0].numpy(), atol=1e-6)
    assert set(res.member_probabilities(0)) == set(res.models)
    with pytest.raises(KeyError, match="kept"):
        res.cam(0, "transfer", "vgg8")


def test_cam_explorer_pickers_redraw_the_cam_and_the_probabilities(smoke):
    from geoviz import viz

    cfg, res, _ = smoke
    app = viz.CamExplorer(res)
    before = (app.fig.layout.title.text, np.array(app.fig.data[2].z).copy())
    app.image.value = 7
    assert app.fig.layout.title.text != before[0] and "test image 7" in app.fig.layout.title.text
    np.testing.assert_allclose(app.fig.data[3].y, res.member_probabilities(7)[app.member.value], atol=1e-6)
    app.member.value = ("scratch", "resnet8")
    np.testing.assert_allclose(np.array(app.fig.data[2].z), res.cam(7, "scratch", "resnet8")["map"], atol=1e-6)
    app.target.value = 2
    assert "explaining " + res.classes[2] in app.fig.layout.title.text
    colours = list(app.fig.data[3].marker.color)
    assert colours.count(colours[int(res.test_labels[7])]) == 1  # the true class stands out
    assert app.info.value.count("✓") + app.info.value.count("✗") == len(res.models)


def test_ensemble_figures_show_the_table_floors_and_normalised_confusions(smoke):
    from geoviz import viz

    cfg, res, _ = smoke
    table = res.table()
    fig = viz.ensemble_accuracy_bars(table, res.floors, title="t")
    for tr in fig.data:
        want = {(r["kind"], r["name"]): r["acc"] for r in table if r["start"] == tr.name}
        assert list(tr.y) == [want[(k, n)] for k, n in zip(*tr.x)]
    assert {round(s.y0, 6) for s in fig.layout.shapes} == {
        round(res.floors["chance"], 6),
        round(res.floors["panel"], 6),
    }
    m = np.array([[3, 1, 0], [0, 0, 0], [2, 2, 4]])  # rows: true class; an empty row stays 0
    z = np.array(viz.confusion_grid({"a": m}, ["a", "b", "c"], title="t").data[0].z)
    np.testing.assert_allclose(z, [[0.75, 0.25, 0], [0, 0, 0], [0.25, 0.25, 0.5]])
    sc = viz.diversity_gain_scatter(res.diversity, cfg.fusions, title="t")
    assert sum(len(tr.x) for tr in sc.data) == len(res.diversity) * len(cfg.fusions)
    assert sc.layout.xaxis.title.text and sc.layout.yaxis.title.text


def test_class_gallery_gives_each_class_its_own_images():
    from geoviz.datasets import get_dataset
    from geoviz.experiments.ensembles import class_gallery

    cfg = EnsemblesConfig.from_profile("smoke")
    images, captions = class_gallery(cfg, per_class=2)
    test = get_dataset(cfg.dataset, "test", n=cfg.n_test, size=cfg.image_size)
    assert captions == [c for c in test.classes for _ in range(2)]
    for im, cap in zip(images, captions):
        i = next(i for i in range(len(test)) if torch.equal(test.images[i], im))
        assert test.classes[int(test.labels[i])] == cap


def test_still_learning_reads_the_slope_at_the_end_against_validation_noise():
    from geoviz.experiments.ensembles import at_chance, still_learning

    def h(vals):
        return [{"val_acc": v} for v in vals]

    # 10 epochs: the window is the last 3; slope 0.05/epoch → a rise of 0.10 over it. Under binomial
    # noise alone the fitted rise over 3 points has sd se·2·√(12/24) = √2·se, se = √(0.55·0.45/n)
    rising = h([0.1, 0.1, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.55, 0.6])
    assert 2 * np.sqrt(2) * np.sqrt(0.55 * 0.45 / 1000) < 0.10 < 2 * np.sqrt(2) * np.sqrt(0.55 * 0.45 / 100)
    assert still_learning(rising, 1000) is True and still_learning(rising, 100) is False
    plateau = h([0.1, 0.3, 0.5, 0.6, 0.6, 0.62, 0.61, 0.6, 0.61, 0.6])
    assert still_learning(plateau, 1000) is False and still_learning(plateau[:2], 100) is None
    # flat at chance: not learning, and flagged as at chance (0.125 + 2·√(0.125·0.875/320) ≈ 0.162)
    stuck = h([0.12, 0.13, 0.12, 0.13, 0.12, 0.13, 0.125, 0.13, 0.12, 0.13])
    assert still_learning(stuck, 320) is False and at_chance(stuck, 320, 0.125) is True
    assert at_chance(h([0.17]), 320, 0.125) is False and at_chance([], 320, 0.125) is None
    assert (
        still_learning([{"val_acc": 0.1}, {"train_loss": 1.0}, {"val_acc": 0.3}, {"val_acc": 0.9}], 100) is True
    )  # epochs without validation skipped


def test_imagenet_members_see_normalised_inputs_in_both_arms_and_cams_work_on_nested_stages(tmp_path, monkeypatch):
    from geoviz.analysis.cam import cam_layer
    from geoviz.experiments.ensembles import build_member

    torch.manual_seed(0)
    torch.save(build_model("tv:resnet18", 1000).state_dict(), tmp_path / "r18.pth")
    cfg = EnsemblesConfig.from_profile(
        "smoke", members=("tv:resnet18", "tv:mobilenet_v2"), source="imagenet", source_weights=str(tmp_path / "r18.pth")
    )
    x = torch.rand(2, 3, 32, 32)
    want = (x - torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]) / torch.tensor([0.229, 0.224, 0.225])[
        None, :, None, None
    ]
    for start in ("transfer", "scratch"):
        net, seen = build_member(cfg, "tv:resnet18", 8, start).eval(), []
        net.conv1.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        net(x)
        torch.testing.assert_close(seen[0], want)
    mn = build_model("tv:mobilenet_v2", 8)
    assert cam_layer(mn) is mn.features[18]
    maps, target = grad_cam(mn, x)
    assert maps.shape == (2, 32, 32) and maps.amax((1, 2)).le(1).all() and target.shape == (2,)


def test_a_member_that_cannot_be_built_as_asked_fails_before_any_training(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    cfg = EnsemblesConfig.from_profile("smoke", members=("resnet8", "tv:mobilenet_v2"), finetune="last")
    with pytest.raises(ValueError, match="finetune='all'"):
        run_ensembles(cfg, run_root=runs, progress=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))
    cfg = EnsemblesConfig.from_profile(
        "smoke", members=("tv:resnet18", "tv:mobilenet_v2"), source="imagenet", starts=("scratch", "transfer")
    )
    with pytest.raises(FileNotFoundError, match="downloads nothing unless asked"):
        run_ensembles(cfg, run_root=runs, progress=False)
    assert not any(runs.glob("*/*.pt")) and not any(runs.glob("*/*/*.pt"))  # nothing trained
