"""Ensembles of CNNs with knowledge transfer for leather defects (paper 2, Aslam et al. 2020).

Several CNNs, pre-trained on a source task, are fine-tuned to classify defect types and combined.
Per seed and start: every member (zoo networks of different families) is trained on the defect
training set, either from weights trained once on the source task (``transfer``: shapes10, a
procedural shape task, at the same image size; fine-tuning the whole network or only its last
stage and head) or from random initialisation (``scratch``); members are scored at their last
epoch. Their probabilities on the validation split fit the fused rules that need fitting (weights,
stacking) — validation never chose a checkpoint — and on the test split give each member's and
each fusion's accuracy, confusion matrices and the members' pairwise diversity.

Claims, paired by seed (t interval, three-valued): transfer beats scratch (each member, and the
mean-fused ensemble); the ensemble beats its best member, the best chosen on validation (each
start × fusion rule); every member beats the panel floor. The floors: chance, and the panel floor
(``analysis.floors.panel_floor``: the best of cheap feature sets — pixels, colour histograms,
whole-image and texture statistics — × classifiers, chosen by cross-validation on training images).
What the seeds vary: the members' initialisation (heads included) and data order; the source
networks (one per member family) and the data sets are the same for every seed, so the intervals
hold for these images and these source networks. Many claims at 95 % each: read them as a family
(no multiplicity correction).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._io import atomic_save_npz, load_npz
from .._utils import eval_mode
from ..analysis.floors import panel_floor
from ..analysis.statistics import Claim, claim_rows, mean_std, paired_difference
from ..config import ExperimentConfig
from ..datasets import get_dataset
from ..datasets.probe_tasks import IMAGENET_MEAN, IMAGENET_STD
from ..datasets.shapes import ShapesDataset
from ..inference import predict
from ..methods.ensemble import FUSIONS, Ensemble, mean_pairwise, pairwise_diversity
from ..models import build_model, load_backbone, load_state
from ..runs import RunDir, config_hash
from . import pretrained_once
from ._study import ExecutionOptions, Study, StudyResult
from .executors import RunUnit

if TYPE_CHECKING:
    from typing_extensions import Unpack

STARTS = ("transfer", "scratch")
FINETUNE = ("all", "last")
SOURCES = ("shapes10", "imagenet")


@dataclass(frozen=True)
class EnsemblesConfig(ExperimentConfig):
    """Ensembles study (paper 2): ``members`` fine-tuned from ``source`` (shapes10 or ImageNet weights)
    and from scratch on ``dataset`` (leather defects), fused by ``fusions``, per seed. Profiles: smoke,
    quick (procedural leather), full (MVTec AD leather from data/, torchvision members)."""

    dataset: str = "leather"  # or "mvtec_leather", "defect_folder" (files in data/)
    # quick is a fixed, small budget (≤ 5 min on 2 CPU cores): members from scratch have barely
    # left chance at its end (the table counts the members still learning and at chance). The
    # longer CPU reference (48 px, 1,600 training images, 60 epochs, 29 min): resnet8 from
    # scratch 0.25 test accuracy after 30 epochs, 0.56 after 60.
    image_size: int = 32
    n_train: int = 600
    n_val: int = 240
    n_test: int = 480
    members: tuple = ("resnet8", "wrn_16_1", "resnet14")
    starts: tuple = STARTS
    finetune: str = "all"  # "last": only the last stage and the head are trained after transfer
    epochs: int = 20
    lr: float = 0.05
    batch_size: int = 32
    source_n: int = 2000  # shapes10 images for the source task
    source_epochs: int = 6
    source: str = (
        "shapes10"  # "imagenet": torchvision members (tv:...) start from ImageNet weights read from a local file
    )
    source_weights: str = (
        "DEFAULT"  # with source="imagenet": a torchvision weights name (the local hub cache) or a .pth file
    )
    fusions: tuple = FUSIONS
    seeds: tuple = (0, 1, 2)
    floor_n: int = 1200
    confidence: float = 0.95
    # the panel floor's tree ensembles (gradient boosting, random forest): seconds per fit even on a
    # hundred images, so the smoke profile (plumbing, not claims) leaves them out
    floor_trees: bool = True
    device: str = "auto"

    PROFILE_OVERRIDES = {
        "smoke": dict(
            floor_trees=False,
            image_size=32,
            n_train=64,
            n_val=48,
            n_test=48,
            members=("resnet8", "resnet14"),
            epochs=1,
            source_n=100,
            source_epochs=1,
            seeds=(0, 1),
            floor_n=96,
        ),
        "full": dict(
            image_size=96,
            n_train=8000,
            n_val=1600,
            n_test=3200,
            members=("tv:resnet18", "wrn_16_2", "vgg11", "mobilenetv2"),
            epochs=80,
            source_n=20000,
            source_epochs=30,
            batch_size=128,
            seeds=(0, 1, 2, 3, 4),
            floor_n=8000,
        ),
    }

    def __post_init__(self):
        super().__post_init__()
        bad = [s for s in self.starts if s not in STARTS]
        if bad or not self.starts:
            raise ValueError(f"unknown starts {bad}; allowed: {STARTS}")
        bad = [f for f in self.fusions if f not in FUSIONS]
        if bad or not self.fusions:
            raise ValueError(f"unknown fusions {bad}; allowed: {FUSIONS}")
        if self.finetune not in FINETUNE:
            raise ValueError(f"finetune must be one of {FINETUNE}, got {self.finetune!r}")
        if len(self.members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {self.members}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "imagenet" and not all(m.startswith("tv:") for m in self.members):
            raise ValueError(f"source='imagenet' needs torchvision members ('tv:resnet18', ...); got {self.members}")


@dataclass
class EnsemblesResult(StudyResult):
    """What ``run_ensembles`` measured.

    Attributes
    ----------
    config : the study's config.
    rows : per (seed, start, name): kind member | fusion, test accuracy (and validation accuracy for members).
    diversity : per (seed, start): mean pairwise disagreement, Q, error correlation; gains over the best member.
    floors : chance, ``panel`` (the panel floor's test accuracy), ``panel_member`` (the feature set /
        classifier chosen on the training images) and ``panel_cv`` (the panel's cross-validation table).
    classes : class names.
    histories : ``(arm, seed)`` → per-epoch records, arm "<member> (<start>)".
    confusion : first seed: (start, name) → (C, C) counts, rows true.
    models : first seed: (start, member) → model (for the CAMs).
    test_images, test_labels : the test split.
    source_val_acc : member → the source network's last validation accuracy on shapes10.
    experiment : the run folder.
    """

    config: EnsemblesConfig
    rows: list[dict]  # per (seed, start, name): kind member | fusion, test accuracy (and val accuracy for members)
    diversity: list[dict]  # per (seed, start): mean pairwise disagreement, Q, error correlation; gains
    floors: dict
    classes: list
    histories: dict
    confusion: dict = field(default_factory=dict)  # first seed: (start, name) → (C, C) counts, rows true
    models: dict = field(default_factory=dict)  # first seed: (start, member) → model (for the CAMs)
    test_images: torch.Tensor | None = None
    test_labels: np.ndarray | None = None
    source_val_acc: dict = field(
        default_factory=dict
    )  # member → the source network's last validation accuracy on shapes10
    experiment: RunDir | None = None

    def table(self) -> list[dict]:
        """Per (start, name): test accuracy, mean ± std over seeds."""
        out = []
        for key in dict.fromkeys((r["start"], r["name"], r["kind"]) for r in self.rows):
            rs = [r for r in self.rows if (r["start"], r["name"], r["kind"]) == key]
            m, s = mean_std([r["acc"] for r in rs])
            row = {"start": key[0], "name": key[1], "kind": key[2], "acc": m, "acc_std": s, "n": len(rs)}
            if key[2] == "member":
                row.update(self._end_of_training(key[0], key[1]))
            out.append(row)
        return out

    def _end_of_training(self, start: str, member: str) -> dict:
        """How many seeds' runs of a member were still learning, and how many ended at chance
        (None where the histories are too short to tell)."""
        hs = [self.histories.get((f"{member} ({start})", sd), []) for sd in self.config.seeds]
        n_val, chance = self.config.n_val, self.floors.get("chance", 0.0)

        def count(flags):
            return None if any(f is None for f in flags) else sum(flags)

        return {
            "still_learning": count([still_learning(h, n_val) for h in hs]),
            "at_chance": count([at_chance(h, n_val, chance) for h in hs]),
        }

    def _per_seed(self, start, name):
        return [
            next(r["acc"] for r in self.rows if r["seed"] == sd and r["start"] == start and r["name"] == name)
            for sd in self.config.seeds
        ]

    def claims(self) -> list[Claim]:
        """Transfer beats scratch per member (and the mean ensemble); every member beats the
        panel floor; each fusion beats its best member (chosen on validation). Paired by seed."""
        cfg, out = self.config, []
        res = 1.0 / max(1, len(self.test_labels)) if self.test_labels is not None else 0.0

        def claim(text, a, b, metric="test accuracy, the first minus the second (fraction)"):
            d = paired_difference(a, b, confidence=cfg.confidence, resolution=res) if len(cfg.seeds) > 1 else None
            out.append(Claim.from_paired(text, metric, d, n=len(cfg.seeds)))

        if set(STARTS) <= set(cfg.starts):
            tune = (
                f"from {cfg.source}, "
                + ("whole network" if cfg.finetune == "all" else "last stage only")
                + f"; epochs: {cfg.epochs}"
            )
            for name in (*cfg.members, *(["mean"] if "mean" in cfg.fusions else [])):
                what = "the mean-fused ensemble" if name == "mean" else name
                claim(
                    f"transfer ({tune}) beats scratch: {what} (test accuracy, transfer minus scratch)",
                    self._per_seed("transfer", name),
                    self._per_seed("scratch", name),
                )
                if name != "mean":  # a verdict between runs that had not finished learning holds at this budget only
                    t, sc = self._end_of_training("transfer", name), self._end_of_training("scratch", name)
                    out[-1] = _with_end_of_training(out[-1], {"transfer": t, "scratch": sc})
        for start in cfg.starts:  # every member must clear the panel floor
            for name in cfg.members:
                acc = self._per_seed(start, name)
                claim(
                    f"{start}: {name} beats the panel floor ({self.floors['panel']:.3f})",
                    acc,
                    [self.floors["panel"]] * len(acc),
                )
        for start in cfg.starts:
            best = [best_member(self.rows, sd, start)["acc"] for sd in cfg.seeds]
            for f in cfg.fusions:
                claim(
                    f"{start}: the {f} ensemble beats its best member (chosen on validation)",
                    self._per_seed(start, f),
                    best,
                )
        return out

    def diversity_vs_gain(self, fusion: str = "mean") -> dict:
        """Spearman's rank correlation of the members' mean pairwise disagreement with the
        ensemble's gain over its best member, over every (seed, start): descriptive."""
        from scipy.stats import spearmanr

        x = [d["disagreement"] for d in self.diversity]
        y = [d[f"gain_{fusion}"] for d in self.diversity]
        if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            return {"fusion": fusion, "n": len(x), "rho": float("nan"), "p": float("nan")}
        r = spearmanr(x, y)
        return {"fusion": fusion, "n": len(x), "rho": float(r.statistic), "p": float(r.pvalue)}

    def member_probabilities(self, index: int) -> dict:
        """Every kept member's (first seed) class probabilities for test image ``index``."""
        x = self.test_images[index : index + 1]
        return {key: _class_probabilities(model, x)[0] for key, model in self.models.items()}

    def cam(self, index: int, start: str, member: str, target: int | None = None) -> dict:
        """Grad-CAM (captum) of one member (first seed) on test image ``index`` for ``target``
        (None: the member's predicted class), with the member's probabilities."""
        from ..analysis.cam import grad_cam

        if (start, member) not in self.models:
            raise KeyError(f"no model for ({start!r}, {member!r}); kept: {sorted(self.models)}")
        x, model = self.test_images[index : index + 1], self.models[(start, member)]
        maps, explained = grad_cam(model, x, target)
        return {
            "image": x[0],
            "map": maps[0].numpy(),
            "probabilities": _class_probabilities(model, x)[0],
            "explained": int(explained[0]),
            "label": int(self.test_labels[index]),
        }

    def summary(self) -> dict:
        """The table, the claims, floors, diversity and its relation to gain, and the confusion matrices."""
        return {
            "table": self.table(),
            "claims": claim_rows(self.claims()),
            "floors": self.floors,
            "diversity": self.diversity,
            "classes": self.classes,
            "diversity_vs_gain": {f: self.diversity_vs_gain(f) for f in self.config.fusions},
            "source_val_acc": self.source_val_acc,
            "confusion": {f"{s}/{n}": c.tolist() for (s, n), c in self.confusion.items()},
        }


def _with_end_of_training(c: Claim, end: dict) -> Claim:
    """``c`` with how many seeds' runs were still learning or at chance, in its note and extra."""
    note = "; ".join(
        f"{s}: {end[s]['still_learning']} still learning, {end[s]['at_chance']} at chance"
        for s in ("transfer", "scratch")
        if end[s]["still_learning"] is not None
    )
    return Claim(
        c.claim,
        c.metric,
        c.mean,
        c.interval,
        c.p,
        c.n,
        c.unit,
        c.verdict,
        "; ".join(x for x in (c.note, note) if x),
        c.conditions,
        {**c.extra, "end_of_training": end},
    )


def still_learning(history: list[dict], n_val: int, key: str = "val_acc") -> bool | None:
    """Was the run still rising at its end? The least-squares rise of ``key`` over the last fifth
    of the epochs (at least 3) exceeds twice its standard deviation under binomial noise alone
    (each accuracy's se √(p(1−p)/n_val); the fitted rise over k epochs then has sd
    se·(k−1)·√(12 / (k(k²−1)))). None under 3 epochs. Under a cosine schedule the last epochs
    have a small learning rate, so a rise there is still learning."""
    v = np.array([h[key] for h in history if key in h], float)
    if len(v) < 3:
        return None
    k = max(3, int(np.ceil(len(v) / 5)))
    w = v[-k:]
    p = float(np.clip(w.mean(), 1.0 / n_val, 1 - 1.0 / n_val))
    rise = np.polyfit(np.arange(k), w, 1)[0] * (k - 1)
    sd = np.sqrt(p * (1 - p) / n_val) * (k - 1) * np.sqrt(12.0 / (k * (k * k - 1)))
    return bool(rise > 2 * sd)


def at_chance(history: list[dict], n_val: int, chance: float, key: str = "val_acc") -> bool | None:
    """Did the run end at chance? Its last validation accuracy below chance plus two standard
    errors of a chance-level accuracy on ``n_val`` images (None: no validation)."""
    v = [h[key] for h in history if key in h]
    if not v:
        return None
    return bool(v[-1] < chance + 2 * np.sqrt(chance * (1 - chance) / n_val))


def best_member(rows: list[dict], seed: int, start: str) -> dict:
    """The member row of (seed, start) with the highest validation accuracy: chosen on
    validation, scored on test."""
    return max(
        (r for r in rows if r["seed"] == seed and r["start"] == start and r["kind"] == "member"),
        key=lambda r: r["val_acc"],
    )


def class_gallery(cfg: EnsemblesConfig, per_class: int = 3) -> tuple[list, list[str]]:
    """The first ``per_class`` test images of every class (class order), with their class names."""
    test = get_dataset(cfg.dataset, "test", n=cfg.n_test, size=cfg.image_size)
    labels = test.labels.numpy()
    picked = [i for c in range(len(test.classes)) for i in np.flatnonzero(labels == c)[:per_class]]
    return [test.images[i] for i in picked], [test.classes[labels[i]] for i in picked]


def build_member(cfg: EnsemblesConfig, member: str, num_classes: int, start: str, source_file: str | None = None):
    """A member before fine-tuning: random (``scratch``), or (``transfer``) from the source network
    (``source_file``, head dropped) or, with ``source="imagenet"``, from ImageNet weights read from a
    local file (torchvision members); with ``finetune="last"`` everything before the last stage frozen."""
    if start == "scratch":
        net = build_model(member, num_classes)
    elif cfg.source == "imagenet":
        net = build_model(
            member, num_classes, weights=cfg.source_weights
        )  # never downloads: a missing file says where to put it
    else:
        net = load_backbone(build_model(member, num_classes), source_file)
    if cfg.source == "imagenet":  # both arms see the inputs as ImageNet's weights expect them
        _normalise_inputs(net, IMAGENET_MEAN, IMAGENET_STD)
    if start == "transfer" and cfg.finetune == "last":
        _freeze_all_but_last(net)
    return net


def _normalise_inputs(net, mean, std) -> None:
    """(x − mean) / std per channel inside the model (a forward pre-hook with buffers), so every
    caller — training, prediction, Grad-CAM — gives it images in [0, 1]."""
    net.register_buffer("input_mean", torch.tensor(mean, dtype=torch.float32)[None, :, None, None])
    net.register_buffer("input_std", torch.tensor(std, dtype=torch.float32)[None, :, None, None])
    net.register_forward_pre_hook(_standardise)


def _standardise(module, args):
    return ((args[0] - module.input_mean) / module.input_std, *args[1:])


def _check_members(cfg: EnsemblesConfig, num_classes: int) -> None:
    """Fail before any training where a member cannot be built as asked: ImageNet weights
    missing, or ``finetune="last"`` on a network whose stages are not its children."""
    if "transfer" not in cfg.starts:
        return
    for m in cfg.members:
        net = (
            build_model(m, num_classes, weights=cfg.source_weights)
            if cfg.source == "imagenet"
            else build_model(m, num_classes)
        )
        if cfg.finetune == "last":
            _freeze_all_but_last(net)


def _class_probabilities(model, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad(), eval_mode(model):
        return torch.softmax(model(x).float(), 1).numpy()


def _probabilities(model, data, device) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = predict(model, data, device=device)
    return torch.softmax(logits.float(), 1).numpy().astype(np.float64), labels.numpy()


def _freeze_all_but_last(model) -> None:
    """Fine-tune only the last stage and what follows it (a final BN or 1×1 conv, the head) after
    transfer: the stem and the earlier stages keep their source weights and, in their BatchNorm
    layers, their source statistics (evaluated in eval mode even while the model trains)."""
    names = [n for n, _ in model.named_children()]
    if not set(model.stage_names) <= set(names):
        raise ValueError(
            f"finetune='last' needs a network whose stages are its children (the zoo, torchvision ResNets); "
            f"{type(model).__name__}'s stages are {list(model.stage_names)[:4]}...: use finetune='all'"
        )
    first = names.index(model.stage_names[0])
    frozen = set(names[:first]) | set(model.stage_names[:-1])
    for name, child in model.named_children():
        if name not in frozen:
            continue
        for p in child.parameters():
            p.requires_grad_(False)
        for m in child.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.register_forward_pre_hook(_keep_eval)


def _keep_eval(module, _inputs):
    module.training = False  # fit() calls model.train() every epoch; a frozen BN keeps its running statistics


def image_floor(cfg: EnsemblesConfig, train, test) -> dict:
    """The panel floor (``panel_floor``'s image panel) fitted on the first ``floor_n`` training
    images (generated again only when the training set is smaller), scored on the test split:
    ``{"panel": accuracy, "panel_member": ..., "panel_cv": {member: cross-validated accuracy}}``."""
    if cfg.floor_n > len(train):
        train = get_dataset(cfg.dataset, "train", n=cfg.floor_n, size=cfg.image_size)
    images, labels = train.images[: cfg.floor_n], train.labels[: cfg.floor_n]
    f = panel_floor(
        images, labels.numpy(), {"test": (test.images, test.labels.numpy())}, seed=cfg.seeds[0], trees=cfg.floor_trees
    )
    return {"panel": f.accuracy["test"], "panel_member": f.member, "panel_cv": f.cv}


class EnsemblesStudy(Study):
    """Steps: ``prepare`` (data, members checked, the panel floor, the run folder), ``run_units``
    (each member's source network, then per (seed, start) every member and, after them, the fusion:
    ``units()``, carried out by the executor), ``gather`` (rows, diversity, confusion, seed 0's
    members read back from their folders)."""

    key = "ensembles"
    gpus_per_run = 0.25  # zoo members at 32 px use a small part of a GPU; not measured on a GPU yet

    def steps(self) -> EnsemblesResult:
        self.prepare()
        self.run_units()
        source = self.source_files()
        self.gather(source)
        x = self.test.images.float() / 255  # as test[i] gives them
        return EnsemblesResult(
            self.cfg,
            self.rows,
            self.diversity,
            self.floors,
            self.classes,
            self.histories,
            self.confusion,
            self.models,
            x,
            self.test.labels.numpy(),
            {m: _last_val_acc(p) for m, p in source.items()},
            self.exp,
        )

    def prepare(self) -> None:
        """The splits, the members checked, the panel floor, then the run folder."""
        self._setup()
        self.floors = {"chance": 1.0 / self.k, **image_floor(self.cfg, self.train, self.test)}
        self.open_run(self.run_name())

    def run_name(self) -> str:
        """The study's folder: ``ensembles-<config hash>``."""
        return f"ensembles-{config_hash(self.cfg)}"

    def _setup(self) -> None:
        cfg = self.cfg
        kw = dict(size=cfg.image_size)
        self.train = get_dataset(cfg.dataset, "train", n=cfg.n_train, augment=True, **kw)
        self.val = get_dataset(cfg.dataset, "val", n=cfg.n_val, **kw)
        self.test = get_dataset(cfg.dataset, "test", n=cfg.n_test, **kw)
        self.classes, self.k = list(self.train.classes), len(self.train.classes)
        _check_members(cfg, self.k)

    # the runs as units --------------------------------------------------------------------------
    def _has_source_runs(self) -> bool:
        return "transfer" in self.cfg.starts and self.cfg.source == "shapes10"

    def units(self) -> list[RunUnit]:
        """Each member's source network (pretrained once, shared by every seed); per (seed, start)
        every member (after its source network) and the fusion (after every member of its seed and start)."""
        cfg = self.cfg
        source = (
            [RunUnit(_source_key(m), inputs={"pretrain": m}) for m in cfg.members] if self._has_source_runs() else []
        )
        units = list(source)
        for sd in cfg.seeds:
            for st in cfg.starts:
                members = [
                    RunUnit(
                        _member_key(m, st, sd),
                        (_source_key(m),) if source and st == "transfer" else (),
                        {"member": m, "start": st, "seed": sd},
                    )
                    for m in cfg.members
                ]
                fusion = RunUnit(f"fusion-{st}-s{sd}", tuple(u.key for u in members), {"start": st, "seed": sd}, gpus=0)
                units += [*members, fusion]
        return units

    def measure_unit(self, unit: RunUnit, deps: dict) -> dict:
        """A member fine-tuned (``member``) or a fusion of its members (``fuse``)."""
        if "member" in unit.inputs:
            return self.member(unit, deps.get(_source_key(unit.inputs["member"])))
        return self.fuse(unit, deps)

    def pretrained_file(self, member: str, *, train: bool) -> str | None:
        """Member ``member`` pretrained once on shapes10 (``pretrained_once``): its file (``train=False``:
        None when it is not there yet)."""
        cfg = self.cfg

        def source_data():
            return (
                ShapesDataset("shapes10", cfg.source_n, size=cfg.image_size, split="train"),
                ShapesDataset("shapes10", max(100, cfg.source_n // 10), size=cfg.image_size, split="val"),
            )

        return pretrained_once(
            member,
            10,
            source_data,
            name="ensembles-source",
            settings={"task": "shapes10", "n": cfg.source_n, "size": cfg.image_size},
            epochs=cfg.source_epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            device=self.device,
            run_root=self.run_root,
            train=train,
        )

    def source_files(self) -> dict[str, str]:
        """member → its source network's file (none without shapes10 source runs)."""
        if not self._has_source_runs():
            return {}
        return {m: self.units_report.results[_source_key(m)] for m in self.cfg.members}

    def member(self, unit: RunUnit, source: str | None) -> dict:
        """One member of (seed, start) fine-tuned; its validation and test probabilities saved beside
        its checkpoints (``probabilities.npz``) for the fusion; its row."""
        cfg = self.cfg
        m, st, sd = unit.inputs["member"], unit.inputs["start"], unit.inputs["seed"]
        net, _ = self.fit_arm(
            f"{m} ({st})",
            sd,
            lambda: build_member(cfg, m, self.k, st, source),
            self.train,
            self.val,
            name=unit.key,
            epochs=cfg.epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
        )
        v, yv = _probabilities(net, self.val, self.device)
        t, yt = _probabilities(net, self.test, self.device)
        atomic_save_npz(self.arm_run(unit.key).path / PROBABILITIES, v=v, yv=yv, t=t, yt=yt)
        return {
            "seed": sd,
            "start": st,
            "name": m,
            "kind": "member",
            "acc": float((t.argmax(1) == yt).mean()),
            "val_acc": float((v.argmax(1) == yv).mean()),
        }

    def _probabilities_of(self, key: str) -> dict[str, np.ndarray]:
        return load_npz(self.arm_run(key).path / PROBABILITIES)

    def fuse(self, unit: RunUnit, deps: dict) -> dict:
        """Each fusion fitted on the members' validation probabilities only, scored on test; the
        members' diversity and each fusion's gain over the best member (chosen on validation)."""
        cfg, k = self.cfg, self.k
        st, sd = unit.inputs["start"], unit.inputs["seed"]
        probs = [self._probabilities_of(key) for key in unit.needs]
        pv, pt = np.stack([p["v"] for p in probs]), np.stack([p["t"] for p in probs])
        yv, yt = probs[0]["yv"], probs[0]["yt"]
        rows, confusion, accs = [], {}, {}
        for f in cfg.fusions:
            pred = Ensemble(k, f, seed=sd).fit(pv, yv).predict(pt)  # fitted on validation only
            accs[f] = float((pred == yt).mean())
            rows.append({"seed": sd, "start": st, "name": f, "kind": "fusion", "acc": accs[f]})
            confusion[f] = _confusion(yt, pred, k)
        d = pairwise_diversity(pt.argmax(2) == yt[None])
        best = best_member([deps[key]["row"] for key in unit.needs], sd, st)
        diversity = {
            "seed": sd,
            "start": st,
            "disagreement": mean_pairwise(d["disagreement"]),
            "q": mean_pairwise(d["q"]),
            "error_correlation": mean_pairwise(d["error_correlation"]),
            "best_member": best["name"],
            "best_member_acc": best["acc"],
            **{f"gain_{f}": accs[f] - best["acc"] for f in cfg.fusions},
        }
        return {"rows": rows, "diversity": diversity, "confusion": confusion}

    def gather(self, source: dict) -> None:
        """Rows (each seed and start: its members, then its fusions), diversity, and for the first seed
        the confusion matrices and the trained members (last epoch, from their folders), in the units' order."""
        cfg, results = self.cfg, self.units_report.results
        self.rows, self.diversity, self.confusion, self.models = [], [], {}, {}
        for unit in self.units():
            if "pretrain" in unit.inputs:
                continue
            st, sd = unit.inputs["start"], unit.inputs["seed"]
            row = results[unit.key]["row"]
            if "member" not in unit.inputs:
                self.rows += row["rows"]
                self.diversity.append(row["diversity"])
                if sd == cfg.seeds[0]:
                    self.confusion.update({(st, f): np.asarray(c) for f, c in row["confusion"].items()})
                continue
            m = unit.inputs["member"]
            self.rows.append(row)
            self.histories[(f"{m} ({st})", sd)] = results[unit.key]["history"]
            if sd == cfg.seeds[0]:
                p = self._probabilities_of(unit.key)
                self.confusion[(st, m)] = _confusion(p["yt"], p["t"].argmax(1), self.k)
                net = build_member(cfg, m, self.k, st, results.get(_source_key(m)) if st == "transfer" else None)
                load_state(net, self.arm_run(unit.key).checkpoint_path())
                self.models[(st, m)] = net.cpu().eval()


PROBABILITIES = "probabilities.npz"  # a member's validation and test probabilities, beside its checkpoints


def _source_key(member: str) -> str:
    return f"source-{member.replace(':', '_')}"


def _member_key(member: str, start: str, seed: int) -> str:
    return f"{member.replace(':', '_')}-{start}-s{seed}"


def run_ensembles(
    cfg: EnsemblesConfig,
    *,
    run_root=None,
    progress: bool = True,
    reuse: str | None = None,
    **execution: Unpack[ExecutionOptions],
) -> EnsemblesResult:
    """Members fine-tuned from a source task and from scratch per seed, fused by averaging, voting
    and stacking (``EnsemblesStudy``); writes ``runs/ensembles-<hash>/`` (and ``runs/ensembles-source-*``).
    ``executor="ray"`` hands each run to a Ray task (see ``run_transfer``); both give the same result."""
    return EnsemblesStudy.launch(cfg, run_root=run_root, progress=progress, reuse=reuse, **execution)


def _last_val_acc(model_file: str) -> float:
    from pathlib import Path

    from .._io import read_json

    epochs = read_json(Path(model_file).parent / "metrics.json").get("epochs", [])
    return float(epochs[-1]["val_acc"]) if epochs else float("nan")


def _confusion(y, pred, k) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y, pred, labels=list(range(k)))


__all__ = [
    "STARTS",
    "FINETUNE",
    "EnsemblesConfig",
    "EnsemblesResult",
    "run_ensembles",
    "image_floor",
    "best_member",
    "class_gallery",
    "still_learning",
    "at_chance",
    "build_member",
    "SOURCES",
]
