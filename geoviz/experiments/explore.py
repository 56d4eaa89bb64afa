"""Your network on your images, no training: every explorer of geoviz on a model and an image set
the user brings (notebook 10, ``geoviz explore``).

``run_explore(cfg)`` loads the network (``models.load_network``: ``tv:``, ``timm:``, a checkpoint,
any module) and the images (``folder:<path>``, a data set name, arrays) with the network's own
input size, then, in **one streamed pass** over the images (``capture.collect``: sampled positions
of every analysed layer, each layer's pooled vector, the penultimate features and the outputs):

- the **local-feature explorer**: a 2-D picture (UMAP or PCA) of the local features of a few
  layers, each point traceable to the image patch it sees (``receptive_field``);
- **kNN class purity** of local features per layer (neighbours from other images only), against
  chance;
- **linear decodability** per layer: a logistic probe on pooled features, fitted on a stratified
  half of the images and scored on the other half, against chance, the pixel floor
  (``analysis.floors.pixel_floor``: the best cheap feature set × classifier, chosen on the training
  half) and the same architecture with random weights (``models.untrained_copy``, BatchNorm
  statistics recalibrated on the training half), each decided per layer by McNemar's test on the
  held-out images;
- **class geometry ↔ confusion** (``analysis.angles.class_geometry``): the head's class vectors
  when its classes are the data's, else class means of the penultimate features, with the Mantel test;
- the **atlas** of this network against a second one (``atlas.compare``), when ``model_b`` is given;
- **Grad-CAM** (captum) on the most-confused images.

With ``model`` / ``data`` left None (the smoke and quick profiles) the network is the quickstart's
(trained once on shapes10 and saved as a checkpoint file) and the images are shapes10 test images
written to a folder: CI walks the path a user walks. ``full`` is a torchvision ResNet-50 with its
ImageNet weights on an ImageNet-style folder under ``data/imagenet`` (see ``data/README.md``).

Results live in ``runs/explore-<network>-<hash>/``, the hash covering the config, the network's
weights and input normalisation, and the images (a folder's files: names, sizes, times; or the
pixels of images held in tensors), so a bank streamed there is never reused for other weights or
images; an interrupted pass resumes. Bad input fails in ``prepare_explore``, before the long part.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .._utils import choice, progress_bar, seed_everything
from ..analysis.angles import ClassGeometry, class_geometry
from ..analysis.cam import grad_cam
from ..analysis.floors import pixel_floor
from ..analysis.probes import held_out_probe, knn_class_purity, stratified_split
from ..analysis.statistics import NAN, Claim, claim_rows, holm_verdicts, mcnemar
from ..atlas import Atlas, compare, weights_digest
from ..capture import FeatureBank, ReceptiveField, collect, receptive_field, resolve_layers
from ..config import ExperimentConfig, check_range
from ..datasets import FolderImages, as_dataset, get_dataset, labels_of, write_image_folder
from ..models import head_classes, load_network, untrained_copy
from ..models.torchvision_models import _last_linear
from ..preprocessing import normalization_of
from ..projection import METHODS as PROJECTIONS
from ..projection import project
from ..runs import RunDir, config_hash
from ._study import Study, StudyResult

__all__ = ["ExploreConfig", "ExploreResult", "ExploreInputs", "prepare_explore", "run_explore", "explore_inputs"]

GEOMETRY_MODES = (
    "auto",
    "head",
    "means",
)  # class geometry from the head's class vectors, from class means, or whichever fits


@dataclass(frozen=True)
class ExploreConfig(ExperimentConfig):
    """Explore a network on images without training: ``model`` (+ ``weights``) on ``data``
    (``folder:<path>`` or a data set name), ``layers`` captured at ``positions_per_image`` sampled positions
    per image; ``model_b`` for the atlas. Profiles: smoke, quick (the quickstart network on shapes10
    images), full (torchvision ResNet-50 on data/imagenet)."""

    model: str | None = None  # tv:<name>, timm:<name>, a checkpoint file, a model name; None: the quickstart network
    weights: str | None = None  # a weights name ("DEFAULT") or file, for tv: / timm:
    data: str | None = None  # folder:<path> or a data set name; None: shapes10 test images written to a folder
    layers: tuple[str, ...] = ("auto",)  # the layers analysed: module paths, globs, "auto" (the blocks)
    model_b: str | None = None  # a second network for the atlas; None: the profile's ("none": no atlas)
    weights_b: str | None = None
    n_images: int = 600
    positions_per_image: int = 8
    explorer_layers: int = 4  # how many of the layers (evenly spaced, the last included) get a 2-D picture
    max_points: int = 3000  # points per picture
    projection: str = "umap"
    k: int = 10
    test_fraction: float = 0.5
    cam_images: int = 8
    random_floor: bool = True
    size: int | None = None  # input size in px; None: what the network's weights say (224 for a bare module)
    batch_size: int = 64
    download: bool = False
    # the panel floor's tree ensembles (gradient boosting, random forest): seconds per fit even on a
    # hundred images, so the smoke profile (plumbing, not claims) leaves them out
    floor_trees: bool = True
    device: str = "auto"
    quickstart_model: str = "resnet8"  # the network trained when model is None
    class_geometry: str = (
        "auto"  # "head": the head's class vectors (an error when its classes are not the images'); "means"; "auto"
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.layers, str):
            object.__setattr__(self, "layers", (self.layers,))
        choice("projection", self.projection, PROJECTIONS)
        choice("class_geometry", self.class_geometry, GEOMETRY_MODES)
        for key, low in (
            ("n_images", 8),
            ("positions_per_image", 1),
            ("explorer_layers", 1),
            ("max_points", 20),
            ("k", 1),
            ("cam_images", 0),
            ("batch_size", 1),
            ("size", 8),
        ):
            check_range(key, getattr(self, key), low)
        check_range("test_fraction", self.test_fraction, 0, 1, low_open=True)
        if self.test_fraction >= 1:
            raise ValueError(f"test_fraction must be below 1, got {self.test_fraction}")
        if not self.layers:
            raise ValueError("layers must name at least one module path, or 'auto' (the blocks)")

    @classmethod
    def from_profile(cls, profile: str | None = None, **overrides):
        """As ``ExperimentConfig.from_profile``; a network given here takes none of the profile's
        network settings (``full``'s ImageNet weights and its second network belong to its ResNet-50)."""
        cfg = super().from_profile(profile, **overrides)
        if overrides.get("model") is not None:
            cfg = cfg.replace(**{k: overrides.get(k) for k in ("weights", "model_b", "weights_b")})
        return cfg

    PROFILE_OVERRIDES = {
        "smoke": dict(
            n_images=80,
            positions_per_image=4,
            explorer_layers=2,
            max_points=300,
            projection="pca",
            cam_images=4,
            floor_trees=False,
        ),
        "full": dict(
            model="tv:resnet50",
            weights="DEFAULT",
            data="folder:data/imagenet",
            model_b="tv:resnet18",
            weights_b="DEFAULT",
            n_images=5000,
            positions_per_image=16,
            explorer_layers=4,
            max_points=10000,
            cam_images=16,
            batch_size=128,
        ),
    }


@dataclass
class ExploreResult(StudyResult):
    """What ``run_explore`` measured.

    Attributes
    ----------
    config : the study's config.
    model, model_b : the networks (``model_b`` None without a second one).
    data : the images (item i: (image in [0, 1], label)).
    class_names : the images' classes (empty when unlabelled).
    layers, explorer_layers : the captured layers, and those with pictures.
    bank : sampled local features of ``layers`` (and pooled vectors, outputs) of every image.
    coords, point_rows : per explorer layer, the 2-D picture of ``point_rows`` (rows of the bank).
    receptive_fields : per explorer layer, its ``ReceptiveField``.
    purity : {layer: (kNN class purity, chance)}.
    probes : rows per layer: held-out probe accuracy, the random network's, McNemar tests against the floors.
    floors : chance (the majority class) and the pixel floor.
    geometry : ``ClassGeometry`` (class angles against confusion) or None.
    atlas : ``Atlas`` against ``model_b`` or None.
    cams : {"rows", "maps", "targets"} of Grad-CAM.
    train, test : the probes' stratified split.
    metrics : the summary written to the run; notes : what was left out and why; seconds : per step.
    run : the run folder (also ``experiment``).
    """

    config: ExploreConfig
    model: torch.nn.Module
    data: object
    class_names: list
    layers: list
    explorer_layers: list
    bank: FeatureBank
    coords: dict
    point_rows: dict
    receptive_fields: dict[str, ReceptiveField]
    purity: dict
    probes: list
    floors: dict
    geometry: ClassGeometry | None
    atlas: Atlas | None
    cams: dict
    train: np.ndarray
    test: np.ndarray
    model_b: torch.nn.Module | None = None
    metrics: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    run: RunDir | None = None

    @property
    def labelled(self) -> bool:
        """Whether the images carry labels (probes, purity and class geometry need them)."""
        return bool(self.class_names)

    @property
    def experiment(self) -> RunDir | None:
        """The run folder (the contract's name for ``run``)."""
        return self.run

    def table(self) -> list[dict]:
        """One row per layer: held-out probe accuracy, the random network's, kNN class purity and its chance."""
        return [
            {
                "layer": r["layer"],
                "depth": r["depth"],
                "probe_accuracy": r["accuracy"],
                "random_network_accuracy": r.get("random_network_accuracy"),
                "purity": self.purity.get(r["layer"], (None, None))[0],
                "purity_chance": self.purity.get(r["layer"], (None, None))[1],
            }
            for r in self.probes
        ]

    def claims(self) -> list[Claim]:
        """Per layer: the probe beats the pixel floor, and the same layer of the random network
        (McNemar on the same held-out images, Holm over layers); class angles relate negatively to
        confusion (Mantel, class labels permuted)."""
        out = []
        for r in self.probes:
            for key, what in (
                ("vs_pixel_floor", "the pixel floor"),
                ("vs_random_network", "the random network's same layer"),
            ):
                if key in r:
                    t = r[key]
                    out.append(
                        Claim(
                            f"{r['layer']}: the held-out probe beats {what}",
                            "held-out accuracy, probe minus floor (fraction)",
                            t["accuracy_a"] - t["accuracy_b"],
                            (NAN, NAN),
                            t.get("p_holm", t["p_value"]),
                            t["n_items"],
                            "held-out images (McNemar, Holm over layers)",
                            t["verdict"],
                            conditions={"layer": r["layer"]},
                            extra={"a_only": t["a_only"], "b_only": t["b_only"]},
                        )
                    )
        g = self.geometry
        if g is not None and g.mantel is not None:
            out.append(
                Claim.from_mantel(
                    f"class angles relate negatively to confusion ({g.mode})",
                    "Mantel r, angles vs pair confusion",
                    g.mantel,
                    n_classes=len(g.class_names),
                )
            )
        return out

    def save_metrics(self) -> dict:
        """Write the metrics and the claims into the run's ``metrics.json``; return them."""
        return (
            self.run.write_summary(**self.metrics, claims=claim_rows(self.claims()))["summary"]
            if self.run
            else self.metrics
        )

    def image(self, i: int) -> torch.Tensor:
        """Image i as the network sees it (before normalisation): float (3, H, W) in [0, 1]."""
        return self.data[int(i)][0]

    @property
    def images(self) -> _Images:
        """``images[i]``: ``image(i)``, for the explorers."""
        return _Images(self.data)

    def cam_source(self, max_classes: int = 12) -> CamSource:
        """Grad-CAM on request for ``viz.CamExplorer`` (any image, either network, any class shown)."""
        return CamSource(self, max_classes=max_classes)


class _Images:
    """``images[i]`` of a data set, read when asked (the explorers show a few at a time)."""

    def __init__(self, data):
        self.data = data

    def __getitem__(self, i):
        return self.data[int(i)][0]

    def __len__(self):
        return len(self.data)

    @property
    def shape(self) -> tuple:
        return (len(self.data), *self.data[0][0].shape)


class CamSource:
    """What ``viz.CamExplorer`` reads, for an explore result: the network (and the second one, when
    there is one) as "members", the data's classes when the head's classes are the data's (else the
    head outputs the network predicts most often here), Grad-CAM computed on request."""

    image_word = "image"  # CamExplorer's titles: "on image 7"

    def __init__(self, result, *, max_classes: int = 12):
        self.result = result
        idx = head_classes(result.model, result.class_names)
        if idx is not None:
            heads, self.classes = list(idx), list(result.class_names)
        else:
            outputs = np.asarray(result.bank.outputs)
            top = np.bincount(outputs.argmax(1), minlength=outputs.shape[1]).argsort()[::-1][:max_classes]
            names = getattr(result.model, "class_names", None)
            heads = [int(t) for t in top]
            self.classes = [str(names[t]) if names else f"output {t}" for t in heads]
        self.models = {("yours", str(result.model.display_name)): result.model}
        self._heads = {("yours", str(result.model.display_name)): heads}
        b = result.model_b
        same_head = (
            b is not None
            and getattr(b, "class_names", None) is not None
            and b.class_names == getattr(result.model, "class_names", None)
        )
        heads_b = (
            head_classes(b, result.class_names) if idx is not None and b is not None else heads if same_head else None
        )
        if b is not None and heads_b is not None:  # the second network, where its head has these classes too
            self.models[("second", str(b.display_name))] = b
            self._heads[("second", str(b.display_name))] = list(heads_b)
        self.test_images = result.images
        self._head_is_data = idx is not None

    def _probs(self, key, x):
        model = self.models[key]
        with torch.no_grad():
            out = model(x.to(next(model.parameters()).device)).float().cpu()
        return torch.softmax(out[:, self._heads[key]], 1)[0].numpy()  # among the classes shown

    def cam(self, index, start, member, target):
        """Grad-CAM of one image for ``target`` (None: the predicted class) with the network's probabilities."""
        x = self.result.image(index)[None]
        key = (start, member)
        probs = self._probs(key, x)
        explained = int(np.argmax(probs)) if target is None else int(target)
        maps, _ = grad_cam(self.models[key], x, target=[self._heads[key][explained]])
        y = int(self.result.data[index][1])
        label = y if (y >= 0 and self._head_is_data) else -1  # the data's class is one of those shown
        return {"image": x[0], "map": maps[0].numpy(), "probabilities": probs, "explained": explained, "label": label}

    def member_probabilities(self, index):
        """Every network's class probabilities for image ``index``."""
        x = self.result.image(index)[None]
        return {key: self._probs(key, x) for key in self.models}


# ----------------------------------------------------------------------------- inputs
def explore_inputs(
    cfg: ExploreConfig, *, run_root=None, progress: bool = True, need_model: bool = True, need_data: bool = True
) -> tuple[str | None, str | None, str | None]:
    """(model, model_b, data) as names the loaders take. Where ``cfg`` leaves them None: the quickstart
    network of the profile saved as a checkpoint file (and, as ``model_b``, the same architecture
    trained with seed + 1: the atlas of two seeds), and the shapes10 test images written to
    ``runs/explore-images-shapes10-<n>-seed<s>/images/`` as a class-per-folder image folder.
    ``model_b`` "none" (or a user's own ``model`` with ``model_b`` None) means no atlas."""
    from .quickstart import QuickstartConfig, quickstart_network

    model, model_b, data = cfg.model, cfg.model_b, cfg.data
    quickstart = need_model and model is None
    if quickstart or (model_b is None and need_model and cfg.model is None):
        qs = QuickstartConfig.from_profile(cfg.profile, model=cfg.quickstart_model, seed=cfg.seed)
        model = str(quickstart_network(qs, run_root=run_root, progress=progress))
        if model_b is None:
            model_b = str(quickstart_network(qs.replace(seed=cfg.seed + 1), run_root=run_root, progress=progress))
    if need_data and data is None:
        test = get_dataset("shapes10", "test", n=cfg.n_images, seed=cfg.seed)
        run = RunDir(f"explore-images-shapes10-{cfg.n_images}-seed{cfg.seed}", run_root)
        run.record(made="shapes10 test images as a class-per-folder image folder")  # the code that draws them, first
        data = "folder:" + str(write_image_folder(test, run.path / "images", progress=progress))
        run.write_summary(n_images=len(test))
    return model, (None if model_b in (None, "none") else model_b), data


def _data_digest(data) -> str | None:
    """Which images: a folder's files (names, sizes, modification times) and pixel grid; the pixels
    and labels of images held in tensors (``batch_source``); None for any other data set, whose
    identity cannot be told without reading it all (its bank then stays in memory, never reused)."""
    from ..datasets._batched import batch_source

    h = hashlib.sha1()
    if isinstance(data, FolderImages):
        h.update(repr(data.spec).encode())
        for f in data.files:
            st = f.stat()
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:12]
    source = batch_source(data)
    if source is None:
        return None
    rows = source.rows if source.rows is not None else slice(None)
    for t in (source.images[rows], source.targets[rows]):
        h.update(t.contiguous().cpu().numpy().tobytes())
    h.update(repr(source.transform).encode())
    return h.hexdigest()[:12]


