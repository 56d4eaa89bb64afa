"""Every notebook once through papermill with parameters overridden (nbval runs them as-is)."""

import json

import nbformat
import pytest

from geoviz.batch import list_notebooks, run_notebook

OVERRIDES = {
    "00_quickstart": {"projection": "pca", "epochs": 1, "layers": ["layer2", "layer3"], "seed": 1},
    "01_geometric_transfer": {
        "kind": "knn_soft",
        "pairs": [["layer3", "layer3"]],
        "train_fractions": [0.5, 1.0],
        "seeds": [1, 2],
        "steps": 4,
        "methods": ["ce", "kd", "geometric", "geometric+kd", "rkd", "best_baseline+kd"],
    },
    "02_angles_confusion": {"methods": ["ce", "ical"], "lam": 5.0, "epochs": 1},
    "03_shape_probes": {"experiments": ["square_vs_rectangle", "E4"], "starts": ["scratch"], "epochs": 1},
    "04_sparse_keypoints": {"setups": ["AF5"], "max_keypoints": 10, "window": 3},
    "05_pruning": {"methods": ["decorrelated-inputs", "l1", "fpgm"], "speedups": [3.0], "seeds": [0, 1]},
    "06_students_robustness": {"students": ["resnet8"], "corruptions": ["contrast", "fog"], "seeds": [0, 1]},
    "07_ensembles_defects": {"members": ["resnet8", "wrn_16_1"], "finetune": "last", "seeds": [0, 1]},
    "08_cnnmda": {"mirna_similarity": "misim", "folds": 2, "rank": 3},
    "09_atlas": {"model_b": "resnet14", "n_images": 96, "embedding": "pca"},
    "10_your_model": {"projection": "pca", "n_images": 40, "layers": ["layer2.0", "layer3.0"], "model_b": "none"},
}
# what each notebook's last cell must have written to its run's metrics.json (with the overrides above)
EXPECTED_SUMMARY = {
    "00_quickstart": lambda s: s["epochs"] == 1 and "knn_class_purity/layer2" in s,
    "01_geometric_transfer": lambda s: [r["fraction"] for r in s["table_test_acc_best_val"]] == [0.5, 1.0] * 6
    and list(s["geometry"]["geometric"]) == ["layer3→layer3"]
    and s["best_baseline"] == "rkd"
    and {c["verdict"] for c in s["claims"]} <= {"supported", "contradicted", "undecided"}
    and len(s["claims"]) == 12,
    "02_angles_confusion": lambda s: [r["method"] for r in s["table"]] == ["ce", "ical"]
    and s["runs"]["ical-s0"]["epochs"] == 1
    and [c for c in s["claims"] if c["unit"] == "seeds"][0]["claim"] == "ICAL beats plain CE"
    and "mantel" in s["runs"]["ce-s1"]
    and len([c for c in s["claims"] if c["unit"].startswith("classes")]) == 4,
    "03_shape_probes": lambda s: [(r["experiment"], r["start"]) for r in s["table"]]
    == [("E1", "scratch"), ("E4", "scratch")]
    and {p["experiment"] for p in s["probes"]} == {"E1", "E4"},
    "04_sparse_keypoints": lambda s: [r["method"] for r in s["reconstruction"]][:2] == ["mean image (floor)", "AF5"]
    and s["reconstruction"][1]["nonzeros_per_image"] <= 10
    and s["reconstruction"][2]["nonzeros_per_image"] == round(s["reconstruction"][1]["nonzeros_per_image"]),
    "06_students_robustness": lambda s: [(r["model"], r["arm"]) for r in s["table"]]
    == [("teacher", "teacher"), ("resnet8", "distilled"), ("resnet8", "labelled only")]
    and len(s["claims"]) == 3
    and {c["verdict"] for c in s["claims"]} <= {"supported", "contradicted", "undecided"}
    and set(s["rows"][0]["errors"]) == {"contrast", "fog"}
    and s["floor_mae"] > 0
    and s["val_floor_mae"] > 0,
    "07_ensembles_defects": lambda s: [(r["start"], r["name"]) for r in s["table"]]
    == [(st, n) for st in ("transfer", "scratch") for n in ("resnet8", "wrn_16_1", "mean", "vote", "weighted", "stack")]
    and len(s["claims"]) == 15
    and {c["verdict"] for c in s["claims"]} <= {"supported", "contradicted", "undecided"}
    and "last stage only" in s["claims"][0]["claim"]
    and len(s["diversity"]) == 4
    and 0 < s["floors"]["panel"] <= 1,
    "08_cnnmda": lambda s: [r["method"] for r in s["table"]]
    == ["cnnmda", "nmf", "neighbours", "logistic", "popularity"]
    and len(s["folds"]) == 2
    and s["similarity"] == "misim"
    and len(s["claims"]) == 8
    and {c["verdict"] for c in s["claims"]} <= {"supported", "contradicted", "undecided"}
    and all(0 <= r["auc"] <= 1 for r in s["table"])
    and len(s["top"]) == 5,
    "09_atlas": lambda s: s["layers_b"] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1"]
    and s["n_images"] == 96
    and len(s["best_match"]) == 3
    and all(0 <= r["cka"] <= 1 + 1e-9 and r["knn_agreement"] is not None for r in s["best_match"]),
    "10_your_model": lambda s: s["n_images"] == 40
    and s["layers"] == ["layer2.0", "layer3.0"]
    and s["model_b"] is None
    and "atlas" not in s
    and [p["layer"] for p in s["probes"]] == ["layer2.0", "layer3.0"]
    and s["class_geometry"]["mode"] == "class vectors"
    and s["data"].startswith("folder:")
    and s["model"].endswith("model.pt")
    and s["folder"]["n_images"] == 40,
    "05_pruning": lambda s: [(r["method"], r["speedup"]) for r in s["table"]]
    == [("unpruned", 1.0), ("l1", 3.0), ("fpgm", 3.0), ("decorrelated-inputs", 3.0)]
    and [c["speedup"] for c in s["claims"]] == [3.0, 3.0]
    and s["claims"][0]["extra_method"] == "decorrelated-inputs"
    and s["claims"][0]["extra_best_baseline"]
    == max(("l1", "fpgm"), key=lambda m: next(r["acc_finetuned"] for r in s["table"] if r["method"] == m)),
}


