"""A procedural regression task with a continuous, visually graded target: the stand-in for age.

``shape_size``: shapes10 images (ten shape classes, colour, texture, clutter, noise) whose target
is the shape's size — its circumradius in pixels, drawn uniformly over a wide range (at 32 px,
0.12–0.45 of the image: about 3.8–14.4 px) — so that the class, colour and clutter are nuisances
and only the size matters. Like human age labels, the targets of the training and validation
splits carry label noise (Gaussian, ``label_noise`` px; 0.5 by default, about 5 % of the range);
the test split's are the true sizes, so its MAE measures what was learnt.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .._utils import choice
from ._batched import BatchSource
from .registry import register_dataset
from .shapes import SPLIT_OFFSET, make_shapes

SIZE_RANGE = (0.12, 0.45)


class ShapeSizeDataset(Dataset):
    """``(image in [0, 1], size in px)``; images stored as uint8, targets as float32."""

    def __init__(self, n: int = 2000, *, size: int = 32, seed: int = 0, split: str = "train", label_noise: float = 0.5):
        choice("split", split, tuple(SPLIT_OFFSET))
        if label_noise < 0:
            raise ValueError(f"label_noise must be >= 0 (pixels), got {label_noise}")
        images, _, meta = make_shapes(
            "shapes10", n, size=size, seed=seed, start=SPLIT_OFFSET[split], scale=SIZE_RANGE, return_meta=True
        )
        self.images = (images * 255).round().to(torch.uint8).contiguous()
        self.true_sizes = torch.tensor([m["scale"] for m in meta], dtype=torch.float32)
        g = torch.Generator().manual_seed(seed * 7919 + SPLIT_OFFSET[split] % 1_000_003 + 17)
        noise = torch.randn(n, generator=g) * label_noise if split != "test" else torch.zeros(n)
        self.targets = self.true_sizes + noise
        self.classes = None  # a regression task
        self.unit = "px"

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i].float() / 255.0, self.targets[i]

    def batch_source(self) -> BatchSource:
        return BatchSource(self.images, self.targets)

    def mean_predictor_mae(self, train_mean: float) -> float:
        """The floor: MAE of predicting the training targets' mean for every image."""
        return float((self.targets - train_mean).abs().mean())


@register_dataset("shape_size")
def shape_size(
    split: str = "train", n: int | None = None, seed: int = 0, *, size: int = 32, label_noise: float = 0.5
) -> ShapeSizeDataset:
    default_n = {"train": 5000, "val": 1000, "test": 2000}[split]
    return ShapeSizeDataset(n or default_n, size=size, seed=seed, split=split, label_noise=label_noise)
