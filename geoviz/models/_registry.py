"""Model registry: ``build_model(name, num_classes, **kw)`` for the zoo and ``tv:<name>``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from torch import nn

from .._io import atomic_torch_save, load_weights_only
from .._utils import unknown_name_message
from ..paths import resolve_in_root

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
    pretrained_head = num_classes is None and name.startswith(("tv:", "timm:"))  # keep the weights' own head
    if not pretrained_head and (not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1):
        raise ValueError(
            f"num_classes must be a whole number >= 1, got {num_classes!r}"
            + (" (None keeps the head of a tv: or timm: model's weights)" if num_classes is None else "")
        )
    if name.startswith("tv:"):
        from .torchvision_models import build_torchvision

        model = build_torchvision(name[3:], num_classes=num_classes, **kwargs)
    elif name.startswith("timm:"):
        model = _build_timm(name[5:], num_classes, **kwargs)
    else:
        if name not in _BUILDERS:
            raise KeyError(unknown_name_message("model", name, list_models()))
        fn, defaults = _BUILDERS[name]
        params = set(inspect.signature(fn).parameters) - {"num_classes"}
        bad = sorted(set(kwargs) - params)
        if bad:
            raise TypeError(f"model {name!r} takes no argument(s) {bad}; it accepts {sorted(params)}")
        try:
            model = fn(num_classes=num_classes, **{**defaults, **kwargs})
        except (TypeError, ValueError) as err:
            raise type(err)(f"model {name!r} could not be built with {kwargs}: {err}") from None
    if pretrained_head:
        num_classes = _head(model).out_features
    model.build_args = {
        "name": name,
        "num_classes": num_classes,
        **{k: v for k, v in kwargs.items() if k != "download"},
    }
    return model


def _head(model: nn.Module) -> nn.Linear:
    from .torchvision_models import _last_linear

    return _last_linear(model)[1]


def timm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("timm") is not None


PRETRAINED = ("DEFAULT", "pretrained")  # weights= names that mean "the model's own pretrained weights" (timm)


def timm_cached_weights(name: str) -> Path | None:
    """The file of timm model ``name``'s pretrained weights in the Hugging Face cache (where timm
    itself keeps them), or None; found without any network access."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, filename)
        if isinstance(hit, str):
            return Path(hit)
    return None


def _classifier_key(model: nn.Module) -> str:
    return (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "fc")


def _build_timm(
    name: str, num_classes: int | None, weights=None, in_chans: int = 3, download: bool = False, **kwargs
) -> nn.Module:
    """A timm model (timm is an optional dependency). ``weights``: None (random), "DEFAULT" /
    "pretrained" (timm's pretrained weights, read from the Hugging Face cache; ``download=True`` lets
    timm fetch them) or a file. ``num_classes=None`` keeps the weights' own head."""
    if not timm_available():
        raise ImportError(
            f"timm:{name} needs the optional package timm (pip install 'geoviz[timm]' or pip install timm)"
        )
    import timm

    if weights is None:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes or 1000, in_chans=in_chans, **kwargs)
    elif str(weights) in PRETRAINED:
        cached = timm_cached_weights(name)
        if cached is None and not download:
            from timm.models import get_pretrained_cfg

            cfg = get_pretrained_cfg(name)
            where = (
                f"the Hugging Face cache (repo {cfg.hf_hub_id})"
                if cfg is not None and getattr(cfg, "hf_hub_id", None)
                else "timm's cache"
            )
            raise FileNotFoundError(
                f"pretrained weights of timm:{name} not found in {where}. geoviz downloads nothing unless asked: "
                "pass download=True (--download) to let timm fetch them, or weights='path/to/file'"
            )
        overlay = {"pretrained_cfg_overlay": {"file": str(cached)}} if cached is not None else {}
        model = timm.create_model(name, pretrained=True, in_chans=in_chans, **overlay, **kwargs)
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes)
    else:
        weights = resolve_in_root(weights)
        if not weights.is_file():
            raise FileNotFoundError(
                f"weights file {weights} for timm:{name} does not exist (weights='DEFAULT' reads timm's own "
                "pretrained weights from its cache)"
            )
        state = load_weights_only(weights)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        model = timm.create_model(name, pretrained=False, num_classes=1000, in_chans=in_chans, **kwargs)
        head = state.get(f"{_classifier_key(model)}.weight") if isinstance(state, dict) else None
        if head is not None and head.dim() == 2 and head.shape[0] != model.num_classes:
            model.reset_classifier(int(head.shape[0]))  # a fine-tuned head: load it as it is
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if "num_batches_tracked" not in k]
        if missing or unexpected:
            raise ValueError(
                f"weights file {weights} does not fit timm:{name}: missing {missing[:5]} ({len(missing)} in all), "
                f"unexpected {unexpected[:5]} ({len(unexpected)} in all). Is it the checkpoint of this architecture?"
            )
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes)
    model.stage_names = tuple(n for n, _ in model.named_children() if n not in ("global_pool", "head", "classif", "fc"))
    return model


