"""The transfer experiment's pieces: CIFAR-10 from files in the real format, train fractions,
bad configs, the `geoviz train` command (also under torchrun), and layer alignment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from data_files import write_cifar

from geoviz.analysis import layer_alignment
from geoviz.datasets import get_dataset, labels_of, train_fraction
from geoviz.engine import fit
from geoviz.experiments.train import TrainConfig, load_config, run_train
from geoviz.experiments.transfer import TransferConfig, TransferResult, _best_baseline, _epochs_for, baseline_pairs
from geoviz.models import build_model, load_model
from geoviz.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]


def test_cifar10_reads_the_real_format_with_a_balanced_validation_holdout(tmp_path):
    written = write_cifar(tmp_path)
    train = get_dataset("cifar10", "train", root=tmp_path, verify=False, n_val=20)
    val = get_dataset("cifar10", "val", root=tmp_path, verify=False, n_val=20)
    test = get_dataset("cifar10", "test", root=tmp_path, verify=False)
    assert (len(train), len(val), len(test)) == (80, 20, 10)
    assert np.bincount(labels_of(val).numpy()).tolist() == [2] * 10
    assert train.augment and not val.augment and test.classes[3] == "cat"
    # the test images are the written rows, as (C, H, W)
    x, y = test[4]
    ref = written["test_batch"][0][4].reshape(3, 32, 32) / 255.0
    assert np.allclose(x.numpy(), ref) and y == 4
    all_train = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    seen = {bytes(r) for r in all_train}
    rows = {bytes(train.images[i].numpy().reshape(-1)) for i in range(len(train))} | {
        bytes(val.images[i].numpy().reshape(-1)) for i in range(len(val))
    }
    assert rows == seen  # train and val partition the training batches
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found in .*nowhere/cifar-10-batches-py.*never downloads"):
        get_dataset("cifar10", "train", root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="complete CIFAR-10"):  # MD5 of the official files by default
        get_dataset("cifar10", "test", root=tmp_path)


def test_train_fraction_is_balanced_seeded_and_nested():
    ds = get_dataset("shapes10", "train", n=400)
    a, b = train_fraction(ds, 0.25, seed=1), train_fraction(ds, 0.5, seed=1)
    assert np.bincount(labels_of(a).numpy()).tolist() == [10] * 10
    assert set(a.indices) <= set(b.indices) and a.indices != train_fraction(ds, 0.25, seed=2).indices
    assert train_fraction(ds, 1.0) is ds
    for bad in (0, -0.1, 1.5, "half"):
        with pytest.raises(ValueError, match=r"train_fraction must be in \(0, 1\]"):
            train_fraction(ds, bad)


def test_fit_rejects_bad_layer_pairs_and_missing_teachers():
    ds = get_dataset("shapes10", "train", n=16)
    s, t = build_model("resnet8", 10), build_model("resnet14", 10)
    with pytest.raises(KeyError, match="unknown layer 'layer4'; closest: 'layer3', 'layer2', 'layer1'"):
        fit(s, ds, teacher=t, terms=["ce", {"name": "geometric", "pairs": {"layer4": "layer3"}}], epochs=1)
    with pytest.raises(KeyError, match="unknown layer 'layer3.0.conv'"):
        fit(s, ds, teacher=t, terms=["ce", {"name": "geometric", "pairs": {"layer3": "layer3.0.conv"}}], epochs=1)
    with pytest.raises(ValueError, match=r"loss terms \['kd'\] need a teacher"):
        fit(s, ds, terms=["ce", "kd"], epochs=1)


def test_transfer_config_validation_and_budget():
    with pytest.raises(ValueError, match=r"train_fraction must be <= 1, got 1.2"):
        TransferConfig(train_fractions=(0.5, 1.2))
    with pytest.raises(ValueError, match="unknown methods \\['crd'\\]"):
        TransferConfig(methods=("ce", "crd"))
    with pytest.raises(ValueError, match="unknown geometric loss kind 'mmd'"):
        TransferConfig(kind="mmd")
    with pytest.raises(ValueError, match="unknown budget 'time'"):
        TransferConfig(budget="time")
    with pytest.raises(ValueError, match="best_baseline\\+kd' needs at least one baseline"):
        TransferConfig(methods=("ce", "best_baseline+kd"))
    cfg = TransferConfig.from_profile("quick", pairs={"layer3": "layer3"})
    assert cfg.pairs == (("layer3", "layer3"),) and cfg.budget == "steps" and cfg.steps == 400
    assert _epochs_for(cfg, 200) == 67 and _epochs_for(cfg, 1257) == 11  # 400 steps of 32 images: ceil(400 / (n // 32))
    assert (
        _epochs_for(cfg.replace(budget="epochs"), 200) == cfg.epochs == _epochs_for(cfg.replace(budget="epochs"), 1257)
    )
    geo = cfg.terms("geometric+kd")
    assert [t["name"] if isinstance(t, dict) else t for t in geo] == ["ce", "kd", "geometric"] and geo[2][
        "scope"
    ] == cfg.scope
    stages = ("layer1", "layer2", "layer3")
    assert baseline_pairs("fitnet", stages, stages) == {"layer2": "layer2"} and baseline_pairs(
        "sp", stages, stages
    ) == {"layer3": "layer3"}
    assert baseline_pairs("at", stages, stages) == dict(zip(stages, stages)) and baseline_pairs(
        "pkt", stages, stages
    ) == {"layer3": "layer3"}
    assert cfg.terms("rkd", stages, stages) == ["ce", {"name": "rkd", "pairs": {"layer3": "layer3"}}]
    assert [t["name"] for t in cfg.terms("best_baseline+kd", stages, stages, "at")] == ["ce", "kd", "at"]


def _synthetic_result(effects: dict, seeds=(0, 1, 2, 3, 4), fractions=(0.25, 1.0), noise=0.002):
    """A result table built by hand: accuracy = base(fraction, seed) + effect(method) + small noise."""
    rng = np.random.default_rng(0)
    cfg = TransferConfig(seeds=seeds, train_fractions=fractions, methods=tuple(effects))
    rows = []
    for f in fractions:
        base = rng.uniform(0.5, 0.9, size=len(seeds)) * f + (1 - f) * 0.3
        for m, eff in effects.items():
            for s, b in zip(seeds, base):
                acc = float(b + eff(f) + (rng.normal(0, noise) if noise else 0.0))
                rows.append(
                    {
                        "method": m,
                        "fraction": f,
                        "seed": s,
                        "test_acc_best_val": acc,
                        "test_acc_last": acc,
                        "val_acc_best": acc + {"sp": 0.02, "pkt": 0.0}.get(m, 0.0),
                        "geometry": {},
                    }
                )
    return TransferResult(cfg, {}, rows, {}, [], best_baseline=_best_baseline(rows))


def test_claims_on_synthetic_tables_come_out_either_way():
    clear = _synthetic_result(
        {
            "ce": lambda f: 0.0,
            "kd": lambda f: 0.01,
            "geometric": lambda f: 0.03,
            "geometric+kd": lambda f: 0.05,
            "sp": lambda f: 0.0,
            "pkt": lambda f: 0.0,
            "best_baseline+kd": lambda f: 0.0,
        }
    )
    assert clear.best_baseline == "sp"  # chosen on validation accuracy, never test
    verdicts = {(c.claim, c.conditions["fraction"]): c.verdict for c in clear.claims()}
    assert verdicts[("geometric+kd > kd", 0.25)] == "supported" and verdicts[("geometric > ce", 1.0)] == "supported"
    assert verdicts[("geometric+kd > sp+kd", 0.25)] == "supported"
    worse = _synthetic_result(
        {"ce": lambda f: 0.0, "kd": lambda f: 0.05, "geometric": lambda f: -0.03, "geometric+kd": lambda f: 0.0}
    )
    verdicts = {(c.claim, c.conditions["fraction"]): c.verdict for c in worse.claims()}
    assert (
        verdicts[("geometric+kd > kd", 0.25)] == "contradicted" and verdicts[("geometric > ce", 1.0)] == "contradicted"
    )
    # seeds on both sides: geometric+kd − kd = (+2, −2, +1, −1, 0) points at every fraction
    tie = _synthetic_result(
        {
            "ce": lambda f: 0.0,
            "kd": lambda f: 0.0,
            "geometric": lambda f: 0.0,
            "geometric+kd": lambda f, s=iter([0.02, -0.02, 0.01, -0.01, 0.0] * 2): next(s),
        },
        noise=0.0,
    )
    assert {c.verdict for c in tie.claims() if c.claim == "geometric+kd > kd"} == {"undecided"}


def test_the_smallest_fraction_matching_ce_on_all_data():
    # geometric+kd at 25 % is 0.3 + 0.7·base below ce at 100 %: far more than one point, contradicted;
    # a method that reaches ce@100 % already at 25 % gives 0.25
    res = _synthetic_result(
        {
            "ce": lambda f: 0.0,
            "kd": lambda f: 0.0,
            "geometric": lambda f: 0.0,
            "geometric+kd": lambda f: 0.0 if f == 1.0 else 2.0,
        }
    )
    assert res.smallest_fraction() == 0.25
    plain = _synthetic_result(
        {"ce": lambda f: 0.0, "kd": lambda f: 0.0, "geometric": lambda f: 0.0, "geometric+kd": lambda f: 0.0}
    )
    c = {x.conditions["fraction"]: x for x in plain.claims() if x.claim.startswith("geometric+kd at this fraction")}
    assert c[0.25].verdict == "contradicted" and c[1.0].verdict == "supported"  # same as ce on all data: within a point
    assert plain.smallest_fraction() == 1.0
    assert plain.smallest_fraction("ce at this fraction") == 1.0
    # supported at 25 % but not at 100 %: no fraction "from which on" it matches
    gap = _synthetic_result(
        {
            "ce": lambda f: 0.0,
            "kd": lambda f: 0.0,
            "geometric": lambda f: 0.0,
            "geometric+kd": lambda f: 2.0 if f < 1.0 else -0.2,
        }
    )
    assert gap.smallest_fraction() is None


def test_claims_pair_only_the_seeds_both_arms_ran():
    res = _synthetic_result(
        {"ce": lambda f: 0.0, "kd": lambda f: 0.0, "geometric": lambda f: 0.02, "geometric+kd": lambda f: 0.0}
    )
    res.runs = [r for r in res.runs if not (r["method"] == "ce" and r["seed"] == 0)]  # ce lost its first seed
    c = next(x for x in res.claims() if x.claim == "geometric > ce" and x.conditions["fraction"] == 0.25)
    geo = {r["seed"]: r["test_acc_best_val"] for r in res.runs if r["method"] == "geometric" and r["fraction"] == 0.25}
    ce = {r["seed"]: r["test_acc_best_val"] for r in res.runs if r["method"] == "ce" and r["fraction"] == 0.25}
    assert c.n == 4 and c.extra["differences"] == pytest.approx([geo[s] - ce[s] for s in (1, 2, 3, 4)])


def test_layer_alignment_of_a_network_with_itself_and_with_another():
    torch.manual_seed(0)
    a, b = build_model("resnet8", 10).eval(), build_model("resnet14", 10).eval()
    x = torch.rand(8, 3, 32, 32)
    same = layer_alignment(a, a, x, {"layer2": "layer2", "layer3": "layer3"})
    assert all(abs(v["knn_agreement"] - 1) < 1e-9 and abs(v["cka"] - 1) < 1e-9 for v in same.values())
    other = layer_alignment(a, b, x, {"layer3": "layer3"}, k=5)["layer3→layer3"]
    # independently: hooks, local features by hand, NumPy CKA and scikit-learn neighbours
    from sklearn.neighbors import NearestNeighbors

    def local(net):
        out = []
        h = net.layer3.register_forward_hook(lambda m, i, o: out.append(o))
        with torch.no_grad():
            net(x)
        h.remove()
        return out[0].permute(0, 2, 3, 1).reshape(-1, out[0].shape[1]).double().numpy()

    fa, fb = local(a), local(b)  # both 8×8 at 32 px: 512 points, none dropped
    ca, cb = fa - fa.mean(0), fb - fb.mean(0)
    cka = np.linalg.norm(cb.T @ ca) ** 2 / (np.linalg.norm(ca.T @ ca) * np.linalg.norm(cb.T @ cb))
    na = NearestNeighbors(n_neighbors=6).fit(fa).kneighbors(fa, return_distance=False)[:, 1:]
    nb = NearestNeighbors(n_neighbors=6).fit(fb).kneighbors(fb, return_distance=False)[:, 1:]
    jac = np.mean([len(set(p) & set(q)) / len(set(p) | set(q)) for p, q in zip(na, nb)])
    assert other["cka"] == pytest.approx(cka, rel=1e-6) and other["knn_agreement"] == pytest.approx(jac, abs=1e-9)


def test_train_command_saves_resolved_config_and_rebuildable_weights(tmp_path):
    cfg = load_config(
        ROOT / "configs" / "shapes10_resnet8_smoke.yaml",
        runs_root=str(tmp_path),
        epochs=1,
        n_train=64,
        n_val=32,
        n_test=32,
    )
    res = run_train(cfg, progress=False)
    run = tmp_path / "shapes10-resnet8-smoke"
    saved = json.loads((run / "config.json").read_text())
    assert saved["epochs"] == 1 and saved["optimizer"] == "sgd" and saved["terms"] == ["ce"]  # every field, resolved
    model = load_model(run / "model.pt")
    assert torch.equal(model.conv1.weight, res.model.conv1.weight.cpu())
    with pytest.raises(KeyError, match="unknown config key 'epoch'; closest: 'epochs'"):
        TrainConfig.from_dict({"name": "x", "epoch": 3})
    with pytest.raises(ValueError, match="no teacher_checkpoint: train the teacher first"):
        TrainConfig(
            name="kd", teacher="resnet8", terms=("ce", "kd"), n_train=32, n_val=16, n_test=16, runs_root=str(tmp_path)
        )
    with pytest.raises(FileNotFoundError, match="config .*missing.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")
    # a relative teacher_checkpoint is found inside the runs root, from any working directory
    kd = TrainConfig(
        name="kd",
        teacher="resnet8",
        teacher_checkpoint="shapes10-resnet8-smoke/model.pt",
        terms=("ce", "kd"),
        model="resnet8",
        n_train=32,
        n_val=16,
        n_test=16,
        epochs=1,
        runs_root=str(tmp_path),
    )
    assert kd.teacher_path() == tmp_path / "shapes10-resnet8-smoke" / "model.pt"
    assert run_train(kd, progress=False).summary["epochs"] == 1
    bad = kd.replace(name="badlayer", terms=("ce", {"name": "geometric", "pairs": {"layer4": "layer3"}}))
    with pytest.raises(KeyError, match="unknown layer 'layer4'; closest: 'layer3'"):
        run_train(bad, progress=False)
    assert not (tmp_path / "badlayer").exists()


SMOKE = """name: typo
dataset: shapes10
n_train: 64
n_val: 32
n_test: 32
model: resnet8
epochs: 1
batch_size: 32
"""


@pytest.mark.parametrize(
    "line, message",
    [
        ("optimizer: adam", r"typo.yaml: unknown optimizer 'adam'; allowed: 'sgd', 'adamw'"),
        ("epochs: two", r"typo.yaml: TrainConfig.epochs must be a whole number \(int\), got 'two' \(str\)"),
        ("lr: -0.1", r"typo.yaml: lr must be > 0, got -0.1"),
        ("terms: [ce, {name: kd}]", r"typo.yaml: loss terms \['kd'\] need a teacher"),
        ("terms: [ce, {name: geometric, pairs: {layer4: layer3}}]", r"need a teacher"),
        (
            "terms: [{name: ce, weight: heavy}]",
            r"bad settings for loss term 'ce': weight must be a number, got 'heavy'",
        ),
        ("model: resnet9", r"unknown model model 'resnet9'; closest: "),
        ("dataset: cifar11", r"unknown dataset 'cifar11'; closest: 'cifar10'"),
        ("milestones: [100, 150]", r"milestones are fractions of training"),
        ("milestones: [0.5, a]", r"TrainConfig.milestones must be a list, each a number, got \(0.5, 'a'\)"),
        ("lr: .nan", r"lr must be a finite number, got nan"),
        ("seed: 20000000000000", r"seed must be <= 4294967295"),
        ("momentum: 1.5", r"momentum must be <= 0.999"),
        ("warmup_epochs: 5", r"warmup_epochs must be <= 1, got 5"),
        ("augment: true", r"data set 'shapes10' has no augmentation"),
        ("terms: [ce, {name: kd, T: hot}]", r"bad settings for loss term 'kd': T must be a number, got 'hot'"),
        (
            "terms: [ce, {name: geometric, pairs: {layer3: layer3}, m: 0}]",
            r"bad settings for loss term 'geometric': m must be >= 3",
        ),
        ("device: tpu", r"unknown device 'tpu'"),
    ],
)
def test_a_bad_config_fails_before_the_run_exists_and_the_fixed_one_runs(tmp_path, line, message):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text(SMOKE.replace("epochs: 1\n", "") + line + "\n" if line.startswith("epochs") else SMOKE + line + "\n")
    with pytest.raises((ValueError, TypeError, KeyError), match=message):
        load_config(cfg, runs_root=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()


def test_the_corrected_rerun_of_a_failed_run_is_not_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(SMOKE + "terms: ce\n")  # one term may be written alone
    assert load_config(cfg).terms == ("ce",)
    # a failure after the run folder exists (here: the layer is checked against the built model)
    cfg.write_text(
        SMOKE + "teacher: resnet8\nteacher_checkpoint: nowhere.pt\n"
        "terms: [ce, {name: geometric, pairs: {layer3: layer3}}]\n"
    )
    with pytest.raises(FileNotFoundError, match=r"teacher_checkpoint 'nowhere.pt' → .*nowhere.pt does not exist"):
        run_train(load_config(cfg, runs_root=str(tmp_path / "runs")), progress=False)
    assert not (tmp_path / "runs" / "typo").exists()
    for bad, message in [
        ("device: mps\n", "MPS is not available here"),
        ("model_kwargs: {width: x}\n", r"model 'resnet8' could not be built with \{.*'width': 'x'\}"),
    ]:
        cfg.write_text(SMOKE + bad)
        with pytest.raises((ValueError, TypeError), match=message):
            run_train(load_config(cfg, runs_root=str(tmp_path / "runs")), progress=False)
        assert not (tmp_path / "runs" / "typo").exists()
    run = RunDir("typo", tmp_path / "runs")
    run.write_config({"optimizer": "adam"})  # as an older version left it: a config, no progress
    cfg.write_text(SMOKE)
    res = run_train(load_config(cfg, runs_root=str(tmp_path / "runs")), progress=False)
    assert res.summary["epochs"] == 1 and run.read_config()["optimizer"] == "sgd"
    cfg.write_text(SMOKE + "lr: 0.5\n")  # a run with progress still refuses another config
    with pytest.raises(ValueError, match=r"exists with another config \(differs in \['lr'\]\)"):
        run_train(load_config(cfg, runs_root=str(tmp_path / "runs")), progress=False)


@pytest.mark.slow
def test_train_command_under_torchrun_with_two_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cfg = tmp_path / "kd.yaml"
    teacher_cfg = load_config(
        ROOT / "configs" / "shapes10_resnet8_smoke.yaml",
        runs_root=str(tmp_path),
        epochs=1,
        n_train=64,
        n_val=32,
        n_test=32,
        name="t",
    )
    run_train(teacher_cfg, progress=False)
    cfg.write_text(f"""name: ddp-student
