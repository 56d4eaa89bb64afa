"""A frozen teacher's outputs computed once for a deterministic data set, so that students trained
on it (or on subsets of it) skip the teacher's forward pass."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .._utils import eval_mode, format_bytes, resolve_device
from ..capture import ActivationRecorder, MemoryBudgetError
from ..datasets._batched import BatchSource, batch_source
from ..inference import amp_dtype

DEFAULT_MAX_BYTES = 2 * 1024**3


class _Indexed(Dataset):
    """Yields (x, y, i) so cached teacher outputs can be looked up by dataset index."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i][:2]
        return x, y, i

    def batch_source(self) -> BatchSource | None:
        inner = batch_source(self.base)
        return None if inner is None else inner.indexed()


def _recorder(teacher: nn.Module, layers: list[str]):
    return ActivationRecorder(teacher, layers, device="cpu") if layers else contextlib.nullcontext(None)


class TeacherCache:
    """The teacher's logits and captured layers for every image of ``dataset``, held in memory.

    The size is estimated from one image before anything is computed; over ``max_bytes`` the
    constructor refuses with the estimate (``MemoryBudgetError``). ``estimate_bytes`` gives the
    number alone, so a runner can decide to train without a cache instead.
    """

    def __init__(
        self,
        teacher: nn.Module,
        dataset: Dataset,
        layers: Sequence[str],
        *,
        device,
        batch_size: int = 256,
        amp="auto",
        max_bytes: int | None = DEFAULT_MAX_BYTES,
    ):
        if not getattr(dataset, "deterministic", False):
            raise ValueError(
                "TeacherCache needs a deterministic data set (no random "
                "augmentation): its items must not change between epochs"
            )
        dev = resolve_device(device)
        self.layers = list(layers)
        need = self.estimate_bytes(teacher, dataset, self.layers, device=dev)
        if max_bytes is not None and need > max_bytes:
            raise MemoryBudgetError(
                f"a teacher cache of {len(dataset)} images and layers {self.layers} would hold {format_bytes(need)}, "
                f"over max_bytes={format_bytes(max_bytes)}. Train without a cache (teacher_cache=None: the teacher "
                "runs every step), cache fewer layers, or raise max_bytes if the memory is there."
            )
        dtype = amp_dtype(amp, dev)
        logits, feats = [], {l: [] for l in self.layers}
        with torch.no_grad(), eval_mode(teacher), _recorder(teacher, self.layers) as rec:
            for x, *_ in DataLoader(dataset, batch_size=batch_size):
                with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                    logits.append(teacher(x.to(dev)).float().cpu())
                acts = rec.activations if rec else {}
                for l in self.layers:
                    feats[l].append(acts[l].float())
        self.logits = torch.cat(logits)
        self.feats = {l: torch.cat(v) for l, v in feats.items()}
        self.dataset = dataset

    @classmethod
    def if_it_fits(
        cls,
        teacher: nn.Module,
        dataset: Dataset,
        layers: Sequence[str],
        *,
        device,
        max_bytes: int = DEFAULT_MAX_BYTES,
        **kwargs,
    ) -> TeacherCache | None:
        """A cache when the data set is deterministic and the estimate fits ``max_bytes``; otherwise
        None (with a warning naming the estimate when it is the budget): training then runs the
        teacher every step, which is slower but needs no memory."""
        if not getattr(dataset, "deterministic", False):
            return None
        need = cls.estimate_bytes(teacher, dataset, layers, device=device)
        if need > max_bytes:
            warnings.warn(
                f"a teacher cache would hold {format_bytes(need)}, over its budget of {format_bytes(max_bytes)}: "
                f"training without it (the teacher runs every step)",
                stacklevel=2,
            )
            return None
        return cls(teacher, dataset, layers, device=device, max_bytes=max_bytes, **kwargs)

    @staticmethod
    def estimate_bytes(teacher: nn.Module, dataset: Dataset, layers: Sequence[str], *, device="auto") -> int:
        """Bytes the cache would hold: one image's float32 logits and layer outputs × the data set size."""
        dev = resolve_device(device)
        x = dataset[0][0][None]
        with torch.no_grad(), eval_mode(teacher), _recorder(teacher, list(layers)) as rec:
            out = teacher(x.to(dev))
            per_image = out.numel() + sum(a.numel() for a in (rec.activations if rec else {}).values())
        return int(per_image * 4 * len(dataset))

    def nbytes(self) -> int:
        return self.logits.nbytes + sum(v.nbytes for v in self.feats.values())

    def lookup(self, idx: torch.Tensor, device) -> tuple[torch.Tensor, dict]:
        idx = torch.as_tensor(idx)
        return self.logits[idx].to(device), {l: v[idx].to(device) for l, v in self.feats.items()}

    def indexed(self, data) -> Dataset:
        """``data`` (the cached data set or a Subset of it) as items carrying the cache's indices."""
        if isinstance(data, DataLoader):
            raise TypeError(
                "fit with a teacher_cache needs the training Dataset (or a Subset of it), not a DataLoader: "
                "the cache looks items up by their index in the data set"
            )
        if data is self.dataset:
            return _Indexed(data)
        if isinstance(data, Subset) and data.dataset is self.dataset:
            return Subset(_Indexed(self.dataset), data.indices)
        raise ValueError("teacher_cache was computed on another data set than the one being trained on")
