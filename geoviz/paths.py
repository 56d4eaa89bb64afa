"""Where geoviz looks for data, writes runs and finds its notebooks — the same answer whatever the
current directory is.

JupyterLab and nbval start kernels in ``notebooks/``, papermill wherever it is told, the CLI in
the user's shell directory: resolving ``data/`` and ``runs/`` against the current directory would
give each of them another folder. So every path is resolved from one place:

1. ``$GEOVIZ_DATA`` / ``$GEOVIZ_RUNS`` / ``$GEOVIZ_NOTEBOOKS`` when set (a relative value is taken
   relative to the project root, so ``GEOVIZ_RUNS=runs/test`` means the same folder from
   ``notebooks/`` as from the root);
2. otherwise ``data/``, ``runs/``, ``notebooks/`` in the **project root**: ``$GEOVIZ_ROOT`` when set;
   else the nearest folder at or above the current directory that holds geoviz's
   ``pyproject.toml`` (a kernel started in ``notebooks/`` finds the checkout above it); else the
   checkout the package itself was imported from (an editable install);
3. with no project root at all (a plain ``pip install`` used from some other folder): the current
   directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["project_root", "data_root", "runs_root", "notebooks_dir", "resolve_in_root"]

_PROJECT_NAME = re.compile(r'^\s*name\s*=\s*["\']geoviz["\']', re.MULTILINE)


def _is_geoviz_checkout(folder: Path) -> bool:
    p = folder / "pyproject.toml"
    try:
        return p.is_file() and bool(_PROJECT_NAME.search(p.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return False


def project_root() -> Path | None:
    """The geoviz checkout in use (see the module docstring), or None when there is none."""
    env = os.environ.get("GEOVIZ_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if _is_geoviz_checkout(folder):
            return folder
    package_parent = Path(__file__).resolve().parent.parent
    if _is_geoviz_checkout(package_parent):
        return package_parent
    return None


def resolve_in_root(path: str | os.PathLike) -> Path:
    """An absolute path as it is; a relative one against the project root (else the current directory)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return (project_root() or Path.cwd()) / p


def _located(env: str, default: str) -> Path:
    value = os.environ.get(env)
    return resolve_in_root(value if value else default)


def data_root() -> Path:
    """Where real data sets are read from: ``$GEOVIZ_DATA``, else ``<project root>/data``."""
    return _located("GEOVIZ_DATA", "data")


def runs_root() -> Path:
    """Where runs are written: ``$GEOVIZ_RUNS``, else ``<project root>/runs``."""
    return _located("GEOVIZ_RUNS", "runs")


def notebooks_dir() -> Path:
    """Where the notebooks are: ``$GEOVIZ_NOTEBOOKS``, else ``<project root>/notebooks``."""
    return _located("GEOVIZ_NOTEBOOKS", "notebooks")