def _check_images(data) -> None:
    """Images must be in [0, 1]: the network normalises its own input (``load_network``), and the
    pixel floor, thumbnails and Grad-CAM overlays read the images as they are. A data set that
    normalises (torchvision's ``weights.transforms()``) is refused, saying what to do."""
    from ..datasets._batched import batch_source

    if batch_source(data) is not None:
        return  # uint8 in a tensor: [0, 1] by construction
    xs = [data[i][0] for i in range(min(8, len(data)))]
    lo, hi = min(float(x.min()) for x in xs), max(float(x.max()) for x in xs)
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"the images range from {lo:.3g} to {hi:.3g}; geoviz reads images in [0, 1] and lets the network normalise "
            "its own input: drop Normalize from the data set's transform, and load the network with "
            "load_network(model, normalize=(mean, std)) (or normalize='imagenet') if it expects normalised input"
        )


def _check_classes(images, n_images: int) -> None:
    """Every class needs two images at least (one to fit the probes, one to test them)."""
    classes = list(getattr(images, "classes", []) or [])
    if not classes:
        return
    counts = np.bincount(np.clip(labels_of(images).numpy(), 0, None), minlength=len(classes))
    short = [f"{classes[c]} ({counts[c]})" for c in np.flatnonzero(counts < 2)]
    if short:
        raise ValueError(
            f"{len(short)} of {len(classes)} classes have fewer than 2 of the {len(images)} images read "
            f"(n_images={n_images}): {', '.join(short[:6])}{', ...' if len(short) > 6 else ''}. The probes fit on half "
            "of each class and test on the other: raise n_images, or keep fewer classes in the folder"
        )


