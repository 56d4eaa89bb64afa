"""``get_dataset(name, split, ...)``: one entry point for every data set geoviz knows.

The shape tasks are generated; real data sets are read from ``data/`` (see ``data/README.md``)
and never downloaded.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch.utils.data import Dataset

from .._utils import unknown_name_message
from .shapes import TASKS, ShapesDataset

_LOADERS: dict[str, Callable[..., Dataset]] = {}
SPLITS = ("train", "val", "test")


def register_dataset(name: str):
    def wrap(fn):
        _LOADERS[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    return sorted(_LOADERS)


def _loader(name: str) -> Callable[..., Dataset]:
    from .folders import folder_dataset, parse_folder_spec

    path = parse_folder_spec(name)
    if path is not None:  # folder:<path>, the user's own images

        def load(split: str, n: int | None, seed: int, **kwargs):
            return folder_dataset(path, split, n, seed, **kwargs)

        load.accepts = folder_dataset.accepts
        return load
    if name not in _LOADERS:
        raise KeyError(
            unknown_name_message("dataset", name, list_datasets()) + " (or folder:<path> for a folder of your images)"
        )
    return _LOADERS[name]


def dataset_arguments(name: str) -> list[str]:
    """The keyword arguments data set ``name`` takes besides split, n and seed."""
    fn = _loader(name)
    params = getattr(fn, "accepts", None) or inspect.signature(fn).parameters
    return sorted(set(params) - {"self", "split", "n", "seed", "task", "kwargs"})


def get_dataset(name: str, split: str = "train", *, n: int | None = None, seed: int = 0, **kwargs) -> Dataset:
    """A data set by name: ``shapes10``, ``quad``, ``hole``, ``connectivity``, ``inside`` (with
    ``variant=``), the real ones registered in ``images.py`` when their files are in ``data/``, and
    ``folder:<path>``, a folder of your own images (``datasets.folders``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {SPLITS}")
    bad = sorted(set(kwargs) - set(dataset_arguments(name)))
    if bad:
        raise TypeError(f"data set {name!r} takes no argument(s) {bad}; it takes {dataset_arguments(name)}")
    return _loader(name)(split=split, n=n, seed=seed, **kwargs)


def num_classes(dataset: Dataset) -> int:
    classes = getattr(dataset, "classes", None)
    if classes is None:
        raise ValueError("the dataset has no .classes attribute; pass num_classes explicitly")
    return len(classes)


def _shapes_loader(task: str):
    def load(split: str, n: int | None, seed: int, **kwargs):
        default_n = {"train": 5000, "val": 1000, "test": 2000}[split]
        return ShapesDataset(task, n or default_n, seed=seed, split=split, **kwargs)

    load.accepts = list(inspect.signature(ShapesDataset.__init__).parameters)
    return load


for _task in TASKS:
    register_dataset(_task)(_shapes_loader(_task))
