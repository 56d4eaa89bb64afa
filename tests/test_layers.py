"""The one-way import order the README states holds for every import in the package, function-level
imports included: this test reads the order from the README, so the two cannot drift apart."""

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "geoviz"


def stated_layers() -> list[set[str]]:
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    chain = re.search(r"Dependencies point one way: (.*?) notebooks;", text).group(1)
    private = re.search(r"The small private modules \((.*?)\) sit below them all", text).group(1)
    return [set(re.findall(r"`(\w+)`", private)) | {"__init__"}] + [
        set(re.findall(r"`(\w+)`", part)) for part in chain.split("→")
    ]


def imports_between_units() -> set[tuple[str, str, str]]:
    """(importing unit, imported unit, file) for every relative or absolute geoviz import; a unit is a
    top-level module or subpackage of geoviz."""
    out = set()
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        unit = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(rel.parent.parts)[: len(rel.parent.parts) - (node.level - 1)]
                parts = base + (node.module.split(".") if node.module else [])
                targets = [parts[0]] if parts else [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module == "geoviz":  # from geoviz import viz
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("geoviz."):
                targets = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("geoviz.")]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            ):
                arg = (
                    node.args[0] if node.args else None
                )  # importlib.import_module("geoviz.viz") or f"geoviz.experiments.{x}"
                text = arg.value if isinstance(arg, ast.Constant) else ast.unparse(arg) if arg is not None else ""
                parts = text.strip("f'\"").split(".")
                targets = [parts[1]] if len(parts) > 1 and parts[0] == "geoviz" and parts[1].isidentifier() else []
            else:
                continue
            out |= {(unit, "__init__" if t == "__version__" else t, str(rel)) for t in targets if t != unit}
    return out


def test_every_import_points_down_the_stated_order():
    layers = stated_layers()
    named = [u for layer in layers for u in layer]
    assert len(named) == len(set(named)), (
        f"the README places a unit twice: {sorted({u for u in named if named.count(u) > 1})}"
    )
    rank = {u: i for i, layer in enumerate(layers) for u in layer}
    units = {p.name.removesuffix(".py") for p in PKG.iterdir() if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert units <= set(rank), f"units the README's order does not place: {sorted(units - set(rank))}"
    upward = sorted(
        f"{f}: {u} (layer {rank[u]}) imports {t} (layer {rank[t]})"
        for u, t, f in imports_between_units()
        if rank[t] > rank[u]
    )
    assert not upward, "imports against the stated order:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: an engine module importing viz is caught."""
    fake = tmp_path / "geoviz"
    (fake / "engine").mkdir(parents=True)
    (fake / "viz").mkdir()
    for p in (fake / "__init__.py", fake / "engine" / "__init__.py", fake / "viz" / "__init__.py"):
        p.write_text("")
    (fake / "engine" / "loop.py").write_text("def f():\n    from ..viz import x\n")
    (fake / "engine" / "step.py").write_text("from geoviz import viz\n")
    (fake / "engine" / "optim.py").write_text("import importlib\nm = importlib.import_module('geoviz.viz.common')\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    found = imports_between_units()
    assert {("engine", "viz", f"engine/{f}.py") for f in ("loop", "step", "optim")} <= found
