"""Networks from anywhere, ready for analysis: ``load_network(spec, weights=...)``.

``spec`` may be
- any ``nn.Module`` (used as it is);
- ``tv:<name>``: a torchvision model; ``weights`` a torchvision weights name ("DEFAULT",
  "IMAGENET1K_V2") read from torch hub's cache, or a state-dict file;
- ``timm:<name>`` (timm installed): ``weights`` "DEFAULT" (timm's pretrained weights from the
  Hugging Face cache) or a file;
- a geoviz model file (``.pt`` / ``.pth`` written by ``models.save_model``, as every study saves);
- a zoo name (``resnet20``): untrained.

Nothing is downloaded unless ``download=True``, which lets torchvision / timm fetch what they
would fetch. The head is kept as the weights have it (``num_classes=None``): a classifier's
classes are part of what is analysed. Each network comes back in eval mode with

- ``input_spec``: the ``InputSpec`` its weights expect (torchvision's transforms, timm's
  pretrained config, what a geoviz checkpoint recorded), with the normalisation attached to the
  network itself (``preprocessing.attach_normalization``), so data sets give [0, 1] images;
- ``class_names``: its head's classes where they are known (ImageNet's categories for ImageNet
  weights, the training classes of a geoviz checkpoint), else None;
- ``display_name``: what figures call it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn

from .._io import load_weights_only
from ..paths import resolve_in_root
from ..preprocessing import IMAGENET_MEAN, IMAGENET_STD, InputSpec, attach_normalization, normalization_of
from ._registry import build_model, load_model, timm_available
from .torchvision_models import _last_linear, default_weights

__all__ = ["load_network", "untrained_copy", "imagenet_wnids", "head_classes", "NETWORK_PREFIXES"]

NETWORK_PREFIXES = ("tv:", "timm:")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def load_network(
    spec,
    weights=None,
    *,
    num_classes: int | None = None,
    download: bool = False,
    normalize="auto",
    size: int | None = None,
    seed: int = 0,
) -> nn.Module:
    """A network from ``spec`` (see the module docstring) in eval mode, with ``input_spec``,
    ``class_names`` and ``display_name`` set.

    ``normalize``: "auto" (what the weights expect), None (none: [0, 1] images as they are),
    "imagenet", or a (mean, std) pair. ``size`` overrides the input size (the resize scales with it).
    ``num_classes`` replaces the head of weights named by name; a file's own head is never replaced
    (a trained head replaced by a random one would analyse nothing): a mismatch is an error."""
    if isinstance(spec, nn.Module):
        model, input_spec, names, label = (
            spec,
            getattr(spec, "input_spec", None),
            getattr(spec, "class_names", None),
            None,
        )
    elif not isinstance(spec, (str, os.PathLike)):
        raise TypeError(
            "a network is an nn.Module, 'tv:<name>', 'timm:<name>', a "
            f"model name or a checkpoint file; got {type(spec).__name__}"
        )
    else:
        spec = str(spec)
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
            torch.manual_seed(seed)  # an untrained network (or head) is the same one every time
            if spec.startswith("tv:"):
                model, input_spec, names = _torchvision(spec[3:], weights, num_classes, download)
            elif spec.startswith("timm:"):
                model, input_spec, names = _timm(spec[5:], weights, num_classes, download)
            elif spec.endswith(CHECKPOINT_SUFFIXES) or Path(spec).suffix:
                model, input_spec, names = _checkpoint(spec, weights)
            else:
                if weights is not None:
                    raise ValueError(
                        f"{spec!r} names an architecture of the zoo, built untrained: weights= is for tv: and timm: "
                        "networks; a trained geoviz network is its checkpoint file "
                        "(load_network('runs/<run>/model.pt'))"
                    )
                model, input_spec, names = build_model(spec, num_classes or 10), None, None
        label = spec + (f" ({Path(str(weights)).name})" if weights is not None else "")
        if Path(spec).suffix:  # a checkpoint: its architecture and the run (folder) it came from
            arch = getattr(model, "build_args", {}).get("name", type(model).__name__)
            where = Path(spec).parent.name if Path(spec).name in ("model.pt", "best.pt", "last.pt") else Path(spec).stem
            where = where.replace(f"-{arch}", "").replace(f"{arch}-", "")  # the architecture is said once
            label = f"{arch} · {where if len(where) <= 32 else '…' + where[-31:]}"
    input_spec = _normalized_spec(input_spec, normalize, size)
    if input_spec is not None and input_spec.mean is not None:
        attach_normalization(model, input_spec.mean, input_spec.std)
    elif normalize is None or normalize in ("none", False):
        attach_normalization(model, None, None)
    model.input_spec, model.class_names = input_spec, (list(names) if names is not None else None)
    model.display_name = (
        label
        or getattr(model, "display_name", None)
        or getattr(model, "build_args", {}).get("name")
        or type(model).__name__
    )
    return model.eval()


def _normalized_spec(spec: InputSpec | None, normalize, size: int | None) -> InputSpec | None:
    if normalize == "auto":
        mean, std = (None, None) if spec is None else (spec.mean, spec.std)
    elif normalize is None or normalize in ("none", False):
        mean, std = None, None
    elif normalize == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif isinstance(normalize, (tuple, list)) and len(normalize) == 2:
        mean, std = tuple(map(float, normalize[0])), tuple(map(float, normalize[1]))
    else:
        raise ValueError(f"normalize must be 'auto', None, 'imagenet' or (mean, std), got {normalize!r}")
    if spec is None and size is None and mean is None:
        return None
    base = spec or InputSpec(size or 224, source="given")
    resize = base.resize if size is None or base.resize is None else max(size, round(base.resize * size / base.size))
    source = (
        base.source
        if normalize == "auto" and size is None
        else f"{base.source}; changed: normalize={normalize!r}, size={size}"
    )
    return InputSpec(size or base.size, resize, base.interpolation, mean, std, source)


def _torchvision(name: str, weights, num_classes, download):
    from_file = weights is not None and bool(Path(str(weights)).suffix)
    model = build_model(
        f"tv:{name}", None if from_file else num_classes, weights=weights, download=download
    )  # a file keeps its head
    head = _last_linear(model)[1].out_features
    if from_file and num_classes is not None and num_classes != head:
        raise ValueError(
            f"{resolve_in_root(weights)} holds a {head}-class head but num_classes={num_classes}: "
            "leave num_classes out to analyse the head the weights were trained with"
        )
    default = default_weights(name)
    spec = InputSpec.from_torchvision(default) if default is not None else None
    names = None
    if weights is not None and not Path(str(weights)).suffix:
        import torchvision

        member = torchvision.models.get_model_weights(name)[str(weights)] if str(weights) != "DEFAULT" else default
        spec = InputSpec.from_torchvision(member)
        cats = member.meta.get("categories")
        names = cats if cats and len(cats) == head else None
    elif spec is not None:
        what = "untrained" if weights is None else f"weights from {Path(str(weights)).name}"
        spec = InputSpec(
            spec.size,
            spec.resize,
            spec.interpolation,
            spec.mean,
            spec.std,
            f"torchvision's preset for {name} ({what}: assumed to expect it)",
        )
        cats = default.meta.get("categories")
        if weights is not None and cats and len(cats) == head:
            names = cats  # an ImageNet-1k head in a file: ImageNet's class order is assumed
    return model, spec, names


def _timm(name: str, weights, num_classes, download):
    if not timm_available():
        raise ImportError(
            f"timm:{name} needs the optional package timm: pip install 'geoviz[timm]' (or pip install timm)"
        )
    model = build_model(f"timm:{name}", num_classes, weights=weights, download=download)
    spec = InputSpec.from_timm(model)
    names = None
    if weights is not None:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        if subset is not None and model.num_classes == len(ImageNetInfo(subset).label_names()):
            info = ImageNetInfo(subset)
            names = [info.index_to_description(i).split(",")[0] for i in range(model.num_classes)]
    return model, spec, names


def _checkpoint(spec: str, weights):
    path = resolve_in_root(spec) if not Path(spec).exists() else Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist (a network is a file written by geoviz.models.save_model, "
            "'tv:<name>', 'timm:<name>' or a model name)"
        )
    if weights is not None:
        raise ValueError(f"{path} carries its own weights: leave weights= out")
    blob = load_weights_only(path)
    if not isinstance(blob, dict) or "build_args" not in blob:
        raise ValueError(
            f"{path} is a state dict without its architecture: name the architecture and pass the file as weights, "
            f"e.g. load_network('tv:resnet50', weights={str(path)!r})"
        )
    model = load_model(path)
    meta = blob.get("meta", {})
    spec_dict = meta.get("input_spec")
    return model, InputSpec.from_dict(spec_dict) if spec_dict else None, meta.get("class_names")


def untrained_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """The same architecture with fresh random weights (the random-network floor), with the
    model's input spec, normalisation and class names. Rebuilt from ``build_args`` where it has them
    (zoo, tv:, timm:); otherwise a deep copy whose layers are re-initialised by their own
    ``reset_parameters`` (parameters outside such layers, e.g. a ViT's position embedding, get
    N(0, 0.02²) as ViTs initialise them)."""
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        args = dict(getattr(model, "build_args", None) or {})
        if "name" in args:
            args.pop("weights", None)
            fresh = build_model(args.pop("name"), args.pop("num_classes"), **args)
        else:
            fresh = copy.deepcopy(model)
            done = set()
            for m in fresh.modules():
                if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                    m.reset_parameters()
                    done |= {id(p) for p in m.parameters(recurse=False)}
            with torch.no_grad():
                for p in fresh.parameters():
                    if id(p) not in done:
                        nn.init.trunc_normal_(p, std=0.02)
    norm = normalization_of(model)
    if norm is not None:
        attach_normalization(fresh, *norm)
    fresh.input_spec = getattr(model, "input_spec", None)
    fresh.class_names = getattr(model, "class_names", None)
    fresh.display_name = f"{getattr(model, 'display_name', type(model).__name__)} (untrained)"
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    return fresh.to(dev).eval()


def imagenet_wnids() -> list[str] | None:
    """ImageNet-1k's WordNet ids in class-index order (n01440764, ...), from timm's bundled table when
    timm is installed, else None: how an ImageNet-style folder's class folders map onto a head."""
    if not timm_available():
        return None
    from timm.data import ImageNetInfo

    return list(ImageNetInfo("imagenet-1k").label_names())


def _norm_name(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch.isalnum())


def head_classes(model: nn.Module, folder_classes) -> list[int] | None:
    """For each of a folder's classes, the index of the head's output for it, when every one of them
    is a class of the head (by name, ignoring case, spaces and punctuation, and naming one class only:
    ImageNet's two "crane"s map nowhere; or by ImageNet WordNet id for a 1000-way ImageNet head);
    else None."""
    names = getattr(model, "class_names", None)
    if not names or not folder_classes:
        return None
    by_name: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_name.setdefault(_norm_name(str(n)), []).append(i)
    # a name the head uses twice (ImageNet's "crane": the bird and the machine) maps nowhere
    out = [hits[0] if len(hits := by_name.get(_norm_name(str(c)), [])) == 1 else None for c in folder_classes]
    if all(i is not None for i in out):
        return out
    wnids = imagenet_wnids() if len(names) == 1000 else None
    if wnids:
        pos = {w: i for i, w in enumerate(wnids)}
        out = [pos.get(str(c)) for c in folder_classes]
        if all(i is not None for i in out):
            return out
    return None
