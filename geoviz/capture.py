"""Activation capture: forward hooks on named layers, local-feature views, receptive fields, and
streaming a whole data set into a (memory-mapped) feature bank.

Layers are named by module path (``"layer2.0.conv1"``) or glob (``"layer*.1.conv2"``). A module that
runs more than once per forward keeps every call, in order, as ``name#0``, ``name#1``, ...
Captured tensors are copies taken when the module returns, so an in-place op that runs later
(``ReLU(inplace=True)``, ``out += identity``) cannot overwrite them.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import json
import math
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from ._counter_rng import CounterRNG
from ._io import atomic_save_npy, atomic_write_json, read_json
from ._utils import eval_mode, format_bytes, progress_bar, unknown_name_message
from .inference import as_loader
from .paths import resolve_in_root

__all__ = [
    "layer_names",
    "leaf_layers",
    "resolve_layers",
    "as_maps",
    "prefix_tokens_of",
    "ActivationRecorder",
    "record",
    "local_features",
    "align_maps",
    "ReceptiveField",
    "receptive_field",
    "FeatureBank",
    "MemoryBudgetError",
    "collect",
]


# ----------------------------------------------------------------------------- layer names
def layer_names(model: nn.Module) -> list[str]:
    """Every named submodule's path, in definition order (the root itself excluded)."""
    return [name for name, _ in model.named_modules() if name]


def leaf_layers(model: nn.Module) -> list[str]:
    """Every module without submodules (convolutions, norms, activations, pooling, linear layers),
    in definition order, identities left out: "every layer" of a network."""
    return [n for n, m in model.named_modules() if n and not list(m.children()) and not isinstance(m, nn.Identity)]


INPUT_SUFFIX = ":input"  # "fc:input": what a module receives (the classifier's input: penultimate features)


def _split_call(name: str) -> tuple[str, int | None]:
    base, sep, k = name.rpartition("#")
    return (base, int(k)) if sep and k.isdigit() else (name, None)


def _module_path(name: str) -> str:
    base = _split_call(name)[0]
    return base[: -len(INPUT_SUFFIX)] if base.endswith(INPUT_SUFFIX) else base


def resolve_layers(model: nn.Module, layers: str | Iterable[str]) -> list[str]:
    """Expand globs and check names; an unknown name raises KeyError listing the closest ones.

    ``"auto"`` is the network's blocks (``models.block_layers``), ``"leaves"`` every leaf module
    (``leaf_layers``); ``"<path>:input"`` is what module ``path`` receives (``"fc:input"``: the
    penultimate features of a classifier)."""
    if isinstance(layers, str):
        layers = [layers]
    names = layer_names(model)
    known = set(names)
    out: list[str] = []
    for spec in layers:
        if spec in ("auto", "leaves"):
            from .models import block_layers

            hits = block_layers(model) if spec == "auto" else leaf_layers(model)
            if not hits:
                raise ValueError(
                    f"layers={spec!r} found no {'blocks' if spec == 'auto' else 'leaf modules'} "
                    f"in {type(model).__name__}: name the layers (module paths)"
                )
            out += [h for h in hits if h not in out]
            continue
        base, _ = _split_call(spec)
        if base.endswith(INPUT_SUFFIX):
            if _module_path(spec) not in known:
                raise KeyError(unknown_name_message("layer", _module_path(spec), names))
            hits = [base]
        elif any(ch in base for ch in "*?["):
            hits = [n for n in names if fnmatch.fnmatchcase(n, base)]
            if not hits:
                raise KeyError(unknown_name_message("layer pattern (matches nothing)", spec, names))
        elif base in known:
            hits = [base]
        else:
            raise KeyError(unknown_name_message("layer", spec, names))
        out += [h for h in hits if h not in out]
    if not out:
        raise ValueError(
            "no layers given: name at least one module path, e.g. " + ", ".join(repr(n) for n in names[:3])
        )
    return out


# ----------------------------------------------------------------------------- recording
def _copy(t, device, dtype, detach):
    if torch.is_tensor(t):
        if detach:
            t = t.detach()
        # a copy, always: later in-place ops must not change what was recorded
        dtype = dtype if dtype is not None and t.is_floating_point() else None  # indices stay integers
        if device is None and dtype is None:
            return t.clone()
        return t.to(device=device if device is not None else t.device, dtype=dtype or t.dtype, copy=True)
    if isinstance(t, tuple) and hasattr(t, "_fields"):  # namedtuple outputs (e.g. InceptionOutputs)
        return type(t)(*(_copy(u, device, dtype, detach) for u in t))
    if isinstance(t, (tuple, list)):
        return type(t)(_copy(u, device, dtype, detach) for u in t)
    if isinstance(t, dict):
        return {k: _copy(u, device, dtype, detach) for k, u in t.items()}
    return t


