"""Every notebook once through papermill with parameters overridden (nbval runs them as-is)."""
import json
from pathlib import Path

import nbformat
import pytest

from geoviz.cli import _notebooks, run_notebook

OVERRIDES = {
    "00_quickstart": {"projection": "pca", "epochs": 1, "layers": ["layer2", "layer3"], "seed": 1},
}


def test_every_notebook_is_tested_and_well_formed():
    nbs = _notebooks()
    assert nbs and {nb.stem for nb in nbs} == set(OVERRIDES)
    for path in nbs:
        nb = nbformat.read(str(path), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell must be tagged parameters"
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs committed"
        assert "profile = None" in code[0].source


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_notebook_runs_under_papermill_with_overrides(name, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOVIZ_PROFILE", "smoke")
    monkeypatch.setenv("GEOVIZ_RUNS", str(tmp_path / "runs"))
    src = next(p for p in _notebooks() if p.stem == name)
    out = run_notebook(src, tmp_path, OVERRIDES[name], html=True)
    nb = nbformat.read(str(out), as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "projection = \"pca\"" in injected[0].source
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    runs = list((tmp_path / "runs").glob("*/metrics.json"))
    assert runs, "the notebook's last cell writes the run's metrics"
    summary = json.loads(runs[0].read_text())["summary"]
    assert summary["epochs"] == 1 and "knn_class_purity/layer2" in summary
    assert out.with_suffix(".html").stat().st_size > 10_000
