"""Compact students by offline distillation, and their robustness to corruptions (paper 4).

Greco et al. regress real-valued ages: a large teacher pseudo-labels a big unlabelled set, small
students regress those labels (MSE) and are then fine-tuned on the labelled set; robustness is
measured on corrupted images grouped as blur / noise / digital (and weather here). No face data is
reachable, so the task is ``shape_size`` (a shape's size in px, label noise on the training
labels; ``datasets.regression``), and the pipeline is general.

Per seed (quick: one teacher, the first seed's, for all seeds, which then vary the students): the
teacher (a wide ResNet) is trained on the labelled set; it labels the unlabelled pool once (stored
with the run, resumable); each student (a small ResNet, a MobileNetV2-like at two
input sizes, a VGG-like) is trained twice from the same initialisation: distilled (pool
pseudo-labels, then fine-tuning on the labelled set) and on the labelled set alone for as many
images seen (optimisation steps) as both distillation stages together. Measured per model: parameters, FLOPs
(``FlopCounterMode``), CPU images/s at batch 1 and 64 (CUDA too when present), speed-up over the
teacher, MAE clean and under every corruption × severity (``analysis.robustness``, every model of a
seed on the same corrupted images), mCE relative to the teacher. Every network is scored at its last
epoch (the cosine schedule ends at a learning rate of 0), the same rule for every arm, and starts
from the mean predictor (the head's bias at the labelled mean). Claims, paired by seed (t interval,
three-valued): each distilled student near the teacher (within ``near_teacher_margin`` of its MAE,
clean and corrupted), and distillation vs the labelled set alone. The floor: the MAE of predicting
the labelled set's mean. Speeds are single medians on a shared CPU: descriptive, not claims.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._utils import seed_everything
from ..analysis.robustness import robustness_reports
from ..analysis.statistics import Claim, claim_rows, mean_std, paired_difference
from ..config import ExperimentConfig
from ..costs import measure_flops, measure_latency
from ..datasets import get_dataset
from ..datasets.corruptions import CORRUPTIONS, SEVERITIES
from ..engine import distill_offline, fit
from ..engine.pseudo_labels import pseudo_label
from ..models import build_model, load_state
from ..runs import RunDir, config_hash
from ._study import ExecutionOptions, Study, StudyResult
from .executors import RunUnit

if TYPE_CHECKING:
    from typing_extensions import Unpack

# name → (zoo model, build kwargs, input size or None)
STUDENTS = {
    "resnet8": ("resnet8", {}, None),
    "mobilenetv2_half@32": ("mobilenetv2_half", {}, None),
    "mobilenetv2_half@24": ("mobilenetv2_half", {}, 24),
    "vgg8": ("vgg8", {}, None),
}


def _build(model: str, kwargs: dict, size: int | None, start: float) -> torch.nn.Module:
    net = (
        build_model(model, 1, **kwargs)
        if size is None
        else build_model("resized", 1, base={"name": model, "num_classes": 1, **kwargs}, size=size)
    )
    return _start_at_mean(net, start)


@torch.no_grad()
def _start_at_mean(net: torch.nn.Module, mean: float) -> torch.nn.Module:
    """The regression head's bias set to the training targets' mean, so every network starts at
    the mean predictor (the floor): from a zero bias the first epochs only learn the offset of
    sizes in px (resnet8's validation MAE fell 6.4 → 3.7 → 2.6 over the first epochs from zero)."""
    head = (net.net if hasattr(net, "net") else net).classifier
    head.bias.fill_(mean)
    return net


@dataclass(frozen=True)
class StudentsConfig(ExperimentConfig):
    """Students study (paper 4): a ``teacher`` regressor and each of ``students`` distilled from its
    pseudo-labels on ``n_pool`` unlabelled images or trained on the labelled set alone, per seed, scored
    clean and under ``corruptions`` × ``severities``. Profiles: smoke, quick, full."""

    teacher: str = "wrn_16_2"
    # quick: resnet8 only. On two CPU cores MobileNetV2-half trains at ~430 images/s (resnet8 ~2,000),
    # and its distilled arm needs twice quick's budget to converge (seed 0: 1.68 → 1.25 px when
    # doubled, its labelled-only arm 1.66 → 1.68): with it quick took 6+ minutes or stopped short
    students: tuple = ("resnet8",)
    # the paper's regime: labels scarce, unlabelled images plentiful (its pool is millions). With
    # 1,000 labelled and a pool of 1,500 or 4,000, distilled vs labelled-only resnet8 was 1.44 vs
    # 1.36 and 1.29 vs 1.26 px (3 seeds, batch 64)
    n_labelled: int = 500
    n_pool: int = 3000  # unlabelled images the teacher labels
    n_val: int = 200
    n_test: int = 200
    label_noise: float = 0.5  # px, on the training and validation targets
    teacher_epochs: int = 20  # wrn_16_2 on 500 images (10,000 images seen)
    teacher_per_seed: bool = False  # quick: one teacher (the first seed's) for every seed: the seeds vary the students
    # students on the pseudo-labels. Doubling checked on seed 0 (batch 32): with 2 + 2 epochs the
    # distilled resnet8 gained 0.12 px more from 4 + 4 (not converged), its labelled-only arm 0.03
    pretrain_epochs: int = 4
    finetune_epochs: int = 2  # then on the labelled set; "labelled only" sees as many images in all
    # 32: twice the updates of 64 for the same images and nearly the same CPU time (the teacher's
    # test MAE 1.18 → 1.03 px)
    batch_size: int = 32
    # AdamW: SGD at 0.05 on the MSE of sizes in px diverged (the teacher ended at the mean predictor)
    optimizer: str = "adamw"
    lr: float = 2e-3
    finetune_lr: float = 5e-4
    weight_decay: float = 1e-4
    corruptions: tuple = CORRUPTIONS
    severities: tuple = (1, 3, 5)
    seeds: tuple = (0, 1, 2, 3, 4)
    latency_repeats: int = 10
    # "near-teacher": a distilled student's MAE within this fraction of the teacher's (fixed before
    # any run; the paper's students are 2 % (clean) and 1–2 % (corrupted) from their teachers)
    near_teacher_margin: float = 0.10
    confidence: float = 0.95
    device: str = "auto"

    PROFILE_OVERRIDES = {
        "smoke": dict(
            teacher="resnet14",
            students=("resnet8", "mobilenetv2_half@24"),
            n_labelled=96,
            n_pool=128,
            n_val=48,
            n_test=40,
            teacher_epochs=1,
            pretrain_epochs=1,
            finetune_epochs=1,
            corruptions=("gaussian_noise", "defocus_blur", "fog", "contrast"),
            severities=(1, 5),
            seeds=(0, 1),
            latency_repeats=2,
        ),
        "full": dict(
            teacher="wrn_40_2",
            students=tuple(STUDENTS),
            severities=SEVERITIES,
            n_labelled=5000,
            n_pool=50000,
            n_val=1000,
            n_test=2000,
            teacher_epochs=60,
            teacher_per_seed=True,
            pretrain_epochs=30,
            finetune_epochs=10,
            batch_size=128,
            seeds=(0, 1, 2, 3, 4),
            latency_repeats=50,
        ),
    }

    def __post_init__(self):
        super().__post_init__()
        bad = [s for s in self.students if s not in STUDENTS]
        if bad or not self.students:
            raise ValueError(f"unknown students {bad}; allowed: {tuple(STUDENTS)}")
        if not self.near_teacher_margin >= 0:
            raise ValueError(
                f"near_teacher_margin must be >= 0 (a fraction of the teacher's MAE), got {self.near_teacher_margin}"
            )


@dataclass
class StudentsResult(StudyResult):
    """What ``run_students`` measured.

    Attributes
    ----------
    config : the study's config.
    rows : per (seed, model, arm): MAE clean and under corruptions, robustness report, costs, speed-ups.
    floor_mae : the MAE of predicting the training mean on the test split (the floor).
    histories : ``(arm, seed)`` → per-epoch records ("teacher", "<student> distilled", "<student> labelled only").
    test_images, test_targets : the test split.
    models : the first seed's networks by name (for the prediction widget).
    val_floor_mae : the mean predictor on the validation split (noisy targets), for the curves.
    experiment : the run folder.
    """

    config: StudentsConfig
    rows: list[dict]  # per (seed, model, arm): MAE clean, robustness report, costs
    floor_mae: float
    histories: dict
    test_images: torch.Tensor
    test_targets: np.ndarray
    models: dict = field(default_factory=dict)  # first seed: name → model (for the prediction widget)
    val_floor_mae: float = float("nan")  # the mean predictor on the validation split (noisy targets), for the curves
    experiment: RunDir | None = None

    @property
    def floors(self) -> dict:
        """The MAE of predicting the training mean, on the test and the validation split."""
        return {"mean_predictor_mae": self.floor_mae, "mean_predictor_val_mae": self.val_floor_mae}

    def table(self) -> list[dict]:
        """Per (model, arm): MAE clean and mean over corruptions (mean ± std over seeds), relative
        mCE against the teacher (over the corruptions that no seed's teacher left out as hardly
        degrading, ``relative_excluded``: every row and seed averages the same ones), params,
        FLOPs, images/s, speed-up."""
        out = []
        excluded = sorted(set().union(*(r.get("relative_excluded", []) for r in self.rows)))
        for key in dict.fromkeys((r["model"], r["arm"]) for r in self.rows):
            rs = [r for r in self.rows if (r["model"], r["arm"]) == key]
            # n: networks trained (quick shares one teacher between seeds: its clean std is 0 by construction)
            n = len(rs) if key[0] != "teacher" or self.config.teacher_per_seed else 1
            row = {"model": key[0], "arm": key[1], "n": n}
            for k in ("mae", "corrupted_mae", "mce"):
                row[k], row[k + "_std"] = mean_std([r[k] for r in rs])
            kept = [[v for c, v in r["report"]["relative_ce"].items() if c not in excluded] for r in rs]
            row["relative_mce"], row["relative_mce_std"] = mean_std([np.mean(v) if v else np.nan for v in kept])
            row["relative_excluded"] = excluded
            for k in (
                "params",
                "flops",
                "images_per_s_b1",
                "images_per_s_b64",
                "speedup_b1",
                "speedup_b64",
                "cuda_images_per_s_b64",
            ):
                row[k] = rs[0].get(k)
            out.append(row)
        return out

    def heatmap(self, model: str, arm: str) -> np.ndarray:
        """(corruptions × severities) MAE, mean over seeds."""
        rs = [r for r in self.rows if r["model"] == model and r["arm"] == arm]
        return np.array(
            [
                [np.mean([r["report"]["errors"][c][s] for r in rs]) for s in self.config.severities]
                for c in self.config.corruptions
            ]
        )

    def corrupted(
        self, image: int, corruption: str, severity: int, seed: int | None = None
    ) -> tuple[torch.Tensor, dict, float]:
        """One test image under a corruption as the first seed's models were scored on it (or
        ``seed``'s draws), and every kept model's prediction for it."""
        seed = self.config.seeds[0] if seed is None else seed
        from ..datasets.corruptions import CorruptedImages

        # the image as scored: corrupted within its block, with the block's random draws
        data = torch.utils.data.TensorDataset(self.test_images, torch.as_tensor(self.test_targets))
        x = CorruptedImages(data, corruption, severity, seed=seed)[image][0][None]
        with torch.no_grad():
            preds = {k: float(m.eval()(x).reshape(-1)[0]) for k, m in self.models.items()}
        return x[0], preds, float(self.test_targets[image])

    def group_rows(self) -> list[dict]:
        """Per (model, arm): clean MAE and mean MAE per corruption group, mean ± std over seeds; first
        the mean predictor, whose MAE no corruption changes (the floor every model must beat)."""
        groups = list(self.rows[0]["report"]["group_mean_error"])
        out = [
            {
                "model": "predicting the mean (floor)",
                "clean": self.floor_mae,
                "clean_std": 0.0,
                "groups": dict.fromkeys(groups, self.floor_mae),
                "groups_std": dict.fromkeys(groups, 0.0),
            }
        ]
        for key in dict.fromkeys((r["model"], r["arm"]) for r in self.rows):
            rs = [r for r in self.rows if (r["model"], r["arm"]) == key]
            g = {k: [r["report"]["group_mean_error"][k] for r in rs] for k in groups}
            out.append(
                {
                    "model": key[0] if key[1] == "teacher" else f"{key[0]} ({key[1]})",
                    "clean": float(np.mean([r["mae"] for r in rs])),
                    "clean_std": float(np.std([r["mae"] for r in rs])),
                    "groups": {k: float(np.mean(v)) for k, v in g.items()},
                    "groups_std": {k: float(np.std(v)) for k, v in g.items()},
                }
            )
        return out

    def claims(self) -> list[Claim]:
        """Three-valued, paired by seed (t interval over seeds; lower MAE is better):

        - near-teacher, per student, clean and corrupted: ``teacher·(1 + margin) − student > 0``,
          supported when the whole interval is above 0 (the student within the margin),
          contradicted when below (the student further off than the margin);
        - distillation helps, per student: ``labelled-only − distilled > 0``.
        """
        cfg, out, m = self.config, [], self.config.near_teacher_margin

        def per_seed(model, arm, key):
            return np.array(
                [
                    next(r[key] for r in self.rows if r["model"] == model and r["arm"] == arm and r["seed"] == s)
                    for s in cfg.seeds
                ]
            )

        def claim(text, metric, a, b, gap=None):
            d = paired_difference(a, b, confidence=cfg.confidence, resolution=1e-6) if len(cfg.seeds) > 1 else None
            extra = {} if gap is None else {"gap_mean": float(np.mean(gap))}  # student − teacher, px
            note = "" if gap is None else f"student − teacher: {float(np.mean(gap)):+.3f} px"
            out.append(Claim.from_paired(text, metric, d, n=len(cfg.seeds), note=note, **extra))

        for st in cfg.students:
            for key, what in (("mae", "clean"), ("corrupted_mae", "corrupted")):
                t, s_ = per_seed("teacher", "teacher", key), per_seed(st, "distilled", key)
                claim(
                    f"{st} (distilled) within {m:.0%} of the teacher's MAE, {what}",
                    f"{what} MAE (px), teacher × {1 + m:g} minus student",
                    t * (1 + m),
                    s_,
                    gap=s_ - t,
                )
            claim(
                f"{st}: distillation beats the labelled set alone",
                "clean MAE (px), labelled only minus distilled",
                per_seed(st, "labelled only", "mae"),
                per_seed(st, "distilled", "mae"),
            )
        return out

    def summary(self) -> dict:
        """The table, the claims, the floors and every row with its corruption errors."""
        rows = [{k: v for k, v in r.items() if k != "report"} | {"errors": r["report"]["errors"]} for r in self.rows]
        return {
            "table": self.table(),
            "claims": claim_rows(self.claims()),
            "floors": self.floors,
            "floor_mae": self.floor_mae,
            "val_floor_mae": self.val_floor_mae,
            "rows": json.loads(json.dumps(rows, default=str)),
        }


class StudentsStudy(Study):
    """Steps: ``prepare`` (the splits, the run folder), ``run_units`` (per seed: the teacher, one per
    seed or shared, which also pseudo-labels the pool; each student ``distilled`` (after its teacher)
    and ``labelled_only`` from the same initial weights; then ``measure-s<seed>``, every model of the
    seed on clean and corrupted test images: ``units()``, carried out by the executor), ``gather``
    (rows; speeds relative to the teacher; the first seed's models read back from their folders)."""

    key = "students"
    gpus_per_run = 0.25  # small regressors at 32 px; not measured on a GPU yet

    def steps(self) -> StudentsResult:
        cfg = self.cfg
        self.prepare()
        self.run_units()
        self.gather()
        test = self.test
        x = torch.stack([test[i][0] for i in range(len(test))])
        return StudentsResult(
            cfg,
            self.rows,
            self.floor,
            self.histories,
            x,
            test.targets.numpy(),
            self.models,
            self.val.mean_predictor_mae(self.start),
            self.exp,
        )

    def run_name(self) -> str:
        """The study's folder: ``students-<config hash>``."""
        return f"students-{config_hash(self.cfg)}"

    def _setup(self) -> None:
        """The labelled set, the unlabelled pool, validation and test splits."""
        cfg = self.cfg
        kw = dict(label_noise=cfg.label_noise)
        self.labelled = get_dataset("shape_size", "train", n=cfg.n_labelled, seed=0, **kw)
        self.pool = get_dataset(
            "shape_size", "train", n=cfg.n_pool, seed=1, **kw
        )  # another index stream: no image in both
        self.val = get_dataset("shape_size", "val", n=cfg.n_val, seed=0, **kw)
        self.test = get_dataset("shape_size", "test", n=cfg.n_test, seed=0, **kw)
        self.start = float(self.labelled.targets.mean())
        self.floor = self.test.mean_predictor_mae(self.start)
        self.in_size = tuple(self.labelled[0][0].shape)
        self.opt = dict(optimizer=cfg.optimizer, weight_decay=cfg.weight_decay)
        self.speed = {}

    # the runs as units --------------------------------------------------------------------------
    def _teacher_of(self, sd: int) -> int:
        return sd if self.cfg.teacher_per_seed else self.cfg.seeds[0]

    def units(self) -> list[RunUnit]:
        """Per seed: its teacher (unless shared and listed already); each student distilled (after the
        teacher) and labelled only; then ``measure-s<seed>`` after all of them."""
        cfg, units = self.cfg, []
        for sd in cfg.seeds:
            td = self._teacher_of(sd)
            if td == sd:
                units.append(RunUnit(f"teacher-s{td}", inputs={"teacher": td}))
            students = []
            for st in cfg.students:
                folder = st.replace("@", "-at")
                students.append(
                    RunUnit(
                        f"{folder}-distilled-s{sd}", (f"teacher-s{td}",), {"student": st, "distilled": True, "seed": sd}
                    )
                )
                students.append(
                    RunUnit(f"{folder}-labelled-s{sd}", (), {"student": st, "distilled": False, "seed": sd})
                )
            needs = (f"teacher-s{td}", *(u.key for u in students))
            units += [*students, RunUnit(f"measure-s{sd}", needs, {"measure": sd})]
        return units

    def measure_unit(self, unit: RunUnit, deps: dict) -> dict:
        """The teacher or a student trained (their curves: the run's epochs; a distilled student's, both
        stages, in its row), or a seed's measurement (``{"rows": [...]}``)."""
        i = unit.inputs
        if "teacher" in i:
            return self.teacher(i["teacher"])
        if "measure" in i:
            return {"rows": self.measure(i["measure"])}
        return self.student(i["student"], i["seed"], i["distilled"])

    def gather(self) -> None:
        """Rows (each seed's, from its measurement), speeds relative to the seed's teacher, curves
        in the units' order, and the first seed's models (last epoch, from their folders)."""
        cfg, results = self.cfg, self.units_report.results
        self.rows = []
        for unit in self.units():
            done, i = results[unit.key], unit.inputs
            if "teacher" in i:
                self.histories[("teacher", i["teacher"])] = done["history"]
            elif "measure" in i:
                self.rows += [_severities_as_ints(r) for r in done["row"]["rows"]]
            else:
                arm = "distilled" if i["distilled"] else "labelled only"
                self.histories[(f"{i['student']} {arm}", i["seed"])] = done["row"].get("history", done["history"])
        # each seed's models against its own teacher row: measured in the same process (under Ray, a worker)
        teachers = {r["seed"]: r for r in self.rows if r["model"] == "teacher"}
        for r in self.rows:
            for b in (1, 64):
                r[f"speedup_b{b}"] = r[f"images_per_s_b{b}"] / teachers[r["seed"]][f"images_per_s_b{b}"]
        first = cfg.seeds[0]
        self.models = {
            f"{name} ({arm})" if arm != "teacher" else name: net for (name, arm), net in self.networks(first).items()
        }

    def teacher(self, td: int) -> dict:
        """The teacher of seed ``td``, trained on the labelled set in ``teacher-s<td>/``, which also keeps
        its pseudo-labels of the pool (every distilled student of the teacher reads them)."""
        cfg = self.cfg
        teacher, _ = self.fit_arm(
            "teacher",
            td,
            lambda: _start_at_mean(build_model(cfg.teacher, 1), self.start),
            self.labelled,
            self.val,
            objective="regression",
            epochs=cfg.teacher_epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            **self.opt,
        )
        pseudo_label(teacher, self.pool, self.arm_run(f"teacher-s{td}"), device=self.device, progress=False)
        return {}

    def _initial(self, st: str, sd: int) -> torch.nn.Module:
        """Student ``st``'s initial weights of seed ``sd`` (the distilled and labelled-only arms start here)."""
        model, kwargs, size = STUDENTS[st]
        seed_everything(sd)
        return _build(model, kwargs, size, self.start)

    def student(self, st: str, sd: int, distilled: bool) -> dict:
        """Student ``st`` distilled from the teacher's pseudo-labels on the pool, or trained on the
        labelled set alone for as many images (the distilled student's), from the same initial weights."""
        cfg, net, folder = self.cfg, self._initial(st, sd), st.replace("@", "-at")
        if distilled:
            td = self._teacher_of(sd)
            out = distill_offline(
                net,
                self._load("teacher", td),
                self.labelled,
                self.pool,
                self.val,
                run=self.arm_run(f"{folder}-distilled-s{sd}"),
                labels_run=self.arm_run(f"teacher-s{td}"),
                pretrain_epochs=cfg.pretrain_epochs,
                finetune_epochs=cfg.finetune_epochs,
                lr=cfg.lr,
                finetune_lr=cfg.finetune_lr,
                batch_size=cfg.batch_size,
                device=self.device,
                seed=sd,
                progress=False,
                **self.opt,
            )
            return {"history": out["history"]["pretrain"] + out["history"]["finetune"]}
        seen = cfg.pretrain_epochs * len(self.pool) + cfg.finetune_epochs * len(self.labelled)  # the distilled one's
        fit(
            net,
            self.labelled,
            self.val,
            objective="regression",
            epochs=max(1, round(seen / len(self.labelled))),
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            device=self.device,
            run=self.arm_run(f"{folder}-labelled-s{sd}"),
            seed=sd,
            progress=False,
            **self.opt,
        )
        return {}

    def _load(self, name: str, sd: int, distilled: bool = False) -> torch.nn.Module:
        """A trained network's last epoch, read from its folder (the teacher, or student ``name``)."""
        if name == "teacher":
            net, path = _start_at_mean(build_model(self.cfg.teacher, 1), self.start), self.arm_run(f"teacher-s{sd}")
        else:
            folder = name.replace("@", "-at")
            net = self._initial(name, sd)
            path = self.arm_run(f"{folder}-distilled-s{sd}" if distilled else f"{folder}-labelled-s{sd}")
            path = RunDir("finetune", path.path) if distilled else path
        load_state(net, path.checkpoint_path())
        return net.cpu().eval()

    def networks(self, sd: int) -> dict:
        """``{(model, arm): network}`` of seed ``sd``: the teacher, then each student distilled and labelled only."""
        nets = {("teacher", "teacher"): self._load("teacher", self._teacher_of(sd))}
        for st in self.cfg.students:
            nets[st, "distilled"] = self._load(st, sd, distilled=True)
            nets[st, "labelled only"] = self._load(st, sd)
        return nets

    def costs(self, name: str, net) -> dict:
        """Parameters, FLOPs and images/s (batch 1 and 64) of a network, measured once per name."""
        cfg, in_size = self.cfg, self.in_size
        if name not in self.speed:
            c = {"params": int(sum(p.numel() for p in net.parameters())), "flops": measure_flops(net, in_size)}
            for b in (1, 64):
                c[f"images_per_s_b{b}"] = b / (
                    measure_latency(net, in_size, batch=b, device="cpu", repeats=cfg.latency_repeats) / 1e3
                )
            if self.device.type == "cuda":
                c["cuda_images_per_s_b64"] = 64 / (
                    measure_latency(net, in_size, batch=64, device=self.device, repeats=cfg.latency_repeats) / 1e3
                )
            self.speed[name] = c
        return self.speed[name]

    def measure(self, sd: int) -> list[dict]:
        """Every model of one seed on the same corrupted images, relative to the teacher: its rows."""
        cfg, device, rows = self.cfg, self.device, []
        nets = {k: n.to(device).eval() for k, n in self.networks(sd).items()}  # scored where they trained
        reps = robustness_reports(
            {f"{k[0]}|{k[1]}": n for k, n in nets.items()},
            self.test,
            cfg.corruptions,
            cfg.severities,
            task="regression",
            reference="teacher|teacher",
            seed=sd,
            device=device,
            progress=False,
        )
        for (name, arm), net in nets.items():
            rep = reps[f"{name}|{arm}"]
            rows.append(
                {
                    "seed": sd,
                    "model": name,
                    "arm": arm,
                    "mae": rep["clean"],
                    "corrupted_mae": rep["mean_corruption_error"],
                    "mce": rep["mce"],
                    "relative_mce": rep["relative_mce"],
                    "relative_excluded": rep["relative_excluded"],  # the teacher hardly degrades there
                    "report": rep,
                    **self.costs(name, net.cpu()),  # costs on the CPU
                }
            )
        return rows


def _severities_as_ints(row: dict) -> dict:
    """A measured row as ``robustness_reports`` gives it: its report's errors keyed by severity (an int;
    the row's JSON, read back from the run folder, has them as strings)."""
    errors = {c: {int(s): e for s, e in by_severity.items()} for c, by_severity in row["report"]["errors"].items()}
    return {**row, "report": {**row["report"], "errors": errors}}


def run_students(
    cfg: StudentsConfig,
    *,
    run_root=None,
    progress: bool = True,
    reuse: str | None = None,
    **execution: Unpack[ExecutionOptions],
) -> StudentsResult:
    """Teacher, distilled and labelled-only students per seed, scored clean and under corruptions
    (``StudentsStudy``); writes ``runs/students-<hash>/``. ``executor="ray"`` hands each run to a Ray
    task (see ``run_transfer``); both give the same result (speeds are timings, measured per process)."""
    return StudentsStudy.launch(cfg, run_root=run_root, progress=progress, reuse=reuse, **execution)


__all__ = ["STUDENTS", "StudentsConfig", "StudentsResult", "run_students"]
