"""The transfer experiment's pieces: CIFAR-10 from files in the real format, train fractions,
bad configs, the `geoviz train` command (also under torchrun), and layer alignment."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from geoviz.analysis import layer_alignment
from geoviz.datasets import get_dataset, labels_of, train_fraction
from geoviz.engine import fit
from geoviz.experiments.train import TrainConfig, load_config, run_train
from geoviz.experiments.transfer import TransferConfig, _epochs_for
from geoviz.models import build_model, load_model

ROOT = Path(__file__).resolve().parents[1]


def write_cifar(root: Path, per_batch: int = 20, n_test: int = 10, seed: int = 0):
    """Small CIFAR-10 files in the official python format: Python-2 pickles (protocol 2) of dicts
    with str keys, uint8 rows of 3072 values (R, G, B planes of 32×32), integer labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in np.arange(n) % 10]
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "labels": labels, "batch_label": name, "filenames": [f"{i}.png" for i in range(n)]}, fh, protocol=2)
        written[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
                     "num_vis": 3072, "num_cases_per_batch": per_batch}, fh, protocol=2)
    return written


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
    other = layer_alignment(a, b, x, {"layer3": "layer3"})["layer3→layer3"]
    assert 0 <= other["knn_agreement"] < 1 and 0 < other["cka"] < 1


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
        run_train(TrainConfig(name="kd", teacher="resnet8", terms=("ce", "kd"), n_train=32, n_val=16, n_test=16, runs_root=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="config .*missing.yaml does not exist"):
        load_config(tmp_path / "missing.yaml")


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
