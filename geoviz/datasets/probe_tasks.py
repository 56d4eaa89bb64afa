"""The six shape experiments of Zheng et al. (2021) as named, ready-made definitions.

Each experiment has a training distribution and three *transfer* test sets that change what the
paper changes — the drawing of the shapes — one thing at a time:

- ``style``: irregular outlines at the training sizes (hand-drawn quadrilaterals whose edges bend
  by pixels, smooth non-convex blobs for the global tasks);
- ``size``: regular outlines at other sizes (``TRANSFER_SCALE``);
- ``both``: irregular outlines at other sizes.

The experiments and their classes are our reconstruction (the paper names the invariants, not the
exact sets):

====  ======================  =========  =================================================
key   name                    invariant  classes
====  ======================  =========  =================================================
E1    square_vs_rectangle     local      square, rectangle (equal vs unequal sides)
E2    quad4                   local      square, rectangle, trapezoid, parallelogram
E3    hole                    global     no_hole, hole
E4    connectivity            global     connected, disconnected
E5    inside                  global     inside, outside (a dot and two contours, one open)
E6    global_combined         global     the six classes of E3–E5 in one task
E7    same_curve              global     same, different (two dots on the same or on different
                                         one of two interleaved rails along a random route:
                                         beyond the paper, global at every scale)
====  ======================  =========  =================================================

``PRETRAINING`` is the class set the small networks' "pretrained" start learns first: the
shapes10 classes that no experiment uses and that do not differ by aspect ratio (circle, triangle,
pentagon, hexagon, star), so a pretrained network has never seen a probe class or its cue. Labels stay true by
construction (the tests
re-check them on these very sets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .._utils import unknown_name_message
from ._batched import BatchSource
from .shapes import SPLIT_OFFSET, TASKS, make_shapes

TRANSFER_SCALE = {
    "quad": (0.14, 0.22),
    "hole": (0.43, 0.48),
    "connectivity": (0.07, 0.1),
    "inside": (0.16, 0.19),
    "curve": (0.24, 0.28),
}
# probes draw inside/outside at >= 48 px: at 32 px the centroid shifts towards the closed contour
# by the gap's missing stroke, and simple statistics reach ~0.65 (0.55 at 48 px)
PROBE_MIN_SIZE = {"inside": 48, "curve": 64}
TRANSFER_SETS = ("style", "size", "both")
_TRANSFER_KW = {
    "style": lambda task: {"variant": "irregular"},
    "size": lambda task: {"scale": TRANSFER_SCALE[task]},
    "both": lambda task: {"variant": "irregular", "scale": TRANSFER_SCALE[task]},
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ProbeExperiment:
    key: str
    name: str
    invariant: str  # "local" | "global"
    sources: tuple[tuple[str, str], ...]  # (shape task, class of that task) for each class of the experiment
    description: str

    @property
    def classes(self) -> list[str]:
        return [c for _, c in self.sources]

    def tests_on(self, which: str = "both") -> str:
        """What a transfer set changes, in words."""
        tasks = sorted({t for t, _ in self.sources})
        sizes = (
            "other sizes ("
            + ", ".join(f"{t} radius {TRANSFER_SCALE[t][0]:g}-{TRANSFER_SCALE[t][1]:g} of the image" for t in tasks)
            + ")"
        )
        return {
            "style": "irregular outlines at the training sizes",
            "size": "regular outlines at " + sizes,
            "both": "irregular outlines at " + sizes,
        }[which]


def _exp(key, name, invariant, sources, description):
    return ProbeExperiment(key, name, invariant, tuple(sources), description)


EXPERIMENTS: dict[str, ProbeExperiment] = {
    e.key: e
    for e in [
        _exp(
            "E1",
            "square_vs_rectangle",
            "local",
            [("quad", "square"), ("quad", "rectangle")],
            "equal vs unequal sides, both with right angles",
        ),
        _exp(
            "E2",
            "quad4",
            "local",
            [("quad", c) for c in TASKS["quad"]],
            "the four quadrilaterals: side lengths, right angles, parallel sides",
        ),
        _exp(
            "E3",
            "hole",
            "global",
            [("hole", c) for c in TASKS["hole"]],
            "a filled shape with or without a hole (bites are not holes)",
        ),
        _exp(
            "E4",
            "connectivity",
            "global",
            [("connectivity", c) for c in TASKS["connectivity"]],
            "one connected part or two separate parts",
        ),
        _exp(
            "E5",
            "inside",
            "global",
            [("inside", c) for c in TASKS["inside"]],
            "a dot inside or outside a closed contour",
        ),
        _exp(
            "E6",
            "global_combined",
            "global",
            [(t, c) for t in ("hole", "connectivity", "inside") for c in TASKS[t]],
            "E3, E4 and E5 in one six-way task",
        ),
        _exp(
            "E7",
            "same_curve",
            "global",
            [("curve", c) for c in TASKS["curve"]],
            "two dots on the same or on different of two interleaved rails along a random route "
            "(after Minsky and Papert's double spiral; beyond the paper: global at every scale)",
        ),
    ]
}


# no ellipse: circle vs ellipse is an aspect ratio, square vs rectangle's own cue
PRETRAINING = _exp(
    "P",
    "pretraining",
    "none",
    [("shapes10", c) for c in ("circle", "triangle", "pentagon", "hexagon", "star")],
    "the shapes10 classes no experiment uses: what the small networks' pretrained start learns first",
)


def get_experiment(name: str) -> ProbeExperiment:
    """By key (``"E3"``) or name (``"hole"``)."""
    if name in EXPERIMENTS:
        return EXPERIMENTS[name]
    for e in EXPERIMENTS.values():
        if e.name == name:
            return e
    raise KeyError(
        unknown_name_message("probe experiment", name, list(EXPERIMENTS) + [e.name for e in EXPERIMENTS.values()])
    )


class ProbeDataset(Dataset):
    """Images of one experiment (a key, a name, or a ``ProbeExperiment`` such as ``PRETRAINING``):
    ``which="train"`` (training distribution) or a transfer set — ``"style"``, ``"size"`` or
    ``"both"`` (``"transfer"`` is ``"both"``) —, ``n_per_class`` images per class, ``channels=3``
    for RGB networks, optional ImageNet normalisation (for torchvision weights). ``split`` selects
    disjoint image indices. ``dots`` holds the pixel positions of the task's dots (inside/outside:
    one, same_curve: two; NaN elsewhere)."""

    def __init__(
        self,
        experiment,
        which: str = "train",
        *,
        n_per_class: int = 100,
        size: int = 32,
        seed: int = 0,
        split: str = "train",
        channels: int = 3,
        imagenet_norm: bool = False,
    ):
        exp = experiment if isinstance(experiment, ProbeExperiment) else get_experiment(experiment)
        which = "both" if which == "transfer" else which
        if which not in ("train",) + TRANSFER_SETS:
            raise ValueError(f"which must be 'train' or a transfer set {TRANSFER_SETS}, got {which!r}")
        if n_per_class < 1:
            raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
        images, labels, dots = [], [], []
        for label, (task, cls) in enumerate(exp.sources):
            k = len(TASKS[task])
            c = TASKS[task].index(cls)
            # image j of this class: index c + k*j of the task (class = index mod k), from the split's range
            idx = SPLIT_OFFSET[split] + c + k * np.arange(n_per_class)
            kw = {} if which == "train" else _TRANSFER_KW[which](task)
            im, _, meta = make_shapes(
                task, n_per_class, size=size, seed=seed, indices=idx, return_meta=task in ("inside", "curve"), **kw
            )
            images.append(im)
            d = np.full((n_per_class, 4), np.nan)
            if task == "inside":
                d[:, :2] = [m["dot"] for m in meta]
            elif task == "curve":
                d[:] = [np.ravel(m["dots"]) for m in meta]
            dots.append(d)
            labels.append(torch.full((n_per_class,), label))
        x = torch.cat(images)
        if channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        self.images = (x * 255).round().to(torch.uint8).contiguous()
        self.labels = torch.cat(labels)
        self.dots = np.concatenate(
            dots
        )  # (n, 4) pixel x, y of the task's dots (inside: one, curve: two), NaN where there is none
        self.classes = exp.classes
        self.experiment, self.which, self.imagenet_norm = exp, which, imagenet_norm
        self._mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
        self._std = torch.tensor(IMAGENET_STD)[:, None, None]

    deterministic = True

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].float() / 255.0
        return (self._normalise(x[None])[0] if self.imagenet_norm else x), int(self.labels[i])

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._mean.to(x.device)) / self._std.to(x.device)

    def batch_source(self) -> BatchSource:
        return BatchSource(self.images, self.labels, self._normalise if self.imagenet_norm else None)

    @property
    def targets(self):
        return self.labels.tolist()

    def __repr__(self):
        return f"ProbeDataset({self.experiment.key} {self.experiment.name}, {self.which}, n={len(self)})"
