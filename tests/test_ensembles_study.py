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


@pytest.mark.parametrize("arch, trainable", [("resnet8", {"layer3", "fc"}), ("wrn_16_1", {"block3", "bn", "fc"}),
                                             ("mobilenetv2_half", {"stage4", "conv_last", "fc"})])
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

    import geoviz.methods.ensemble as ens

    seen, weights_seen = [], []
    original, original_weights = LogisticRegression.fit, ens.fit_weights

    def spy(self, X, y, *a, **k):
        seen.append(np.array(X).shape)
        return original(self, X, y, *a, **k)

    def spy_weights(p, y):
        weights_seen.append(np.asarray(p).shape)
        return original_weights(p, y)

    LogisticRegression.fit, ens.fit_weights = spy, spy_weights
    try:
        cfg = EnsemblesConfig.from_profile("smoke", n_test=40, floor_n=64)
        res = run_ensembles(cfg, run_root=tmp_path_factory.mktemp("runs"), progress=False)
    finally:
        LogisticRegression.fit, ens.fit_weights = original, original_weights
    return cfg, res, seen + weights_seen


def test_study_runs_every_member_and_fusion_and_stacks_on_validation_only(smoke):
    cfg, res, seen = smoke
    assert len(res.rows) == len(cfg.seeds) * len(cfg.starts) * (len(cfg.members) + len(cfg.fusions))
    # one stacker and one set of weights per (seed, start), fitted on the 48 validation images' probabilities, never the 40 test images'
    runs = len(cfg.seeds) * len(cfg.starts)
    assert seen == [(cfg.n_val, len(cfg.members) * 8)] * runs + [(len(cfg.members), cfg.n_val, 8)] * runs
    assert set(res.source_val_acc) == set(cfg.members) and all(0 <= v <= 1 for v in res.source_val_acc.values())
    assert res.test_images.shape[0] == 40 and res.floors["chance"] == pytest.approx(1 / 8)
    assert {c["verdict"] for c in res.claims()} <= {"supported", "contradicted", "undecided"}
    conf = res.confusion[("scratch", "resnet8")]
    assert conf.sum() == 40 and np.trace(conf) == round(next(r["acc"] for r in res.rows if r["seed"] == 0 and r["start"] == "scratch"
                                                              and r["name"] == "resnet8") * 40)


def test_best_member_is_chosen_on_validation_and_claims_have_the_right_signs():
    cfg = EnsemblesConfig.from_profile("smoke", seeds=(0, 1, 2), fusions=("mean",))
    rows = []
    for sd in range(3):
        for st, shift in (("transfer", 0.10), ("scratch", 0.0)):
            # resnet8 looks best on validation but resnet14 is better on test
            rows += [{"seed": sd, "start": st, "name": "resnet8", "kind": "member", "acc": 0.50 + shift + 0.01 * sd, "val_acc": 0.9},
                     {"seed": sd, "start": st, "name": "resnet14", "kind": "member", "acc": 0.70 + shift + 0.01 * sd, "val_acc": 0.5},
                     {"seed": sd, "start": st, "name": "mean", "kind": "fusion", "acc": 0.60 + shift + 0.02 * sd}]
    res = EnsemblesResult(cfg, rows, [], {"image_statistics": 0.3}, [], {}, test_labels=np.zeros(100))
    got = {c["claim"]: c for c in res.claims()}
    assert got["transfer (whole network) beats scratch: resnet8 (test accuracy, transfer minus scratch)"]["verdict"] == "supported"
    beats = got["scratch: the mean ensemble beats its best member (chosen on validation)"]
    # against resnet8 (validation's choice): 0.60 + 0.02 sd − (0.50 + 0.01 sd) > 0; against resnet14 it would be < 0
    assert beats["mean"] == pytest.approx(0.11) and beats["verdict"] == "supported"
    assert got["scratch: resnet8 beats the image-statistics floor (0.300)"]["verdict"] == "supported"
