import json
import os

import pytest
import torch

from geoviz._io import atomic_write_json, load_weights_only
from geoviz.config import ExperimentConfig
from geoviz.experiments.quickstart import QuickstartConfig, run_quickstart
from geoviz.runs import RunDir, config_hash


def test_run_dir_files_and_schema(tmp_path):
    run = RunDir("r1", tmp_path)
    run.write_config({"a": 0, "b": [1, 2]})
    run.write_config({"a": 1, "b": [1, 2]})  # nothing ran yet (a typo fixed): the new config replaces it
    run.write_config({"a": 1, "b": [1, 2]})  # same config: fine (a resume)
    run.log_epoch({"epoch": 1, "acc": 0.5})
    with pytest.raises(ValueError, match=r"differs in \['a'\]"):  # progress made: another config is refused
        run.write_config({"a": 2, "b": [1, 2]})
    run.log_epoch({"epoch": 2, "acc": 0.6})
    run.log_epoch({"epoch": 2, "acc": 0.7})  # re-logged after a resume: replaced
    m = json.loads((tmp_path / "r1" / "metrics.json").read_text())
    assert m["run"] == "r1" and m["status"] == "running" and [r["acc"] for r in m["epochs"]] == [0.5, 0.7]
    run.write_summary(best=0.7)
    assert run.read_metrics()["status"] == "finished" and run.read_metrics()["summary"] == {"best": 0.7}
    with pytest.raises(ValueError, match="run name"):
        RunDir("../escape", tmp_path)
    assert not [p for p in os.listdir(tmp_path / "r1") if p.endswith(".partial")]


def test_checkpoints_are_atomic_and_load_weights_only(tmp_path):
    run = RunDir("r2", tmp_path)
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 3}
    run.save_checkpoint(state)
    assert torch.equal(run.load_checkpoint()["model"]["w"], torch.arange(3.0))
    assert run.load_checkpoint("missing.pt") is None

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        load_weights_only(tmp_path / "evil.pt")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "m.json"
    atomic_write_json(p, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"bad": object()})
    assert json.loads(p.read_text()) == {"ok": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["m.json"]
    plain = tmp_path / "plain.json"
    plain.write_text("{}")  # the mode a plain open() gives under this umask
    assert (p.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


def test_config_profiles_and_overrides(monkeypatch):
    q = QuickstartConfig.from_profile("quick")
    s = QuickstartConfig.from_profile("smoke", epochs=3)
    assert q == QuickstartConfig() and s.epochs == 3 and s.n_train < q.n_train and s.profile == "smoke"
    assert QuickstartConfig.from_profile("quick", layers=["layer2"]).layers == ("layer2",)
    monkeypatch.setenv("GEOVIZ_PROFILE", "smoke")
    assert QuickstartConfig.from_profile().profile == "smoke"
    with pytest.raises(TypeError, match="unknown QuickstartConfig field 'epoch'; closest: 'epochs'"):
        QuickstartConfig.from_profile("quick", epoch=3)
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        ExperimentConfig.from_profile("fast")
    assert config_hash(q) == config_hash(QuickstartConfig()) != config_hash(s)


def test_quickstart_checks_layers_and_projection_before_training(tmp_path):
    with pytest.raises(ValueError, match="unknown projection 'tsne'; allowed: 'umap', 'pca'"):
        QuickstartConfig.from_profile("smoke", projection="tsne")
    with pytest.raises(TypeError, match="QuickstartConfig.epochs must be a whole number"):
        QuickstartConfig.from_profile("smoke", epochs="two")
    with pytest.raises(KeyError, match="unknown layer 'layer9'; closest: "):
        run_quickstart(
            QuickstartConfig.from_profile("smoke", layers=["layer1", "layer9"]), run_root=tmp_path, progress=False
        )
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing trained, nothing written
