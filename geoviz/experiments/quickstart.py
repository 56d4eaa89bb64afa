"""Quickstart: train a small CNN on shapes10, capture local features of two layers, project them.

The result holds everything the notebook shows: training history, a feature bank of sampled
positions on held-out images, their 2-D projection per layer, each layer's receptive field, and
geometric measures per layer:

- ``knn_class_purity``: fraction of each point's k nearest neighbours (in feature space) that
  come from an image of the same class — how class-organised the layer's local geometry is;
- ``projection_knn_agreement``: ``knn_agreement`` between the features and their 2-D projection —
  how faithfully the picture keeps the neighbourhoods it shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .._utils import choice
from ..capture import FeatureBank, ReceptiveField, collect, receptive_field, resolve_layers
from ..config import ExperimentConfig, check_range
from ..datasets import num_classes
from ..engine import FitResult, fit
from ..geometry import knn, knn_agreement
from ..models import build_model, save_model
from ..preprocessing import InputSpec
from ..projection import METHODS as PROJECTIONS
from ..projection import project
from ..runs import RunDir, config_hash
from . import train_val_probe


@dataclass(frozen=True)
class QuickstartConfig(ExperimentConfig):
    """The quickstart: ``model`` trained on ``dataset`` for ``epochs``, then local features of ``layers``
    on ``n_images`` held-out images projected with ``projection``. Profiles: smoke, quick, full."""

    dataset: str = "shapes10"
    model: str = "resnet8"
    layers: tuple[str, ...] = ("layer1", "layer3")
    n_train: int = 5000
    n_val: int = 500
    n_images: int = 150  # held-out images whose local features are captured
    positions_per_image: int = 8
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    projection: str = "umap"
    n_neighbors: int = 15
    k: int = 10  # neighbourhood size of the geometric measures
    device: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        choice("projection", self.projection, PROJECTIONS)
        if not self.layers:
            raise ValueError("layers must name at least one module path, e.g. ('layer1', 'layer3')")
        for key, low in (
            ("n_train", 1),
            ("n_val", 1),
            ("n_images", 3),
            ("positions_per_image", 1),
            ("epochs", 1),
            ("batch_size", 1),
            ("n_neighbors", 2),
            ("k", 1),
        ):
            check_range(key, getattr(self, key), low)
        check_range("lr", self.lr, 0, low_open=True)

    PROFILE_OVERRIDES = {
        "smoke": dict(n_train=400, n_val=100, n_images=40, positions_per_image=6, epochs=1),
        "full": dict(
            model="resnet20",
            n_train=50000,
            n_val=5000,
            n_images=2000,
            positions_per_image=16,
            epochs=30,
            batch_size=128,
            lr=0.1,
        ),
    }


@dataclass
class QuickstartResult:
    """What ``run_quickstart`` measured: the fit result, the feature bank, 2-D coordinates and
    receptive fields per layer, the images and class names, the metrics written to the run."""

    config: QuickstartConfig
    fit: FitResult
    bank: FeatureBank
    coords: dict[str, np.ndarray]
    receptive_fields: dict[str, ReceptiveField]
    images: torch.Tensor  # the captured images, (n_images, C, H, W) in [0, 1]
    class_names: list[str]
    metrics: dict = field(default_factory=dict)
    run: RunDir | None = None

    def save_metrics(self) -> dict:
        """Write the run's summary (``metrics.json``) and return it."""
        return self.run.write_summary(**self.metrics)["summary"] if self.run else self.metrics


def _train(cfg: QuickstartConfig, run_root, progress: bool, reuse: str | None = None):
    """The quickstart network trained (or its finished run resumed): (model in eval mode, fit result,
    run, device, training set, held-out set)."""
    device, train, val, probe = train_val_probe(cfg)
    in_chans = probe[0][0].shape[0]
    model = build_model(cfg.model, num_classes(train), in_chans=in_chans)
    resolve_layers(model, list(cfg.layers))  # an unknown layer fails now, with the closest names, not after training
    run = RunDir(f"quickstart-{cfg.model}-{cfg.dataset}-{config_hash(cfg)}", run_root, reuse=reuse)
    run.write_config(cfg)
    run.record(study="quickstart", device=str(device), seeds=[cfg.seed])
    if run.describe_reuse():
        print(run.describe_reuse())
    result = fit(
        model,
        train,
        val,
        test=probe,
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        device=device,
        run=run,
        seed=cfg.seed,
        progress=progress,
    )
    return model.eval(), result, run, device, train, probe  # the model is for analysis


def quickstart_network(
    cfg: QuickstartConfig, *, run_root=None, progress: bool = True, reuse: str | None = None
) -> Path:
    """Train the quickstart network once and save it as ``runs/<run>/model.pt`` with its class names
    and input size (a file ``models.load_network`` reads, as it reads a user's checkpoint); a finished
    run is not trained again. Returns the file."""
    model, _, run, _, train, probe = _train(cfg, run_root, progress, reuse)
    path = run.path / "model.pt"
    size = int(probe[0][0].shape[-1])
    save_model(
        model,
        path,
        class_names=list(train.classes),
        input_spec=InputSpec(size, source=f"trained on {cfg.dataset} at {size} px"),
    )
    return path


def run_quickstart(
    cfg: QuickstartConfig, *, run_root=None, progress: bool = True, reuse: str | None = None
) -> QuickstartResult:
    """Train the quickstart network (or reuse its finished run), capture local features of held-out
    images at ``cfg.layers``, project them and measure kNN class purity; writes
    ``runs/quickstart-<model>-<data>-<hash>/``."""
    model, result, run, device, train, probe = _train(cfg, run_root, progress, reuse)
    bank = collect(
        model,
        probe,
        list(cfg.layers),
        positions_per_image=cfg.positions_per_image,
        seed=cfg.seed,
        device=device,
        progress=progress,
    )
    size = probe[0][0].shape[-2:]
    rfs = {layer: receptive_field(model, layer, tuple(size)) for layer in bank.layers}
    coords, metrics = {}, dict(result.summary)
    for layer in bank.layers:
        feats = bank.tensor(layer)
        coords[layer] = project(feats, cfg.projection, n_neighbors=cfg.n_neighbors, seed=cfg.seed)
        _, nn_idx = knn(feats, cfg.k)
        lab = torch.from_numpy(bank.point_labels(layer))
        metrics[f"knn_class_purity/{layer}"] = (lab[nn_idx] == lab[:, None]).float().mean().item()
        metrics[f"projection_knn_agreement/{layer}"] = knn_agreement(
            feats, torch.from_numpy(coords[layer]), cfg.k
        ).item()
        metrics[f"receptive_field_px/{layer}"] = list(rfs[layer].size)
    frac = np.bincount(bank.labels) / bank.n_images
    metrics["chance_knn_class_purity"] = float((frac**2).sum())  # two random points share a class
    images = torch.stack([probe[i][0] for i in range(bank.n_images)])
    return QuickstartResult(cfg, result, bank, coords, rfs, images, list(train.classes), metrics, run)
