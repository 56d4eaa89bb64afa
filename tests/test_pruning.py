import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from geoviz.methods import pruning as P
from geoviz.models import build_model, load_model, save_model
from geoviz.models.surgery import get_module


class _Layer(nn.Module):
    """conv1 → bn1 → relu → conv2 (+ bn2): the sibling naming the method folds by."""

    def __init__(self, cin=6, cmid=10, cout=7, k=3, stride=1, padding=1, bias=False, bn2=True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cmid, k, stride, padding, bias=bias)
        self.bn1 = nn.BatchNorm2d(cmid)
        self.conv2 = nn.Conv2d(cmid, cout, k, 1, k // 2, bias=bias)
        self.bn2 = nn.BatchNorm2d(cout) if bn2 else nn.Identity()

    def forward(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


def _trained_bn(net, x):
    torch.manual_seed(0)
    for m in net.modules():  # BatchNorm with statistics and affine parameters far from identity
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 2.0)
            m.bias.data.normal_()
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(x)
    return net.eval()


@pytest.mark.parametrize("mode", P.MODES)
@pytest.mark.parametrize(
    "shape",
    [
        dict(),
        dict(k=3, stride=2, padding=1, bias=True),
        dict(k=5, padding=2, cin=4, cmid=12),
        dict(k=3, padding=0, bias=True),
    ],
)
def test_full_rank_reexpression_reproduces_the_layer(mode, shape):
    torch.manual_seed(1)
    x = torch.randn(16, shape.get("cin", 6), 13, 13)
    net = _trained_bn(_Layer(**shape), x)
    spectra = P.layer_spectra(net, x, P.prunable_layers(net, ["conv1", "conv2"]), mode, progress=False)
    full = {n: s.channels for n, s in spectra.items()}
    pruned = P.decorrelate(net, spectra, full, only_if_cheaper=False)
    assert isinstance(pruned.conv1, nn.Sequential) and isinstance(pruned.bn1, nn.BatchNorm2d)
    with torch.no_grad():
        assert torch.allclose(pruned(x), net(x), atol=1e-4), (pruned(x) - net(x)).abs().max()


@pytest.mark.parametrize("mode", P.MODES)
def test_full_rank_without_batchnorm_folding(mode):
    torch.manual_seed(9)
    x = torch.randn(16, 6, 11, 11)
    net = _trained_bn(_Layer(bias=True, bn2=False), x)
    spectra = P.layer_spectra(net, x, P.prunable_layers(net, ["conv2"], fold_bn=False), mode, progress=False)
    pruned = P.decorrelate(net, spectra, {"conv2": spectra["conv2"].channels}, only_if_cheaper=False)
    assert isinstance(pruned.conv2, nn.Sequential)
    with torch.no_grad():
        assert torch.allclose(pruned(x), net(x), atol=1e-4)


def _bn_outputs(net, x, name):
    got = []
    h = get_module(net, name).register_forward_hook(lambda m, i, o: got.append(o.detach()))
    with torch.no_grad():
        net(x)
    h.remove()
    return got[0].double().permute(0, 2, 3, 1).reshape(-1, got[0].shape[1]).numpy()


def test_energy_accounting_equals_the_pca_eigenvalues_and_the_tail_is_the_error():
    from sklearn.decomposition import PCA

    torch.manual_seed(2)
    x = torch.randn(24, 6, 12, 12)
    net = _trained_bn(_Layer(), x)
    spectra = P.layer_spectra(net, x, P.prunable_layers(net, ["conv1"]), "outputs", progress=False)
    s = spectra["conv1"]
    y = _bn_outputs(net, x, "bn1")
    pca = PCA().fit(y)
    n = len(y)
    np.testing.assert_allclose(s.eigvals, pca.explained_variance_ * (n - 1) / n, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(s.energy(), np.cumsum(pca.explained_variance_ratio_), rtol=1e-6)
    for r in (
        2,
        5,
    ):  # the pair's output misses exactly the dropped eigenvalues (mean squared error summed over channels)
        pruned = P.decorrelate(net, spectra, {"conv1": r}, only_if_cheaper=False)
        out = []
        h = pruned.conv1.register_forward_hook(lambda m, i, o: out.append(o.detach()))
        with torch.no_grad():
            pruned(x)
        h.remove()
        yr = out[0].double().permute(0, 2, 3, 1).reshape(-1, y.shape[1]).numpy()
        assert math.isclose(((y - yr) ** 2).sum(1).mean(), s.eigvals[r:].sum(), rel_tol=1e-3)


def test_input_mode_uses_the_uncentred_second_moment():
    torch.manual_seed(3)
    x = torch.randn(20, 6, 10, 10) + 1.5
    net = _trained_bn(_Layer(), x)
    s = P.layer_spectra(net, x, P.prunable_layers(net, ["conv2"]), "inputs", progress=False)["conv2"]
    with torch.no_grad():
        a = torch.relu(net.bn1(net.conv1(x))).double().permute(0, 2, 3, 1).reshape(-1, 10).numpy()
    want = np.sort(np.linalg.eigvalsh(a.T @ a / len(a)))[::-1]
    np.testing.assert_allclose(s.eigvals, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("mode", P.MODES)
def test_flops_agree_with_flop_counter(mode):
    torch.manual_seed(4)
    x = torch.randn(12, 6, 15, 15)
    net = _trained_bn(_Layer(stride=2), x)
    spectra = P.layer_spectra(net, x, P.prunable_layers(net, ["conv1", "conv2"]), mode, progress=False)
    for name, s in spectra.items():
        for r in (None, 1, 3):
            pruned = net if r is None else P.decorrelate(net, spectra, {name: r}, only_if_cheaper=False)
            layer = get_module(pruned, name)
            inp = x if name == "conv1" else torch.zeros(1, 10, 8, 8)
            with FlopCounterMode(display=False) as fc:
                layer(inp[:1])
            assert s.flops(r) == fc.get_total_flops(), (name, r)


def test_flops_budget_is_met_and_spent_where_energy_is():
    torch.manual_seed(5)
    m = _trained_bn(build_model("resnet14"), torch.randn(32, 3, 32, 32))
    x = torch.randn(64, 3, 32, 32)
    total = P.measure_flops(m)
    for s in (2.0, 3.0):
        pr = P.prune_decorrelated(m, x, speedup=s, progress=False)
        got = P.measure_flops(pr.model)
        assert total / s * 0.97 <= got <= total / s, (s, total / got)
    # a larger budget never keeps fewer directions
    sp = pr.spectra
    small, big = P.ranks_for_flops(sp, 3e6), P.ranks_for_flops(sp, 8e6)
    assert all(big[n] >= small[n] for n in sp) and sum(big.values()) > sum(small.values())
    with pytest.raises(ValueError, match="below what one direction per layer costs"):
        P.ranks_for_flops(sp, 10.0)
    for budget in (3e6, 8e6, sum(s.flops() for s in sp.values()) * 0.9):
        ranks = P.ranks_for_flops(sp, budget)
        cost = sum(s.flops() if ranks[n] >= s.break_even() else s.flops(ranks[n]) for n, s in sp.items())
        step = max(s.flops(2) - s.flops(1) for n, s in sp.items() if ranks[n] < s.break_even())
        assert budget - step <= cost <= budget, (
            budget,
            cost,
        )  # within one direction of the budget: nothing left unspent


def test_pruned_models_round_trip_as_config_plus_state_dict(tmp_path):
    torch.manual_seed(6)
    m = _trained_bn(build_model("resnet8"), torch.randn(32, 3, 32, 32))
    x = torch.randn(64, 3, 32, 32)
    for pr in (
        P.prune_decorrelated(m, x, mode="outputs", speedup=2.0, progress=False),
        P.prune_decorrelated(m, x, mode="inputs", energy=0.9, progress=False),
        P.prune_structured(m, "l1", 2.0),
        P.prune_structured(m, "fpgm", 3.0),
    ):
        args = pr.model.build_args
        assert args["name"] == "pruned" and json.loads(json.dumps(args)) == args  # plain JSON: no pickled modules
        save_model(pr.model, tmp_path / "p.pt")
        back = load_model(tmp_path / "p.pt").eval()
        with torch.no_grad():
            assert torch.allclose(back(x), pr.model.eval()(x), atol=1e-6), pr.method
        assert P.measure_flops(back) == P.measure_flops(pr.model)


def test_torch_pruning_baselines_reach_the_flops_target():
    torch.manual_seed(7)
    m = _trained_bn(build_model("resnet20"), torch.randn(32, 3, 32, 32))
    total = P.measure_flops(m)
    for imp in P.BASELINES:
        pr = P.prune_structured(m, imp, 3.0)
        got = P.measure_flops(pr.model)
        assert total / 3.0 * 0.95 <= got <= total / 3.0, (imp, total / got)
        assert (
            pr.model.conv1.out_channels < 16 or pr.model.layer3[0].conv1.out_channels < 64
        )  # channels removed, not masked


def test_bad_input_fails_early_with_a_message():
    x = torch.randn(8, 6, 9, 9)
    net = _Layer()
    for bad in (0.5, 1.0, float("nan"), "2"):
        with pytest.raises(ValueError, match="speedup must be a number > 1"):
            P.prune_decorrelated(net, x, speedup=bad, layers=["conv1"], progress=False)
    with pytest.raises(ValueError, match="give one of speedup"):
        P.prune_decorrelated(net, x, layers=["conv1"], progress=False)
    for bad in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="budget must be the fraction of the model's FLOPs to keep, in \\(0, 1\\)"):
            P.prune_decorrelated(net, x, budget=bad, layers=["conv1"], progress=False)
    with pytest.raises(ValueError, match="fewer than layer 'conv1'.s 10 channels"):
        P.layer_spectra(net, x, P.prunable_layers(net, ["conv1"]), progress=False)
    with pytest.raises(KeyError, match="conv1"):
        P.prunable_layers(net, ["conv_1"])
    grouped = _Layer()
    grouped.conv2 = nn.Conv2d(10, 10, 3, padding=1, groups=10)
    with pytest.raises(ValueError, match="'conv2' is a grouped/depthwise convolution"):
        P.prunable_layers(grouped, ["conv2"])
    with pytest.raises(ValueError, match="'conv2' has no BatchNorm beside it.*fold_bn=False"):
        P.prunable_layers(_Layer(bn2=False), ["conv2"])
    assert P.prunable_layers(_Layer(bn2=False), ["conv2"], fold_bn=False) == {"conv2": None}
    with pytest.raises(ValueError, match="energy threshold must be in"):
        P.ranks_for_energy({}, 1.5)


def test_correlations_match_numpy_on_the_projected_activations():
    """Both bases against np.corrcoef of the activations themselves and of their projections on the
    eigenvectors: outputs decorrelate (diagonal); inputs (uncentred moment) keep the mean's share."""
    torch.manual_seed(8)
    x = torch.randn(24, 6, 10, 10)
    net = _trained_bn(_Layer(), x)
    s = P.layer_spectra(net, x, P.prunable_layers(net, ["conv1"]), progress=False)["conv1"]
    y = _bn_outputs(net, x, "bn1")
    np.testing.assert_allclose(P.channel_correlation(s), np.corrcoef(y.T), atol=1e-6)
    dec = P.channel_correlation(s, basis="decorrelated")
    np.testing.assert_allclose(dec, np.corrcoef((y @ s.eigvecs).T), atol=1e-6)
    assert np.abs(dec - np.eye(len(dec))).max() < 1e-6 and np.abs(np.corrcoef(y.T) - np.eye(len(dec))).max() > 0.05
    si = P.layer_spectra(net, x, P.prunable_layers(net, ["conv2"]), "inputs", progress=False)["conv2"]
    with torch.no_grad():
        a = torch.relu(net.bn1(net.conv1(x))).double().permute(0, 2, 3, 1).reshape(-1, 10).numpy()
    np.testing.assert_allclose(P.channel_correlation(si), np.corrcoef(a.T), atol=1e-6)
    deci = P.channel_correlation(si, basis="decorrelated")
    np.testing.assert_allclose(deci, np.corrcoef((a @ si.eigvecs).T), atol=1e-6)
    assert np.abs(deci - np.eye(len(deci))).max() > 0.05  # relu outputs have a mean: not diagonal


def test_pruning_study_smoke_decides_the_claim_from_paired_seeds(run_root):
    from geoviz.experiments.pruning import PruningConfig, run_pruning

    cfg = PruningConfig.from_profile("smoke", methods=("decorrelated-inputs", "l1", "fpgm"))
    assert cfg.primary == "decorrelated-inputs"  # the first decorrelated method asked for
    res = run_pruning(cfg, run_root=run_root, progress=False)
    table = {(r["method"], r["speedup"]): r for r in res.table()}
    assert set(table) == {("unpruned", 1.0), ("decorrelated-inputs", 2.0), ("l1", 2.0), ("fpgm", 2.0)}
    assert (
        table[("l1", 2.0)]["flops_reduction"] >= 2.0
        and table[("decorrelated-inputs", 2.0)]["flops_reduction"] >= table[("l1", 2.0)]["flops_reduction"] * 0.99
    )
    claims = res.claims()
    assert [c.conditions["stage"] for c in claims] == ["after fine-tuning", "before fine-tuning"] and claims[0].n == 2
    best = max(("l1", "fpgm"), key=lambda m: table[(m, 2.0)]["acc_finetuned"])
    assert claims[0].extra["best_baseline"] == best and claims[0].verdict in ("supported", "contradicted", "undecided")
    a = [r["acc_finetuned"] for r in res.rows if r["method"] == "decorrelated-inputs"]
    b = [r["acc_finetuned"] for r in res.rows if r["method"] == best]
    assert np.isclose(claims[0].mean, np.mean(np.subtract(a, b)))
    assert (res.experiment.path / "l1-2x-s1" / "pruned.pt").is_file()
    # costs belong to each seed's own pruned network (the decorrelated ranks differ by seed)
    for r in res.rows:
        if r["method"] != "unpruned":
            net = load_model(res.experiment.path / f"{r['method']}-{r['speedup']:g}x-s{r['seed']}" / "pruned.pt")
            assert r["flops"] == P.measure_flops(net) and r["params"] == sum(p.numel() for p in net.parameters())
    # equal FLOPs: the decorrelated network fits under the baselines' measured counts, both of them,
    # and is tight on the stricter one
    for sd in cfg.seeds:
        rows = {r["method"]: r for r in res.rows if r["seed"] == sd}
        kept = [
            rows["decorrelated-inputs"][k] / min(rows["l1"][k], rows["fpgm"][k]) for k in ("flops", "flops_all_ops")
        ]
        assert max(kept) <= 1 and max(kept) >= 0.97, kept
        assert rows["l1"]["flops_reduction_all_ops"] >= 2.0 - 1e-9 and rows["l1"]["flops_reduction"] >= 2.0 - 1e-9
    with pytest.raises(ValueError, match="hold no decorrelated method"):
        PruningConfig(methods=("l1",))
    # KD from the unpruned network: the fine-tuning run records the kd term
    kd = run_pruning(
        cfg.replace(kd=True, methods=("decorrelated-outputs",), seeds=(0,)), run_root=run_root, progress=False
    )
    hist = kd.curves()[("decorrelated-outputs-2x", 0)]
    assert any("kd" in k for k in hist[0]), list(hist[0])


def test_all_ops_count_adds_what_flop_counter_leaves_out_by_hand():
    from geoviz.costs import all_ops_flops, flop_counts, measure_flops

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)  # with a bias
            self.bn = nn.BatchNorm2d(4)
            self.skip = nn.Conv2d(3, 4, 1, bias=False)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            y = torch.relu(self.bn(self.conv(x))) + self.skip(x)
            return self.head(nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))

    net = Residual().train()
    # by hand for one 3 × 8 × 8 image (64 positions, 4 channels: 256 output values per map)
    macs = 2 * (4 * 3 * 9 * 64 + 4 * 3 * 64 + 4 * 2)
    extra = 256 + 2 * 256 + 256 + 256 + 256 + 2  # conv bias, BN (scale, shift), ReLU, sum, pooled inputs, head bias
    assert measure_flops(net, (3, 8, 8)) == macs
    assert all_ops_flops(net, (3, 8, 8)) == macs + extra
    assert flop_counts(net, (3, 8, 8)) == (macs, macs + extra)
    assert net.training and net.bn.training  # given back in its mode


