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
import json
import mmap
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from ._counter_rng import CounterRNG
from ._io import atomic_write_json, read_json
from ._io import atomic_save_npy
from .inference import as_loader
from .paths import resolve_in_root
from ._utils import eval_mode, format_bytes, progress_bar, unknown_name_message

__all__ = [
    "layer_names",
    "resolve_layers",
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


def _split_call(name: str) -> tuple[str, int | None]:
    base, sep, k = name.rpartition("#")
    return (base, int(k)) if sep and k.isdigit() else (name, None)


def resolve_layers(model: nn.Module, layers: str | Iterable[str]) -> list[str]:
    """Expand globs and check names; an unknown name raises KeyError listing the closest ones."""
    if isinstance(layers, str):
        layers = [layers]
    names = layer_names(model)
    known = set(names)
    out: list[str] = []
    for spec in layers:
        base, _ = _split_call(spec)
        if any(ch in base for ch in "*?["):
            hits = [n for n in names if fnmatch.fnmatchcase(n, base)]
            if not hits:
                raise KeyError(unknown_name_message("layer pattern (matches nothing)", spec, names))
        elif base in known:
            hits = [base]
        else:
            raise KeyError(unknown_name_message("layer", spec, names))
        out += [h for h in hits if h not in out]
    if not out:
        raise ValueError("no layers given: name at least one module path, e.g. " + ", ".join(repr(n) for n in names[:3]))
    return out


# ----------------------------------------------------------------------------- recording
def _copy(t, device, dtype, detach):
    if torch.is_tensor(t):
        if detach:
            t = t.detach()
        # a copy, always: later in-place ops must not change what was recorded
        if device is None and dtype is None:
            return t.clone()
        return t.to(device=device if device is not None else t.device, dtype=dtype or t.dtype, copy=True)
    if isinstance(t, tuple) and hasattr(t, "_fields"):  # namedtuple outputs (e.g. InceptionOutputs)
        return type(t)(*(_copy(u, device, dtype, detach) for u in t))
    if isinstance(t, (tuple, list)):
        return type(t)(_copy(u, device, dtype, detach) for u in t)
    return t


class ActivationRecorder:
    """Record the outputs of named layers on every forward pass.

    >>> with ActivationRecorder(model, ["layer1", "layer3.*.conv2"]) as rec:
    ...     model(x)
    ...     acts = rec.activations          # {"layer1": tensor, "layer3.0.conv2": tensor, ...}

    ``detach=False`` keeps the autograd graph (for losses on activations); ``device`` and ``dtype``
    say where copies go (``device=None``: where they were computed). Activations are reset at the
    start of each forward of ``model``; hooks exist only inside the ``with`` block and are removed
    on exit, also after an exception.
    """

    def __init__(self, model: nn.Module, layers: str | Iterable[str], *, detach: bool = True, device: str | torch.device | None = "cpu", dtype: torch.dtype | None = None):
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.detach = detach
        self.device = torch.device(device) if device is not None else None
        self.dtype = dtype
        self._calls: dict[str, list] = {}
        self._handles: list = []
        self._paused = False

    # hooks ------------------------------------------------------------------
    def _hook(self, name: str):
        def fn(module, inputs, output):
            if not self._paused:
                self._calls.setdefault(name, []).append(_copy(output, self.device, self.dtype, self.detach))

        return fn

    def _reset(self, module, inputs):
        self._calls = {}

    def __enter__(self) -> "ActivationRecorder":
        if self._handles:
            raise RuntimeError("this ActivationRecorder is already active")
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._reset))
            for name in self.layers:
                self._handles.append(self.model.get_submodule(name).register_forward_hook(self._hook(name)))
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
        raise ValueError(f"student and teacher activations must come from the same batch: batch sizes {s.shape[0]} and {t.shape[0]} differ")
    if mode not in ALIGN_MODES:
        raise ValueError(f"unknown align mode {mode!r}; allowed: {ALIGN_MODES}")
    if s.shape[-2:] == t.shape[-2:]:
        return s, t
    import torch.nn.functional as F

    if mode == "pool":
        size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
        return _area_pool(s, size), _area_pool(t, size)
    size = (max(s.shape[-2], t.shape[-2]), max(s.shape[-1], t.shape[-1]))
    up = lambda a: a if a.shape[-2:] == size else F.interpolate(a, size=size, mode="bilinear", align_corners=False)
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


