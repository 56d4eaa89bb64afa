"""Data sets held as tensors, read a batch at a time by index instead of an item at a time.

A data set whose images already sit in one uint8 tensor (shapes, digits, CIFAR-10, MNIST, the
defect textures, the probe tasks) describes itself by a ``BatchSource``: the images, the targets,
and a batched version of what its ``__getitem__`` does after ``uint8 / 255`` (augmentation,
normalisation). ``geoviz.inference.as_loader(..., device=...)`` then moves the tensors to the device
once and gathers each batch there, which is the same batch the per-item ``DataLoader`` would
build (same indices, same values) without a Python call and a collate per image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch.utils.data import Dataset, Subset

__all__ = ["BatchSource", "batch_source", "crop_flip", "draw_crop_flip", "random_crop_flip"]


@dataclass(frozen=True)
class BatchSource:
    """What a tensor-backed data set is: ``images`` (N, C, H, W) uint8, ``targets`` (N,), and
    ``transform``, a batched function of float images in [0, 1] (B, C, H, W) → model inputs, or
    None (``random``: it draws random numbers). ``rows`` maps the data set's index to a row of
    ``images`` (a Subset); ``ids``, when set, are the indices batches carry as a third element
    (x, y, id), as a teacher cache's indexed data set does (``indexed()``)."""

    images: torch.Tensor
    targets: torch.Tensor
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    rows: torch.Tensor | None = None
    ids: torch.Tensor | None = None
    random: bool = False  # whether ``transform`` draws random numbers (augmentation)

    def __post_init__(self):
        if self.images.dtype != torch.uint8:
            raise TypeError(
                f"BatchSource images must be uint8 (read as x / 255, as __getitem__ does), got {self.images.dtype}"
            )

    def __len__(self) -> int:
        return len(self.targets) if self.rows is None else len(self.rows)

    def subset(self, indices) -> BatchSource:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return replace(
            self, rows=idx if self.rows is None else self.rows[idx], ids=None if self.ids is None else self.ids[idx]
        )

    def indexed(self) -> BatchSource:
        """Batches that also carry each item's index in this data set."""
        return replace(self, ids=torch.arange(len(self)))


def batch_source(data) -> BatchSource | None:
    """The ``BatchSource`` of ``data`` (a data set with a ``batch_source()`` method, or a Subset of
    one), None when it is read item by item only (a random per-item transform, files on disk)."""
    if isinstance(data, Subset):
        if type(data).__getitem__ is not Subset.__getitem__:  # a Subset that reads its items its own way
            return None
        inner = batch_source(data.dataset)
        return None if inner is None else inner.subset(data.indices)
    get = getattr(data, "batch_source", None)
    if not isinstance(data, Dataset) or not callable(get) or not _reads_as_declared(type(data)):
        return None
    return get()


def _reads_as_declared(cls) -> bool:
    """Whether the class that says how batches are read also defines how items are read: a subclass
    that overrides ``__getitem__`` (noise, other outputs) but inherits ``batch_source`` would
    otherwise be read around its own ``__getitem__``."""
    owner = lambda name: next(k for k in cls.__mro__ if name in vars(k))  # noqa: E731
    return issubclass(owner("batch_source"), owner("__getitem__"))


def draw_crop_flip(n: int, pad: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Random offsets (n, 2) in [0, 2·pad] and horizontal flips (n,) from torch's global generator
    (so a checkpoint's saved RNG state makes a resumed run draw the same ones)."""
    return torch.randint(0, 2 * pad + 1, (n, 2)), torch.rand(n) < 0.5


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation on a batch (B, C, H, W): reflect-pad by ``pad``, crop back
    to H × W at ``offsets`` (B, 2) (row, column), mirror where ``flips`` (B,). One gather for the
    whole batch; the crop keeps the image's own size (any H, W)."""
    b, c, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    offsets, flips = offsets.to(x.device), flips.to(x.device)
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(x: torch.Tensor) -> torch.Tensor:
    """``crop_flip`` with freshly drawn offsets and flips (a training-time transform)."""
    offsets, flips = draw_crop_flip(x.shape[0])
    return crop_flip(x, offsets, flips)