def _load(cfg: ExploreConfig, model_spec, model_b_spec, data_spec, progress: bool = True):
    model = load_network(model_spec, cfg.weights, download=cfg.download, size=cfg.size)  # size: into its input spec
    data = as_dataset(
        data_spec, n=cfg.n_images, seed=cfg.seed, spec=getattr(model, "input_spec", None), progress=progress
    )
    model_b = load_network(model_b_spec, cfg.weights_b, download=cfg.download) if model_b_spec is not None else None
    _check_images(data)
    _check_classes(data, cfg.n_images)
    return model, model_b, data


# ----------------------------------------------------------------------------- steps
def _explorer_layers(layers: list[str], n: int) -> list[str]:
    """``n`` of the layers evenly spaced in depth, the last one included."""
    if n >= len(layers):
        return list(layers)
    idx = np.unique(np.round(np.linspace(len(layers) - 1, 0, n)).astype(int))
    return [layers[i] for i in sorted(idx)]


def _penultimate(model) -> str | None:
    """``<classifier>:input`` (the features the head reads), None for a network without a linear head."""
    try:
        return _last_linear(model)[0] + ":input"
    except ValueError:
        return None


def _sample_rows(n: int, m: int, seed: int) -> np.ndarray:
    """``m`` of ``n`` rows, seeded, in random order (exact-distance ties, such as duplicate all-zero
    vectors after a ReLU, are then not broken in favour of the classes whose images come first)."""
    return np.random.default_rng(seed).permutation(n)[:m]