def save_model(model: nn.Module, path, *, class_names=None, input_spec=None) -> None:
    """Save weights with the metadata to rebuild them (``build_args``), atomically. ``class_names``
    (the head's classes) and ``input_spec`` (an ``InputSpec`` or its dict: the images it was trained
    on) travel with it, so ``models.load_network`` can analyse it on a folder of images; by default
    the model's own ``class_names`` / ``input_spec`` attributes."""
    args = getattr(model, "build_args", None)
    if args is None:
        raise ValueError(
            "the model was not made by build_model, so it cannot be rebuilt from a file; save its state_dict instead"
        )
    names = class_names if class_names is not None else getattr(model, "class_names", None)
    spec = input_spec if input_spec is not None else getattr(model, "input_spec", None)
    meta = {
        "class_names": list(names) if names is not None else None,
        "input_spec": spec.to_dict() if hasattr(spec, "to_dict") else spec,
    }
    atomic_torch_save({"build_args": args, "state_dict": model.state_dict(), "meta": meta}, path)


def load_state(model: nn.Module, path) -> nn.Module:
    """Load weights into ``model`` from a geoviz model file, a run checkpoint (``best.pt``,
    ``last.pt``) or a plain state dict (``weights_only=True``)."""
    state = load_weights_only(path)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    elif isinstance(state, dict) and "model" in state:
        state = state["model"]
    if any(k.startswith("student.") for k in state):  # an engine checkpoint: student + term parameters
        state = {k[len("student.") :]: v for k, v in state.items() if k.startswith("student.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def load_backbone(model: nn.Module, path) -> nn.Module:
    """Pretrained weights from ``path`` for everything but the classifier (the new task has other
    classes): fine-tuning starts from them."""
    from .torchvision_models import _last_linear

    blob = load_weights_only(path)
    state = blob.get("state_dict", blob)
    own = model.state_dict()
    head = _last_linear(model)[0] + "."  # "fc." in the zoo, "classifier.1." in torchvision's MobileNets
    # the head is never kept, even when its shape fits (a source task with as many classes)
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not k.startswith(head)}
    missing = [k for k in own if k not in keep and not k.startswith(head)]
    if missing:
        raise ValueError(f"{path} lacks weights for {missing[:5]} of this architecture")
    model.load_state_dict(keep, strict=False)
    return model


def load_model(path, **overrides) -> nn.Module:
    """Rebuild a model saved by ``save_model`` and load its weights."""
    blob = load_weights_only(path)
    if not isinstance(blob, dict) or "build_args" not in blob:
        raise ValueError(
            f"{path} has no build_args; rebuild the model with build_model(...) and use load_state(model, path)"
        )
    args = {**blob["build_args"], **overrides}
    model = build_model(args.pop("name"), args.pop("num_classes"), **args)
    model.load_state_dict(blob["state_dict"])
    return model
