"""Experiment configs: frozen dataclasses whose defaults are the ``quick`` profile.

``Config.from_profile("smoke" | "quick" | "full", **overrides)`` starts from the class defaults,
applies the profile's changes, then the overrides (``None`` means "keep"), so a notebook's
parameters cell maps one-to-one onto the fields. ``profile=None`` reads ``$GEOVIZ_PROFILE``.

- ``smoke``: seconds, for CI (each notebook ≤ 30 s on 2 CPU cores);
- ``quick``: the interactive default, minutes on a laptop CPU;
- ``full``: paper-scale settings for a GPU.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, ClassVar

from ._utils import choice, unknown_name_message

PROFILES = ("smoke", "quick", "full")


def profile_from_env(default: str = "quick") -> str:
    """``$GEOVIZ_PROFILE`` when set (CI sets ``smoke``), else ``default``."""
    return choice("profile", os.environ.get("GEOVIZ_PROFILE") or default, PROFILES)


@dataclass(frozen=True)
class ExperimentConfig:
    profile: str = "quick"
    seed: int = 0

    PROFILE_OVERRIDES: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self):
        choice("profile", self.profile, PROFILES)

    @classmethod
    def from_profile(cls, profile: str | None = None, **overrides):
        profile = profile or profile_from_env()
        choice("profile", profile, PROFILES)
        names = {f.name for f in dataclasses.fields(cls)}
        for k in overrides:
            if k not in names:
                raise TypeError(unknown_name_message(f"{cls.__name__} field", k, sorted(names)))
        values = dict(cls.PROFILE_OVERRIDES.get(profile, {}))
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["profile"] = profile
        for k, v in values.items():  # lists from notebooks / YAML become tuples (hashable, frozen)
            if isinstance(v, list):
                values[k] = tuple(v)
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)
