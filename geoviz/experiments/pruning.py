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

import numpy as np
import torch

from .._utils import progress_bar
from ..analysis.statistics import Claim, claim_rows, mean_std, paired_difference
from ..config import ExperimentConfig
from ..costs import model_costs
from ..datasets import get_dataset, num_classes
from ..datasets.images import cifar10_present
from ..engine import evaluate, fit
from ..methods.pruning import PRUNING_METHODS
from ..models import build_model, save_model
from ..runs import RunDir, config_hash
from ._study import Study, StudyResult

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
    """Steps per seed: ``base_network`` (trained, measured), then ``prune_and_finetune`` at every
    speed-up with every method (the baselines first, so the others get their measured FLOPs)."""

    key = "pruning"

    def steps(self) -> PruningResult:
        cfg = self.cfg
        self.prepare()
        self.rows, self.spectra, self.ranks, self._latency = [], {}, {}, {}
        jobs = [(sd, m, s) for sd in cfg.seeds for s in cfg.speedups for m in cfg.methods]
        self.bar = progress_bar(total=len(cfg.seeds) + len(jobs), desc="pruning study", enabled=self.progress)
        for sd in cfg.seeds:
            base, calib = self.base_network(sd)
            for s in cfg.speedups:
                self.prune_and_finetune(base, calib, s, sd)
        self.bar.close()
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

    def prepare(self) -> None:
        """The splits, then the run folder."""
        cfg = self.cfg
        self.dataset = dataset = resolve_dataset(cfg.dataset)
        self.train = get_dataset(dataset, "train", n=cfg.n_train, seed=0)
        self.val = get_dataset(dataset, "val", n=cfg.n_val, seed=0)
        self.test = get_dataset(dataset, "test", n=cfg.n_test, seed=0)
        self.k, self.in_size = num_classes(self.train), tuple(self.train[0][0].shape)
        self.open_run(f"pruning-{cfg.model}-{dataset}-{config_hash(cfg)}")

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

    def base_network(self, sd: int):
        """The seed's base network, trained and measured; and its calibration images (a seeded subset
        of the validation split: not augmented, never the test split)."""
        cfg = self.cfg
        self.bar.set_postfix_str(f"base network, seed {sd}")
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
        c = self.costs(base)
        self.base_flops, self.base_flops_all_ops = c["flops"], c["flops_all_ops"]
        self.rows.append(
            {
                "seed": sd,
                "method": "unpruned",
                "speedup": 1.0,
                "acc_pruned": acc,
                "acc_finetuned": acc,
                "flops_reduction": 1.0,
                "flops_reduction_all_ops": 1.0,
                "n_test": len(self.test),
                **c,
            }
        )
        self.bar.update()
        g = torch.Generator().manual_seed(sd)
        return base, torch.utils.data.Subset(
            self.val, torch.randperm(len(self.val), generator=g)[: cfg.calibration_images].tolist()
        )

    def prune_and_finetune(self, base, calib, s: float, sd: int) -> None:
        """Every method at speed-up ``s``: pruned, measured, fine-tuned (KD from the base when asked),
        measured again."""
        cfg, test = self.cfg, self.test
        # the baselines first: one channel ratio for all layers lands a little under the target,
        # and the decorrelated method (whose ranks are fine-grained) then gets the same FLOPs
        methods = [PRUNING_METHODS[m] for m in cfg.methods]
        matched = None
        for method in [m for m in methods if m.baseline] + [m for m in methods if not m.baseline]:
            m = method.name
            self.bar.set_postfix_str(f"{m} {s:g}x, seed {sd}")
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
            if method.mode is not None and sd == cfg.seeds[0]:
                self.spectra.setdefault(method.mode, pr.spectra)
                self.ranks[(m, s)] = pr.ranks
            net = pr.model
            c = self.costs(net)  # the architecture's: fine-tuning changes weights only
            if method.baseline:  # both counts: the decorrelated method must fit under each
                mine = (c["flops"], c["flops_all_ops"])
                matched = mine if matched is None else tuple(map(min, matched, mine))
            before, after = self._finetune(net, base, f"{m}-{s:g}x", sd)
            self.rows.append(
                {
                    "seed": sd,
                    "method": m,
                    "speedup": s,
                    "acc_pruned": before,
                    "acc_finetuned": after,
                    "n_test": len(test),
                    "flops_reduction": self.base_flops / c["flops"],
                    "flops_reduction_all_ops": self.base_flops_all_ops / c["flops_all_ops"],
                    "prune_seconds": pr.seconds,
                    **c,
                }
            )
            self.bar.update()

    def _finetune(self, net, base, arm: str, sd: int) -> tuple[float, float]:
        """Test accuracy of a pruned network before and after fine-tuning it (KD from ``base`` when
        asked) in run folder ``<arm>-s<sd>``, where the fine-tuned network is saved as ``pruned.pt``."""
        cfg, test = self.cfg, self.test
        before = evaluate(net, test, device=self.device)["acc"]
        terms = ["ce"] if not cfg.kd else ["ce", {"name": "kd", "T": 4.0}]
        run = self.arm_run(f"{arm}-s{sd}")
        ft = fit(
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
        self.histories[(arm, sd)] = ft.history
        net = net.cpu().eval()
        save_model(net, run.path / "pruned.pt")
        return before, evaluate(net, test, device=self.device)["acc"]


def run_pruning(cfg: PruningConfig, *, run_root=None, progress: bool = True, reuse: str | None = None) -> PruningResult:
    """Train a base network per seed and prune it with every method at every speed-up, fine-tune and
    measure (``PruningStudy``); writes ``runs/pruning-<model>-<data>-<hash>/``."""
    return PruningStudy(cfg, run_root=run_root, progress=progress, reuse=reuse).execute()