def _pictures(cfg, bank, layers, progress) -> tuple[dict, dict]:
    coords, rows = {}, {}
    for layer in progress_bar(layers, desc="explore: pictures", enabled=progress, leave=False):
        rows[layer] = np.sort(_sample_rows(len(bank.features[layer]), cfg.max_points, cfg.seed))
        coords[layer] = project(bank.tensor(layer, rows[layer]), cfg.projection, seed=cfg.seed)
    return coords, rows


def _purity(cfg, bank) -> tuple[dict, list]:
    """kNN class purity per layer (neighbours from other images); a layer with too few points from
    other images for k neighbours (a 1 × 1 map of a few images) is left out, and said so."""
    out, short = {}, []
    for layer in bank.layers:
        keep = _sample_rows(len(bank.features[layer]), cfg.max_points, cfg.seed)
        idx = np.asarray(bank.index[layer])[keep]
        if len(keep) - np.bincount(idx[:, 0]).max() < cfg.k:
            short.append(layer)
            continue
        out[layer] = knn_class_purity(bank.tensor(layer, keep), bank.point_labels(layer)[keep], idx[:, 0], cfg.k)
    notes = (
        [f"kNN class purity left out at {', '.join(short)}: fewer than k={cfg.k} points from other images"]
        if short
        else []
    )
    return out, notes


