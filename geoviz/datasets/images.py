"""Real image data sets, read from ``data/`` with torchvision's own loaders — never downloaded.

``CIFAR10`` reads ``data/cifar-10-batches-py`` (the python version of the data set). The validation
split is a class-balanced, seeded hold-out of the training batches (5,000 images by default), so
model selection never sees the test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..paths import data_root, resolve_in_root
from ._batched import BatchSource, random_crop_flip
from .registry import register_dataset
from .splits import balanced_holdout

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _missing(name: str, folder: Path, how: str) -> FileNotFoundError:
    return FileNotFoundError(f"{name} not found in {folder}. geoviz never downloads data: {how} (see data/README.md)")


class TensorImages(Dataset):
    """Images held as a uint8 tensor (N, C, H, W) with integer labels; optional augmentation
    (reflect-pad 4, random crop back to the image's size, horizontal flip: the standard CIFAR recipe)."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, classes, *, augment: bool = False, name: str = "images"
    ):
        self.images, self.labels, self.classes = images, labels.long(), list(classes)
        self.augment, self.name = augment, name

    @property
    def deterministic(self) -> bool:
        """Whether item i is always the same tensor (lets a frozen teacher's outputs be cached)."""
        return not self.augment

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].float() / 255.0
        if self.augment:
            x = random_crop_flip(x[None])[0]
        return x, int(self.labels[i])

    def batch_source(self) -> BatchSource:
        return BatchSource(self.images, self.labels, random_crop_flip if self.augment else None, random=self.augment)

    @property
    def targets(self):
        return self.labels.tolist()

    def __repr__(self):
        return f"{self.name}(n={len(self)}, augment={self.augment})"