def test_every_notebook_is_tested_and_well_formed():
    nbs = list_notebooks()
    assert nbs and {nb.stem for nb in nbs} == set(OVERRIDES) == set(EXPECTED_SUMMARY)
    for path in nbs:
        nb = nbformat.read(str(path), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), (
            f"{path.name}: first code cell must be tagged parameters"
        )
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs committed"
        assert "profile = None" in code[0].source


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_notebook_runs_under_papermill_with_overrides(name, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOVIZ_PROFILE", "smoke")
    monkeypatch.setenv("GEOVIZ_RUNS", str(tmp_path / "runs"))
    src = next(p for p in list_notebooks() if p.stem == name)
    out = run_notebook(src, tmp_path, OVERRIDES[name], html=True)
    nb = nbformat.read(str(out), as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    key = next(iter(OVERRIDES[name]))
    assert injected and f"{key} = " in injected[0].source
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"
    ]
    assert not errors
    files = list((tmp_path / "runs").glob("*/metrics.json"))
    assert files, "the notebook's last cell writes the run's metrics"
    last = max(
        files, key=lambda p: p.stat().st_mtime_ns
    )  # the experiment's, written by the last cell (cached source networks write theirs before)
    assert EXPECTED_SUMMARY[name](json.loads(last.read_text())["summary"])
    # the HTML opens offline with one shared plotly.js beside it, not 5 MB copies inside each file
    html = out.with_suffix(".html").read_text(encoding="utf-8")
    assert 10_000 < len(html.encode()) < 3_000_000 and '<script src="plotly.min.js">' in html
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000 and "plotly.js v" not in html
    declared = nbformat.read(str(src), as_version=4).metadata["geoviz"]["figures"]
    assert html.count("Plotly.newPlot") >= declared  # every declared figure drawn, the apps' ones included