class ActivationRecorder:
    """Record the outputs of named layers on every forward pass.

    >>> with ActivationRecorder(model, ["layer1", "layer3.*.conv2"]) as rec:
    ...     model(x)
    ...     acts = rec.activations          # {"layer1": tensor, "layer3.0.conv2": tensor, ...}

    ``detach=False`` keeps the autograd graph (for losses on activations); ``device`` and ``dtype``
    say where copies go (``device=None``: where they were computed). ``transform(name, output)``,
    when given, reduces each output where it was computed, before it is copied (``collect`` keeps
    sampled positions only, so whole maps of every layer never pile up). A layer named
    ``"<path>:input"`` records what that module receives. Activations are reset at the start of
    each forward of ``model``; hooks exist only inside the ``with`` block and are removed on exit,
    also after an exception.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Iterable[str],
        *,
        detach: bool = True,
        device: str | torch.device | None = "cpu",
        dtype: torch.dtype | None = None,
        transform=None,
    ):
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.detach = detach
        self.device = torch.device(device) if device is not None else None
        self.dtype = dtype
        self.transform = transform
        self._calls: dict[str, list] = {}
        self._handles: list = []
        self._paused = False

    # hooks ------------------------------------------------------------------
    def _hook(self, name: str):
        def fn(module, inputs, output):
            if not self._paused:
                if self.transform is not None:
                    output = self.transform(name, output)
                self._calls.setdefault(name, []).append(_copy(output, self.device, self.dtype, self.detach))

        return fn

    def _input_hook(self, name: str):
        record = self._hook(name)

        def fn(module, args):
            record(module, args, args[0])

        return fn

    def _reset(self, module, inputs):
        self._calls = {}

    def __enter__(self) -> ActivationRecorder:
        if self._handles:
            raise RuntimeError("this ActivationRecorder is already active")
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._reset))
            for name in self.layers:
                module = self.model.get_submodule(_module_path(name))
                if name.endswith(INPUT_SUFFIX):
                    self._handles.append(module.register_forward_pre_hook(self._input_hook(name)))
                else:
                    self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook this recorder registered (idempotent)."""
        while self._handles:
            self._handles.pop().remove()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    @contextlib.contextmanager
    def paused(self):
        """Forwards inside this block are not recorded (the hooks stay registered)."""
        before, self._paused = self._paused, True
        try:
            yield self
        finally:
            self._paused = before

    # results ----------------------------------------------------------------
    def calls(self, name: str) -> list:
        """Every output of module ``name`` in the last forward, in call order."""
        return list(self._calls.get(name, []))

    def clear(self) -> None:
        self._calls = {}

    @property
    def activations(self) -> dict[str, torch.Tensor]:
        """``{module path: output}`` of the last forward; ``path#k`` for the k-th of several calls."""
        out: dict[str, torch.Tensor] = {}
        for name in self.layers:
            calls = self._calls.get(name, [])
            if len(calls) == 1:
                out[name] = calls[0]
            else:
                for k, t in enumerate(calls):
                    out[f"{name}#{k}"] = t
        return out


def record(model: nn.Module, x: torch.Tensor, layers: str | Iterable[str], **kwargs) -> dict[str, torch.Tensor]:
    """One forward of ``x`` (without grad unless ``detach=False``), returning the activations."""
    with ActivationRecorder(model, layers, **kwargs) as rec:
        with torch.set_grad_enabled(not kwargs.get("detach", True)):
            model(x)
        return rec.activations


