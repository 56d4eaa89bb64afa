import os
import subprocess
import sys
from pathlib import Path

import pytest

from geoviz.batch import find_notebook
from geoviz.cli import main

REPO = Path(__file__).resolve().parents[1]
GEOVIZ = Path(sys.executable).with_name("geoviz")  # the console script pip installed


def test_cli_lists_registries(capsys):
    assert main(["models"]) == 0
    assert "resnet20" in capsys.readouterr().out
    assert main(["datasets"]) == 0
    assert "shapes10" in capsys.readouterr().out


def test_cli_finds_notebooks_by_name():
    assert find_notebook("quickstart").name == "00_quickstart.ipynb"
    assert find_notebook("02").name == "02_angles_confusion.ipynb"
    with pytest.raises(SystemExit, match="unknown notebook 'quikstart'; closest: '00_quickstart'"):
        find_notebook("quikstart")


def test_console_script_is_installed():
    out = subprocess.run([str(GEOVIZ), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "geoviz demo" in out.stdout
    out = subprocess.run([str(GEOVIZ), "models"], capture_output=True, text=True)
    assert out.returncode == 0 and "resnet20" in out.stdout.split()


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOVIZ_") and k != "PYTHONPATH"}
    return {**env, "GEOVIZ_PROGRESS": "0", **extra}


def test_without_notebooks_demo_and_notebook_say_where_they_looked_and_fail(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for cmd in (["demo"], ["notebook", "quickstart"]):
        out = subprocess.run(
            [str(GEOVIZ), *cmd],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=_clean_env(GEOVIZ_NOTEBOOKS=str(empty), GEOVIZ_RUNS=str(tmp_path / "runs")),
        )
        assert out.returncode != 0, cmd
        assert f"no notebooks found in {empty}" in out.stderr and "GEOVIZ_NOTEBOOKS" in out.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_plain_pip_install_used_elsewhere_fails_clearly(tmp_path):
    """`pip install .` (not editable) carries the package only: demo must not 'succeed' running nothing."""
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import geoviz.cli as c; "
        "assert c.__file__.startswith(sys.argv[1]); sys.exit(c.main(['demo']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(site)], capture_output=True, text=True, cwd=work, env=_clean_env()
    )
    assert out.returncode != 0 and f"no notebooks found in {work / 'notebooks'}" in out.stderr, out.stderr[-1500:]


def test_train_with_a_bad_config_prints_the_problem_not_a_traceback(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: bad\nmodel: resnet8\noptimizer: adam\n")
    out = subprocess.run(
        [str(GEOVIZ), "train", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(GEOVIZ_RUNS=str(tmp_path / "runs")),
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert f"geoviz train: {cfg}: unknown optimizer 'adam'; allowed: 'sgd', 'adamw'" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_train_failing_on_the_built_models_prints_the_problem_not_a_traceback(tmp_path):
    cfg = tmp_path / "layer.yaml"
    cfg.write_text(
        "name: layer\nmodel: resnet8\nn_train: 32\nn_val: 16\nn_test: 16\n"
        "teacher: resnet8\nteacher_checkpoint: t.pt\nterms: [ce, {name: kd}]\n"
    )
    out = subprocess.run(
        [str(GEOVIZ), "train", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_clean_env(GEOVIZ_RUNS=str(tmp_path / "runs")),
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "geoviz train: teacher_checkpoint 't.pt' →" in out.stderr and "does not exist" in out.stderr
    assert not (tmp_path / "runs").exists()
