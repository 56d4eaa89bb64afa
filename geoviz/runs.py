"""Where results go: ``runs/<name>/`` with ``config.json``, ``metrics.json`` and checkpoints.

Every file is written atomically (temp file + rename), so an interrupted run leaves the last
complete version behind, and a rerun with the same name resumes from its last checkpoint.

``metrics.json`` has one schema for every experiment::

    {"run": name, "status": "running" | "finished", "updated": ISO time,
     "epochs": [{"epoch": 1, ...per-epoch values...}, ...],
     "summary": {...final values...}}
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from .paths import resolve_in_root, runs_root
from ._io import atomic_torch_save, atomic_write_json, read_json, load_weights_only, to_jsonable

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")


def default_root() -> Path:
    """``$GEOVIZ_RUNS`` if set, else ``runs/`` in the project root (``geoviz.paths``)."""
    return runs_root()


def config_hash(config: Any, n: int = 8) -> str:
    """A short stable hash of a config (dataclass or dict), to name runs by what they ran."""
    data = asdict(config) if is_dataclass(config) else config
    blob = json.dumps(to_jsonable(data), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


class RunDir:
    """One run's folder. ``RunDir("resnet20-shapes10")`` → ``runs/resnet20-shapes10/``."""

    @staticmethod
    def valid_name(name) -> bool:
        return isinstance(name, str) and bool(_NAME.match(name))

    def __init__(self, name: str, root: str | os.PathLike | None = None):
        if not self.valid_name(name):
            raise ValueError(f"run name {name!r} must start with a letter or digit and use only letters, digits and _ . = + -")
        self.name = name
        self.root = resolve_in_root(root) if root is not None else default_root()
        self.path = self.root / name
        self.path.mkdir(parents=True, exist_ok=True)

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
        m["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
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
        return atomic_torch_save(state, self.checkpoint_path(name))

    def has_checkpoint(self, name: str = "last.pt") -> bool:
        return self.checkpoint_path(name).is_file()

    def load_checkpoint(self, name: str = "last.pt", map_location="cpu") -> dict | None:
        """The checkpoint's contents (loaded with ``weights_only=True``), or None if there is none."""
        p = self.checkpoint_path(name)
        return load_weights_only(p, map_location) if p.is_file() else None
