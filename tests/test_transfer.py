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
from geoviz.experiments.transfer import TransferConfig, _epochs_for
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
    rows = {bytes(train.images[i].numpy().reshape(-1)) for i in range(len(train))} | {bytes(val.images[i].numpy().reshape(-1)) for i in range(len(val))}
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
    with pytest.raises(ValueError, match=r"train_fraction must be in \(0, 1\]"):
        TransferConfig(train_fractions=(0.5, 1.2))
    with pytest.raises(ValueError, match="unknown methods \\['fitnet'\\]"):
        TransferConfig(methods=("ce", "fitnet"))
    with pytest.raises(ValueError, match="unknown geometric loss kind 'mmd'"):
        TransferConfig(kind="mmd")
    cfg = TransferConfig.from_profile("quick", pairs={"layer3": "layer3"})
    assert cfg.pairs == (("layer3", "layer3"),)
    assert _epochs_for(cfg, 200) == 14 and _epochs_for(cfg, 2000) == 2  # 80 steps of 32 images
    geo = cfg.terms("geometric+kd")
    assert [t["name"] if isinstance(t, dict) else t for t in geo] == ["ce", "kd", "geometric"] and geo[2]["weight"] == 10.0


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
    cfg = load_config(ROOT / "configs" / "shapes10_resnet8_smoke.yaml", runs_root=str(tmp_path), epochs=1, n_train=64, n_val=32, n_test=32)
    res = run_train(cfg, progress=False)
    run = tmp_path / "shapes10-resnet8-smoke"
    saved = json.loads((run / "config.json").read_text())
    assert saved["epochs"] == 1 and saved["optimizer"] == "sgd" and saved["terms"] == ["ce"]  # every field, resolved
    model = load_model(run / "model.pt")
    assert torch.equal(model.conv1.weight, res.model.conv1.weight.cpu())
    with pytest.raises(KeyError, match="unknown config key 'epoch'; closest: 'epochs'"):
        TrainConfig.from_dict({"name": "x", "epoch": 3})
    with pytest.raises(ValueError, match="no teacher_checkpoint: train the teacher first"):
        TrainConfig(name="kd", teacher="resnet8", terms=("ce", "kd"), n_train=32, n_val=16, n_test=16, runs_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="config .*missing.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")
    # a relative teacher_checkpoint is found inside the runs root, from any working directory
    kd = TrainConfig(name="kd", teacher="resnet8", teacher_checkpoint="shapes10-resnet8-smoke/model.pt", terms=("ce", "kd"),
                     model="resnet8", n_train=32, n_val=16, n_test=16, epochs=1, runs_root=str(tmp_path))
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


@pytest.mark.parametrize("line, message", [
    ("optimizer: adam", r"typo.yaml: unknown optimizer 'adam'; allowed: 'sgd', 'adamw'"),
    ("epochs: two", r"typo.yaml: TrainConfig.epochs must be a whole number \(int\), got 'two' \(str\)"),
    ("lr: -0.1", r"typo.yaml: lr must be > 0, got -0.1"),
    ("terms: [ce, {name: kd}]", r"typo.yaml: loss terms \['kd'\] need a teacher"),
    ("terms: [ce, {name: geometric, pairs: {layer4: layer3}}]", r"need a teacher"),
    ("terms: [{name: ce, weight: heavy}]", r"bad settings for loss term 'ce': weight must be a number, got 'heavy'"),
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
    ("terms: [ce, {name: geometric, pairs: {layer3: layer3}, m: 0}]", r"bad settings for loss term 'geometric': m must be >= 3"),
    ("device: tpu", r"unknown device 'tpu'"),
])
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
    cfg.write_text(SMOKE + "teacher: resnet8\nteacher_checkpoint: nowhere.pt\n"
                   "terms: [ce, {name: geometric, pairs: {layer3: layer3}}]\n")
    with pytest.raises(FileNotFoundError, match=r"teacher_checkpoint 'nowhere.pt' → .*nowhere.pt does not exist"):
        run_train(load_config(cfg, runs_root=str(tmp_path / "runs")), progress=False)
    assert not (tmp_path / "runs" / "typo").exists()
    for bad, message in [("device: mps\n", "MPS is not available here"),
                         ("model_kwargs: {width: x}\n", r"model 'resnet8' could not be built with \{.*'width': 'x'\}")]:
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
    teacher_cfg = load_config(ROOT / "configs" / "shapes10_resnet8_smoke.yaml", runs_root=str(tmp_path), epochs=1, n_train=64, n_val=32, n_test=32, name="t")
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
    out = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "geoviz.cli", "train", "--config", str(cfg)],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "ddp-student" / "metrics.json").read_text())["summary"]
    assert summary["epochs"] == 1 and "test_acc_best_val" in summary
