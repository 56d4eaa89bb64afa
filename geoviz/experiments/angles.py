"""Inter-class angles vs confusion over training, and the Inter-Class Angular Loss (paper 3).

For each seed and method a classifier is trained; every epoch the class-vector angles, the
pairwise confusion on the validation split and their correlation are recorded
(``AngleConfusionTracker``). After training, the last-epoch model is analysed on the test split:
angles, test confusion, the correlation with a bootstrap interval, and the images of each pair
it confuses most.

Methods:
- ``ce``: the network as it is (linear classifier with bias), cross-entropy;
- ``normalized_ce``: a ``NormalizedLinear`` head (bias-free, unit rows), cross-entropy only — the
  control that separates the loss's own effect from the head's (ICAL changes both);
- ``ical``: the normalised head and CE + ICAL with weight λ (the authors' code);
- ``ical_confused``: the same with each pair's cosine weighted by its running confusion rate (our
  reconstruction of FICAL, see ``losses.angular``);
- ``ical_confused_capped``: that weighting bounded (a pair's weight at most 2 before rescaling);
- ``ical_confused_hinge``: ICAL whole plus a bounded push on confused pairs closer than the simplex
  angle (the two weightings above make the loss's minimum collapse low-weight pairs; this one not).

Statistics (``claims()``): the angle–confusion relation of each run is tested with a Mantel test
(permuting class labels: the C(C−1)/2 pairs share classes, so per-pair p-values and the pair
bootstrap overstate significance; the bootstrap interval is kept as a description only); methods
are compared by paired per-seed differences with intervals, three-valued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._io import atomic_save_npz, load_npz
from ..analysis.angles import (
    AngleConfusionTracker,
    angle_confusion_correlation,
    class_vector_angles,
    confusion_rates,
    most_confused,
)
from ..analysis.statistics import VERDICTS, Claim, claim_rows, mantel, mean_std, paired_difference
from ..config import ExperimentConfig
from ..datasets import get_dataset, labels_of, num_classes
from ..engine import predict
from ..losses.angular import use_normalized_head
from ..models import build_model
from ..runs import RunDir, config_hash
from ._study import ExecutionOptions, Study, StudyResult
from .executors import RunUnit

if TYPE_CHECKING:
    from typing_extensions import Unpack

METHODS = ("ce", "normalized_ce", "ical", "ical_confused", "ical_confused_capped", "ical_confused_hinge")
DEFAULT_METHODS = ("ce", "normalized_ce", "ical", "ical_confused", "ical_confused_hinge")
ICAL_PAIRS = {
    "ical": "all",
    "ical_confused": "confused",
    "ical_confused_capped": "confused_capped",
    "ical_confused_hinge": "confused_hinge",
}
# (claim, method a, method b, metric): a beats b on metric, seed by seed
COMPARISONS = (
    ("ICAL beats plain CE", "ical", "ce", "test_acc_best_val"),
    (
        "ICAL beats CE with the same normalised head (the loss's own effect)",
        "ical",
        "normalized_ce",
        "test_acc_best_val",
    ),
    ("the normalised head alone beats plain CE", "normalized_ce", "ce", "test_acc_best_val"),
    ("confusion weighting beats plain ICAL", "ical_confused", "ical", "test_acc_best_val"),
    ("capped confusion weighting beats plain ICAL", "ical_confused_capped", "ical", "test_acc_best_val"),
    ("the confusion hinge beats plain ICAL", "ical_confused_hinge", "ical", "test_acc_best_val"),
    (
        "ICAL widens the smallest class-vector angle (vs the same head without it)",
        "ical",
        "normalized_ce",
        "min_angle_deg",
    ),
    (
        "ICAL widens the mean class-vector angle (vs the same head without it)",
        "ical",
        "normalized_ce",
        "mean_angle_deg",
    ),
)


@dataclass(frozen=True)
class AnglesConfig(ExperimentConfig):
    """Angles and confusion study (paper 3): ``model`` trained on ``dataset`` with each of ``methods``
    (ce, normalized_ce, ical, ical_confused*) per seed, ``lam`` the ICAL weight. Profiles: smoke (CI),
    quick (shapes10, resnet8), full (CIFAR-10, ResNet-110, the paper's schedule)."""

    dataset: str = "shapes10"
    model: str = "resnet8"
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 12
    lam: float = 10.0  # the paper: 5 with standard augmentation, 10 without (shapes10 has none)
    methods: tuple = DEFAULT_METHODS
    seeds: tuple = (0, 1, 2)
    n_train: int | None = 2000
    n_val: int | None = 300
    n_test: int | None = 600
    batch_size: int = 32
    lr: float = 0.05
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple = (0.5, 0.75)
    n_boot: int = 200  # the pair bootstrap: a descriptive interval only
    n_permutations: int = 2000  # the Mantel test's class-label permutations
    device: str = "auto"

    PROFILE_OVERRIDES = {
        "smoke": dict(epochs=2, seeds=(0, 1), n_train=256, n_val=100, n_test=200, n_boot=50, n_permutations=200),
        # the paper's CIFAR-10 setting (PreResNet-110 there; geoviz's CIFAR ResNet-110 here): SGD 0.1,
        # batch 128, weight decay 1e-4, 200 epochs, LR x0.1 at 100 and 150, lambda 5 with augmentation
        "full": dict(
            dataset="cifar10",
            model="resnet110",
            model_kwargs={},
            epochs=200,
            lam=5.0,
            n_train=None,
            n_val=None,
            n_test=None,
            batch_size=128,
            lr=0.1,
            weight_decay=1e-4,
            schedule="step",
            milestones=(0.5, 0.75),
            n_boot=1000,
        ),
    }

    def __post_init__(self):
        super().__post_init__()
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown methods {bad}; allowed: {METHODS}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")

    def terms(self, method: str) -> list:
        """The loss terms of ``method`` (what ``engine.fit`` sums)."""
        if method in ("ce", "normalized_ce"):
            return ["ce"]
        return ["ce", {"name": "ical", "weight": self.lam, "pairs": ICAL_PAIRS[method]}]


@dataclass
class AnglesRun:
    """One (method, seed) run: its per-epoch history, summary, and the last-epoch model's test angles,
    confusion, probabilities, correlation and Mantel test."""

    method: str
    seed: int
    history: list[dict]
    summary: dict
    test_angles: np.ndarray
    test_confusion: np.ndarray
    test_probs: np.ndarray  # (N, C) softmax of the last-epoch model on the test split
    test_correlation: dict
    mantel: dict = field(default_factory=dict)  # the test-set relation, tested by permuting class labels

    @property
    def mean_angle_deg(self) -> float:
        """The mean angle between two class vectors (degrees)."""
        return float(np.mean(self.test_angles[np.triu_indices(len(self.test_angles), 1)]))

    @property
    def min_angle_deg(self) -> float:
        """The smallest angle between two class vectors: the mean is near its simplex limit
        (arccos(−1/(C−1)), 96.4° for 10 classes) for any trained head, the smallest is not."""
        return float(np.min(self.test_angles[np.triu_indices(len(self.test_angles), 1)]))

    def metric(self, key: str) -> float:
        """A summary value by name (``mean_angle_deg`` and ``min_angle_deg`` computed)."""
        if key in ("mean_angle_deg", "min_angle_deg"):
            return getattr(self, key)
        return float(self.summary[key])

    def pair_trajectory(self, i: int, j: int) -> dict:
        """Angle (degrees) and validation confusion of classes i and j at every epoch."""
        return {
            "epochs": [h["epoch"] for h in self.history],
            "angle": [h["angles"][i][j] for h in self.history],
            "confusion": [h["confusion"][i][j] for h in self.history],
        }

    @property
    def name(self) -> str:
        """``<method>-s<seed>``: the run's folder name."""
        return f"{self.method}-s{self.seed}"


@dataclass
class AnglesResult(StudyResult):
    """What ``run_angles`` measured.

    Attributes
    ----------
    config : the study's config.
    runs : one ``AnglesRun`` per (seed, method): history, test angles, confusion, Mantel test.
    class_names : the data set's classes.
    test_images : uint8 (N, C, H, W) test images (for the most-confused gallery).
    test_labels : their labels.
    experiment : the run folder.
    floors : chance accuracy.
    """

    config: AnglesConfig
    runs: list[AnglesRun]
    class_names: list[str]
    test_images: torch.Tensor  # uint8 (N, C, H, W)
    test_labels: np.ndarray
    experiment: RunDir | None = None
    floors: dict = field(default_factory=dict)

    def run(self, name: str) -> AnglesRun:
        """The run named ``<method>-s<seed>``."""
        return next(r for r in self.runs if r.name == name)

    def table(self) -> list[dict]:
        """Per method: accuracy (best-on-validation and last epoch) and the final test-set angle–
        confusion correlation (Pearson r, Spearman rho), mean ± std over seeds."""
        out = []
        for m in self.config.methods:
            rs = [r for r in self.runs if r.method == m]
            if not rs:
                continue

            row = {"method": m, "n": len(rs)}
            for key, vals in (
                ("test_acc_best_val", [r.summary["test_acc_best_val"] for r in rs]),
                ("test_acc_last", [r.summary["test_acc_last"] for r in rs]),
                ("pearson_r", [r.test_correlation["pearson"] for r in rs]),
                ("spearman_rho", [r.test_correlation["spearman"] for r in rs]),
                ("mean_angle_deg", [float(np.mean(r.test_angles[np.triu_indices(len(r.test_angles), 1)])) for r in rs]),
            ):
                row[key], row[key + "_std"] = mean_std(vals)
            out.append(row)
        return out

    def correlation_over_epochs(self, measure: str = "pearson") -> dict[str, dict]:
        """Per method: epochs and the validation-set correlation per seed (NaN where undefined)."""
        out = {}
        for m in self.config.methods:
            rs = [r for r in self.runs if r.method == m]
            if rs:
                epochs = [h["epoch"] for h in rs[0].history]
                out[m] = {"epochs": epochs, "values": [[h["angle_confusion"][measure] for h in r.history] for r in rs]}
        return out

    def most_confused(self, run: AnglesRun, i: int, j: int, k: int = 8) -> list[tuple[int, int, float]]:
        """The test images of classes i and j the model most mistakes for the other one:
        (index, true class, probability given to the other class), most confident mistakes first."""
        return most_confused(run.test_probs, self.test_labels, i, j, k)

    def claims(self) -> list[Claim]:
        """The relation per run (a Mantel test each: class labels are the unit) and the method
        comparisons as paired per-seed differences with intervals, three-valued."""
        out = [
            Claim.from_mantel(
                f"angle and confusion relate negatively: {r.method}, seed {r.seed}",
                "Mantel r between class-vector angles and test confusion (pairs of classes)",
                r.mantel,
                n_classes=len(r.test_angles),
                conditions={"method": r.method, "seed": r.seed},
            )
            for r in self.runs
        ]
        for claim, a, b, metric in COMPARISONS:
            ra = {r.seed: r.metric(metric) for r in self.runs if r.method == a}
            rb = {r.seed: r.metric(metric) for r in self.runs if r.method == b}
            seeds = [s for s in self.config.seeds if s in ra and s in rb]
            if len(seeds) >= 2:
                unit = "degrees" if metric.endswith("angle_deg") else "fraction"
                d = paired_difference(
                    [ra[s] for s in seeds],
                    [rb[s] for s in seeds],
                    resolution=0.0 if metric.endswith("angle_deg") else 1.0 / len(self.test_labels),
                )
                out.append(
                    Claim.from_paired(
                        claim, f"{metric}, {a} minus {b} ({unit})", d, n=len(seeds), conditions={"a": a, "b": b}
                    )
                )
        return out

    def relation_counts(self) -> dict[str, dict[str, int]]:
        """Per method: how many seeds' Mantel tests came out supported / contradicted / undecided."""
        return {
            m: {v: sum(r.mantel.get("verdict") == v for r in self.runs if r.method == m) for v in VERDICTS}
            for m in self.config.methods
            if any(r.method == m for r in self.runs)
        }

    def curves(self) -> dict[tuple[str, int], list[dict]]:
        """Per-epoch records (angles, confusion, accuracy) per ``(method, seed)``."""
        return {(r.method, r.seed): r.history for r in self.runs}

    def summary(self) -> dict:
        """The table, the claims, the Mantel counts, the floors and every run's summary."""
        return {
            "table": self.table(),
            "claims": claim_rows(self.claims()),
            "relation": self.relation_counts(),
            "floors": self.floors,
            "runs": {
                r.name: {"test_correlation": r.test_correlation, "mantel": r.mantel, **r.summary} for r in self.runs
            },
        }


class AnglesStudy(Study):
    """Steps: ``prepare`` (data, the run folder), ``run_units`` (``train_and_analyse`` each (seed, method):
    ``units()``, carried out by the executor), ``gather`` (each run read back from its folder)."""

    key = "angles"
    gpus_per_run = 0.25  # small classifiers at 32 px; not measured on a GPU yet

    def steps(self) -> AnglesResult:
        self.prepare()
        self.run_units()
        runs = self.gather()
        test = self.test
        images = (
            test.images
            if hasattr(test, "images")
            else torch.stack([(test[i][0] * 255).round().to(torch.uint8) for i in range(len(test))])
        )
        return AnglesResult(
            self.cfg,
            runs,
            list(self.train.classes),
            images,
            labels_of(test).numpy(),
            self.exp,
            floors={"chance": 1.0 / self.k},
        )

    def run_name(self) -> str:
        """The study's folder: ``angles-<model>-<data set>-<config hash>``."""
        cfg = self.cfg
        return f"angles-{cfg.model}-{cfg.dataset}-{config_hash(cfg)}"

    def _setup(self) -> None:
        """The training, validation and test splits (at least 3 classes)."""
        cfg = self.cfg
        self.train = get_dataset(cfg.dataset, "train", n=cfg.n_train, seed=0)
        self.val = get_dataset(cfg.dataset, "val", n=cfg.n_val, seed=0)
        self.test = get_dataset(cfg.dataset, "test", n=cfg.n_test, seed=0)
        self.k, self.in_chans = num_classes(self.train), self.train[0][0].shape[0]
        if self.k < 3:
            raise ValueError(f"angle–confusion correlation needs at least 3 classes; {cfg.dataset} has {self.k}")

    def _build(self, method: str):
        model = build_model(self.cfg.model, self.k, in_chans=self.in_chans, **self.cfg.model_kwargs)
        if method != "ce":  # every arm but plain CE has the bias-free unit-row head
            use_normalized_head(model)
        return model

    # the runs as units --------------------------------------------------------------------------
    def units(self) -> list[RunUnit]:
        """Every (seed, method) run, in folder ``<method>-s<seed>``."""
        return [RunUnit(f"{m}-s{s}", inputs={"method": m, "seed": s}) for s in self.cfg.seeds for m in self.cfg.methods]

    def measure_unit(self, unit: RunUnit, deps: dict) -> dict:
        """One (seed, method) run trained and analysed (``train_and_analyse``)."""
        return self.train_and_analyse(unit.inputs["seed"], unit.inputs["method"], unit.key)

    def gather(self) -> list[AnglesRun]:
        """Every run in the units' order: its history, summary and test analysis, read back from its folder."""
        runs = []
        for unit in self.units():
            done = self.units_report.results[unit.key]
            row = done["row"]
            arrays = load_npz(self.arm_run(unit.key).path / ANALYSIS)
            runs.append(
                AnglesRun(
                    row["method"],
                    row["seed"],
                    done["history"],
                    row["summary"],
                    arrays["angles"],
                    arrays["confusion"],
                    arrays["probs"],
                    row["correlation"],
                    row["mantel"],
                )
            )
        return runs

    def train_and_analyse(self, seed: int, method: str, name: str) -> dict:
        """Train one arm (angles and confusion tracked per epoch), then its last-epoch model on the test
        split: the test angles, confusion and probabilities saved beside the run (``analysis.npz``); its row."""
        cfg, k = self.cfg, self.k
        model, res = self.fit_arm(
            method,
            seed,
            lambda: self._build(method),
            self.train,
            self.val,
            name=name,
            test=self.test,
            terms=cfg.terms(method),
            epochs=cfg.epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            weight_decay=cfg.weight_decay,
            schedule=cfg.schedule,
            milestones=cfg.milestones,
            callbacks=[AngleConfusionTracker(k, n_boot=cfg.n_boot)],
        )
        logits, labels = predict(model, self.test, device=self.device)
        pred = logits.argmax(1).numpy()
        ang = class_vector_angles(model).numpy()
        conf = confusion_rates(labels.numpy(), pred, k)
        probs = torch.softmax(logits, 1).numpy()
        atomic_save_npz(self.arm_run(name).path / ANALYSIS, angles=ang, confusion=conf, probs=probs)
        return {
            "method": method,
            "seed": seed,
            "summary": res.summary,
            "correlation": angle_confusion_correlation(ang, conf, n_boot=cfg.n_boot, seed=seed),
            "mantel": mantel(ang, conf, alternative="less", n_resamples=cfg.n_permutations, seed=seed),
        }


ANALYSIS = "analysis.npz"  # a run's test angles, confusion and probabilities, beside its checkpoints


def run_angles(
    cfg: AnglesConfig,
    *,
    run_root=None,
    progress: bool = True,
    reuse: str | None = None,
    **execution: Unpack[ExecutionOptions],
) -> AnglesResult:
    """Train every (seed, method) classifier, tracking class angles and confusion per epoch, and test
    the relation on each (``AnglesStudy``); writes ``runs/angles-<model>-<data>-<hash>/`` with one
    folder per ``<method>-s<seed>``. ``executor="ray"`` hands each run to a Ray task (see
    ``run_transfer``); both give the same result."""
    return AnglesStudy.launch(cfg, run_root=run_root, progress=progress, reuse=reuse, **execution)
