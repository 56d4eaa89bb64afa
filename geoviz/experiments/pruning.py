"""Redundancy-aware pruning (paper 6) against Torch-Pruning's L1 and FPGM at equal FLOPs.

Per seed: a base network is trained to convergence (its curve kept); at each speed-up (the whole
model's FLOPs ÷ s) every method prunes it — the decorrelated re-expression of outputs and of
inputs (``methods.pruning``) and the two structured baselines at the same measured FLOPs — then
each pruned network is evaluated, fine-tuned through the engine (optionally with KD from the
unpruned network) and evaluated again. Costs are measured: FLOPs by ``FlopCounterMode``,
parameters, bytes, CPU latency per batch of 1 and 64 (CUDA too when present).

The paper's claim, computed: at each speed-up, the decorrelated method (``primary``) minus the
best baseline (the one with the higher mean accuracy there, chosen on the same data: a choice that
favours the baselines), paired by seed, t interval over seeds (deciding; the percentile bootstrap
interval beside it, descriptive: with 3–5 seeds it is too narrow), three-valued: better / worse /
undecided (reported as supported / contradicted / undecided). A floor: chance, and the accuracy of the pruned networks
before fine-tuning. Equal
FLOPs: the baselines are pruned first (one channel ratio lands a little under the target) and the
decorrelated method is given their measured FLOPs. FLOPs are counted twice (``costs``):
``flop_counter``'s matrix work and an all-ops count (normalisation, activations, biases, pooling,
sums); every method's speed-up holds by the stricter of the two, and the table shows both.
Calibration images come from the validation split (not augmented).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._io import atomic_torch_save, load_weights_only
from ..analysis.statistics import Claim, claim_rows, mean_std, paired_difference
from ..config import ExperimentConfig
from ..costs import model_costs
from ..datasets import get_dataset, num_classes
from ..datasets.images import cifar10_present
from ..engine import evaluate, fit
from ..methods.pruning import PRUNING_METHODS, LayerSpectrum
from ..models import build_model, load_state, save_model
from ..runs import RunDir, config_hash
from ._study import ExecutionOptions, Study, StudyResult
from .executors import RunUnit

if TYPE_CHECKING:
    from typing_extensions import Unpack

METHODS = tuple(PRUNING_METHODS)


@dataclass(frozen=True)
class PruningConfig(ExperimentConfig):
    """Pruning study (paper 6): ``model`` trained per seed, pruned to each of ``speedups`` by each of
    ``methods`` (a ``PRUNING_METHODS`` name), fine-tuned (with KD when ``kd``). Profiles: smoke, quick
    (shapes10 or CIFAR-10 from data/), full (CIFAR-10, ResNet-56)."""

    dataset: str = "auto"  # "auto": CIFAR-10 when in data/, else shapes10 (embedded)
    model: str = "resnet20"
    n_train: int | None = 2000
    n_val: int | None = 300
    n_test: int | None = 600
    epochs: int = 15  # the base network (its validation curve is shown; 12 left one seed of three still rising)
    batch_size: int = 32
    lr: float = 0.05
    weight_decay: float = 5e-4
    speedups: tuple = (2.0, 3.0)
    methods: tuple = METHODS
    primary: str = "decorrelated-outputs"  # the method the claim is about
    calibration_images: int = 256
    finetune_epochs: int = 1
    finetune_lr: float = 0.01
    kd: bool = False  # fine-tune with KD from the unpruned network (CE + KD, T = 4)
    seeds: tuple = (0, 1, 2)
    latency_repeats: int = 10
    confidence: float = 0.95
    device: str = "auto"

    PROFILE_OVERRIDES = {
        "smoke": dict(
            model="resnet8",
            n_train=200,
            n_val=80,
            n_test=100,
            epochs=1,
            speedups=(2.0,),
            seeds=(0, 1),
            calibration_images=64,
            finetune_epochs=1,
            latency_repeats=2,
            methods=("decorrelated-outputs", "l1"),
        ),
        # CIFAR-10 (from data/ when present) with resnet56, the paper's network family
        "full": dict(
            dataset="cifar10",
            model="resnet56",
            n_train=None,
            n_val=5000,
            n_test=None,
            epochs=160,
            batch_size=128,
            lr=0.1,
            speedups=(1.5, 2.0, 3.0, 4.0),
            calibration_images=2048,
            finetune_epochs=40,
            finetune_lr=0.01,
            kd=True,
            seeds=(0, 1, 2, 3, 4),
            latency_repeats=50,
        ),
    }

    def __post_init__(self):
        super().__post_init__()
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"unknown methods {bad}; allowed: {METHODS}")
        if self.primary not in self.methods:  # the first decorrelated method asked for
            first = next((m for m in self.methods if not PRUNING_METHODS[m].baseline), None)
            if first is None:
                raise ValueError(
                    f"methods {self.methods} hold no decorrelated method to "
                    f"compare with the baselines; add one of {METHODS[:2]}"
                )
            object.__setattr__(self, "primary", first)
        bad = [s for s in self.speedups if not (isinstance(s, (int, float)) and s > 1)]
        if bad or not self.speedups:
            raise ValueError(
                f"speedups must be numbers > 1 (FLOPs ÷ s; a budget fraction b in (0, 1) is 1/b), got {self.speedups}"
            )


@dataclass
class PruningResult(StudyResult):
    """What ``run_pruning`` measured.

    Attributes
    ----------
    config : the study's config.
    rows : one per (seed, method, speed-up), plus the base networks (method "unpruned"): accuracy
        before and after fine-tuning, FLOPs, parameters, bytes, latency.
    spectra : mode → {layer: LayerSpectrum} of the first seed's base network.
    ranks : (method, speed-up) → {layer: rank} of the first seed.
    histories : ``(arm, seed)`` → per-epoch records; arm "base" or "<method>-<s>x".
    class_names, dataset : the data ("auto" resolved).
    experiment : the run folder.
    chance : chance accuracy (also in ``floors``).
    notes : what was left out.
    """

    config: PruningConfig
    rows: list[dict]  # one per (seed, method, speed-up), plus the base networks (method "unpruned")
    spectra: dict  # mode → {layer: LayerSpectrum} of the first seed's base network
    ranks: dict  # (method, speed-up) → {layer: rank} of the first seed
    histories: dict  # ("base", seed) / ("<method>-<s>x", seed) → [{"epoch", "val_acc", ...}]
    class_names: list[str]
    dataset: str
    experiment: RunDir | None = None
    chance: float = 0.0
    notes: list = field(default_factory=list)

    def table(self) -> list[dict]:
        """Mean ± std over seeds per (method, speed-up): accuracy before and after fine-tuning,
        FLOPs, parameters, bytes, latency."""
        out = []
        for key in dict.fromkeys((r["method"], r["speedup"]) for r in self.rows):
            rs = [r for r in self.rows if (r["method"], r["speedup"]) == key]
            row = {"method": key[0], "speedup": key[1], "n": len(rs)}
            for k in (
                "acc_pruned",
                "acc_finetuned",
                "flops",
                "flops_all_ops",
                "params",
                "bytes",
                "flops_reduction",
                "flops_reduction_all_ops",
            ):
                row[k], row[k + "_std"] = mean_std([r[k] for r in rs])
            for k in ("latency_ms_b1", "latency_ms_b64", "latency_ms_per_image_b64", "latency_cuda_ms_b64"):
                v = [r[k] for r in rs if r.get(k) is not None]
                row[k] = float(np.mean(v)) if v else None
            out.append(row)
        return out

    @property
    def floors(self) -> dict:
        """Chance accuracy (the pruned networks before fine-tuning are in the table too)."""
        return {"chance": self.chance}

    def claims(self) -> list[Claim]:
        """At each speed-up: ``primary`` minus the best baseline, paired by seed (after and before
        fine-tuning), three-valued."""
        cfg, out = self.config, []
        baselines = [m for m in cfg.methods if PRUNING_METHODS[m].baseline]
        n_test = max(1, self.rows[0].get("n_test", 1))
        for s in cfg.speedups:
            for stage in ("acc_finetuned", "acc_pruned"):
                if not baselines:
                    continue
                means = {
                    m: np.mean([r[stage] for r in self.rows if r["method"] == m and r["speedup"] == s])
                    for m in baselines
                }
                best = max(means, key=means.get)
                a = [self._value(cfg.primary, s, sd, stage) for sd in cfg.seeds]
                b = [self._value(best, s, sd, stage) for sd in cfg.seeds]
                when = "after fine-tuning" if stage == "acc_finetuned" else "before fine-tuning"
                d = paired_difference(a, b, confidence=cfg.confidence, resolution=1.0 / n_test) if len(a) >= 2 else None
                c = Claim.from_paired(
                    f"{cfg.primary} beats the best baseline ({best}) at equal FLOPs",
                    f"test accuracy {when}, {cfg.primary} minus {best} (fraction)",
                    d,
                    n=len(a),
                    conditions={"speedup": s, "stage": when},
                    method=cfg.primary,
                    best_baseline=best,
                )
                if d is None:  # one seed: the difference is still shown
                    c = Claim(
                        c.claim,
                        c.metric,
                        float(a[0] - b[0]),
                        c.interval,
                        c.p,
                        c.n,
                        c.unit,
                        c.verdict,
                        c.note,
                        c.conditions,
                        c.extra,
                    )
                out.append(c)
        return out

    def _value(self, method, speedup, seed, key):
        return next(
            r[key] for r in self.rows if r["method"] == method and r["speedup"] == speedup and r["seed"] == seed
        )

    def summary(self) -> dict:
        """The table, the claims, every row, the ranks and the notes."""
        return {
            "table": self.table(),
            "claims": claim_rows(self.claims()),
            "rows": self.rows,
            "ranks": {f"{m}@{s}x": r for (m, s), r in self.ranks.items()},
            "notes": self.notes,
        }


def resolve_dataset(name: str) -> str:
    """``auto``: CIFAR-10 when it is in data/, else shapes10."""
    return ("cifar10" if cifar10_present() else "shapes10") if name == "auto" else name


class PruningStudy(Study):
    """Steps: ``prepare`` (the splits, the run folder), ``run_units`` (per seed: the base network,
    trained and measured; then at every speed-up every method pruned, measured, fine-tuned and measured
    again, the baselines before the others, which get their measured FLOPs: ``units()``, carried out by
    the executor), ``gather`` (rows, the first seed's spectra and ranks, read back from the folders)."""

    key = "pruning"
    gpus_per_run = 0.25  # small networks at 32 px; not measured on a GPU yet

    def steps(self) -> PruningResult:
        cfg = self.cfg
        self.prepare()
        self.run_units()
        self.gather()
        return PruningResult(
            cfg,
            self.rows,
            self.spectra,
            self.ranks,
            self.histories,
            list(self.train.classes),
            self.dataset,
            self.exp,
            chance=1.0 / self.k,
            notes=[],
        )

    def run_name(self) -> str:
        """The study's folder: ``pruning-<model>-<data set>-<config hash>``."""
        return f"pruning-{self.cfg.model}-{resolve_dataset(self.cfg.dataset)}-{config_hash(self.cfg)}"

    def _setup(self) -> None:
        """The splits."""
        cfg = self.cfg
        self.dataset = dataset = resolve_dataset(cfg.dataset)
        self.train = get_dataset(dataset, "train", n=cfg.n_train, seed=0)
        self.val = get_dataset(dataset, "val", n=cfg.n_val, seed=0)
        self.test = get_dataset(dataset, "test", n=cfg.n_test, seed=0)
        self.k, self.in_size = num_classes(self.train), tuple(self.train[0][0].shape)
        self._latency, self._base = {}, {}

    # the runs as units --------------------------------------------------------------------------
    def units(self) -> list[RunUnit]:
        """Per seed: ``base-s<seed>``; at every speed-up each baseline method after the base, and each
        other method after the base and that speed-up's baselines (it is pruned to their FLOPs)."""
        cfg, units = self.cfg, []
        methods = [PRUNING_METHODS[m] for m in cfg.methods]
        for sd in cfg.seeds:
            base = RunUnit(f"base-s{sd}", inputs={"seed": sd})
            units.append(base)
            for s in cfg.speedups:
                first = [_prune_unit(m, s, sd, (base.key,)) for m in methods if m.baseline]
                after = (base.key, *(u.key for u in first))
                units += first + [_prune_unit(m, s, sd, after) for m in methods if not m.baseline]
        return units

    def measure_unit(self, unit: RunUnit, deps: dict) -> dict:
        """``{"table_row": the study's row, "ranks": the decorrelated ranks per layer (None: none)}``."""
        if "method" in unit.inputs:
            return self.prune_and_finetune(unit, deps)
        return {"table_row": self.base_row(unit.inputs["seed"]), "ranks": None}

    def gather(self) -> None:
        """The rows and curves in the units' order; the first seed's spectra (per mode, the first
        speed-up's) and ranks."""
        cfg, results = self.cfg, self.units_report.results
        self.rows, self.spectra, self.ranks = [], {}, {}
        for unit in self.units():
            done, sd, m = results[unit.key], unit.inputs["seed"], unit.inputs.get("method")
            self.rows.append(done["row"]["table_row"])
            arm = "base" if m is None else f"{m}-{unit.inputs['speedup']:g}x"
            self.histories[(arm, sd)] = done["history"]
            mode = None if m is None else PRUNING_METHODS[m].mode
            if mode is not None and sd == cfg.seeds[0]:
                if mode not in self.spectra:
                    self.spectra[mode] = _load_spectra(self.arm_run(unit.key).path / SPECTRA)
                self.ranks[(m, unit.inputs["speedup"])] = done["row"]["ranks"]

    def costs(self, net) -> dict:
        """FLOPs, parameters, bytes, latency. The architecture, not the weights, sets the cost: measured
        once per architecture (the decorrelated ranks, hence the shapes, differ between seeds)."""
        cfg = self.cfg
        key = json.dumps(getattr(net, "build_args", None) or repr(net), sort_keys=True, default=str)
        if key not in self._latency:
            c = model_costs(net, self.in_size, device="cpu", repeats=cfg.latency_repeats)
            if self.device.type == "cuda":
                c["latency_cuda_ms_b64"] = model_costs(
                    net, self.in_size, batches=(64,), device=self.device, repeats=cfg.latency_repeats
                )["latency_ms_b64"]
            self._latency[key] = c
        return dict(self._latency[key])

    def base_row(self, sd: int) -> dict:
        """The seed's base network trained in ``base-s<seed>/`` and measured (test accuracy, costs)."""
        cfg = self.cfg
        base, _ = self.fit_arm(
            "base",
            sd,
            lambda: build_model(cfg.model, self.k, in_chans=self.in_size[0]),
            self.train,
            self.val,
            test=self.test,
            epochs=cfg.epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            weight_decay=cfg.weight_decay,
        )
        base = base.cpu().eval()
        acc = evaluate(base, self.test, device=self.device)["acc"]
        return {
            "seed": sd,
            "method": "unpruned",
            "speedup": 1.0,
            "acc_pruned": acc,
            "acc_finetuned": acc,
            "flops_reduction": 1.0,
            "flops_reduction_all_ops": 1.0,
            "n_test": len(self.test),
            **self.costs(base),
        }

    def base_network(self, sd: int):
        """The seed's trained base network (its last epoch, read from ``base-s<seed>/``) and its
        calibration images (a seeded subset of the validation split: not augmented, never the test split)."""
        path = self.arm_run(f"base-s{sd}").checkpoint_path()
        stamp = (sd, path.stat().st_mtime_ns)  # loaded again when the base was trained again since
        if stamp not in self._base:
            base = build_model(self.cfg.model, self.k, in_chans=self.in_size[0])
            load_state(base, path)
            self._base = {stamp: base.cpu().eval()}  # one kept: a worker may run units of every seed
        g = torch.Generator().manual_seed(sd)
        calib = torch.utils.data.Subset(
            self.val, torch.randperm(len(self.val), generator=g)[: self.cfg.calibration_images].tolist()
        )
        return self._base[stamp], calib

    def prune_and_finetune(self, unit: RunUnit, deps: dict) -> dict:
        """One method at one speed-up: pruned (a non-baseline method to the FLOPs its baselines measured),
        measured, fine-tuned (KD from the base when asked), measured again; the first seed's spectra saved
        beside the run (``spectra.pt``)."""
        cfg, test = self.cfg, self.test
        m, s, sd = unit.inputs["method"], unit.inputs["speedup"], unit.inputs["seed"]
        method = PRUNING_METHODS[m]
        base, calib = self.base_network(sd)
        base_row = deps[f"base-s{sd}"]["row"]["table_row"]
        baselines = [deps[k]["row"]["table_row"] for k in unit.needs if k != f"base-s{sd}"]
        # both counts: the decorrelated method must fit under each (the smallest over the baselines)
        matched = (
            (min(r["flops"] for r in baselines), min(r["flops_all_ops"] for r in baselines)) if baselines else None
        )
        pr = method.prune(
            base,
            s,
            calibration=calib,
            input_size=self.in_size,
            device=self.device,
            max_images=cfg.calibration_images,
            target_flops=None if method.baseline or matched is None else matched[0],
            target_all_ops=None if method.baseline or matched is None else matched[1],
        )
        net = pr.model
        c = self.costs(net)  # the architecture's: fine-tuning changes weights only
        before, after = self._finetune(net, base, f"{m}-{s:g}x", sd)
        if method.mode is not None and sd == cfg.seeds[0]:  # after the run's first files (its code recorded)
            _save_spectra(self.arm_run(unit.key).path / SPECTRA, pr.spectra)
        row = {
            "seed": sd,
            "method": m,
            "speedup": s,
            "acc_pruned": before,
            "acc_finetuned": after,
            "n_test": len(test),
            "flops_reduction": base_row["flops"] / c["flops"],
            "flops_reduction_all_ops": base_row["flops_all_ops"] / c["flops_all_ops"],
            "prune_seconds": pr.seconds,
            **c,
        }
        return {"table_row": row, "ranks": pr.ranks}

    def _finetune(self, net, base, arm: str, sd: int) -> tuple[float, float]:
        """Test accuracy of a pruned network before and after fine-tuning it (KD from ``base`` when
        asked) in run folder ``<arm>-s<sd>``, where the fine-tuned network is saved as ``pruned.pt``."""
        cfg, test = self.cfg, self.test
        before = evaluate(net, test, device=self.device)["acc"]
        terms = ["ce"] if not cfg.kd else ["ce", {"name": "kd", "T": 4.0}]
        run = self.arm_run(f"{arm}-s{sd}")
        fit(
            net,
            self.train,
            self.val,
            test=test,
            teacher=base if cfg.kd else None,
            terms=terms,
            epochs=cfg.finetune_epochs,
            lr=cfg.finetune_lr,
            batch_size=cfg.batch_size,
            weight_decay=cfg.weight_decay,
            device=self.device,
            run=run,
            seed=sd,
            progress=False,
        )
        net = net.cpu().eval()
        save_model(net, run.path / "pruned.pt")
        return before, evaluate(net, test, device=self.device)["acc"]


def run_pruning(
    cfg: PruningConfig,
    *,
    run_root=None,
    progress: bool = True,
    reuse: str | None = None,
    **execution: Unpack[ExecutionOptions],
) -> PruningResult:
    """Train a base network per seed and prune it with every method at every speed-up, fine-tune and
    measure (``PruningStudy``); writes ``runs/pruning-<model>-<data>-<hash>/``. ``executor="ray"``
    hands each run to a Ray task (see ``run_transfer``); both give the same result (costs are measured
    once per architecture in each process: latencies are timings)."""
    return PruningStudy.launch(cfg, run_root=run_root, progress=progress, reuse=reuse, **execution)


SPECTRA = "spectra.pt"  # the first seed's layer spectra, beside a decorrelated run (the notebook draws them)


def _prune_unit(method, speedup: float, seed: int, needs: tuple) -> RunUnit:
    return RunUnit(
        f"{method.name}-{speedup:g}x-s{seed}", needs, {"method": method.name, "speedup": speedup, "seed": seed}
    )


def _save_spectra(path, spectra: dict) -> None:
    """Layer spectra as tensors and plain values (loadable with ``weights_only=True``)."""
    plain = {
        name: {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in vars(sp).items()}
        for name, sp in spectra.items()
    }
    atomic_torch_save(plain, path)


def _load_spectra(path) -> dict:
    plain = load_weights_only(path)
    return {
        name: LayerSpectrum(**{k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in fields.items()})
        for name, fields in plain.items()
    }