def _first_conv_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError("cannot tell the input channels (no Conv2d found): pass in_chans=")


def receptive_field(model: nn.Module, layer: str, input_size: int | tuple[int, int], *, in_chans: int | None = None, samples: int = 8, seed: int = 0) -> ReceptiveField:
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
            raise ValueError(f"layer {base!r} runs {len(acts)} time(s) per forward, so {layer!r} does not exist: use "
                             f"{calls}" + (f" (or '{base}')" if len(acts) == 1 else ""))
        act = acts[call or 0]
        if act.dim() != 4:
            raise ValueError(f"layer {layer!r} gives shape {tuple(act.shape)}; receptive fields need (B, C, H, W)")
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
    the activation's (C, H, W). On disk the arrays are memory-mapped ``.npy`` files, read lazily.
    """

    features: dict[str, np.ndarray]
    index: dict[str, np.ndarray]
    labels: np.ndarray
    shapes: dict[str, tuple[int, int, int]]
    path: Path | None = None
    info: dict = field(default_factory=dict)

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
        return sum(a.nbytes for a in self.features.values()) + sum(a.nbytes for a in self.index.values()) + self.labels.nbytes

    @classmethod
    def open(cls, path: str | os.PathLike) -> "FeatureBank":
        """Open a bank written by ``collect(out_dir=...)`` (arrays memory-mapped read-only); a relative
        path is taken inside the project root, as ``collect`` does."""
        path = resolve_in_root(path)
        manifest = path / "bank.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"{path} holds no complete feature bank (no bank.json); run collect(..., out_dir={str(path)!r})")
        info = read_json(manifest)
        feats, index, shapes = {}, {}, {}
        for layer, stem in info["files"].items():
            feats[layer] = np.load(path / f"{stem}.features.npy", mmap_mode="r")
            index[layer] = np.load(path / f"{stem}.index.npy", mmap_mode="r")
            shapes[layer] = tuple(info["shapes"][layer])
        labels = np.load(path / "labels.npy")
        return cls(feats, index, labels, shapes, path, info)


def _as_loader(data, batch_size: int, device: torch.device) -> DataLoader:
    """A DataLoader in the data set's order; a tensor-backed data set is batched on ``device``."""
    if isinstance(data, DataLoader):
        if isinstance(data.sampler, RandomSampler):
            raise ValueError("collect needs images in a fixed order so points trace back to them: pass a DataLoader without shuffle=True (or the Dataset)")
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


def _positions(seed: int, image_ids: np.ndarray, layer: str, hw: int, k: int) -> torch.Tensor:
    """k distinct positions per image, a function of (seed, image id, layer) only."""
    scores = CounterRNG(seed, image_ids, namespace=f"collect/{layer}").uniform("pos", hw)
    return scores.argsort(dim=1)[:, :k]


def _layer_shapes(model: nn.Module, dataset, names: list[str], dev: torch.device, pool: bool) -> dict[str, tuple[int, int, int]]:
    """One image through the model gives every layer's (C, H, W), hence the size of the result."""
    x0, _ = _split_batch(next(iter(DataLoader(dataset, batch_size=1))))
    with torch.no_grad(), eval_mode(model), ActivationRecorder(model, names, device="cpu") as rec:
        model(x0.to(dev))
        probe = rec.activations
    shapes = {}
    for k, a in probe.items():
        a = _as_maps(a, pool)
        if a.dim() != 4:
            raise ValueError(f"layer {k!r} gives shape {tuple(a.shape)}; collect needs (B, C, H, W) or (B, C)")
        shapes[k] = tuple(a.shape[1:])
    return shapes


def _as_maps(a: torch.Tensor, pool: bool) -> torch.Tensor:
    if pool and a.dim() == 4:
        a = a.mean(dim=(2, 3))
    return a[:, :, None, None] if a.dim() == 2 else a