# ----------------------------------------------------------------------------- local features
def local_features(act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, C, H, W)`` → features ``(B*H*W, C)`` and their index ``(B*H*W, 3)`` = (b, y, x).

    Rows are ordered image by image, then row-major over positions. A ``(B, C)`` input (pooled or
    linear output) gives one point per image at y = x = 0.
    """
    if act.dim() == 2:
        act = act[:, :, None, None]
    if act.dim() != 4:
        raise ValueError(f"local_features expects (B, C, H, W) or (B, C) activations, got shape {tuple(act.shape)}")
    B, C, H, W = act.shape
    feats = act.permute(0, 2, 3, 1).reshape(B * H * W, C)
    b, y, x = torch.meshgrid(torch.arange(B), torch.arange(H), torch.arange(W), indexing="ij")
    index = torch.stack([b.reshape(-1), y.reshape(-1), x.reshape(-1)], dim=1).to(act.device)
    return feats, index


def _fits(h: int, w: int, image_size) -> bool:
    """Whether an h × w grid is the image (H, W) seen at one stride: some s with h and w each within
    one cell of H / s and W / s (padding and rounding move a map's side by at most one). A Swin map
    (64, 64, 96) read channels-first would be a 64 × 96 grid of a square image: no single stride
    gives it, so it is read channels-last."""
    H, W = image_size

    def strides(n, size):  # the strides s with |size / s - n| <= 1
        return size / (n + 1), (size / (n - 1) if n > 1 else float("inf"))

    (a0, a1), (b0, b1) = strides(h, H), strides(w, W)
    return max(a0, b0) <= min(a1, b1)


@functools.lru_cache(maxsize=256)  # called in the hooks of every token layer, every batch: the same few shapes
def _grid(n: int, image_size) -> tuple[int, int] | None:
    """(h, w) with h·w = n that has the image's shape (square without an image size), or None."""
    if n < 1:
        return None
    if image_size is None:
        side = math.isqrt(n)
        return (side, side) if side * side == n else None
    H, W = image_size
    pairs = [(h, n // h) for h in range(1, n + 1) if n % h == 0 and _fits(h, n // h, image_size)]
    return min(pairs, key=lambda p: abs(math.log((H / p[0]) / (W / p[1])))) if pairs else None


def prefix_tokens_of(model: nn.Module) -> int | None:
    """How many tokens precede a transformer's patch grid: timm's ``num_prefix_tokens`` (class,
    distillation and register tokens), 1 for a torchvision ViT (its ``class_token``), else None."""
    n = getattr(model, "num_prefix_tokens", None)
    if n is not None:
        return int(n)
    return 1 if isinstance(getattr(model, "class_token", None), torch.Tensor) else None


def as_maps(
    act: torch.Tensor, image_size: tuple[int, int] | None = None, prefix_tokens: int | None = None
) -> torch.Tensor:
    """Any layer output as (B, C, H, W) maps of local features:

    - conv maps as they are; channels-last maps (B, H, W, C) (Swin's stages, ConvNeXt's insides)
      turned round when only their axes 1 and 2 are the image (``image_size`` (H, W)) at one stride
      (``_fits``); a map where both readings fit (C within a cell of W) stays channels-first;
    - transformer tokens (B, N, D) laid on their grid: ``prefix_tokens`` (class token, registers;
      ``prefix_tokens_of(model)``) dropped from the front, or, when not given, the fewest (up to 2:
      a class and a distillation token) that leave the image's grid (square for a square image);
      tokens that form no grid become an N × 1 map;
    - vectors (B, C) as 1 × 1 maps (anything else is flattened to one).
    """
    if act.dim() == 4:
        if image_size is not None:
            b, c, h, w = act.shape
            if _fits(c, h, image_size) and not _fits(h, w, image_size):
                return act.permute(0, 3, 1, 2)
        return act
    if act.dim() == 3:
        b, n, d = act.shape
        skips = [prefix_tokens] if prefix_tokens is not None else [s for s in (0, 1, 2) if n - s > 2 * s]
        for skip in skips:
            hw = _grid(n - skip, tuple(image_size) if image_size is not None else None)
            if hw is not None and (n - skip > 1 or n == 1):
                return act[:, skip:].transpose(1, 2).reshape(b, d, *hw)
        return act.transpose(1, 2)[..., None]
    return act.reshape(act.shape[0], -1)[:, :, None, None]


ALIGN_MODES = ("pool", "upsample")


def _area_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Average over each cell of a coarser grid. When the grids divide evenly (CNN stages halve
    resolution) a plain average pool gives the same cells, and unlike adaptive pooling its CUDA
    backward is deterministic (exact resumes on a GPU)."""
    import torch.nn.functional as F

    (h, w), (gh, gw) = x.shape[-2:], size
    if (h, w) == (gh, gw):
        return x
    if h % gh == 0 and w % gw == 0:
        return F.avg_pool2d(x, (h // gh, w // gw))
    return F.adaptive_avg_pool2d(x, size)


def align_maps(s: torch.Tensor, t: torch.Tensor, mode: str = "pool") -> tuple[torch.Tensor, torch.Tensor]:
    """Bring two activations ``(B, C1, H1, W1)`` and ``(B, C2, H2, W2)`` onto one spatial grid, so
    that position (y, x) of both covers the same part of the image (relative coordinates).

    ``"pool"`` averages the finer map over each cell of the coarser grid (area pooling); ``"upsample"``
    resamples the coarser map bilinearly onto the finer grid. Channels are left alone.
    """
    if s.dim() != 4 or t.dim() != 4:
        raise ValueError(f"align_maps needs two (B, C, H, W) maps, got {tuple(s.shape)} and {tuple(t.shape)}")
    if s.shape[0] != t.shape[0]:
        raise ValueError(
            "student and teacher activations must come from the same "
            f"batch: batch sizes {s.shape[0]} and {t.shape[0]} differ"
        )
    if mode not in ALIGN_MODES:
        raise ValueError(f"unknown align mode {mode!r}; allowed: {ALIGN_MODES}")
    if s.shape[-2:] == t.shape[-2:]:
        return s, t
    import torch.nn.functional as F

    if mode == "pool":
        size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
        return _area_pool(s, size), _area_pool(t, size)
    size = (max(s.shape[-2], t.shape[-2]), max(s.shape[-1], t.shape[-1]))

    def up(a):
        return a if a.shape[-2:] == size else F.interpolate(a, size=size, mode="bilinear", align_corners=False)

    return up(s), up(t)


# ----------------------------------------------------------------------------- receptive fields
@dataclass(frozen=True)
class ReceptiveField:
    """Which image pixels a position of a layer can see.

    Row ``y`` of the layer sees image rows ``[y*jump_y + a_y, y*jump_y + b_y]`` (inclusive, then
    clipped to the image), likewise for columns. ``size`` is the unclipped extent in pixels.
    """

    layer: str
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    jump: tuple[float, float]
    start: tuple[float, float]
    end: tuple[float, float]

    @property
    def size(self) -> tuple[int, int]:
        return (int(round(self.end[0] - self.start[0] + 1)), int(round(self.end[1] - self.start[1] + 1)))

    def boxes(self, y, x) -> np.ndarray:
        """Boxes ``(N, 4)`` = (x0, y0, x1, y1) in pixels, half-open, for positions (y, x)."""
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        H, W = self.input_size
        y0 = np.clip(np.round(y * self.jump[0] + self.start[0]), 0, H - 1)
        y1 = np.clip(np.round(y * self.jump[0] + self.end[0]), 0, H - 1) + 1
        x0 = np.clip(np.round(x * self.jump[1] + self.start[1]), 0, W - 1)
        x1 = np.clip(np.round(x * self.jump[1] + self.end[1]), 0, W - 1) + 1
        return np.stack([x0, y0, x1, y1], axis=1).astype(np.int64)

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        return tuple(int(v) for v in self.boxes([y], [x])[0])

    def cell(self, y: int, x: int) -> tuple[int, int, int, int]:
        """The position's own share of the image, (x0, y0, x1, y1) half-open, clipped: a ``jump`` ×
        ``jump`` box centred where its receptive field is centred (a deep layer's receptive field
        covers far more, often all of the image; the cell says which part the position stands for;
        for a ViT token, its patch)."""
        H, W = self.input_size

        def span(i, axis, size):
            centre = (
                i * self.jump[axis] + (self.start[axis] + self.end[axis] + 1) / 2
            )  # the centre of pixels start..end
            lo = int(round(centre - self.jump[axis] / 2))
            return max(0, lo), min(size, max(lo + 1, int(round(centre + self.jump[axis] / 2))))

        (y0, y1), (x0, x1) = span(y, 0, H), span(x, 1, W)
        return x0, y0, x1, y1


def _first_conv_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError("cannot tell the input channels (no Conv2d found): pass in_chans=")


def receptive_field(
    model: nn.Module,
    layer: str,
    input_size: int | tuple[int, int],
    *,
    in_chans: int | None = None,
    samples: int = 8,
    seed: int = 0,
) -> ReceptiveField:
    """Measure a layer's receptive field by where gradients reach the input.

    The support of d(unit)/d(input) is taken over ``samples`` random inputs (so a ReLU that is off,
    or a max-pool that routes elsewhere, for one input does not shrink it), at the first and the
    last position of the layer; translation equivariance then gives every position.
    """
    base, call = _split_call(layer)
    resolve_layers(model, base)
    H, W = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    C = in_chans or _first_conv_channels(model)
    g = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    x = torch.randn(samples, C, H, W, generator=g).to(dev).requires_grad_(True)
    with eval_mode(model), torch.enable_grad(), ActivationRecorder(model, [base], detach=False, device=None) as rec:
        model(x)
        acts = rec.calls(base)
        if not acts:
            raise ValueError(f"layer {base!r} did not run in the forward pass")
        if (call or 0) >= len(acts):
            calls = ", ".join(f"'{base}#{k}'" for k in range(len(acts)))
            raise ValueError(
                f"layer {base!r} runs {len(acts)} time(s) per forward, so {layer!r} does not exist: use "
                f"{calls}" + (f" (or '{base}')" if len(acts) == 1 else "")
            )
        act = as_maps(acts[call or 0], (H, W), prefix_tokens_of(model))
        Ho, Wo = act.shape[-2:]

        def support(py, px):
            grad = torch.autograd.grad(act[:, :, py, px].sum(), x, retain_graph=True)[0]
            m = grad.abs().sum(dim=(0, 1)) > 0
            rows, cols = m.any(1).nonzero()[:, 0], m.any(0).nonzero()[:, 0]
            return rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()

        first, last = support(0, 0), support(Ho - 1, Wo - 1)
    jy, jx = H / Ho, W / Wo
    start = (last[0] - (Ho - 1) * jy, last[2] - (Wo - 1) * jx)
    end = (float(first[1]), float(first[3]))
    return ReceptiveField(layer, (H, W), (int(Ho), int(Wo)), (jy, jx), start, end)


# ----------------------------------------------------------------------------- feature banks
class MemoryBudgetError(MemoryError):
    """The requested result would not fit the memory budget; nothing was allocated."""


_NP_DTYPES = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}


def _file_stem(layer: str) -> str:
    return layer.replace("#", "@").replace("/", "_")


@dataclass
class FeatureBank:
    """Local features of one or more layers over a data set.

    ``features[layer]`` is ``(N, C)`` float, ``index[layer]`` is ``(N, 3)`` int32 rows of
    (image, y, x), ``labels`` holds one label per image (−1 when the data had none), ``shapes[layer]``
    the activation's (C, H, W) (token layers on their grid). ``pooled[layer]`` is ``(n_images, C)``:
    each image's globally average-pooled vector of the layers asked for with ``collect(pooled=...)``;
    ``outputs`` ``(n_images, K)`` the network's outputs (``collect(outputs=True)``), else None. On
    disk the arrays are memory-mapped ``.npy`` files, read lazily.
    """

    features: dict[str, np.ndarray]
    index: dict[str, np.ndarray]
    labels: np.ndarray
    shapes: dict[str, tuple[int, int, int]]
    path: Path | None = None
    info: dict = field(default_factory=dict)
    pooled: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: np.ndarray | None = None

    @property
    def layers(self) -> list[str]:
        return list(self.features)

    @property
    def n_images(self) -> int:
        return len(self.labels)

    def point_labels(self, layer: str) -> np.ndarray:
        return self.labels[self.index[layer][:, 0]]

    def tensor(self, layer: str, rows: np.ndarray | slice | None = None) -> torch.Tensor:
        f = self.features[layer]
        return torch.from_numpy(np.ascontiguousarray(f if rows is None else f[rows]))

    def nbytes(self) -> int:
        arrays = [*self.features.values(), *self.index.values(), *self.pooled.values(), self.labels]
        return sum(a.nbytes for a in arrays) + (self.outputs.nbytes if self.outputs is not None else 0)

    @classmethod
    def open(cls, path: str | os.PathLike) -> FeatureBank:
        """Open a bank written by ``collect(out_dir=...)`` (arrays memory-mapped read-only); a relative
        path is taken inside the project root, as ``collect`` does."""
        path = resolve_in_root(path)
        manifest = path / "bank.json"
        if not manifest.is_file():
            raise FileNotFoundError(
                f"{path} holds no complete feature bank (no bank.json); run collect(..., out_dir={str(path)!r})"
            )
        info = read_json(manifest)
        load = lambda name: np.load(path / name, mmap_mode="r")  # noqa: E731
        feats = {layer: load(f"{stem}.features.npy") for layer, stem in info["files"].items()}
        index = {layer: load(f"{stem}.index.npy") for layer, stem in info["files"].items()}
        shapes = {layer: tuple(info["shapes"][layer]) for layer in info["files"]}
        pooled = {layer: load(f"{stem}.pooled.npy") for layer, stem in info.get("pooled_files", {}).items()}
        outputs = load("outputs.npy") if info.get("outputs") else None
        return cls(feats, index, np.load(path / "labels.npy"), shapes, path, info, pooled, outputs)


def _as_loader(data, batch_size: int, device: torch.device) -> DataLoader:
    """A DataLoader in the data set's order; a tensor-backed data set is batched on ``device``."""
    if isinstance(data, DataLoader):
        if isinstance(data.sampler, RandomSampler):
            raise ValueError(
                "collect needs images in a fixed order so points trace back to "
                "them: pass a DataLoader without shuffle=True (or the Dataset)"
            )
        return data
    if isinstance(data, Dataset):
        return as_loader(data, batch_size, device=device)
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=0)
    raise TypeError(f"collect takes a torch Dataset or DataLoader, got {type(data).__name__}")


def _split_batch(batch):
    if torch.is_tensor(batch):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) >= 1:
        y = batch[1] if len(batch) > 1 and torch.is_tensor(batch[1]) else None
        return batch[0], y
    if isinstance(batch, dict) and "image" in batch:
        return batch["image"], batch.get("label")
    raise TypeError("each batch must be images, (images, labels, ...) or {'image': ..., 'label': ...}")


def _positions(seed: int, image_ids: np.ndarray, h: int, w: int, k: int) -> torch.Tensor:
    """k distinct positions of each image's h × w grid, a function of (seed, image id, grid) only:
    every layer on one grid sees the same positions of an image (its patches can be followed from
    layer to layer), and drawing them costs once per grid and batch, not once per layer."""
    scores = CounterRNG(seed, image_ids, namespace=f"collect/{h}x{w}").uniform("pos", h * w)
    return scores.topk(k, dim=1, largest=False).indices


def _output_tensor(out) -> torch.Tensor:
    """A network's output as one tensor: logits as they are; the first of a tuple (Inception's
    auxiliary logits), ``.logits`` of an output object."""
    if torch.is_tensor(out):
        return out
    if isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0]):
        return out[0]
    if hasattr(out, "logits") and torch.is_tensor(out.logits):
        return out.logits
    raise TypeError(
        f"expected a tensor (or a tuple whose first item is one, or an object with .logits), got {type(out).__name__}"
    )


