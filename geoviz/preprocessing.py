"""What a network expects of its input images, and how a network carries its own normalisation.

A network trained on ImageNet expects images resized (shorter side), centre-cropped to a size and
normalised per channel by ImageNet's mean and std; torchvision's weights say which
(``weights.transforms()``), timm's models say it in their pretrained config. ``InputSpec`` holds
those numbers. geoviz splits them in two:

- the **geometry** (resize, crop, interpolation) is applied by the data (``datasets.image_folder``),
  so every image a study shows, explains or draws a receptive field on is the very pixel grid the
  network sees, in [0, 1];
- the **normalisation** travels with the network (``attach_normalization``: a forward pre-hook and
  two non-persistent buffers), so two networks that expect different normalisations can look at the
  same images in one comparison (the atlas) and each gets its own. Layer names, ``state_dict`` and
  weight digests are unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "InputSpec", "attach_normalization", "normalization_of"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class InputSpec:
    """A network's input: ``size`` px square crops of images whose shorter side was first resized to
    ``resize`` px (None: to ``size``) with ``interpolation``; ``mean`` / ``std`` the per-channel
    normalisation of [0, 1] images it expects (None: none). ``source`` says where the numbers came from."""

    size: int
    resize: int | None = None
    interpolation: str = "bilinear"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source: str = "given"

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"InputSpec.size must be a whole number of pixels >= 1, got {self.size!r}")
        if self.resize is not None and (not isinstance(self.resize, int) or self.resize < self.size):
            raise ValueError(
                f"InputSpec.resize must be None or a whole number >= size ({self.size}), got {self.resize!r}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; allowed: {', '.join(map(repr, INTERPOLATIONS))}"
            )
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        if self.std is not None and (len(self.std) != len(self.mean) or min(self.std) <= 0):
            raise ValueError(f"mean and std need one positive std per channel, got mean={self.mean}, std={self.std}")

    @property
    def resize_to(self) -> int:
        return self.resize or self.size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        d = dict(d)
        for key in ("mean", "std"):
            if d.get(key) is not None:
                d[key] = tuple(float(v) for v in d[key])
        return cls(**d)

    @classmethod
    def from_torchvision(cls, weights) -> InputSpec:
        """The spec torchvision's ``weights.transforms()`` applies (ImageClassification presets)."""
        t = weights.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        interp = str(getattr(t.interpolation, "value", t.interpolation)).lower()
        return cls(
            crop,
            max(resize, crop),
            interp if interp in INTERPOLATIONS else "bilinear",
            tuple(t.mean),
            tuple(t.std),
            f"torchvision weights {type(weights).__name__}.{weights.name}",
        )

    @classmethod
    def from_timm(cls, model: nn.Module) -> InputSpec:
        """The spec of a timm model's pretrained config (``timm.data.resolve_model_data_config``): the
        resize is ``size / crop_pct``; its ``crop_mode`` is taken as "center" (timm's "squash" and
        "border" modes are not reproduced)."""
        from timm.data import resolve_model_data_config

        cfg = resolve_model_data_config(model)
        size = int(cfg["input_size"][-1])
        crop_pct = float(cfg.get("crop_pct") or 1.0)
        interp = cfg.get("interpolation", "bilinear")
        return cls(
            size,
            max(size, int(size / crop_pct)),
            interp if interp in INTERPOLATIONS else "bilinear",
            tuple(cfg["mean"]),
            tuple(cfg["std"]),
            f"timm pretrained config of {type(model).__name__}",
        )


def _normalize(module: nn.Module, args):
    x = args[0]
    mean, std = module._geoviz_mean, module._geoviz_std
    return ((x - mean.to(x.dtype)) / std.to(x.dtype), *args[1:])


def attach_normalization(model: nn.Module, mean, std) -> nn.Module:
    """Make ``model`` normalise its own input: ``(x - mean) / std`` per channel before its forward,
    for [0, 1] images. Replaces a normalisation attached before; ``mean=None`` removes it.
    Returns the model."""
    old = getattr(model, "_geoviz_norm_handle", None)
    if old is not None:
        old.remove()
        model._geoviz_norm_handle = None
    if mean is None:
        model._geoviz_mean = model._geoviz_std = None
        return model
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    for name, value in (("_geoviz_mean", mean), ("_geoviz_std", std)):
        t = torch.as_tensor(value, dtype=torch.float32, device=dev).reshape(1, -1, 1, 1)
        if name in model._buffers:
            model._buffers[name] = t
        else:
            model.register_buffer(name, t, persistent=False)  # moves with .to(); not in state_dict
    model._geoviz_norm_handle = model.register_forward_pre_hook(_normalize)
    model._geoviz_norm_values = (tuple(float(v) for v in mean), tuple(float(v) for v in std))
    return model


def normalization_of(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The (mean, std) a model normalises its input by (``attach_normalization``), or None."""
    if getattr(model, "_geoviz_norm_handle", None) is None:
        return None
    return model._geoviz_norm_values
