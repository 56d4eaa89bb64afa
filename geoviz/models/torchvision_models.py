"""torchvision models behind the geoviz registry (``tv:resnet18``, ``tv:vgg16``, ...).

Weights are never downloaded implicitly. ``weights`` may be
- ``None``: random initialisation (training from scratch);
- a path to a ``.pth`` state dict (ImageNet head: it is loaded, then the head is replaced when
  ``num_classes`` differs);
- a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``): read from the local torch hub
  cache (``$TORCH_HOME/hub/checkpoints``), where torchvision itself would have saved it. A missing
  file raises FileNotFoundError saying which file to put where.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from .._io import load_weights_only
from .._utils import unknown_name_message
from ..paths import resolve_in_root

_STAGES = {
    "resnet": ("layer1", "layer2", "layer3", "layer4"),
    "resnext": ("layer1", "layer2", "layer3", "layer4"),
    "wide_resnet": ("layer1", "layer2", "layer3", "layer4"),
    "inception_v3": (
        "Mixed_5b",
        "Mixed_5c",
        "Mixed_5d",
        "Mixed_6a",
        "Mixed_6b",
        "Mixed_6c",
        "Mixed_6d",
        "Mixed_6e",
        "Mixed_7a",
        "Mixed_7b",
        "Mixed_7c",
    ),
}


def list_torchvision_models() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _stage_names(name: str, model: nn.Module) -> tuple[str, ...]:
    for prefix, stages in _STAGES.items():
        if name.startswith(prefix):
            return stages
    if hasattr(model, "features") and isinstance(model.features, nn.Sequential):
        # VGG, AlexNet: the output of each conv layer's ReLU; MobileNet, EfficientNet, ...: each stage
        relus = [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.ReLU)]
        return tuple(relus) if relus else tuple(f"features.{i}" for i in range(len(model.features)))
    return tuple(n for n, _ in model.named_children())


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    last = None
    for path, m in model.named_modules():
        if isinstance(m, nn.Linear) and "AuxLogits" not in path:
            last = (path, m)
    if last is None:
        raise ValueError("model has no nn.Linear classifier to resize")
    return last


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def hub_weights_file(name: str, weights: str = "DEFAULT") -> tuple[Path, str]:
    """Where torchvision would cache ``weights`` of model ``name``, and the URL it comes from."""
    w = _weights_enum_member(name, weights)
    filename = os.path.basename(w.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename, w.url


def _weights_enum_member(name: str, weights: str):
    enum = torchvision.models.get_model_weights(name)
    try:
        return enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise ValueError(
            f"model {name!r} has no weights {weights!r}; available: {['DEFAULT'] + [m.name for m in enum]}"
        ) from None


def default_weights(name: str):
    """The DEFAULT weights enum member of torchvision model ``name`` (None when it has none)."""
    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError, KeyError):
        return None


def head_size(state: dict, model: nn.Module) -> int | None:
    """The number of outputs of ``model``'s classifier in a state dict (None when it is not there)."""
    path, _ = _last_linear(model)
    w = state.get(f"{path}.weight")
    return int(w.shape[0]) if w is not None and w.dim() == 2 else None


def build_torchvision(
    name: str,
    num_classes: int | None = 1000,
    weights: str | os.PathLike | None = None,
    in_chans: int = 3,
    download: bool = False,
    **kwargs,
) -> nn.Module:
    """torchvision model ``name``; ``weights`` None (random), a weights name read from the hub cache
    (``download=True``: fetched as torchvision fetches them when missing) or a state-dict file.
    ``num_classes=None`` keeps the weights' own head (1000 ImageNet classes, or the file's)."""
    names = list_torchvision_models()
    if name not in names:
        raise KeyError(unknown_name_message("torchvision model", name, names))
    if in_chans != 3:
        raise ValueError(
            f"torchvision models take 3-channel images; got in_chans={in_chans} (use ShapesDataset(channels=3))"
        )
    if name == "inception_v3":
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    if weights is None:
        return _with_stages(
            name, torchvision.models.get_model(name, weights=None, num_classes=num_classes or 1000, **kwargs)
        )
    if not Path(weights).suffix:  # a torchvision weights name, not a file
        member = _weights_enum_member(name, str(weights))
        path, url = hub_weights_file(name, str(weights))
        if not path.is_file() and not download:
            raise FileNotFoundError(
                f"pretrained weights {member} for {name!r} not found at {path}. geoviz downloads nothing "
                f"unless asked: pass download=True (--download) to let torchvision fetch {url}, or fetch it "
                "on a machine with internet and copy it to that path (or pass weights='path/to/file.pth')."
            )
        # torchvision builds what the weights need (a SWAG ViT's 384 px, Inception's auxiliary head) and reads the
        # cached file (fetching it only when missing: download=True)
        kwargs.pop("aux_logits", None), kwargs.pop("init_weights", None)
        try:
            model = torchvision.models.get_model(name, weights=member, **kwargs)
        except RuntimeError as err:  # a file at the cache path that is not these weights
            raise ValueError(
                f"{path} does not fit {name} ({str(err).splitlines()[0][:200]}): delete it, or fetch {url} again"
            ) from None
    else:
        path = resolve_in_root(weights)  # a relative path: inside the project root, from any working directory
        if not path.is_file():
            raise FileNotFoundError(
                f"weights file {str(path)!r} does not exist; pass the path of "
                "a saved state dict, or weights=None to train from scratch"
            )
        if name == "inception_v3":
            kwargs["aux_logits"] = True  # ImageNet checkpoints carry the auxiliary head
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        state = load_weights_only(path)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        own = head_size(state, model)
        if own is not None and own != _last_linear(model)[1].out_features:
            _set_module(
                model, _last_linear(model)[0], nn.Linear(_last_linear(model)[1].in_features, own)
            )  # a fine-tuned head
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if "num_batches_tracked" not in k]:
            raise ValueError(
                f"{path} does not fit {name}: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}. Is it a state dict of torchvision's {name}?"
            )
    if name == "inception_v3":
        model.aux_logits, model.AuxLogits = False, None
    path_fc, fc = _last_linear(model)
    if num_classes is not None and fc.out_features != num_classes:
        _set_module(model, path_fc, nn.Linear(fc.in_features, num_classes))
    return _with_stages(name, model)


def _with_stages(name: str, model: nn.Module) -> nn.Module:
    model.stage_names = _stage_names(name, model)
    return model