class _Reducer:
    """What ``collect`` keeps of each layer output, computed where the output is, in the hook:
    ``rows`` (B, k, C) at sampled positions (all positions when ``k`` is None) with ``pos`` (B, k),
    or one pooled row (``pool``), and ``pooled`` (B, C) for the layers in ``pooled``. Token and
    channels-last outputs are laid out as maps first (``as_maps``)."""

    def __init__(self, row_layers, pooled_layers, k: int | None, pool: bool, seed: int, image_size, prefix_tokens):
        self.rows = {_split_call(n)[0] for n in row_layers}
        self.pooled = {_split_call(n)[0] for n in pooled_layers}
        self.k, self.pool, self.seed = k, pool, seed
        self.image_size, self.prefix_tokens = image_size, prefix_tokens
        self.ids, self._cache = np.zeros(0, np.int64), {}
        self.ambiguous: set[str] = set()
        self.channels_last_possible = (
            False  # set by collect for networks that permute to channels-last (Swin, ConvNeXt)
        )

    def start_batch(self, ids: np.ndarray) -> None:
        self.ids, self._cache = ids, {}

    def _pos(self, h: int, w: int, k: int, device) -> torch.Tensor:
        key = (h, w, k)
        if key not in self._cache:
            self._cache[key] = _positions(self.seed, self.ids, h, w, k).to(device)
        return self._cache[key]

    def __call__(self, name: str, out) -> dict:
        out = out if torch.is_tensor(out) else _output_tensor(out)
        if (
            self.channels_last_possible
            and out.dim() == 4
            and self.image_size is not None
            and _fits(out.shape[2], out.shape[3], self.image_size)
            and _fits(out.shape[1], out.shape[2], self.image_size)
        ):
            self.ambiguous.add(name)  # both readings have the image's grid: taken channels-first
        maps = as_maps(out, self.image_size, self.prefix_tokens)
        b, c, h, w = maps.shape
        res = {}
        if name in self.pooled:
            res["pooled"] = maps.mean(dim=(2, 3))
        if name in self.rows:
            flat = maps.flatten(2)  # (B, C, HW)
            if self.pool:
                res["rows"] = maps.mean(dim=(2, 3))[:, None]
            elif self.k is None or self.k >= h * w:
                res["rows"] = flat.transpose(1, 2)
            else:
                pos = self._pos(h, w, self.k, maps.device)
                res["rows"] = torch.gather(flat, 2, pos[:, None, :].expand(b, c, self.k)).transpose(1, 2)
                res["pos"] = pos
        res["shape"] = torch.tensor([c, h, w])
        return res


