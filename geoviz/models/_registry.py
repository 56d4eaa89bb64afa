"""Model registry: ``build_model(name, num_classes, **kw)`` for the zoo and ``tv:<name>``."""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from .._utils import unknown_name_message

_BUILDERS: dict[str, tuple[Callable[..., nn.Module], dict]] = {}


def register_model(name: str, defaults: dict | None = None):
    """Register a builder under ``name``; ``defaults`` pre-set some of its keyword arguments."""

    def wrap(fn):
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} registered twice")
        _BUILDERS[name] = (fn, dict(defaults or {}))
        return fn

    return wrap


def list_models(torchvision: bool = False) -> list[str]:
    names = sorted(_BUILDERS)
    if torchvision:
        from .torchvision_models import list_torchvision_models

        names += [f"tv:{n}" for n in list_torchvision_models()]
    return names


def build_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a model of the zoo (``resnet20``, ``wrn_40_2``, ``vgg13``, ``mobilenetv2``, ...) or a
    torchvision one (``tv:resnet18``; ``weights=`` a local file or a torchvision weights name,
    read from the local torch hub cache, never downloaded).

    The returned model carries ``build_args`` (name, num_classes and the keyword arguments), which
    checkpoints store so the model can be rebuilt.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a whole number >= 1, got {num_classes!r}")
    if name.startswith("tv:"):
        from .torchvision_models import build_torchvision

        model = build_torchvision(name[3:], num_classes=num_classes, **kwargs)
    else:
        if name not in _BUILDERS:
            raise KeyError(unknown_name_message("model", name, list_models()))
        fn, defaults = _BUILDERS[name]
        params = set(inspect.signature(fn).parameters) - {"num_classes"}
        bad = sorted(set(kwargs) - params)
        if bad:
            raise TypeError(f"model {name!r} takes no argument(s) {bad}; it accepts {sorted(params)}")
        model = fn(num_classes=num_classes, **{**defaults, **kwargs})
    model.build_args = {"name": name, "num_classes": num_classes, **kwargs}
    return model