dataset: shapes10
n_train: 64
n_val: 32
n_test: 32
model: resnet8
teacher: resnet8
teacher_checkpoint: {tmp_path}/t/model.pt
terms: [ce, {{name: kd}}, {{name: geometric, pairs: {{layer3: layer3}}, m: 64}}]
device: cpu
epochs: 1
batch_size: 16
runs_root: {tmp_path}
""")
    env = dict(os.environ, GEOVIZ_PROGRESS="0", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "geoviz.cli", "train", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "ddp-student" / "metrics.json").read_text())["summary"]
    assert summary["epochs"] == 1 and "test_acc_best_val" in summary


def test_the_rest_of_the_training_split_joins_as_unlabelled_images(tmp_path):
    from geoviz.experiments.transfer import run_transfer

    cfg = TransferConfig.from_profile(
        "smoke",
        methods=("ce", "kd"),
        train_fractions=(0.5, 1.0),
        seeds=(0, 1),
        steps=4,
        teacher_epochs=1,
        unlabelled="rest",
    )
    res = run_transfer(cfg, run_root=tmp_path, progress=False)
    n = 1257  # the digits training split
    for r in res.runs:
        half = r["fraction"] == 0.5
        expect = (
            n - r["n_train_images"] if r["method"] == "kd" and half else 0
        )  # ce stays supervised; nothing is left at 100 %
        assert r["n_unlabelled_images"] == expect and (not (half and r["method"] == "kd") or expect > 600)
    with pytest.raises(ValueError, match="unknown budget"):
        cfg.replace(budget="minutes")


def test_geometry_ablation_returns_one_row_per_variant_and_method(tmp_path):
    from geoviz.experiments.transfer import run_geometry_ablation

    cfg = TransferConfig.from_profile("smoke", seeds=(0, 1), steps=4, teacher_epochs=1)
    out = run_geometry_ablation(
        cfg,
        scopes=("batch", "image"),
        bandwidths=("global",),
        methods=("geometric",),
        fractions=(0.5,),
        run_root=tmp_path,
        progress=False,
    )
    rows = out["rows"]
    assert [(r["scope"], r["bandwidth"], r["method"], r["n"]) for r in rows] == [
        ("batch", "global", "geometric", 2),
        ("image", "global", "geometric", 2),
    ]
    assert out["best"] == (out["variants"][0]["scope"], out["variants"][0]["bandwidth"])
    assert out["variants"][0]["val_acc_mean"] >= out["variants"][1]["val_acc_mean"]
    # the choice's margin, paired over the same (method, fraction, seed) runs
    means = {(r["scope"], r["bandwidth"]): r["val_acc_mean"] for r in rows}
    assert out["best_vs_runner_up"]["mean"] == pytest.approx(
        means[out["best"]] - means[tuple(out["best_vs_runner_up"]["runner_up"])]
    )