def _small_images(data, side: int = 64) -> torch.Tensor:
    """Every image area-downsampled to at most ``side`` px, uint8 (what the pixel floor reads: bounded memory)."""
    out = []
    for i in range(len(data)):
        x = data[i][0][None]
        if x.shape[-1] > side:
            x = torch.nn.functional.interpolate(x, size=(side, side), mode="area")
        out.append((x[0] * 255).round().to(torch.uint8))
    return torch.stack(out)


def _random_bank(cfg, model, data, layers, train, device, progress) -> FeatureBank:
    """The same architecture with random weights, its BatchNorm statistics recalibrated on the
    training images (at their initial mean 0 / variance 1 a deep random network has no
    normalisation at all, a floor too easy to beat): pooled features of every layer."""
    from torch.utils.data import Subset

    from ..inference import recalibrate_batchnorm

    rand = untrained_copy(model, seed=cfg.seed)
    recalibrate_batchnorm(rand, Subset(data, [int(i) for i in train]), batch_size=cfg.batch_size, device=device)
    return collect(rand, data, layers, pool=True, batch_size=cfg.batch_size, device=device, progress=progress)


def _probes(cfg, model, bank, data, layers, train, test, device, progress) -> tuple[list, dict, list]:
    """Per layer: the held-out probe's accuracy and, by McNemar's test on the same held-out images,
    whether it beats the pixel floor and the same layer of the random network."""
    y, notes = bank.labels, []
    counts = np.bincount(y[train], minlength=int(y.max()) + 1)
    floors = {"chance": float(np.mean(y[test] == counts.argmax()))}  # the majority class of the training half
    small = _small_images(data)
    try:
        floors["pixel"] = pixel_floor(
            small[train], y[train], small[test], y[test], seed=cfg.seed, trees=cfg.floor_trees
        )
    except ValueError as err:  # too few training images per class to choose a floor by cross-validation
        notes.append(f"pixel floor left out: {err}")
    random_bank = _random_bank(cfg, model, data, layers, train, device, progress) if cfg.random_floor else None
    if random_bank is None:
        notes.append("random-network floor left out (random_floor=False)")
    rows = []
    for i, layer in enumerate(progress_bar(layers, desc="explore: probes", enabled=progress, leave=False)):
        f = np.asarray(bank.pooled[layer], dtype=np.float64)
        right = held_out_probe(f[train], y[train], f[test], y[test])
        row = {
            "layer": layer,
            "depth": i,
            "channels": int(f.shape[1]),
            "accuracy": float(right.mean()),
            **({"vs_pixel_floor": mcnemar(right, floors["pixel"]["correct"])} if "pixel" in floors else {}),
        }
        if random_bank is not None:
            r = np.asarray(random_bank.features[layer], dtype=np.float64)
            right_random = held_out_probe(r[train], y[train], r[test], y[test])
            row["random_network_accuracy"] = float(right_random.mean())
            row["vs_random_network"] = mcnemar(right, right_random)
        rows.append(row)
    for key in (
        "vs_pixel_floor",
        "vs_random_network",
    ):  # one claim per layer: verdicts on Holm-adjusted p-values over the layers
        if rows and key in rows[0]:
            for row, adjusted in zip(rows, holm_verdicts([r[key] for r in rows])):
                row[key] = adjusted
    return rows, floors, notes