def _probe_shapes(model: nn.Module, dataset, names: list[str], dev: torch.device, reducer: _Reducer, outputs: bool):
    """One image through the model: every layer's (C, H, W) (hence the size of the result), and
    the number of outputs."""
    x0, _ = _split_batch(next(iter(DataLoader(dataset, batch_size=1))))
    reducer.image_size = tuple(x0.shape[-2:])
    reducer.start_batch(np.zeros(1, np.int64))
    with torch.no_grad(), eval_mode(model), ActivationRecorder(model, names, device="cpu", transform=reducer) as rec:
        out = model(x0.to(dev))
        probe = rec.activations
    n_out = _output_tensor(out).reshape(1, -1).shape[1] if outputs else 0
    if reducer.ambiguous:
        import warnings

        warnings.warn(
            f"the outputs of {sorted(reducer.ambiguous)[:4]} read as maps either way (channels first or last, both "
            f"with the image's {reducer.image_size[0]} × {reducer.image_size[1]} grid): taken as channels-first (B, "
            "C, H, W). A channels-last network (Swin) at this size: capture another input size to tell them apart",
            stacklevel=3,
        )
    return {k: tuple(int(v) for v in a["shape"]) for k, a in probe.items()}, n_out


def _pwrite(fd: int, data: memoryview, at: int) -> int:
    """``os.pwrite``, or a seek and a write where there is none (Windows)."""
    if hasattr(os, "pwrite"):
        return os.pwrite(fd, data, at)
    os.lseek(fd, at, os.SEEK_SET)
    return os.write(fd, data)


