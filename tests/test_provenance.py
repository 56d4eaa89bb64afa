"""Runs know which code made them: a rerun under other code is refused, accepted with
reuse="stale-ok", redone with reuse="fresh"; `geoviz runs` lists and cleans them."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import geoviz.runs as runs_module
from geoviz import cli
from geoviz._utils import resolve_device
from geoviz.experiments.angles import AnglesConfig, run_angles
from geoviz.runs import RunDir, StaleRunError, code_fingerprint, list_runs, reuse_policy, source_hash, stale_reasons

PACKAGE = Path(runs_module.__file__).resolve().parent


def _fake_source(monkeypatch, value: str) -> None:
    monkeypatch.setattr(runs_module, "source_hash", lambda: value)


def test_the_source_hash_is_the_package_files_hash():
    import hashlib

    h = hashlib.sha256()
    for p in sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts):
        h.update(p.relative_to(PACKAGE).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    assert source_hash() == h.hexdigest()[:16] == code_fingerprint()["source"]


def test_a_run_with_progress_under_other_code_is_refused_then_accepted_or_redone(tmp_path, monkeypatch):
    run = RunDir("r", tmp_path)
    assert run.reused is None and list((tmp_path / "r").iterdir()) == []  # opening writes nothing (DDP ranks > 0)
    run.log_epoch({"epoch": 1, "acc": 0.5})
    assert run.read_metrics()["provenance"]["source"] == source_hash()  # recorded with the first file
    assert RunDir("r", tmp_path).reused["stale"] == []  # the same code: resumed without a word
    _fake_source(monkeypatch, "0123456789abcdef")
    with pytest.raises(
        StaleRunError, match=r"the geoviz sources changed: source .{8} .*→ 01234567.*reuse='stale-ok'.*reuse='fresh'"
    ):
        RunDir("r", tmp_path)
    accepted = RunDir("r", tmp_path, reuse="stale-ok")
    assert accepted.reused["stale"] and accepted.read_metrics()["epochs"] == [{"epoch": 1, "acc": 0.5}]
    assert "made by OTHER code" in accepted.describe_reuse()
    with reuse_policy("stale-ok"):  # the policy reaches runs opened deep inside a study
        assert RunDir("r", tmp_path).reused["stale"]
    monkeypatch.setenv("GEOVIZ_REUSE", "stale-ok")
    assert RunDir("r", tmp_path).reused["stale"]
    monkeypatch.delenv("GEOVIZ_REUSE")
    fresh = RunDir("r", tmp_path, reuse="fresh")  # deleted and started over, under the current (fake) code
    assert fresh.reused is None and not (tmp_path / "r" / "metrics.json").exists()
    fresh.save_checkpoint({"epoch": 1})
    assert fresh.read_metrics()["provenance"]["source"] == "0123456789abcdef"
    with pytest.raises(ValueError, match="reuse='sometimes'"):
        RunDir("r", tmp_path, reuse="sometimes")


def test_a_run_without_progress_takes_the_current_code_and_old_runs_without_a_fingerprint_are_stale(
    tmp_path, monkeypatch
):
    RunDir("empty", tmp_path).write_config({"a": 1})  # a config, no progress: nothing made yet to protect
    _fake_source(monkeypatch, "fedcba9876543210")
    empty = RunDir("empty", tmp_path)
    assert empty.reused is None
    empty.write_config({"a": 1})
    assert empty.read_metrics()["provenance"]["source"] == "fedcba9876543210"
    RunDir("other", tmp_path).write_summary(acc=1.0)  # made under the fake code ...
    monkeypatch.undo()
    reopened = RunDir("other", tmp_path, reuse="stale-ok")  # ... reused by the real one: still marked as the fake's
    reopened.write_summary(more=2.0)
    assert reopened.read_metrics()["provenance"]["source"] == "fedcba9876543210"
    _fake_source(monkeypatch, "fedcba9876543210")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "metrics.json").write_text(
        json.dumps({"run": "legacy", "status": "finished", "epochs": [], "summary": {"acc": 1}})
    )
    assert stale_reasons(None) == ["it records no code fingerprint (made before geoviz recorded one)"]
    with pytest.raises(StaleRunError, match="no code fingerprint"):
        RunDir("legacy", tmp_path)
    current = {**code_fingerprint(), "torch": "0.0"}
    assert any("torch changed" in r for r in stale_reasons(current))


def test_editing_a_source_file_makes_earlier_runs_stale(tmp_path):
    """The real thing, not a fake: a copy of the package, a run made with it, one line added to one
    of its files, and the same run opened again in a fresh interpreter."""
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "geoviz", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(copy), "GEOVIZ_RUNS": str(tmp_path / "runs")}
    env.pop("GEOVIZ_REUSE", None)
    script = (
        "import sys; from geoviz.runs import RunDir, StaleRunError\ntry:\n    r = RunDir('r', reuse=sys.argv[1] if "
        "len(sys.argv) > 1 else None); r.write_summary(acc=1.0)\n    print('stale' if r.reused and "
        "r.reused['stale'] else 'ok')\nexcept StaleRunError as e:\n    print('refused:', e)\n"
    )

    def run(*args):
        return subprocess.run(
            [sys.executable, "-c", script, *args], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
        ).stdout.strip()

    assert run() == "ok" and run() == "ok"  # made, then reused by the same code
    with open(copy / "geoviz" / "geometry.py", "a") as fh:
        fh.write("\n# an edit\n")
    assert run().startswith("refused: run 'r'") and "the geoviz sources changed" in run()
    assert run("stale-ok") == "stale"


def test_a_study_refuses_a_stale_rerun_and_says_when_it_reuses(tmp_path, monkeypatch, capsys):
    cfg = AnglesConfig.from_profile(
        "smoke",
        methods=("ce", "ical"),
        seeds=(0, 1),
        epochs=1,
        n_train=96,
        n_val=40,
        n_test=60,
        n_boot=10,
        n_permutations=20,
    )
    first = run_angles(cfg, run_root=tmp_path, progress=False)
    assert first.provenance["source"] == source_hash() and first.provenance["study"] == "angles"
    assert first.provenance["seeds"] == [0, 1] and first.provenance["device"] == str(resolve_device("auto"))
    capsys.readouterr()
    again = run_angles(cfg, run_root=tmp_path, progress=False)
    out = capsys.readouterr().out
    assert (
        "reusing the finished run" in out and "made by the current code" in out
    )  # announced, with the code that made it
    assert [c.mean for c in again.claims()] == pytest.approx([c.mean for c in first.claims()], nan_ok=True)
    _fake_source(monkeypatch, "00000000ffffffff")
    with pytest.raises(StaleRunError, match="angles-resnet8"):
        run_angles(cfg, run_root=tmp_path, progress=False)
    stale_ok = run_angles(cfg, run_root=tmp_path, progress=False, reuse="stale-ok")
    assert "made by OTHER code" in capsys.readouterr().out and len(stale_ok.runs) == 4


def test_geoviz_runs_lists_and_cleans_stale_runs(tmp_path, monkeypatch, capsys):
    RunDir("kept", tmp_path).write_summary(acc=1.0)
    _fake_source(monkeypatch, "aaaaaaaaaaaaaaaa")
    RunDir("mine", tmp_path).write_summary(acc=1.0)
    rows = {r["name"]: r for r in list_runs(tmp_path)}
    assert (
        rows["kept"]["state"] == "stale" and rows["mine"]["state"] == "current" and rows["mine"]["status"] == "finished"
    )
    assert cli.main(["runs", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "kept" in out and "mine" in out and "1 of 2 runs stale" in out
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    cli.main(["runs", "--root", str(tmp_path), "--clean-stale"])
    assert (tmp_path / "kept").is_dir() and "nothing removed" in capsys.readouterr().out
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    cli.main(["runs", "--root", str(tmp_path), "--clean-stale"])
    assert (
        not (tmp_path / "kept").exists()
        and (tmp_path / "mine").is_dir()
        and "removed 1 stale runs" in capsys.readouterr().out
    )


def test_folders_of_runs_are_stamped_and_folders_of_other_results_are_checked(tmp_path, monkeypatch):
    # a study's folder holding only runs (no files of its own yet): each run is checked when opened,
    # the folder takes the current code
    RunDir("arm-s0", tmp_path / "study").write_summary(acc=1.0)
    parent = RunDir("study", tmp_path)
    assert parent.reused is None
    parent.record(study="x")
    assert parent.read_metrics()["provenance"]["source"] == source_hash()
    # results written outside a RunDir (images, a feature bank) under a folder that records no code: refused
    images = tmp_path / "images-run" / "images" / "class_a"
    images.mkdir(parents=True)
    (images / "0.png").write_bytes(b"old pixels")
    with pytest.raises(StaleRunError, match="no code fingerprint"):
        RunDir("images-run", tmp_path)
    # an old study folder: a config and runs made before fingerprints: refused, not reused
    legacy = tmp_path / "old-study"
    (legacy / "arm-s0").mkdir(parents=True)
    (legacy / "config.json").write_text("{}")
    (legacy / "arm-s0" / "metrics.json").write_text(
        json.dumps({"run": "arm-s0", "status": "finished", "epochs": [{"epoch": 1}]})
    )
    with pytest.raises(StaleRunError):
        RunDir("old-study", tmp_path)
    with pytest.raises(StaleRunError):
        RunDir("arm-s0", legacy)
    # a reused run keeps where it was made: record() adds what is missing, never overwrites
    run = RunDir("r", tmp_path)
    run.record(device="cuda", seeds=[0])
    run.write_summary(acc=1.0)
    again = RunDir("r", tmp_path)
    again.record(device="cpu", seeds=[0], study="s")
    assert again.read_metrics()["provenance"]["device"] == "cuda" and again.read_metrics()["provenance"]["study"] == "s"
    # reuse="fresh" under torchrun would delete the folder under the other ranks: refused with what to do
    _fake_source(monkeypatch, "1111111111111111")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(StaleRunError, match="under torchrun"):
        RunDir("r", tmp_path, reuse="fresh")


def test_geoviz_runs_leaves_folders_that_are_not_runs_alone(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01.html").write_text("<html>")
    (tmp_path / "test" / "unit").mkdir(parents=True)
    RunDir("a-run", tmp_path).write_summary(acc=1.0)
    assert [r["name"] for r in list_runs(tmp_path)] == ["a-run"]
    _fake_source(monkeypatch, "2222222222222222")
    cli.main(["runs", "--root", str(tmp_path), "--clean-stale", "--yes"])
    assert (tmp_path / "notebooks" / "01.html").is_file() and (tmp_path / "test" / "unit").is_dir()
    assert not (tmp_path / "a-run").exists()
