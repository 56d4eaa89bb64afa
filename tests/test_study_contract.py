"""Every study keeps one result contract: claims() a list of Claim (verdicts in VERDICTS),
table() tidy rows, curves() keyed by (arm, seed), floors, provenance (the code that made it)."""

import math

import pytest

from geoviz._utils import resolve_device
from geoviz.analysis.statistics import VERDICTS, Claim
from geoviz.runs import source_hash

STUDIES = {  # study → (module, config class, runner, smoke overrides that keep it a few seconds)
    "transfer": (
        "transfer",
        "TransferConfig",
        "run_transfer",
        dict(
            methods=("ce", "geometric"), train_fractions=(1.0,), seeds=(0, 1), convergence_check=False, teacher_epochs=1
        ),
    ),
    "angles": (
        "angles",
        "AnglesConfig",
        "run_angles",
        dict(methods=("ce", "ical"), epochs=1, n_train=96, n_val=40, n_test=60, n_boot=10, n_permutations=20),
    ),
    "probes": ("probes", "ProbesConfig", "run_probes", dict(experiments=("E1", "E4"), starts=("scratch",), epochs=1)),
    "keypoints": ("keypoints", "KeypointsConfig", "run_keypoints", dict(setups=("AF4",), budgets=(4,), seeds=(0, 1))),
    "pruning": ("pruning", "PruningConfig", "run_pruning", dict()),
    "students": (
        "students",
        "StudentsConfig",
        "run_students",
        dict(students=("resnet8",), corruptions=("fog",), severities=(1,)),
    ),
    "ensembles": ("ensembles", "EnsemblesConfig", "run_ensembles", dict(members=("resnet8", "resnet14"))),
    "cnnmda": ("cnnmda", "CnnmdaConfig", "run_cnnmda", dict()),
    "atlas": ("atlas", "AtlasConfig", "run_atlas", dict(n_images=48, embedding="pca")),
    "explore": ("explore", "ExploreConfig", "run_explore", dict(n_images=40, projection="pca", model_b="none")),
}


@pytest.mark.slow
@pytest.mark.parametrize("study", sorted(STUDIES))
def test_every_study_keeps_the_result_contract(study, tmp_path):
    import importlib

    module, config, runner, overrides = STUDIES[study]
    mod = importlib.import_module(f"geoviz.experiments.{module}")
    cfg = getattr(mod, config).from_profile("smoke", **overrides)
    result = getattr(mod, runner)(cfg, run_root=tmp_path, progress=False)

    claims = result.claims()
    assert isinstance(claims, list) and claims and all(isinstance(c, Claim) for c in claims)
    for c in claims:
        assert c.verdict in VERDICTS and c.claim and c.metric and c.unit and isinstance(c.n, int) and c.n >= 0
        low, high = c.interval
        if not (math.isnan(low) or math.isnan(high)):  # an interval decides: the verdict says where it lies
            t = c.extra.get("threshold", 0.0)
            assert low <= c.mean <= high or c.unit.startswith("folds"), c  # a t interval is centred on the mean
            expected = "supported" if low > t else "contradicted" if high < t else "undecided"
            assert c.verdict == expected, (c.claim, c.interval, t, c.verdict)
    table = result.table()
    assert isinstance(table, list) and table and all(isinstance(r, dict) for r in table)
    curves = result.curves()
    assert all(isinstance(k, tuple) and len(k) == 2 and isinstance(k[0], str) and isinstance(k[1], int) for k in curves)
    if study not in ("explore", "cnnmda"):  # nothing trained in explore; cnnmda's curves are per fold
        assert curves and all(isinstance(h, list) and h and "epoch" in h[0] for h in curves.values())
    assert result.floors, "every study names its floors"
    prov = result.provenance
    assert (
        prov["source"] == source_hash()
        and prov["study"] == study
        and prov["device"] == str(resolve_device("auto"))
        and "torch" in prov
    )
    summary = result.save_metrics()
    assert [r["verdict"] for r in summary["claims"]] == [
        c.verdict for c in claims
    ]  # metrics.json holds the same claims


def test_the_study_api_is_documented():
    """Every public class, function and method of geoviz.experiments says what it is; every study
    result (a StudyResult) documents its attributes."""
    import ast
    import inspect
    from pathlib import Path

    from geoviz.experiments._study import StudyResult

    missing = []
    for path in sorted(Path(inspect.getfile(StudyResult)).parent.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                members = [node] + [m for m in getattr(node, "body", []) if isinstance(m, ast.FunctionDef)]
                for m in members:
                    if not m.name.startswith("_") and m.name != "steps" and not ast.get_docstring(m):
                        missing.append(f"{path.name}: {node.name}" + (f".{m.name}" if m is not node else ""))
    assert not missing, missing
    import importlib

    for name in STUDIES:
        mod = importlib.import_module(f"geoviz.experiments.{STUDIES[name][0]}")
        results = [
            c for c in vars(mod).values() if isinstance(c, type) and issubclass(c, StudyResult) and c is not StudyResult
        ]
        assert results and all("Attributes\n" in (c.__doc__ or "") for c in results), name