def cam_rows(geometry, n_data: int, n: int) -> list[int]:
    """The images Grad-CAM explains: half of them the most-confused pair's most confused images (when
    some pair is confused at all), the rest spread evenly over the data."""
    picks = []
    if geometry is not None:
        c = np.where(np.triu(np.ones_like(geometry.confusion, dtype=bool), 1), np.nan_to_num(geometry.confusion), -1.0)
        i, j = np.unravel_index(np.argmax(c), c.shape)  # the most confused pair (i < j)
        if c[i, j] > 0:  # no pair confused: no "most confused" images to show
            picks = [r for r, _, _ in geometry.most_confused(int(i), int(j), n // 2)]
    for r in np.linspace(0, n_data - 1, n).astype(int):
        if len(picks) < n and int(r) not in picks:
            picks.append(int(r))
    return picks


def _cams(cfg, model, data, geometry, device) -> dict:
    if cfg.cam_images == 0:
        return {"rows": [], "maps": torch.zeros(0), "targets": []}
    picks = cam_rows(geometry, len(data), cfg.cam_images)
    maps, targets = grad_cam(model.to(device), torch.stack([data[r][0] for r in picks]))
    return {"rows": picks, "maps": maps, "targets": targets.tolist()}


def _labels_of_head(model, names, classes) -> list[str]:
    return [str(names[t]) if names and t < len(names) else f"output {t}" for t in classes]


# ----------------------------------------------------------------------------- the runner
def _open_run(study, net, net_b, images, spec_a, spec_b, spec_data) -> RunDir:
    """``runs/explore-<network>-<hash>/``, the hash over the config, the weights (and the input
    normalisation, which is not in a state dict) and the image files or pixels: a bank streamed
    there is never reused for other weights or images. Images whose identity cannot be told without
    reading them all (a Dataset of unknown make) get a run of their own each time."""
    cfg, data = study.cfg, _data_digest(images)
    key = {
        "config": cfg.to_dict(),
        "model": str(spec_a),
        "weights": weights_digest(net),
        "data": data or f"unknown {time.time_ns()}",
        "input": [
            repr(getattr(n, "input_spec", None)) + repr(normalization_of(n)) for n in (net, net_b) if n is not None
        ],
        "model_b": weights_digest(net_b) if net_b is not None else None,
    }
    name = (
        "".join(ch for ch in str(net.display_name).split(" ")[0].replace(":", "_") if ch.isalnum() or ch in "_.-")[-40:]
        or "network"
    )
    return study.open_run(
        f"explore-{name}-{config_hash(key)}",
        config={
            **cfg.to_dict(),
            "model": str(spec_a),
            "model_b": spec_b,
            "data": str(spec_data),
            "weights_digest": key["weights"],
            "data_digest": data,
        },
    )


def _head_index(cfg, net, class_names) -> list[int] | None:
    """For each class of the images, the head output that stands for it (class geometry from the
    head's class vectors), or None (from class means). ``class_geometry="head"`` with a head whose
    classes are not the images' is refused, saying what to do."""
    idx = head_classes(net, class_names) if cfg.class_geometry != "means" and class_names else None
    if cfg.class_geometry == "head" and idx is None:
        shown = getattr(net, "class_names", None)
        raise ValueError(
            f"class_geometry='head' but the head's {_last_linear(net)[1].out_features} "
            f"classes{' (' + ', '.join(map(str, shown[:4])) + ', ...)' if shown else ' (unnamed)'} "
            f"do not include every class of the images ({', '.join(class_names[:6])}): name the "
            "class folders as the head's classes (or by WordNet id for an ImageNet head), or use "
            "class_geometry='means' (class means of the penultimate features)"
        )
    return idx


def _geometry(cfg, net, bank, labels, class_names, train, test, penultimate, head_index) -> ClassGeometry:
    feats = bank.pooled[penultimate] if penultimate else bank.pooled[bank.layers[-1]]
    weight = _last_linear(net)[1].weight.detach().cpu() if head_index is not None else None
    return class_geometry(
        labels,
        class_names,
        features=feats,
        outputs=bank.outputs,
        head_index=head_index,
        head_weight=weight,
        train=train,
        test=test,
        seed=cfg.seed,
    )


def _labelled_analyses(
    cfg, net, bank, images, layers, labels, class_names, penultimate, head_index, device, progress
) -> dict:
    """The split, purity, probes with their floors and class geometry (images with labels only)."""
    train, test = stratified_split(labels, cfg.test_fraction, cfg.seed)
    out = {"train": train, "test": test, "geometry": None}
    out["purity"], purity_notes = _purity(cfg, bank)
    out["probes"], out["floors"], out["notes"] = _probes(cfg, net, bank, images, layers, train, test, device, progress)
    out["notes"] += purity_notes
    if len(class_names) >= 3:
        out["geometry"] = _geometry(cfg, net, bank, labels, class_names, train, test, penultimate, head_index)
    else:
        out["notes"].append("class geometry left out: it needs 3 classes or more")
    return out


def _atlas(cfg, net, net_b, images, device, progress) -> Atlas | None:
    if net_b is None:
        return None
    atlas = compare(
        net,
        net_b.to(device),
        images,
        "auto",
        "auto",
        n_images=min(len(images), 2000),
        batch_size=cfg.batch_size,
        device=device,
        knn_images=min(len(images), 256),
        embedding=cfg.projection,
        seed=cfg.seed,
        progress=progress,
    )
    short = lambda n: str(n.display_name).split(" · ")[0].split(" (")[0]  # noqa: E731  (the full names are in the summary)
    atlas.name_a, atlas.name_b = f"A: {short(net)}", f"B: {short(net_b)}"
    return atlas


@dataclass
class ExploreInputs:
    """What ``prepare_explore`` loaded and checked: the networks, the images, what they were called."""

    net: torch.nn.Module
    net_b: torch.nn.Module | None
    images: object
    spec_a: str
    spec_b: str | None
    spec_data: str
    layers: list
    head_index: list | None


def prepare_explore(
    cfg: ExploreConfig, *, run_root=None, progress: bool = True, model=None, data=None
) -> ExploreInputs:
    """Load and check everything ``run_explore`` needs, so that bad input (a missing folder or weights
    file, an unknown layer, a head that does not fit) fails here, before any long computation.
    ``model`` (an ``nn.Module``) and ``data`` (a Dataset or arrays) replace ``cfg.model`` / ``cfg.data``."""
    spec_a, spec_b, spec_data = explore_inputs(
        cfg, run_root=run_root, progress=progress, need_model=model is None, need_data=data is None
    )
    net, net_b, images = _load(
        cfg, model if model is not None else spec_a, spec_b, data if data is not None else spec_data, progress
    )
    class_names = list(getattr(images, "classes", []) or [])
    return ExploreInputs(
        net,
        net_b,
        images,
        spec_a if model is None else net.display_name,
        spec_b,
        spec_data if data is None else type(images).__name__,
        resolve_layers(net, list(cfg.layers)),
        _head_index(cfg, net, class_names) if len(class_names) >= 3 else None,
    )


class ExploreStudy(Study):
    """Steps: ``prepare_explore`` (load and check), ``collect`` (one streamed pass), the pictures and
    receptive fields, the labelled analyses (probes and floors, purity, class geometry), the atlas
    against a second network, Grad-CAM. Nothing is trained."""

    key = "explore"

    def __init__(self, cfg, *, model=None, data=None, inputs: ExploreInputs | None = None, **kw):
        super().__init__(cfg, **kw)
        self.model, self.data, self.inputs = model, data, inputs

    def steps(self) -> ExploreResult:
        cfg = self.cfg
        seed_everything(cfg.seed)
        self._clock = [time.perf_counter()]
        inp = self.inputs or prepare_explore(
            cfg, run_root=self.run_root, progress=self.progress, model=self.model, data=self.data
        )
        net, images = inp.net.to(self.device), inp.images
        run = _open_run(self, net, inp.net_b, images, inp.spec_a, inp.spec_b, inp.spec_data)
        seconds = {"load": self._lap()}
        bank = self.capture(inp, net, run)
        seconds["capture"] = self._lap()
        shown = _explorer_layers(bank.layers, cfg.explorer_layers)
        coords, point_rows = _pictures(cfg, bank, shown, self.progress)
        rfs = {layer: receptive_field(net, layer, tuple(images[0][0].shape[-2:])) for layer in shown}
        seconds["pictures"] = self._lap()
        found, class_names = self.analyses(inp, net, bank)
        seconds["probes_and_geometry"] = self._lap()
        atlas = _atlas(cfg, net, inp.net_b, images, self.device, self.progress)
        seconds["atlas"] = self._lap()
        cams = _cams(cfg, net, images, found["geometry"], self.device)
        seconds["cams"] = self._lap()
        res = ExploreResult(
            cfg, net, images, class_names, bank.layers, shown, bank, coords, point_rows, rfs, found["purity"],
            found["probes"], found["floors"], found["geometry"], atlas, cams, found["train"], found["test"], inp.net_b,
            notes=found["notes"], seconds=seconds, run=run,
        )  # fmt: skip
        res.metrics = _summary(res, inp.spec_a, inp.spec_b, inp.spec_data)
        return res

    def _lap(self) -> float:
        self._clock.append(time.perf_counter())
        return round(self._clock[-1] - self._clock[-2], 2)

    def capture(self, inp: ExploreInputs, net, run: RunDir) -> FeatureBank:
        """One streamed pass: sampled positions of every layer, pooled vectors (and the penultimate
        input), the outputs. A module that runs several times per forward is one layer per call (name#k)."""
        cfg, penultimate = self.cfg, _penultimate(net)
        return collect(
            net, inp.images, inp.layers, positions_per_image=cfg.positions_per_image,
            pooled=inp.layers + ([penultimate] if penultimate else []), outputs=True, batch_size=cfg.batch_size,
            device=self.device, seed=cfg.seed, progress=self.progress, out_dir=run.path / "bank",
        )  # fmt: skip

    def analyses(self, inp: ExploreInputs, net, bank: FeatureBank) -> tuple[dict, list]:
        """Probes with their floors, purity and class geometry where the images carry labels; notes
        on what was left out. Returns (what was found, the class names, empty for unlabelled images)."""
        images = inp.images
        class_names, labels = list(getattr(images, "classes", []) or []), labels_of(images).numpy()
        labelled = bool(class_names) and (labels >= 0).all() and len(np.unique(labels)) >= 2
        empty = np.arange(0)
        unlabelled = "the images carry no labels: probes, purity, class geometry and their floors need class folders"
        found = dict(train=empty, test=empty, purity={}, probes=[], floors={}, geometry=None, notes=[unlabelled])
        if labelled:
            found = _labelled_analyses(self.cfg, net, bank, images, bank.layers, labels, class_names, _penultimate(net),
                                       inp.head_index, self.device, self.progress)  # fmt: skip
        spec, size = getattr(net, "input_spec", None), tuple(images[0][0].shape[-2:])
        if spec is not None and size != (spec.size, spec.size):
            found["notes"].append(
                f"the images are {size[0]} × {size[1]} px, the network's weights expect {spec.size} px: images given "
                "as arrays or a Dataset are used as they are (a folder would be resized)"
            )
        return found, class_names if labelled else []


def run_explore(
    cfg: ExploreConfig,
    *,
    run_root=None,
    progress: bool = True,
    model=None,
    data=None,
    inputs: ExploreInputs | None = None,
    reuse: str | None = None,
) -> ExploreResult:
    """Every analysis of the module docstring on ``cfg``'s network and images (``inputs`` from
    ``prepare_explore``, loaded here when not given; ``model`` / ``data`` as there); writes
    ``runs/explore-<network>-<hash>/`` (the hash covers the weights and the images)."""
    return ExploreStudy(
        cfg, run_root=run_root, progress=progress, reuse=reuse, model=model, data=data, inputs=inputs
    ).execute()


def _summary(res: ExploreResult, spec_a, spec_b, spec_data) -> dict:
    m = res.model
    out = {
        "model": str(spec_a),
        "display_name": str(m.display_name),
        "model_b": spec_b,
        "display_name_b": str(res.model_b.display_name) if res.model_b is not None else None,
        "data": str(spec_data),
        "n_images": len(res.data),
        "classes": res.class_names,
        "layers": res.layers,
        "explorer_layers": res.explorer_layers,
        "input_spec": m.input_spec.to_dict() if getattr(m, "input_spec", None) is not None else None,
        "head_classes": len(m.class_names) if getattr(m, "class_names", None) else None,
        "purity": {k: {"purity": p, "chance": c} for k, (p, c) in res.purity.items()},
        "probes": res.probes,
        "floors": {
            k: ({kk: vv for kk, vv in v.items() if kk != "correct"} if isinstance(v, dict) else v)
            for k, v in res.floors.items()
        },
        "seconds": res.seconds,
        "notes": res.notes,
        "images_per_second": round(len(res.data) / max(1e-9, sum(res.seconds.values())), 2),
    }
    if isinstance(res.data, FolderImages):
        out["folder"] = res.data.describe()
    if res.geometry is not None:
        out["class_geometry"] = res.geometry.summary()
    if res.atlas is not None:
        out["atlas"] = {"best_match": res.atlas.best_match(), "knn": [[a, b, v] for (a, b), v in res.atlas.knn.items()]}
    if res.cams["rows"]:
        out["cams"] = {
            "rows": res.cams["rows"],
            "targets": _labels_of_head(m, getattr(m, "class_names", None), res.cams["targets"]),
        }
    return out
