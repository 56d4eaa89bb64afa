"""Where results go: ``runs/<name>/`` with ``config.json``, ``metrics.json`` and checkpoints.

Every file is written atomically (temp file + rename), so an interrupted run leaves the last
complete version behind, and a rerun with the same name resumes from its last checkpoint, but only
when the same code made it: every run records the code's fingerprint (``code_fingerprint``), and
opening a run that has made progress under another fingerprint is refused (``StaleRunError``)
unless the caller says otherwise (``reuse="stale-ok"`` accepts it, ``reuse="fresh"`` deletes it and
starts over; ``reuse_policy`` / ``$GEOVIZ_REUSE`` set it for a whole study).

``metrics.json`` has one schema for every experiment::

    {"run": name, "status": "running" | "finished", "updated": ISO time,
     "provenance": {...code_fingerprint(), "device", "seeds", "created"},
     "epochs": [{"epoch": 1, ...per-epoch values...}, ...],
     "summary": {...final values...}}
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from ._io import atomic_torch_save, atomic_write_json, load_weights_only, read_json, to_jsonable
from .paths import resolve_in_root, runs_root

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")


def default_root() -> Path:
    """``$GEOVIZ_RUNS`` if set, else ``runs/`` in the project root (``geoviz.paths``)."""
    return runs_root()


def config_hash(config: Any, n: int = 8) -> str:
    """A short stable hash of a config (dataclass or dict), to name runs by what they ran."""
    data = asdict(config) if is_dataclass(config) else config
    blob = json.dumps(to_jsonable(data), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


REUSE_MODES = ("current", "stale-ok", "fresh")
_reuse = contextvars.ContextVar("geoviz_reuse", default=None)
_PACKAGE_DIR = Path(__file__).resolve().parent


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _hash_sources() -> str:
    h = hashlib.sha256()
    for p in sorted(p for p in _PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts):
        h.update(p.relative_to(_PACKAGE_DIR).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


# Taken when geoviz.runs is first imported (every study imports it before it runs anything): the code
# this process runs, not what the files hold later. An edit made while a long study runs changes the
# files, not the loaded code, so it must not make the study refuse its own runs; the next process sees it.
_SOURCE_AT_IMPORT = _hash_sources()


def source_hash() -> str:
    """A hash of every ``.py`` file of the ``geoviz`` package in use (names and contents) as it was
    when this process imported it, so an installed copy without git has an identity too."""
    return _SOURCE_AT_IMPORT


@functools.lru_cache(maxsize=1)
def _git_state() -> dict:
    """The checkout's commit and whether ``geoviz/`` differs from it (None where there is no git)."""
    top = _PACKAGE_DIR.parent
    if not (top / ".git").exists():
        return {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(top), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
        status = subprocess.run(
            ["git", "-C", str(top), "status", "--porcelain", "--", "geoviz"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip()[:12], "dirty": bool(status.stdout.strip())}


def code_fingerprint() -> dict:
    """What made a result: geoviz's version, git commit (and whether ``geoviz/`` was edited since),
    the hash of its sources, and the torch / CUDA / Python versions. ``source`` and ``torch`` decide
    whether two results come from the same code (``stale_reasons``); the rest says where from."""
    import platform

    import torch

    from . import __version__

    return {
        "geoviz": __version__,
        **_git_state(),
        "source": source_hash(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }


def describe_code(fp: dict | None) -> str:
    """One line: ``geoviz 0.1.0, commit 1a2b3c4d5e6f (edited), source 9f8e…, torch 2.14.1``."""
    if not fp:
        return "unknown code (no fingerprint recorded: made before geoviz recorded one)"
    commit = f", commit {fp['commit']}" + (" (edited)" if fp.get("dirty") else "") if fp.get("commit") else ""
    return f"geoviz {fp.get('geoviz')}{commit}, source {str(fp.get('source'))[:8]}, torch {fp.get('torch')}"


def stale_reasons(recorded: dict | None, current: dict | None = None) -> list[str]:
    """Why a run's recorded fingerprint is not the current code's (empty: the same code)."""
    current = code_fingerprint() if current is None else current
    if not recorded or "source" not in recorded:
        return ["it records no code fingerprint (made before geoviz recorded one)"]
    out = []
    if recorded["source"] != current["source"]:
        was = (
            f" (commit {recorded['commit']}{', edited' if recorded.get('dirty') else ''})"
            if recorded.get("commit")
            else ""
        )
        out.append(
            f"the geoviz sources changed: source {str(recorded['source'])[:8]}{was} → {str(current['source'])[:8]}"
        )
    if recorded.get("torch") != current.get("torch"):
        out.append(f"torch changed: {recorded.get('torch')} → {current.get('torch')}")
    return out


def reuse_mode(mode: str | None = None) -> str:
    """``mode`` when given, else the innermost ``reuse_policy``, else ``$GEOVIZ_REUSE``, else "current"."""
    mode = mode or _reuse.get() or os.environ.get("GEOVIZ_REUSE") or "current"
    if mode not in REUSE_MODES:
        raise ValueError(
            f"reuse={mode!r}: expected one of {REUSE_MODES} ('current': only runs made by this code; "
            f"'stale-ok': accept runs made by other code; 'fresh': delete such runs and start over)"
        )
    return mode


@contextlib.contextmanager
def reuse_policy(mode: str | None):
    """Every ``RunDir`` opened inside uses ``mode`` (None: leave the policy as it is)."""
    token = _reuse.set(reuse_mode(mode)) if mode else None
    try:
        yield
    finally:
        if token is not None:
            _reuse.reset(token)


class StaleRunError(ValueError):
    """A run made progress under other code than the current one (see ``stale_reasons``)."""


class RunDir:
    """One run's folder. ``RunDir("resnet20-shapes10")`` → ``runs/resnet20-shapes10/``.

    Opening a folder that holds progress (checkpoints, epochs, a summary, nested runs) checks the
    code fingerprint it recorded against the current code (``reuse``: see ``reuse_mode``). A run
    with no progress simply records the current fingerprint.

    Attributes
    ----------
    name, root, path : the run's name, the runs root and ``root / name``.
    reused : None for a new run; else ``{"status", "provenance", "stale": [reasons]}`` of the run
        that was there when it was opened (what a study reports when it reuses a finished run).
    """

    @staticmethod
    def valid_name(name) -> bool:
        return isinstance(name, str) and bool(_NAME.match(name))

    def __init__(self, name: str, root: str | os.PathLike | None = None, *, reuse: str | None = None):
        if not self.valid_name(name):
            raise ValueError(
                f"run name {name!r} must start with a letter or digit and use only letters, digits and _ . = + -"
            )
        self.name = name
        self.root = resolve_in_root(root) if root is not None else default_root()
        self.path = self.root / name
        self.path.mkdir(parents=True, exist_ok=True)
        self.reused = None
        self._check_code(reuse_mode(reuse))

    def _check_code(self, mode: str) -> None:
        # the provenance a new run writes with its first file (never at opening: DDP ranks > 0 write nothing)
        self._stamp = None
        if not self.has_progress() or (not _looks_like_run(self.path) and _only_runs_inside(self.path)):
            # nothing made here yet, or only runs inside it (a study's folder before its summary; each is
            # checked when it is opened): the folder takes the current code's fingerprint
            self._stamp = {**code_fingerprint(), "created": _now()}
            return
        m = self.read_metrics()
        reasons = stale_reasons(m.get("provenance"))
        if reasons and mode == "fresh":
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would delete the folder under the others
                raise StaleRunError(f"reuse='fresh' under torchrun would delete {self.path} under the other processes: "
                                    f"delete it first ({'; '.join(reasons)}), then start the run again")  # fmt: skip
            shutil.rmtree(self.path)
            self.path.mkdir(parents=True)
            return self._check_code("current")
        if reasons and mode == "current":
            raise StaleRunError(
                f"run {self.name!r} ({self.path}) was made by other code than the current one: "
                f"{'; '.join(reasons)}. It was made by {describe_code(m.get('provenance'))}; now running "
                f"{describe_code(code_fingerprint())}. Resuming or reusing it could mix results of both. Either "
                "accept it as it is with reuse='stale-ok' (GEOVIZ_REUSE=stale-ok, or --reuse stale-ok on the "
                f"command line), or start over with reuse='fresh' (which deletes {self.path}) or a new run name."
            )
        self.reused = {"status": m.get("status"), "provenance": m.get("provenance"), "stale": reasons}

    def _stamp_provenance(self) -> None:
        """A new run records the code that makes it with its first file (replacing what an earlier
        opening that made no progress left); a reused run keeps what it had."""
        if self._stamp is not None:
            self._write_metrics(self.read_metrics())

    def record(self, **values) -> None:
        """Add ``values`` (device, seeds, study…) to the run's provenance in ``metrics.json``."""
        self._stamp_provenance()
        m = self.read_metrics()
        old = m.get("provenance", {})
        # a reused run keeps what it recorded (where it ran first, with which seeds): only what is missing is added
        new = {**old, **to_jsonable(values)} if self.reused is None else {**to_jsonable(values), **old}
        if new != old:
            m["provenance"] = new
            self._write_metrics(m)

    def describe_reuse(self) -> str | None:
        """A sentence for a study to print when it reuses a run (None when the run is new)."""
        if self.reused is None:
            return None
        what = "finished run" if self.reused["status"] == "finished" else "unfinished run (resuming it)"
        made = describe_code(self.reused["provenance"])
        if self.reused["stale"]:
            return (
                f"reusing the {what} {self.path}, made by OTHER code ({made}; {'; '.join(self.reused['stale'])}), "
                f"accepted with reuse='stale-ok'"
            )
        return f"reusing the {what} {self.path}, made by the current code ({made})"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # config -----------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def write_config(self, config: Any) -> dict:
        """Save the fully resolved config. Resuming a run that has made progress (a checkpoint or
        logged epochs) with a different config is refused; a run that never got that far (it
        failed before training) simply takes the new config."""
        data = to_jsonable(asdict(config) if is_dataclass(config) else dict(config))
        if self.config_path.is_file() and self.has_progress():
            old = read_json(self.config_path)
            if old != data:
                changed = sorted(k for k in set(old) | set(data) if old.get(k) != data.get(k))
                raise ValueError(
                    f"run {self.name!r} exists with another config (differs in {changed}); "
                    f"use a new run name, or delete {self.path} to start over"
                )
        self._stamp_provenance()
        atomic_write_json(self.config_path, data)
        return data

    def has_progress(self) -> bool:
        """Whether anything but the config was written: a checkpoint, epochs or a summary."""
        if any(self.path.glob("*.pt")):
            return True
        m = self.read_metrics()
        return bool(m["epochs"] or m["summary"]) or any(p.is_dir() for p in self.path.iterdir())

    def read_config(self) -> dict:
        return read_json(self.config_path)

    # metrics ----------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    def read_metrics(self) -> dict:
        if self.metrics_path.is_file():
            return read_json(self.metrics_path)
        return {"run": self.name, "status": "running", "updated": None, "epochs": [], "summary": {}}

    def _write_metrics(self, m: dict) -> None:
        if self._stamp is not None:  # the first write of a new run: its code, over anything left before
            m["provenance"] = {**m.get("provenance", {}), **self._stamp}
            self._stamp = None
        m["updated"] = _now()
        atomic_write_json(self.metrics_path, to_jsonable(m))

    def log_epoch(self, record: dict) -> None:
        """Append one epoch's values (an epoch logged again, after a resume, replaces the old row)."""
        if "epoch" not in record:
            raise ValueError("an epoch record needs an 'epoch' key")
        m = self.read_metrics()
        m["epochs"] = [r for r in m["epochs"] if r.get("epoch") != record["epoch"]] + [dict(record)]
        m["epochs"].sort(key=lambda r: r["epoch"])
        m["status"] = "running"
        self._write_metrics(m)

    def write_summary(self, finished: bool = True, **values) -> dict:
        m = self.read_metrics()
        m["summary"].update(values)
        if finished:
            m["status"] = "finished"
        self._write_metrics(m)
        return m

    # checkpoints ------------------------------------------------------------
    def checkpoint_path(self, name: str = "last.pt") -> Path:
        return self.path / name

    def save_checkpoint(self, state: dict, name: str = "last.pt") -> Path:
        self._stamp_provenance()
        return atomic_torch_save(state, self.checkpoint_path(name))

    def has_checkpoint(self, name: str = "last.pt") -> bool:
        return self.checkpoint_path(name).is_file()

    def load_checkpoint(self, name: str = "last.pt", map_location="cpu") -> dict | None:
        """The checkpoint's contents (loaded with ``weights_only=True``), or None if there is none."""
        p = self.checkpoint_path(name)
        return load_weights_only(p, map_location) if p.is_file() else None


def _looks_like_run(path: Path) -> bool:
    """A folder a ``RunDir`` wrote files into: metrics, a config or a checkpoint."""
    return (path / "metrics.json").is_file() or (path / "config.json").is_file() or any(path.glob("*.pt"))


def _only_runs_inside(path: Path) -> bool:
    """Whether every sub-folder of ``path`` is a run (or holds only runs): no images, feature banks or
    other results made outside a ``RunDir``, which would carry no fingerprint of their own."""
    for sub in (p for p in path.iterdir() if p.is_dir()):
        if not (_looks_like_run(sub) or (not any(f.is_file() for f in sub.iterdir()) and _only_runs_inside(sub))):
            return False
    return True


def _age(iso: str | None) -> str:
    if not iso:
        return "?"
    seconds = (_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def list_runs(root: str | os.PathLike | None = None) -> list[dict]:
    """Every run folder directly under the runs root (without opening it as a ``RunDir``; folders that
    are not runs, such as ``notebooks/``, are left out): name, study, status, age, config hash, the
    code that made it and whether that is the current code."""
    root = resolve_in_root(root) if root is not None else default_root()
    current, out = code_fingerprint(), []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and _looks_like_run(p)) if root.is_dir() else []:
        try:
            m = read_json(path / "metrics.json") if (path / "metrics.json").is_file() else {}
            config = read_json(path / "config.json") if (path / "config.json").is_file() else None
        except (OSError, ValueError) as e:
            m, config = {"status": f"unreadable ({e.__class__.__name__})"}, None
        prov = m.get("provenance")
        reasons = stale_reasons(prov, current)
        out.append(
            {
                "name": path.name,
                "study": (prov or {}).get("study") or path.name.split("-", 1)[0],
                "status": m.get("status", "empty"),
                "age": _age(m.get("updated")),
                "config_hash": config_hash(config) if config is not None else None,
                "code": describe_code(prov),
                "state": "stale" if reasons else "current",
                "why": "; ".join(reasons),
                "path": str(path),
            }
        )
    return out


def remove_runs(rows: list[dict]) -> list[str]:
    """Delete the folders of ``rows`` (``list_runs`` entries); returns their names."""
    for r in rows:
        shutil.rmtree(r["path"], ignore_errors=True)
    return [r["name"] for r in rows]