def test_pruning_functions_leave_the_model_in_its_mode_and_place():
    from geoviz.methods.pruning import layer_spectra, prunable_layers, prune_decorrelated, prune_structured

    net = build_model("resnet8", 10, width=0.5).train()
    net.layer1.eval()  # a frozen part in eval mode, the rest training
    modes = {n: m.training for n, m in net.named_modules()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(48, 3, 32, 32)
    layer_spectra(net, x, prunable_layers(net), progress=False, device="cpu")
    prune_decorrelated(net, x, speedup=2.0, progress=False, device="cpu")
    prune_structured(net, "l1", 2.0)
    assert {n: m.training for n, m in net.named_modules()} == modes
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN statistics untouched too
    assert all(p.device.type == "cpu" for p in net.parameters())


def test_speedups_hold_by_the_stricter_of_both_flop_counts():
    from geoviz.costs import flop_counts
    from geoviz.methods.pruning import prune_decorrelated, prune_structured

    net = build_model("resnet8", 10, width=0.5).eval()
    total = flop_counts(net)
    x = torch.rand(64, 3, 32, 32)
    for pr in (prune_decorrelated(net, x, speedup=3.0, progress=False, device="cpu"), prune_structured(net, "l1", 3.0)):
        flops, all_ops = flop_counts(pr.model)
        assert total[0] / flops >= 3.0 - 1e-9 and total[1] / all_ops >= 3.0 - 1e-9, pr.method
    # matched to a baseline: under both of its counts, and tight on the stricter (the rank budget is
    # bisected: cutting it by the overshoot alone can leave every rank where it was)
    for importance, s in (("fpgm", 2.0), ("l1", 2.5), ("fpgm", 3.0)):
        target = flop_counts(prune_structured(net, importance, s).model)
        dec = prune_decorrelated(net, x, target_flops=target[0], target_all_ops=target[1], progress=False, device="cpu")
        got = flop_counts(dec.model)
        assert got[0] <= target[0] and got[1] <= target[1], (s, got, target)
        assert max(got[0] / target[0], got[1] / target[1]) >= 0.95, (s, got, target)


def test_preserved_modes_moves_parameters_buffers_and_gradients_back():
    from geoviz._utils import preserved_modes

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    net[0].weight.grad = torch.ones_like(net[0].weight)
    with preserved_modes(net):
        net.double().eval()  # the move a CPU-only machine can make: the same path as a device move
        net[0].weight.grad = net[0].weight.grad.double()
        assert next(net.parameters()).dtype == torch.float64
    tensors = [*net.parameters(), *net.buffers(), net[0].weight.grad]
    assert all(t.dtype == torch.float32 or t.dtype == torch.int64 for t in tensors)  # num_batches_tracked: int64
    assert net[0].weight.grad.dtype == torch.float32 and net[1].running_mean.dtype == torch.float32
    assert net.training and net[1].training
