import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geoviz.analysis.cam import grad_cam
from geoviz.experiments.ensembles import EnsemblesConfig, EnsemblesResult, _freeze_all_but_last, run_ensembles
from geoviz.models import build_model


def test_grad_cam_is_the_formula_at_the_last_stage():
    torch.manual_seed(0)
    net = build_model("resnet8", 8).eval()
    x = torch.rand(3, 3, 32, 32)
    got, target = grad_cam(net, x, target=[1, 5, 7])
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
    assert net.layer3 is not None and not net.training  # the model's mode is left as it was


def test_freezing_keeps_everything_but_the_last_stage_and_head():
    net = build_model("resnet8", 8)
    _freeze_all_but_last(net)
    trainable = {n.split(".")[0] for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "fc"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from sklearn.linear_model import LogisticRegression

    seen = []
    original = LogisticRegression.fit

    def spy(self, X, y, *a, **k):
        seen.append(np.array(X).shape)
        return original(self, X, y, *a, **k)

    LogisticRegression.fit = spy
    try:
        cfg = EnsemblesConfig.from_profile("smoke", n_test=40, floor_n=64)
        res = run_ensembles(cfg, run_root=tmp_path_factory.mktemp("runs"), progress=False)
    finally:
        LogisticRegression.fit = original
    return cfg, res, seen


def test_study_runs_every_member_and_fusion_and_stacks_on_validation_only(smoke):
    cfg, res, seen = smoke
    assert len(res.rows) == len(cfg.seeds) * len(cfg.starts) * (len(cfg.members) + len(cfg.fusions))
    # one stacker per (seed, start), fitted on the 48 validation images' probabilities, never the 40 test images'
    assert seen == [(cfg.n_val, len(cfg.members) * 8)] * (len(cfg.seeds) * len(cfg.starts))
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
    res = EnsemblesResult(cfg, rows, [], {}, [], {}, test_labels=np.zeros(100))
    got = {c["claim"]: c for c in res.claims()}
    assert got["transfer beats scratch: resnet8 (test accuracy, transfer minus scratch)"]["verdict"] == "supported"
    beats = got["scratch: the mean ensemble beats its best member (chosen on validation)"]
    # against resnet8 (validation's choice): 0.60 + 0.02 sd − (0.50 + 0.01 sd) > 0; against resnet14 it would be < 0
    assert beats["mean"] == pytest.approx(0.11) and beats["verdict"] == "supported"
