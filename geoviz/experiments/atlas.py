"""Geometry atlas: train two networks on the same data, then compare every layer of one with every
layer of the other (``geoviz.atlas.compare``), next to a floor: the same comparison with network B
untrained (its initial weights), which says how much of the layer-to-layer similarity training
made and how much the architectures and the images alone give (random networks already score high
CKA in early layers). B is initialised and trained with ``seed + 1``, so ``model_a == model_b``
compares two seeds of one architecture.

Both trainings are runs (``runs/<name>/``) and resume; the atlases are saved with the experiment's
run (``atlas.json``, ``floor.json``) and reused by a rerun only when they were measured on the
very same weights (a digest of each network's state).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from .._utils import choice, seed_everything
from ..analysis.statistics import NAN, Claim, claim_rows
from ..atlas import Atlas, compare, weights_digest
from ..config import ExperimentConfig, check_range
from ..datasets import num_classes
from ..engine import fit
from ..models import build_model, load_network
from ..models.loading import NETWORK_PREFIXES
from ..projection import METHODS as PROJECTIONS
from ..runs import RunDir, config_hash
from . import train_val_probe
from ._study import Study, StudyResult


@dataclass(frozen=True)
class AtlasConfig(ExperimentConfig):
    """Geometry atlas: ``model_a`` and ``model_b`` trained on ``dataset`` (B with ``seed + 1``), then
    compared layer × layer on ``n_images`` held-out images (CKA, kNN agreement, ``embedding`` pictures).
    Profiles: smoke, quick (resnet8 vs resnet20 on shapes10), full (torchvision ResNet-18 vs 34)."""

    dataset: str = "shapes10"
    model_a: str = "resnet8"
    model_b: str = "resnet20"
    n_train: int = 5000
    n_val: int = 500
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    n_images: int = 2000  # held-out (test split) images both networks see
    knn_images: int = 256  # of which the first ones give the local features for kNN agreement and pictures
    knn_points: int = 2000
    k: int = 10
    embedding: str = "umap"
    device: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        choice("embedding", self.embedding, PROJECTIONS)
        for key, low in (
            ("n_train", 1),
            ("n_val", 1),
            ("epochs", 1),
            ("batch_size", 1),
            ("n_images", 4),
            ("knn_images", 1),
            ("k", 1),
        ):
            check_range(key, getattr(self, key), low)
        check_range("knn_points", self.knn_points, self.k + 2)
        check_range("knn_images", self.knn_images, self.k + 2)
        check_range("lr", self.lr, 0, low_open=True)
        if self.knn_images > self.n_images:
            raise ValueError(f"knn_images ({self.knn_images}) must not exceed n_images ({self.n_images})")

    PROFILE_OVERRIDES = {
        "smoke": dict(n_train=300, n_val=100, epochs=1, n_images=128, knn_images=32, knn_points=400, embedding="pca"),
        "full": dict(
            model_a="tv:resnet18",
            model_b="tv:resnet34",
            n_train=50000,
            n_val=5000,
            epochs=30,
            batch_size=128,
            lr=0.1,
            n_images=10000,
            knn_images=512,
            knn_points=5000,
        ),
    }


@dataclass
class AtlasResult(StudyResult):
    """What ``run_atlas`` measured.

    Attributes
    ----------
    config : the study's config.
    atlas : trained A against trained B, layer × layer (``geoviz.atlas.Atlas``).
    floor : trained A against B at its initial weights (the floor).
    histories : ``(arm, seed)`` → per-epoch records, arm "A: <model>" / "B: <model>".
    summaries : arm → its ``fit`` summary.
    class_names : the data set's classes.
    metrics : the summary written to the run (best matches, mean best CKA and its floor).
    run : the run folder (also ``experiment``).
    """

    config: AtlasConfig
    atlas: Atlas
    floor: Atlas
    histories: dict[tuple[str, int], list[dict]]
    summaries: dict[str, dict]
    class_names: list[str]
    metrics: dict = field(default_factory=dict)
    run: RunDir | None = None

    @property
    def experiment(self) -> RunDir | None:
        """The run folder (the contract's name for ``run``)."""
        return self.run

    @property
    def floors(self) -> dict:
        """The mean best-match CKA against B untrained, and chance accuracy."""
        return {
            "mean_best_cka_untrained_b": self.metrics.get("mean_best_cka_floor"),
            "chance": 1.0 / max(1, len(self.class_names)),
        }

    def table(self) -> list[dict]:
        """One row per layer of A: its best match in B, CKA, kNN agreement and the floor's."""
        return list(self.metrics.get("best_match", []))

    def claims(self) -> list[Claim]:
        """Per layer of A: trained B's best match is more similar than untrained B's. One pair of
        networks and no replication over seeds: descriptive, never decided."""
        return [
            Claim(
                f"{r['layer_a']}: training made B more similar to A than B at initialisation",
                "best-match minibatch CKA, trained B minus untrained B",
                r["cka"] - r["floor_cka"],
                (NAN, NAN),
                NAN,
                self.metrics.get("n_images", 0),
                "images (one pair of networks)",
                "undecided",
                "descriptive: one pair of networks, no seeds to replicate over",
                {"layer_a": r["layer_a"], "layer_b": r["layer_b"]},
            )
            for r in self.table()
        ]

    def save_metrics(self) -> dict:
        """Write the metrics and the claims into the run's ``metrics.json``; return them."""
        return (
            self.run.write_summary(**self.metrics, claims=claim_rows(self.claims()))["summary"]
            if self.run
            else self.metrics
        )


def _summary(atlas: Atlas, floor: Atlas) -> dict:
    best, best_floor = atlas.best_match(), floor.best_match()
    return {
        "layers_a": atlas.layers_a,
        "layers_b": atlas.layers_b,
        "n_images": atlas.n_images,
        "best_match": [
            {
                "layer_a": a,
                "layer_b": b,
                "cka": c,
                "knn_agreement": atlas.knn.get((a, b)),
                "knn_random_sets": atlas.knn_chance((a, b)) if (a, b) in atlas.knn else None,
                "floor_layer_b": fb,
                "floor_cka": fc,
                "floor_knn_agreement": floor.knn.get((fa, fb)),
            }
            for (a, b, c), (fa, fb, fc) in zip(best, best_floor)
        ],
        "mean_best_cka": sum(c for *_, c in best) / len(best),
        "mean_best_cka_floor": sum(c for *_, c in best_floor) / len(best_floor),
        "seconds": atlas.seconds,
    }


def _is_zoo_name(spec: str) -> bool:
    from pathlib import Path

    return not spec.startswith(NETWORK_PREFIXES) and not Path(spec).suffix


def load_pair(
    a: str,
    b: str,
    data: str,
    *,
    weights_a=None,
    weights_b=None,
    n_images: int = 2000,
    seed: int = 0,
    download: bool = False,
    size: int | None = None,
):
    """The two networks and the images of ``geoviz atlas``: ``a`` / ``b`` are checkpoints (``.pt``),
    ``tv:`` / ``timm:`` names (with ``weights_*``: a weights name or file) or zoo names (untrained,
    built for the data's classes and channels, with ``seed`` and ``seed + 1``); ``data`` a data set
    name (its test split) or ``folder:<path>`` (the whole folder, at network A's input size).
    Returns (net_a, trained_a, net_b, trained_b, data set)."""
    from ..datasets import as_dataset
    from ..preprocessing import InputSpec

    nets = {}
    for key, spec, w, s in (("a", a, weights_a, seed), ("b", b, weights_b, seed + 1)):
        if not _is_zoo_name(spec):
            nets[key] = (
                load_network(spec, w, download=download, seed=s, size=size),
                w is not None or not spec.startswith(NETWORK_PREFIXES),
            )
    first = nets.get("a", nets.get("b", (None, None)))[0]
    spec = getattr(first, "input_spec", None) or (
        InputSpec(size) if size else None
    )  # a folder's pixel grid (224 px when None)
    dataset = as_dataset(data, split="test", n=n_images, seed=seed, spec=spec)
    for key, spec_, s in (("a", a, seed), ("b", b, seed + 1)):
        if key not in nets:
            seed_everything(s)
            nets[key] = (build_model(spec_, num_classes(dataset), in_chans=dataset[0][0].shape[0]), False)
    return (*nets["a"], *nets["b"], dataset)


def _saved_atlas(path, weights: dict) -> Atlas | None:
    """The atlas saved at ``path`` when it was measured on these very weights (and is readable)."""
    if not path.is_file():
        return None
    try:
        atlas = Atlas.load(path)
    except (ValueError, KeyError, TypeError):
        return None
    return atlas if atlas.weights == weights else None


class AtlasStudy(Study):
    """Steps: ``prepare`` (data, the run folder), ``train_pair`` (A with ``seed``, B with ``seed + 1``;
    B's initial weights kept as the floor), ``measure`` (the atlas and the floor, reused only for the
    same weights)."""

    key = "atlas"

    def steps(self) -> AtlasResult:
        cfg = self.cfg
        _, self.train, self.val, self.probe = train_val_probe(cfg)
        self.open_run(
            f"atlas-{cfg.model_a.replace(':', '_')}-{cfg.model_b.replace(':', '_')}-{cfg.dataset}-{config_hash(cfg)}"
        )
        models, summaries, initial_b = self.train_pair()
        atlases = {key: self.measure(key, models["a"], b) for key, b in (("atlas", models["b"]), ("floor", initial_b))}
        metrics = {**_summary(atlases["atlas"], atlases["floor"]), "training": summaries}
        return AtlasResult(
            cfg,
            atlases["atlas"],
            atlases["floor"],
            self.histories,
            summaries,
            list(self.train.classes),
            metrics,
            self.exp,
        )

    def train_pair(self):
        """A (seed) and B (seed + 1) trained and selected on validation; B's initial weights kept."""
        cfg, in_chans = self.cfg, self.probe[0][0].shape[0]
        models, summaries, initial_b = {}, {}, None
        for side, name in (("a", cfg.model_a), ("b", cfg.model_b)):
            # B starts from other weights than A (seed + 1): with model_a == model_b the atlas compares two seeds
            seed = cfg.seed + (side == "b")
            seed_everything(seed)
            model = build_model(name, num_classes(self.train), in_chans=in_chans)
            if side == "b":
                initial_b = copy.deepcopy(model)  # the floor: B as it was before training
            run = RunDir(f"{self.exp.name}-{side}-seed{seed}", self.run_root, reuse=self.reuse)
            res = fit(
                model,
                self.train,
                self.val,
                test=self.probe,
                epochs=cfg.epochs,
                lr=cfg.lr,
                batch_size=cfg.batch_size,
                device=self.device,
                run=run,
                seed=seed,
                progress=self.progress,
            )
            if res.best_state is not None:
                model.load_state_dict(res.best_state)  # the model selected on the validation split
            arm = f"{side.upper()}: {name}"  # two seeds of one architecture stay apart
            models[side], self.histories[(arm, seed)], summaries[f"{arm} (seed {seed})"] = (
                model,
                res.history,
                res.summary,
            )
        return models, summaries, initial_b

    def measure(self, key: str, a, b) -> Atlas:
        """A against ``b``, or the saved atlas when it was measured on these very weights."""
        cfg = self.cfg
        path = self.exp.path / f"{key}.json"
        saved = _saved_atlas(path, {"a": weights_digest(a), "b": weights_digest(b)})
        if saved is not None:
            return saved
        atlas = compare(
            a,
            b,
            self.probe,
            n_images=cfg.n_images,
            device=self.device,
            k=cfg.k,
            knn_images=cfg.knn_images,
            knn_points=cfg.knn_points,
            embedding=cfg.embedding,
            seed=cfg.seed,
            progress=self.progress,
        )
        atlas.save(path)
        return atlas


def run_atlas(cfg: AtlasConfig, *, run_root=None, progress: bool = True, reuse: str | None = None) -> AtlasResult:
    """Train two networks and compare every layer of one with every layer of the other, beside the
    floor of B untrained (``AtlasStudy``); writes ``runs/atlas-<a>-<b>-<data>-<hash>/`` and the two
    training runs beside it."""
    return AtlasStudy(cfg, run_root=run_root, progress=progress, reuse=reuse).execute()


def compare_networks(
    a: str,
    b: str,
    data: str,
    *,
    weights_a=None,
    weights_b=None,
    n_images: int = 2000,
    layers_a=("auto",),
    layers_b=("auto",),
    embedding: str | None = "umap",
    batch_size: int = 128,
    device="auto",
    seed: int = 0,
    download: bool = False,
    floor: bool = False,
):
    """``geoviz atlas`` without the report: load the two networks and the images (``load_pair``),
    compare every layer of one with every layer of the other (with ``floor``: also A against B
    untrained). Returns (atlas, floor atlas or None, a title naming what was untrained)."""
    from ..models import untrained_copy

    if n_images < 4:
        raise ValueError(f"--n-images must be at least 4, got {n_images}")
    net_a, trained_a, net_b, trained_b, images = load_pair(
        a, b, data, weights_a=weights_a, weights_b=weights_b, n_images=n_images, seed=seed, download=download
    )
    layers = lambda v: "auto" if list(v) == ["auto"] else list(v)  # noqa: E731
    kw = dict(batch_size=batch_size, device=device, embedding=embedding, seed=seed)
    atlas = compare(net_a, net_b, images, layers(layers_a), layers(layers_b), **kw)
    base = (
        compare(net_a, untrained_copy(net_b, seed + 1), images, layers(layers_a), layers(layers_b), **kw)
        if floor
        else None
    )
    untrained = [s for s, t in ((a, trained_a), (b, trained_b)) if not t]
    return (
        atlas,
        base,
        f"Geometry atlas: {a} vs {b} on {data}" + (f" ({', '.join(untrained)} untrained)" if untrained else ""),
    )
