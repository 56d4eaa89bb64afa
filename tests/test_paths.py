"""data/, runs/ and notebooks/ resolve from the project root, whatever the working directory."""

import json
from pathlib import Path

import nbformat
import pytest
from data_files import write_cifar

from geoviz import paths
from geoviz.batch import run_notebook

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A geoviz checkout elsewhere: its pyproject.toml, notebooks/ and data/; no GEOVIZ_* set."""
    root = tmp_path / "proj"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "geoviz"\nversion = "0"\n')
    for var in ("GEOVIZ_ROOT", "GEOVIZ_DATA", "GEOVIZ_RUNS", "GEOVIZ_NOTEBOOKS"):
        monkeypatch.delenv(var, raising=False)
    return root


def test_the_root_is_found_from_a_subfolder_and_env_values_are_taken_inside_it(project, monkeypatch, tmp_path):
    monkeypatch.chdir(project / "notebooks")
    assert paths.project_root() == project
    assert paths.data_root() == project / "data" and paths.runs_root() == project / "runs"
    assert paths.notebooks_dir() == project / "notebooks"
    assert paths.resolve_in_root("runs/bank") == project / "runs" / "bank"  # e.g. collect(out_dir="runs/bank")
    monkeypatch.setenv("GEOVIZ_RUNS", "runs/test/nbval")  # as the Makefile sets it: the same folder from notebooks/
    assert paths.runs_root() == project / "runs" / "test" / "nbval"
    monkeypatch.setenv("GEOVIZ_DATA", str(tmp_path / "elsewhere"))
    assert paths.data_root() == tmp_path / "elsewhere"
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)  # outside any checkout: the one the package was imported from (editable install)
    assert paths.project_root() == REPO
    monkeypatch.setenv("GEOVIZ_ROOT", str(project))
    assert paths.project_root() == project


def test_a_pyproject_of_another_project_is_not_taken_for_geoviz(tmp_path, monkeypatch):
    other = tmp_path / "theirs"
    other.mkdir()
    (other / "pyproject.toml").write_text('[project]\nname = "geoviz-plugin"\n')
    monkeypatch.delenv("GEOVIZ_ROOT", raising=False)
    monkeypatch.chdir(other)
    assert paths.project_root() == REPO


def test_a_notebook_run_from_notebooks_reads_the_projects_data_and_writes_its_runs(project):
    """What JupyterLab and nbval do: the kernel starts in notebooks/."""
    write_cifar(project / "data", per_batch=10, n_test=20)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import os\nfrom geoviz.datasets import get_dataset\nfrom geoviz.runs import RunDir\ntest = "
            "get_dataset('cifar10', 'test', verify=False)\nrun = "
            "RunDir('from-notebooks')\nrun.write_summary(n_test=len(test), cwd=os.getcwd())\n"
        )
    ]
    src = project / "notebooks" / "where.ipynb"
    nbformat.write(nb, str(src))
    run_notebook(src, project / "notebooks" / "out", html=False)
    summary = json.loads((project / "runs" / "from-notebooks" / "metrics.json").read_text())["summary"]
    assert summary["n_test"] == 20 and Path(summary["cwd"]) == project / "notebooks"
    assert not (project / "notebooks" / "runs").exists()