class _NpyRows:
    """A ``.npy`` file filled by blocks of rows with ``os.pwrite``: each batch is one contiguous
    write into the page cache. Writing through a memory map instead page-faults every new page
    into this process (and its pages then had to be dropped again to keep memory bounded), which
    cost collect a fifth of a fast forward pass."""

    def __init__(self, path: Path, shape: tuple, dtype, create: bool):
        if create:  # the header and a sparse file of the full size
            np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()  # unmapped when dropped
        probe = np.load(path, mmap_mode="r")
        if probe.shape != tuple(shape) or probe.dtype != np.dtype(dtype):
            raise ValueError(f"{path} holds {probe.shape} {probe.dtype}, not {tuple(shape)} {np.dtype(dtype)}")
        self.offset, self.dtype, self.shape = probe.offset, np.dtype(dtype), tuple(shape)
        self.row_bytes = math.prod(shape[1:]) * self.dtype.itemsize
        del probe
        self.fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))  # no newline translation on Windows

    def write(self, start: int, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, self.dtype)
        if rows.shape[1:] != self.shape[1:] or not 0 <= start <= start + len(rows) <= self.shape[0]:
            raise ValueError(f"rows {start}:{start + len(rows)} of shape {rows.shape} do not fit {self.shape}")
        view = memoryview(rows).cast("B")
        at = self.offset + start * self.row_bytes
        while len(view):  # a write may take less than asked (2 GiB at most on Linux)
            done = _pwrite(self.fd, view, at)
            view, at = view[done:], at + done

    def sync(self) -> None:
        getattr(os, "fdatasync", os.fsync)(self.fd)  # macOS has no fdatasync

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _BankWriter:
    """Where ``collect`` puts rows: arrays in memory, or ``.npy`` files in ``<out_dir>.partial/``
    written by blocks of rows, with a progress file, renamed to ``out_dir`` when complete."""

    def __init__(self, config: dict, arrays: dict, total: int, out_dir=None, max_bytes: int | None = None):
        """``arrays``: {file stem: (shape, dtype)} of everything the bank holds."""
        self.config, self.root, self.work = config, None, None
        self._saved = time.monotonic()
        self.done = 0
        self.files: dict[str, _NpyRows] = {}
        if out_dir is None:
            if total > max_bytes:
                raise MemoryBudgetError(
                    f"collect would hold {format_bytes(total)} in memory ({config['n_images']} images, layers "
                    f"{config['layers']}), over max_bytes={format_bytes(max_bytes)}. Pass out_dir= to stream "
                    "to disk, sample with positions_per_image=, limit max_images=, or raise max_bytes."
                )
            self.arrays = {stem: np.empty(shape, dtype) for stem, (shape, dtype) in arrays.items()}
            self.arrays["labels"][:] = -1
            return
        self.root = Path(out_dir)
        self.work = self.root.with_name(self.root.name + ".partial")
        self.work.mkdir(parents=True, exist_ok=True)
        state_file = self.work / "progress.json"
        state = read_json(state_file) if state_file.is_file() else None
        resume = state is not None and state.get("config") == json.loads(json.dumps(config))
        free = shutil.disk_usage(self.work).free
        if not resume and total > free:
            raise MemoryBudgetError(
                f"collect would write {format_bytes(total)} but {self.work} has {format_bytes(free)} free"
            )
        shape, dtype = arrays["labels"]
        self.arrays = {"labels": np.load(self.work / "labels.npy") if resume else np.full(shape, -1, dtype)}
        try:
            for stem, (shape, dtype) in arrays.items():
                if stem != "labels":
                    self.files[stem] = _NpyRows(self.work / f"{stem}.npy", shape, dtype, create=not resume)
        except BaseException:
            self.close()
            raise
        self.done = state["done"] if resume else 0

    def write(self, stem: str, start: int, rows: np.ndarray) -> None:
        """Rows ``start:start + len(rows)`` of array ``stem``."""
        if stem in self.files:
            self.files[stem].write(start, rows)
        else:
            self.arrays[stem][start : start + len(rows)] = rows

    def _flush(self) -> None:
        for f in self.files.values():
            f.sync()
        atomic_save_npy(self.work / "labels.npy", self.arrays["labels"])

    CHECKPOINT_SECONDS = 5.0

    def checkpoint(self, done: int) -> None:
        """Everything up to image ``done`` is on disk: an interruption resumes from there. Written at
        most every ``CHECKPOINT_SECONDS``: syncing the files after every batch would stall on the
        disk, and a resume redoes at most those seconds."""
        if self.work is not None and time.monotonic() - self._saved >= self.CHECKPOINT_SECONDS:
            self._flush()
            atomic_write_json(self.work / "progress.json", {"config": self.config, "done": done})
            self._saved = time.monotonic()

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def finish(self, info: dict) -> FeatureBank:
        if self.work is None:
            a = self.arrays
            return FeatureBank(
                {k: a[f"{s}.features"] for k, s in info["files"].items()},
                {k: a[f"{s}.index"] for k, s in info["files"].items()},
                a["labels"],
                {k: tuple(v) for k, v in info["shapes"].items()},
                None,
                info,
                {k: a[f"{s}.pooled"] for k, s in info["pooled_files"].items()},
                a.get("outputs"),
            )
        self._flush()
        self.close()
        del self.arrays
        (self.work / "progress.json").unlink(missing_ok=True)
        atomic_write_json(self.work / "bank.json", info)
        if self.root.exists():
            shutil.rmtree(self.root)
        os.replace(self.work, self.root)
        return FeatureBank.open(self.root)