def load_cifar10(
    root: str | Path | None = None, train: bool = True, *, verify: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 3, 32, 32), labels) from ``<root>/cifar-10-batches-py`` via torchvision.

    ``verify`` keeps torchvision's MD5 check of the official files; ``verify=False`` reads any
    files in the same format (the tests write small ones)."""
    import torchvision

    class _Files(torchvision.datasets.CIFAR10):
        def _check_integrity(self) -> bool:
            if verify:
                return super()._check_integrity()
            folder = Path(self.root) / self.base_folder
            return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            if verify:
                return super()._load_meta()
            import pickle

            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as fh:
                self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    root = resolve_in_root(root) if root is not None else data_root()
    folder = root / "cifar-10-batches-py"
    if not folder.is_dir():
        raise _missing(
            "CIFAR-10",
            folder,
            "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it into data/",
        )
    try:
        ds = _Files(str(root), train=train, download=False)
    except RuntimeError as err:  # torchvision's integrity check failed
        raise _missing("a complete CIFAR-10", folder, f"{err}; unpack the archive again") from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    return images, torch.as_tensor(ds.targets)


@register_dataset("cifar10")
def cifar10(
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    *,
    augment: bool | None = None,
    n_val: int = 5000,
    root=None,
    verify: bool = True,
) -> TensorImages:
    """CIFAR-10 splits: ``train`` (training batches minus the validation hold-out), ``val``
    (a class-balanced hold-out of ``n_val`` training images), ``test`` (the test batch).
    ``augment`` defaults to True for train. ``n`` keeps a class-balanced subset."""
    if split == "test":
        images, labels = load_cifar10(root, train=False, verify=verify)
    else:
        images, labels = load_cifar10(root, train=True, verify=verify)
        train_idx, val_idx = balanced_holdout(labels, n_val, seed=1234)  # fixed: val never moves with the seed
        idx = train_idx if split == "train" else val_idx
        images, labels = images[idx], labels[idx]
    if n is not None and n < len(labels):
        keep = balanced_holdout(labels, n, seed=seed)[1]
        images, labels = images[keep], labels[keep]
    aug = (split == "train") if augment is None else augment
    return TensorImages(images, labels, CIFAR10_CLASSES, augment=aug, name=f"CIFAR10[{split}]")


DIGIT_CLASSES = tuple(str(d) for d in range(10))


def _upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    x = torch.nn.functional.interpolate(
        images.float()[:, None], size=(size, size), mode="bilinear", align_corners=False
    )
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


@register_dataset("digits")
def digits(split: str = "train", n: int | None = None, seed: int = 0, *, size: int = 28) -> TensorImages:
    """scikit-learn's bundled handwritten digits (1,797 real 8×8 scans, no download), upsampled
    bilinearly to ``size`` px. Fixed class-balanced splits: 360 test, 180 validation, 1,257 train."""
    from sklearn.datasets import load_digits

    d = load_digits()
    labels = torch.as_tensor(d.target)
    rest, test_idx = balanced_holdout(labels.numpy(), 360, seed=1234)
    rest_train, val_pos = balanced_holdout(labels.numpy()[rest], 180, seed=1234)
    idx = {"train": rest[rest_train], "val": rest[val_pos], "test": test_idx}[split]
    images = _upsample(torch.as_tensor(d.images[idx] / 16.0), size)
    lab = labels[idx]
    if n is not None and n < len(lab):
        keep = balanced_holdout(lab.numpy(), n, seed=seed)[1]
        images, lab = images[keep], lab[keep]
    return TensorImages(images, lab, DIGIT_CLASSES, name=f"digits[{split}]")


def cifar10_present(root: str | Path | None = None) -> bool:
    """Whether CIFAR-10's python batches are in ``<root>/cifar-10-batches-py``."""
    folder = (resolve_in_root(root) if root is not None else data_root()) / "cifar-10-batches-py"
    return all(
        (folder / n).is_file() for n in ("batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6)))
    )


def mnist_present(root: str | Path | None = None) -> bool:
    """Whether MNIST's four idx files (or their .gz) are in ``<root>/MNIST/raw``."""
    raw = (resolve_in_root(root) if root is not None else data_root()) / "MNIST" / "raw"
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    return all((raw / n).is_file() or (raw / f"{n}.gz").is_file() for n in names)


def load_mnist(root: str | Path | None = None, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 1, 28, 28), labels) from ``<root>/MNIST/raw`` (torchvision's layout; the
    ``.gz`` files are unpacked beside themselves the first time), read by torchvision."""
    import gzip
    import shutil

    import torchvision

    root = resolve_in_root(root) if root is not None else data_root()
    raw = root / "MNIST" / "raw"
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for name in names:
        if not (raw / name).is_file() and (raw / f"{name}.gz").is_file():
            with gzip.open(raw / f"{name}.gz", "rb") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    missing = [n for n in names if not (raw / n).is_file()]
    if missing:
        raise _missing(
            "MNIST", raw, f"missing {missing}; put the four idx files (or their .gz) from the MNIST site there"
        )
    ds = torchvision.datasets.MNIST(str(root), train=train, download=False)
    return ds.data[:, None].contiguous(), ds.targets.clone()


@register_dataset("mnist")
def mnist(split: str = "train", n: int | None = None, seed: int = 0, *, n_val: int = 5000, root=None) -> TensorImages:
    """MNIST 60k/10k from ``data/MNIST/raw``: ``train`` and ``val`` (a class-balanced hold-out of
    ``n_val`` training images) and ``test``. ``n`` keeps a class-balanced subset."""
    if split == "test":
        images, labels = load_mnist(root, train=False)
    else:
        images, labels = load_mnist(root, train=True)
        train_idx, val_idx = balanced_holdout(labels.numpy(), n_val, seed=1234)
        idx = train_idx if split == "train" else val_idx
        images, labels = images[idx], labels[idx]
    if n is not None and n < len(labels):
        keep = balanced_holdout(labels.numpy(), n, seed=seed)[1]
        images, labels = images[keep], labels[keep]
    return TensorImages(images, labels, DIGIT_CLASSES, name=f"MNIST[{split}]")
