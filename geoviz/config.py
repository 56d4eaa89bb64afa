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
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from ._utils import check_number, choice, unknown_name_message

PROFILES = ("smoke", "quick", "full")


def profile_from_env(default: str = "quick") -> str:
    """``$GEOVIZ_PROFILE`` when set (CI sets ``smoke``), else ``default``."""
    return choice("profile", os.environ.get("GEOVIZ_PROFILE") or default, PROFILES)


_TYPE_WORDS = {
    int: "a whole number (int)",
    float: "a number",
    bool: "true or false (bool)",
    str: "a string",
    tuple: "a list",
    dict: "a mapping",
    type(None): "null/None",
}


def _describe(tp) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    origin = typing.get_origin(tp) or tp
    if origin is tuple and args and args[-1] is Ellipsis:
        return f"a list, each {_describe(args[0])}"
    return _TYPE_WORDS.get(origin, getattr(origin, "__name__", str(origin)))


def _matches(value, tp) -> bool:
    if tp is Any:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if (origin or tp) is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return True
    if (origin or tp) is dict:
        return isinstance(value, dict)
    return isinstance(value, origin or tp)


def check_field_types(config) -> None:
    """Every field of a config dataclass holds a value of its annotated type; otherwise a
    TypeError naming the field, what it needs and what it got (``epochs: "two"`` fails here, not as
    a TypeError deep inside the training loop)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        tp = hints.get(f.name, Any)
        if not _matches(value, tp):
            raise TypeError(
                f"{type(config).__name__}.{f.name} must be {_describe(tp)}, got {value!r} ({type(value).__name__})"
            )


def check_range(name: str, value, low=None, high=None, *, low_open: bool = False) -> None:
    """``low <= value <= high`` (``low < value`` with ``low_open``) and finite, else a ValueError
    naming the field; None passes (an optional field left unset)."""
    if value is not None:
        check_number(name, value, low=low, high=high, low_open=low_open)


@dataclass(frozen=True)
class ExperimentConfig:
    profile: str = "quick"
    seed: int = 0

    PROFILE_OVERRIDES: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self):
        for f in dataclasses.fields(self):  # lists from notebooks / YAML become tuples (hashable, frozen)
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        check_field_types(self)
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
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)