def _write_batch(
    writer: _BankWriter, acts: dict, files: dict, pooled_files: dict, start: int, end: int, per_image: dict
) -> None:
    """What the hooks kept of images ``start:end`` into the writer's rows."""
    ids = torch.arange(start, end)
    for k, stem in files.items():
        got = acts[k]
        rows, n = got["rows"], end - start
        C, W = rows.shape[-1], int(got["shape"][2])
        k_pos = per_image[k]
        writer.write(f"{stem}.features", start * k_pos, rows[:n].reshape(-1, C).numpy())
        pos = got["pos"][:n] if "pos" in got else torch.arange(rows.shape[1]).expand(n, rows.shape[1])
        idx = torch.stack([ids[:, None].expand(n, k_pos), pos // W, pos % W], dim=-1)
        writer.write(f"{stem}.index", start * k_pos, idx.reshape(-1, 3).numpy())
    for k, stem in pooled_files.items():
        writer.write(f"{stem}.pooled", start, acts[k]["pooled"][: end - start].numpy())


def collect(
    model: nn.Module,
    data,
    layers: str | Sequence[str],
    *,
    positions_per_image: int | None = None,
    max_images: int | None = None,
    out_dir: str | os.PathLike | None = None,
    max_bytes: int = 2 * 1024**3,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    progress: bool = True,
    pool: bool = False,
    pooled: str | Sequence[str] = (),
    outputs: bool = False,
    prefix_tokens: int | None = None,
) -> FeatureBank:
    """Stream a data set through ``model`` and keep the local features of ``layers`` (module paths,
    globs, ``"auto"`` for the blocks, ``"leaves"`` for every leaf module, ``"<path>:input"``).

    ``positions_per_image`` samples that many positions per image and layer (seeded, without
    replacement, the same positions for every layer on one grid; all positions when None). Only
    those are kept, inside the forward hooks: whole maps are never copied, so capturing every
    layer of a large network costs little more than the forward pass. Transformer tokens are laid
    on their grid (``as_maps``; ``prefix_tokens`` defaults to ``prefix_tokens_of(model)``).

    Without ``out_dir`` the bank lives in memory and the call refuses up front, with the estimate,
    when it would exceed ``max_bytes``. With ``out_dir`` the arrays are written to ``.npy`` files
    (one block write per batch and file) and a lazy, memory-mapped bank is returned; an
    interrupted call resumes where it stopped, and a finished bank is reopened, not recomputed.

    ``pool=True`` keeps one globally average-pooled vector per image and layer as its features
    (index y = x = 0): what linear probes of whole images use. For a transformer layer that is the
    mean of its patch tokens (the prefix tokens, such as the class token, are left out). ``pooled`` names layers whose
    pooled
    vector is kept *as well* (``bank.pooled``), and ``outputs=True`` keeps the network's outputs
    (``bank.outputs``): one pass gives local features, probe features and predictions.
    """
    if pool and positions_per_image is not None:
        raise ValueError("pool=True keeps one vector per image: leave positions_per_image=None")
    if positions_per_image is not None and positions_per_image < 1:
        raise ValueError(f"positions_per_image must be >= 1 or None (all positions), got {positions_per_image}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1 or None, got {max_images}")
    if dtype not in _NP_DTYPES:
        raise ValueError(f"dtype must be one of {list(_NP_DTYPES)}, got {dtype}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    if isinstance(data, Dataset) and max_images is not None and max_images < len(data):
        data = Subset(data, range(max_images))  # a data set batched on the device then moves these images only
    loader = _as_loader(data, batch_size, dev)
    names = resolve_layers(model, layers)
    pooled_names = resolve_layers(model, pooled) if pooled else []
    n_images = min(len(loader.dataset), max_images or len(loader.dataset))
    if n_images == 0:
        raise ValueError("the data set is empty")

    hooked = names + [p for p in pooled_names if p not in names]
    reducer = _Reducer(
        names,
        pooled_names,
        positions_per_image,
        pool,
        seed,
        None,
        prefix_tokens if prefix_tokens is not None else prefix_tokens_of(model),
    )
    reducer.channels_last_possible = any(
        type(m).__name__ == "Permute" or "Swin" in type(m).__name__ for m in model.modules()
    )
    all_shapes, n_out = _probe_shapes(model, loader.dataset, hooked, dev, reducer, outputs)
    row_keys = [k for k in all_shapes if _split_call(k)[0] in reducer.rows]
    pooled_keys = [k for k in all_shapes if _split_call(k)[0] in reducer.pooled]
    shapes = {k: ((all_shapes[k][0], 1, 1) if pool else all_shapes[k]) for k in row_keys}
    per_image = {
        k: (s[1] * s[2] if positions_per_image is None else min(positions_per_image, s[1] * s[2]))
        for k, s in shapes.items()
    }
    np_dtype = _NP_DTYPES[dtype]
    files = {k: _file_stem(k) for k in row_keys}
    pooled_files = {k: _file_stem(k) for k in pooled_keys}
    arrays = {"labels": ((n_images,), np.int64)}
    for k, stem in files.items():
        arrays[f"{stem}.features"] = ((n_images * per_image[k], shapes[k][0]), np_dtype)
        arrays[f"{stem}.index"] = ((n_images * per_image[k], 3), np.int32)
    for k, stem in pooled_files.items():
        arrays[f"{stem}.pooled"] = ((n_images, all_shapes[k][0]), np_dtype)
    if outputs:
        arrays["outputs"] = ((n_images, n_out), np.float32)
    total = sum(math.prod(shape) * np.dtype(dt).itemsize for shape, dt in arrays.values())
    config = {
        "layers": list(shapes),
        "n_images": n_images,
        "positions_per_image": positions_per_image,
        "seed": seed,
        "dtype": str(np_dtype.__name__),
        "shapes": shapes,
        "pool": pool,
        "pooled": pooled_keys,
        "outputs": outputs,
        "positions": "per grid",
    }
    info = {
        "config": config,
        "files": files,
        "shapes": shapes,
        "n_images": n_images,
        "pooled_files": pooled_files,
        "outputs": outputs,
    }
    out_dir = (
        resolve_in_root(out_dir) if out_dir is not None else None
    )  # "runs/bank" means the same folder from notebooks/
    if out_dir is not None and (out_dir / "bank.json").is_file():
        if read_json(out_dir / "bank.json").get("config") == json.loads(json.dumps(config)):
            return FeatureBank.open(out_dir)
        raise FileExistsError(
            f"{out_dir} holds a feature bank made with other settings; choose another out_dir or delete it"
        )
    writer = _BankWriter(config, arrays, total, out_dir, max_bytes)

    start, done = 0, writer.done
    bar = progress_bar(total=n_images, initial=done, desc="collect", unit="img", enabled=progress)
    try:
        with (
            torch.no_grad(),
            eval_mode(model),
            ActivationRecorder(model, hooked, device="cpu", dtype=dtype, transform=reducer) as rec,
        ):
            for batch in loader:
                xb, yb = _split_batch(batch)
                end = min(start + len(xb), n_images)
                if end > done:  # batches written before an interruption are skipped
                    reducer.start_batch(np.arange(start, end))
                    out = model(xb[: end - start].to(dev, non_blocking=True))
                    if yb is not None:
                        writer.arrays["labels"][start:end] = yb[: end - start].cpu().numpy()
                    if outputs:
                        writer.write(
                            "outputs", start, _output_tensor(out).reshape(end - start, -1).float().cpu().numpy()
                        )
                    _write_batch(writer, rec.activations, files, pooled_files, start, end, per_image)
                    bar.update(end - max(start, done))
                    writer.checkpoint(end)
                start = end
                if start >= n_images:
                    break
    except BaseException:
        writer.close()
        raise
    finally:
        bar.close()
    if start < n_images:
        writer.close()
        raise ValueError(f"the loader gave {start} images, fewer than the {n_images} its dataset reports")
    return writer.finish(info)