def _release_pages(arr: np.memmap) -> None:
    """Drop a flushed memory map's pages from this process: what is on disk need not stay resident,
    so streaming a bank to disk keeps the memory of a few seconds of batches, not of the whole bank."""
    mm = getattr(arr, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mm.madvise(mmap.MADV_DONTNEED)


class _BankWriter:
    """Where ``collect`` puts rows: arrays in memory, or memory-mapped ``.npy`` files in
    ``<out_dir>.partial/`` with a progress file, renamed to ``out_dir`` when complete."""

    def __init__(self, config: dict, shapes: dict, per_image: dict, np_dtype, total: int, n_images: int,
                 out_dir=None, max_bytes: int | None = None):
        self.config, self.shapes, self.root, self.work = config, shapes, None, None
        self._saved = time.monotonic()
        rows = {k: n_images * per_image[k] for k in shapes}
        self.done = 0
        if out_dir is None:
            if total > max_bytes:
                raise MemoryBudgetError(
                    f"collect would hold {format_bytes(total)} in memory ({n_images} images, layers {list(shapes)}), over max_bytes="
                    f"{format_bytes(max_bytes)}. Pass out_dir= to stream to disk, sample with positions_per_image=, limit max_images=, or raise max_bytes.")
            self.feats = {k: np.empty((rows[k], shapes[k][0]), np_dtype) for k in shapes}
            self.index = {k: np.empty((rows[k], 3), np.int32) for k in shapes}
            self.labels = np.full(n_images, -1, np.int64)
            return
        self.root = Path(out_dir)
        self.work = self.root.with_name(self.root.name + ".partial")
        self.work.mkdir(parents=True, exist_ok=True)
        state_file = self.work / "progress.json"
        state = read_json(state_file) if state_file.is_file() else None
        resume = state is not None and state.get("config") == json.loads(json.dumps(config))
        free = shutil.disk_usage(self.work).free
        if not resume and total > free:
            raise MemoryBudgetError(f"collect would write {format_bytes(total)} but {self.work} has {format_bytes(free)} free")
        self.feats, self.index = {}, {}
        for k in shapes:
            stem = self.work / _file_stem(k)
            if resume:
                self.feats[k] = np.load(f"{stem}.features.npy", mmap_mode="r+")
                self.index[k] = np.load(f"{stem}.index.npy", mmap_mode="r+")
            else:
                self.feats[k] = np.lib.format.open_memmap(f"{stem}.features.npy", mode="w+", dtype=np_dtype, shape=(rows[k], shapes[k][0]))
                self.index[k] = np.lib.format.open_memmap(f"{stem}.index.npy", mode="w+", dtype=np.int32, shape=(rows[k], 3))
        self.labels = np.load(self.work / "labels.npy") if resume else np.full(n_images, -1, np.int64)
        self.done = state["done"] if resume else 0

    def _flush(self) -> None:
        for k in self.feats:
            for arr in (self.feats[k], self.index[k]):
                arr.flush()
                _release_pages(arr)
        atomic_save_npy(self.work / "labels.npy", self.labels)

    CHECKPOINT_SECONDS = 5.0

    def checkpoint(self, done: int) -> None:
        """Everything up to image ``done`` is on disk: an interruption resumes from there. Written at
        most every ``CHECKPOINT_SECONDS``: flushing the memory maps after every batch cost a fifth
        of the time of a fast forward pass, and a resume redoes at most those seconds."""
        if self.work is not None and time.monotonic() - self._saved >= self.CHECKPOINT_SECONDS:
            self._flush()
            atomic_write_json(self.work / "progress.json", {"config": self.config, "done": done})
            self._saved = time.monotonic()

    def finish(self, info: dict) -> "FeatureBank":
        if self.work is None:
            return FeatureBank(self.feats, self.index, self.labels, self.shapes, None, info)
        self._flush()
        del self.feats, self.index
        (self.work / "progress.json").unlink(missing_ok=True)
        atomic_write_json(self.work / "bank.json", info)
        if self.root.exists():
            shutil.rmtree(self.root)
        os.replace(self.work, self.root)
        return FeatureBank.open(self.root)


def _write_batch(writer: _BankWriter, acts: dict, start: int, end: int, per_image: dict, seed: int, pool: bool) -> None:
    """The sampled positions of images ``start:end`` of every layer into the writer's rows."""
    ids = np.arange(start, end)
    for k, a in acts.items():
        a = _as_maps(a, pool)
        B, C, H, W = a.shape
        flat = a.permute(0, 2, 3, 1).reshape(B, H * W, C)
        k_pos = per_image[k]
        pos = _positions(seed, ids, k, H * W, k_pos) if k_pos < H * W else torch.arange(H * W).expand(B, H * W)
        rows = slice(start * k_pos, end * k_pos)
        writer.feats[k][rows] = torch.gather(flat, 1, pos[..., None].expand(B, k_pos, C)).reshape(-1, C).numpy()
        idx = torch.stack([torch.as_tensor(ids)[:, None].expand(B, k_pos), pos // W, pos % W], dim=-1)
        writer.index[k][rows] = idx.reshape(-1, 3).numpy()


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
) -> FeatureBank:
    """Stream a data set through ``model`` and keep the local features of ``layers``.

    ``positions_per_image`` samples that many positions per image and layer (seeded, without
    replacement; all positions when None). Without ``out_dir`` the bank lives in memory and the
    call refuses up front, with the estimate, when it would exceed ``max_bytes``. With ``out_dir``
    the features are written to memory-mapped ``.npy`` files and a lazy bank is returned; an
    interrupted call resumes where it stopped, and a finished bank is reopened, not recomputed.
    ``pool=True`` keeps one globally average-pooled vector per image and layer (index y = x = 0):
    what linear probes of whole images use.
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
    n_images = min(len(loader.dataset), max_images or len(loader.dataset))
    if n_images == 0:
        raise ValueError("the data set is empty")

    shapes = _layer_shapes(model, loader.dataset, names, dev, pool)
    per_image = {k: (s[1] * s[2] if positions_per_image is None else min(positions_per_image, s[1] * s[2])) for k, s in shapes.items()}
    itemsize = torch.empty(0, dtype=dtype).element_size()
    total = sum(n_images * per_image[k] * (shapes[k][0] * itemsize + 3 * 4) for k in shapes) + n_images * 8
    np_dtype = _NP_DTYPES[dtype]
    config = {"layers": list(shapes), "n_images": n_images, "positions_per_image": positions_per_image, "seed": seed,
              "dtype": str(np_dtype.__name__), "shapes": shapes, "pool": pool}
    info = {"config": config, "files": {k: _file_stem(k) for k in shapes}, "shapes": shapes, "n_images": n_images}
    out_dir = resolve_in_root(out_dir) if out_dir is not None else None  # "runs/bank" means the same folder from notebooks/
    if out_dir is not None and (out_dir / "bank.json").is_file():
        if read_json(out_dir / "bank.json").get("config") == json.loads(json.dumps(config)):
            return FeatureBank.open(out_dir)
        raise FileExistsError(f"{out_dir} holds a feature bank made with other settings; choose another out_dir or delete it")
    writer = _BankWriter(config, shapes, per_image, np_dtype, total, n_images, out_dir, max_bytes)

    start, done = 0, writer.done
    bar = progress_bar(total=n_images, initial=done, desc="collect", unit="img", enabled=progress)
    try:
        with torch.no_grad(), eval_mode(model), ActivationRecorder(model, names, device="cpu", dtype=dtype) as rec:
            for batch in loader:
                xb, yb = _split_batch(batch)
                end = min(start + len(xb), n_images)
                if end > done:  # batches written before an interruption are skipped
                    model(xb[: end - start].to(dev, non_blocking=True))
                    if yb is not None:
                        writer.labels[start:end] = yb[: end - start].cpu().numpy()
                    _write_batch(writer, rec.activations, start, end, per_image, seed, pool)
                    bar.update(end - max(start, done))
                    writer.checkpoint(end)
                start = end
                if start >= n_images:
                    break
    finally:
        bar.close()
    if start < n_images:
        raise ValueError(f"the loader gave {start} images, fewer than the {n_images} its dataset reports")
    return writer.finish(info)
