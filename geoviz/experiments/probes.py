"""ShapeNet-style transfer probes (Zheng et al., Front. Comput. Neurosci. 2021): do networks learn
local invariants (square vs rectangle, ...) or global ones (hole, connectivity, inside/outside),
how well does that learning transfer to new shapes, and where is each invariant decodable?

For each (experiment, architecture, start, seed) a network is fine-tuned on the experiment's
training distribution with a learning curve (validation accuracy vs images seen, and the images
needed to reach ``target_acc``), then scored on a held-out test split of the training
distribution and on the transfer set (irregular outlines, other sizes); the transfer ratio is
their quotient. Beyond the paper, each *frozen* starting network is probed block by block with
logistic regression (``analysis.probes``).

Starts: ``scratch`` is random initialisation (a different one per seed). ``pretrained`` is
ImageNet weights for ``tv:`` models (read from a local file or the torch hub cache, never
downloaded: a missing file stops the run before any training, naming every file needed). The
small CPU networks have no ImageNet weights; for them ``pretrained`` means pretrained by geoviz on
``PRETRAINING`` — shapes10 classes disjoint from every probe class (cached in ``runs/``) — so that
"pretrained learns local tasks faster" is not built in. Both starts fine-tune with the same
learning rate.

Each run is scored on three transfer sets (``style``, ``size``, ``both``; see
``datasets.probe_tasks``) and summarised as chance-corrected transfer,
(transfer acc − chance) / (training-distribution acc − chance). Floors: the shortcut floor
(``analysis.floors``: a gradient-boosted classifier on simple mask statistics) and a
random-network linear probe (the best block of the scratch start's frozen network).

The paper's two hypotheses (which it rejected) and its companion finding are decided by
``probe_verdicts`` with paired intervals over seeds (the seed is the unit of replication; a
percentile bootstrap over so few seeds calls too much), three-valued (supported / contradicted /
undecided): H1 local invariants transfer better than global ones; H2 deeper networks transfer
global invariants better (an exact permutation over architectures, decided only with >= 5
depths, descriptive below); C pretrained networks learn local tasks faster and networks from
scratch learn global tasks faster.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from .._utils import progress_bar, resolve_device, seed_everything
from ..analysis.floors import panel_floor
from ..analysis.probes import pooled_features, probe_layers
from ..analysis.statistics import NAN, Claim, claim_rows, paired_difference
from ..config import ExperimentConfig
from ..datasets.probe_tasks import EXPERIMENTS, PRETRAINING, PROBE_MIN_SIZE, TRANSFER_SETS, ProbeDataset, get_experiment
from ..inference import predict
from ..models import block_layers, build_model, list_models, load_backbone, timm_available, weight_layers
from ..runs import RunDir, config_hash
from . import pretrained_once
from ._study import ExecutionOptions, Study, StudyResult
from .executors import RunUnit

if TYPE_CHECKING:
    from typing_extensions import Unpack

STARTS = ("pretrained", "scratch")
MIN_SEEDS = 3  # fewer seeds cannot decide a hypothesis
MIN_DEPTHS = 5  # H2: with fewer architectures an exact permutation p cannot fall below 0.025
PAPER_ARCHITECTURES = ("tv:alexnet", "tv:vgg16", "tv:resnet101", "inception_resnet_v2")


def resolve_architecture(name: str) -> tuple[str, str | None]:
    """The registry name to build, and a note when a substitute is used."""
    if name == "inception_resnet_v2":
        if timm_available():
            return "timm:inception_resnet_v2", None
        return (
            "tv:inception_v3",
            "Inception-ResNet-v2 is not in torchvision and timm is not installed: Inception-v3 stands in",
        )
    if not (name.startswith("tv:") or name.startswith("timm:")) and name not in list_models():
        from .._utils import unknown_name_message

        raise KeyError(unknown_name_message("architecture", name, list_models() + list(PAPER_ARCHITECTURES)))
    return name, None


def _imagenet(name: str) -> bool:
    return name.startswith("tv:") or name.startswith("timm:")


@dataclass(frozen=True)
class ProbesConfig(ExperimentConfig):
    # quick: one binary task per invariant kind and one depth, three seeds, in ~4 minutes on 2 cores
    # (H2 then stays "undecided (1 depth)"); full: all six tasks, the paper's four networks
    """Shape probes study (paper 5): ``architectures`` from ``starts`` (scratch, pretrained) fine-tuned on
    each of ``experiments`` per seed, scored on the transfer sets, and probed layer by layer.
    Profiles: smoke, quick (zoo networks, two tasks), full (all six tasks, the paper's four networks)."""

    experiments: tuple = ("E1", "E3", "E4", "E5")
    architectures: tuple = ("resnet14",)
    starts: tuple = STARTS
    image_size: int = 32
    n_per_class: int = 200
    n_val_per_class: int = 40
    n_test_per_class: int = 80  # the held-out training distribution and the transfer set each
    epochs: int = 12
    batch_size: int = 32
    lr: float = 0.05  # the same for both starts (fine-tuning a pretrained network gets no other rule)
    seeds: tuple = (0, 1, 2)
    target_acc: float = 0.9
    pretrain_epochs: int = 8  # zoo networks' "pretrained" start: PRETRAINING (shapes10 classes no probe uses)
    pretrain_n: int = 2000
    transfer_sets: tuple = TRANSFER_SETS
    floor_n_per_class: int = 300  # training images per class of the shortcut floor's classifier
    confidence: float = 0.95
    weights: dict = field(default_factory=dict)  # architecture → local weights file ("DEFAULT": the torch hub cache)
    probe_n_per_class: int = 60
    probe_folds: int = 3
    # the panel floor's tree ensembles (gradient boosting, random forest): seconds per fit even on a
    # hundred images, so the smoke profile (plumbing, not claims) leaves them out
    floor_trees: bool = True
    device: str = "auto"

    PROFILE_OVERRIDES = {
        "smoke": dict(
            floor_trees=False,
            experiments=("E1", "E3"),
            architectures=("resnet8",),
            n_per_class=30,
            n_val_per_class=10,
            n_test_per_class=20,
            epochs=2,
            seeds=(0,),
            pretrain_epochs=1,
            pretrain_n=200,
            probe_n_per_class=15,
            floor_n_per_class=40,
        ),
        "full": dict(
            experiments=tuple(EXPERIMENTS),
            architectures=PAPER_ARCHITECTURES,
            image_size=224,
            n_per_class=500,
            n_val_per_class=100,
            n_test_per_class=200,
            epochs=10,
            batch_size=64,
            lr=0.01,
            seeds=(0, 1, 2, 3, 4),
            probe_n_per_class=200,
        ),
    }

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "experiments", tuple(get_experiment(e).key for e in self.experiments))  # names → keys
        for a in self.architectures:
            resolve_architecture(a)
        bad = [s for s in self.starts if s not in STARTS]
        if bad:
            raise ValueError(f"unknown starts {bad}; allowed: {STARTS}")
        bad = [t for t in self.transfer_sets if t not in TRANSFER_SETS]
        if bad or not self.transfer_sets:
            raise ValueError(f"unknown transfer sets {bad}; allowed: {TRANSFER_SETS}")
        if self.image_size < 32:
            raise ValueError(
                f"image_size must be >= 32 (the shape tasks need room for their holes and dots), got {self.image_size}"
            )


def _nanmean(x, axis=None):
    """Mean without NaN (runs that did not learn their task), NaN when nothing is left, silently."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


LEARNT = 0.5  # a run has learnt its task when it is this far from chance towards 1 (else its transfer is undefined)


def _learnt(train_acc, chance):
    return train_acc >= chance + LEARNT * (1 - chance)


def chance_corrected(acc: float, train_acc: float, chance: float) -> float:
    """(acc − chance) / (train_acc − chance): 1 = transfers fully, 0 = down to chance; NaN when the
    network did not learn the training distribution (less than ``LEARNT`` of the way from chance
    to 1: the ratio of two near-chance accuracies is noise, not transfer)."""
    return (acc - chance) / (train_acc - chance) if _learnt(train_acc, chance) else float("nan")


def _group_cc(rs: list[dict], t: str) -> tuple[float, int]:
    """Chance-corrected transfer of a group of runs of one experiment, as a ratio of means over the
    runs that learnt (their inclusion fixed by the observed training accuracy); and how many did."""
    ok = [r for r in rs if _learnt(r["train_acc"], r["chance"])]
    if not ok:
        return float("nan"), 0
    c = ok[0]["chance"]
    return (np.mean([r["transfer_acc"][t] for r in ok]) - c) / (np.mean([r["train_acc"] for r in ok]) - c), len(ok)


def _per_seed(runs, seeds, select, value) -> tuple[np.ndarray, int, int]:
    """One value per seed: the mean over experiments of ``value(runs of that experiment and seed)``."""
    out, used, total = [], 0, 0
    for sd in seeds:
        rs = [r for r in runs if r["seed"] == sd and select(r)]
        vals = []
        for e in dict.fromkeys(r["experiment"] for r in rs):
            v, k = value([r for r in rs if r["experiment"] == e])
            used, total = used + k, total + len([r for r in rs if r["experiment"] == e])
            vals.append(v)
        vals = [v for v in vals if np.isfinite(v)]
        out.append(float(np.mean(vals)) if vals else float("nan"))
    return np.array(out), used, total


def _auc(rs):
    """Mean validation accuracy over the learning curve, chance-corrected to put tasks on one scale."""
    return float(np.mean([(r["curve_auc"] - r["chance"]) / (1 - r["chance"]) for r in rs])), len(rs)


def _decide(a: np.ndarray, b: np.ndarray, confidence: float) -> dict:
    """Paired over seeds (the t interval decides: ``analysis.statistics.paired_difference``)."""
    keep = np.isfinite(a) & np.isfinite(b)
    n = int(keep.sum())
    if n < MIN_SEEDS:
        est = float(np.mean(a[keep] - b[keep])) if n else float("nan")
        return {
            "estimate": est,
            "ci": [float("nan"), float("nan")],
            "bootstrap_ci": [float("nan"), float("nan")],
            "p_value": float("nan"),
            "n_seeds": n,
            "verdict": "undecided",
            "note": f"{n} seed{'s' if n != 1 else ''}: too few for an interval",
        }
    d = paired_difference(a[keep], b[keep], confidence=confidence)
    return {
        "estimate": d["mean"],
        "ci": d["ci"],
        "bootstrap_ci": d["bootstrap_ci"],
        "p_value": d["p_value"],
        "n_seeds": n,
        "verdict": d["verdict"],
        "note": "",
    }


def probe_verdicts(runs: list[dict], *, transfer_sets=TRANSFER_SETS, confidence: float = 0.95) -> list[dict]:
    """H1, H2 and C from fine-tuning runs.

    Each run needs ``experiment``, ``invariant`` ("local" / "global"), ``architecture``, ``start``,
    ``seed``, ``depth``, ``chance``, ``train_acc``, ``transfer_acc`` (per transfer set) and
    ``curve_auc``. The unit of replication is the seed: per seed, chance-corrected transfer of each
    experiment (a ratio of means over the runs that learnt — ``LEARNT`` of the way from chance to
    1 —, which stays stable where single runs sit near chance), averaged over the local and over
    the global experiments; H1 is their paired difference over seeds, decided by the paired t
    interval (``paired_difference``; a percentile bootstrap over 3 seeds makes a wrong call about
    a quarter of the time — measured). C compares the chance-corrected learning-curve area of the
    two starts the same way. H2's unit is the architecture: Spearman's rho between depth and global
    transfer, with an exact permutation p over architectures, decided only with >= ``MIN_DEPTHS``
    depths (fewer cannot reach p < 0.025 in either direction) and otherwise descriptive.
    Rows: one per (hypothesis, transfer set, scope = "overall" or an architecture).
    """
    seeds = sorted({r["seed"] for r in runs})
    archs = list(dict.fromkeys(r["architecture"] for r in runs))
    out = []
    for t in transfer_sets:
        value = functools.partial(_group_cc, t=t)
        for scope in ["overall"] + (archs if len(archs) > 1 else []):
            in_scope = (lambda r: True) if scope == "overall" else (lambda r, a=scope: r["architecture"] == a)
            loc, lu, lt = _per_seed(runs, seeds, lambda r: in_scope(r) and r["invariant"] == "local", value)
            glo, gu, gt = _per_seed(runs, seeds, lambda r: in_scope(r) and r["invariant"] == "global", value)
            out.append(
                {
                    "hypothesis": "H1 local transfers better than global",
                    "transfer_set": t,
                    "scope": scope,
                    "local": float(_nanmean(loc)),
                    "global": float(_nanmean(glo)),
                    "learnt": f"local {lu}/{lt}, global {gu}/{gt}",
                    "statistic": "chance-corrected transfer, local minus global",
                    **_decide(loc, glo, confidence),
                }
            )
        # H2 across architectures
        depth = {a: next(r["depth"] for r in runs if r["architecture"] == a) for a in archs}
        glob = {
            a: float(
                _nanmean(
                    _per_seed(runs, seeds, lambda r, a=a: r["architecture"] == a and r["invariant"] == "global", value)[
                        0
                    ]
                )
            )
            for a in archs
        }
        n_depths = len(set(depth.values()))
        rho, p_up, p_down = float("nan"), float("nan"), float("nan")
        usable = [a for a in archs if np.isfinite(glob[a])]
        if len({depth[a] for a in usable}) >= 2:
            from itertools import permutations

            from scipy.stats import spearmanr

            d = np.array([depth[a] for a in usable], float)
            g = np.array([glob[a] for a in usable])
            rho = float(spearmanr(d, g)[0])
            perms = [float(spearmanr(d, g[list(pi)])[0]) for pi in permutations(range(len(g)))] if len(g) <= 8 else []
            if perms:
                p_up = float(np.mean([x >= rho - 1e-12 for x in perms]))
                p_down = float(np.mean([x <= rho + 1e-12 for x in perms]))
        alpha, note = (1 - confidence) / 2, ""
        if n_depths < MIN_DEPTHS:
            verdict, note = (
                "undecided",
                f"{n_depths} depth{'s' if n_depths != 1 else ''}: descriptive (a verdict needs {MIN_DEPTHS})",
            )
        else:
            verdict = "supported" if p_up < alpha else "contradicted" if p_down < alpha else "undecided"
        out.append(
            {
                "hypothesis": "H2 deeper transfers global better",
                "transfer_set": t,
                "scope": "overall",
                "estimate": rho,
                "ci": [float("nan"), float("nan")],
                "p_value": p_up,
                "p_value_decreasing": p_down,
                "n_seeds": len(seeds),
                "depths": depth,
                "global_by_architecture": glob,
                "statistic": "Spearman rho, depth vs global chance-corrected transfer",
                "n_depths": n_depths,
                "verdict": verdict,
                "note": note,
            }
        )
    # C: learning speed, paired per seed
    for scope in ["overall"] + (archs if len(archs) > 1 else []):
        in_scope = (lambda r: True) if scope == "overall" else (lambda r, a=scope: r["architecture"] == a)

        def auc(start, inv):
            return _per_seed(
                runs, seeds, lambda r: in_scope(r) and r["start"] == start and r["invariant"] == inv, _auc
            )[0]

        local_row = {
            "hypothesis": "C pretrained learns local tasks faster",
            "transfer_set": "-",
            "scope": scope,
            "statistic": "chance-corrected learning-curve area, pretrained minus scratch",
            **_decide(auc("pretrained", "local"), auc("scratch", "local"), confidence),
        }
        global_row = {
            "hypothesis": "C scratch learns global tasks faster",
            "transfer_set": "-",
            "scope": scope,
            "statistic": "chance-corrected learning-curve area, scratch minus pretrained",
            **_decide(auc("scratch", "global"), auc("pretrained", "global"), confidence),
        }
        parts = (local_row["verdict"], global_row["verdict"])
        both = (
            "supported"
            if parts == ("supported", "supported")
            else "contradicted"
            if "contradicted" in parts
            else "undecided"
        )
        out += [
            local_row,
            global_row,
            {
                "hypothesis": "C (both parts)",
                "transfer_set": "-",
                "scope": scope,
                "estimate": float("nan"),
                "ci": [float("nan"), float("nan")],
                "n_seeds": local_row["n_seeds"],
                "verdict": both,
                "note": local_row["note"] or global_row["note"],
            },
        ]
    return out


@dataclass
class ProbesResult(StudyResult):
    """What ``run_probes`` measured.

    Attributes
    ----------
    config : the study's config.
    runs : one row per (experiment, architecture, start, seed) fine-tuning run: accuracies on the
        training distribution and each transfer set, learning curve, per-image correctness.
    probes : one row per (experiment, architecture, start, layer): the linear probe's accuracies.
    notes : what was substituted or left out, and why.
    experiment : the run folder.
    floors : per experiment: chance, the shortcut floor per set, the random network's best probe.
    histories : per-epoch records per ``(arm, seed)``, arm = "<experiment>-<architecture>-<start>".
    """

    config: ProbesConfig
    runs: list[dict]
    probes: list[dict]
    notes: list[str]
    experiment: RunDir | None = None
    _frozen: dict = field(default_factory=dict, repr=False)  # (arch, start, seed) → state dict of the starting network
    _cache: dict = field(default_factory=dict, repr=False)
    floors: list[dict] = field(default_factory=list)
    histories: dict = field(default_factory=dict)

    # ---------------------------------------------------------------- tables
    def table(self) -> list[dict]:
        """Mean over seeds per (experiment, architecture, start): accuracies and chance-corrected
        transfer per transfer set."""
        out = []
        keys = list(dict.fromkeys((r["experiment"], r["architecture"], r["start"]) for r in self.runs))
        for e, a, s in keys:
            rs = [r for r in self.runs if (r["experiment"], r["architecture"], r["start"]) == (e, a, s)]
            reach = [r["images_to_target"] for r in rs if r["images_to_target"] is not None]
            row = {
                "experiment": e,
                "invariant": rs[0]["invariant"],
                "architecture": a,
                "start": s,
                "depth": rs[0]["depth"],
                "chance": rs[0]["chance"],
                "train_acc": float(np.mean([r["train_acc"] for r in rs])),
                "images_to_target": float(np.mean(reach)) if len(reach) == len(rs) else None,
                "curve_auc": float(np.mean([r["curve_auc"] for r in rs])),
                "n": len(rs),
                "n_learnt": sum(_learnt(r["train_acc"], r["chance"]) for r in rs),
            }
            for t in self.config.transfer_sets:
                row[f"{t}_acc"] = float(np.mean([r["transfer_acc"][t] for r in rs]))
                row[f"{t}_cc"] = float(_nanmean([r["transfer_cc"][t] for r in rs]))
            out.append(row)
        return out

    def verdicts(self) -> list[dict]:
        """H1, H2 and C, decided over seeds (``probe_verdicts``): the rows with every detail."""
        cfg = self.config
        return probe_verdicts(self.runs, transfer_sets=cfg.transfer_sets, confidence=cfg.confidence)

    def claims(self) -> list[Claim]:
        """``verdicts()`` as ``Claim``s: H1 and C paired over seeds, H2 over architectures (Spearman)."""
        out = []
        for v in self.verdicts():
            h2, both = v["hypothesis"].startswith("H2"), v["hypothesis"] == "C (both parts)"
            note = v.get("note", "")
            if h2:  # one-sided exact p over orderings; contradicted when the opposite p is below alpha
                note = "; ".join(x for x in (note, f"opposite p {v['p_value_decreasing']:.3g}") if x)
            if both:
                note = "; ".join(x for x in ("decided by the two parts above, each paired over seeds", note) if x)
            out.append(
                Claim(
                    v["hypothesis"],
                    v.get("statistic", "both parts of C"),
                    v["estimate"],
                    tuple(v["ci"]),
                    v.get("p_value", NAN),
                    len(v["depths"]) if h2 else v["n_seeds"],
                    "architectures (Spearman, exact permutations)" if h2 else "seeds",
                    v["verdict"],
                    note,
                    {"transfer set": v["transfer_set"], "scope": v["scope"]},
                    {
                        k: v[k]
                        for k in ("bootstrap_ci", "local", "global", "learnt", "depths", "p_value_decreasing")
                        if k in v
                    },
                )
            )
        return out

    # ---------------------------------------------------------------- on demand
    def embedding(self, experiment: str, architecture: str, start: str, layer: str, method: str = "umap"):
        """2-D projection of the pooled activations of a frozen starting network at ``layer`` on
        the experiment's probe images (cached)."""
        from ..projection import project

        key = (experiment, architecture, start, layer, method)
        if key not in self._cache:
            cfg = self.config
            model = _make_model(
                architecture, start, len(get_experiment(experiment).classes), cfg, self._frozen, cfg.seeds[0]
            )
            ds = _probe_data(cfg, experiment, architecture, "train", cfg.probe_n_per_class, "test")
            feats, labels = pooled_features(model, ds, [layer], device=resolve_device(cfg.device))
            self._cache[key] = (project(feats[layer], method, seed=0), labels)
        return self._cache[key]

    def gallery(self, experiment: str, per_class: int = 3):
        """Images for ``viz.ShapeGallery``: per class a row of training images, then each transfer set's."""
        exp = get_experiment(experiment)
        size = max(
            image_size(self.config, exp.key), min(self.config.image_size, 64)
        )  # the look of the task, at a browsable size
        sets = [("train", ProbeDataset(exp.key, "train", n_per_class=per_class, size=size, split="test", channels=1))]
        sets += [
            (t, ProbeDataset(exp.key, t, n_per_class=per_class, size=size, split="test", channels=1))
            for t in self.config.transfer_sets
        ]
        images, captions = [], []
        for c, name in enumerate(exp.classes):
            for tag, ds in sets:
                sel = (ds.labels == c).nonzero()[:, 0][:per_class]
                images += [ds.images[i] for i in sel]
                captions += [f"{tag}: {name}"] * len(sel)
        changes = "; ".join(f"{t} = {exp.tests_on(t)}" for t in self.config.transfer_sets)
        title = (
            f"{exp.key} {exp.name} ({exp.invariant}): training distribution | "
            + " | ".join(self.config.transfer_sets)
            + f"<br><sup>{exp.description}; {changes}</sup>"
        )
        return images, captions, len(sets) * per_class, title

    def layers_of(self, architecture: str) -> list[str]:
        """The blocks of ``architecture`` the layer probes read."""
        return block_layers(build_model(resolve_architecture(architecture)[0], 2))

    def summary(self) -> dict:
        """The table, the verdict rows, the claims, the floors, the probes and the notes."""
        return {
            "table": self.table(),
            "verdicts": self.verdicts(),
            "claims": claim_rows(self.claims()),
            "floors": self.floors,
            "probes": self.probes,
            "notes": self.notes,
        }


# -------------------------------------------------------------------- helpers
def image_size(cfg: ProbesConfig, experiment: str) -> int:
    """The config's image size, raised where a task needs more (``PROBE_MIN_SIZE``: inside/outside
    48 px, same_curve 64 px); the networks pool globally, so sizes may differ between experiments."""
    return max([cfg.image_size] + [PROBE_MIN_SIZE.get(t, 0) for t, _ in get_experiment(experiment).sources])


def _probe_data(cfg: ProbesConfig, experiment: str, architecture: str, which: str, n: int, split: str) -> ProbeDataset:
    return _probe_dataset(experiment, which, n, image_size(cfg, experiment), split, _imagenet(architecture))


@functools.lru_cache(maxsize=64)
def _probe_dataset(experiment: str, which: str, n: int, size: int, split: str, imagenet_norm: bool) -> ProbeDataset:
    """One generation per data set: every (network, start, seed) of an experiment reads the same
    images (a few hundred uint8 images each; read-only)."""
    return ProbeDataset(experiment, which, n_per_class=n, size=size, split=split, seed=0, imagenet_norm=imagenet_norm)


def _arm(experiment: str, arch: str, start: str) -> str:
    """A fine-tuning arm's name (its runs are ``<arm>-s<seed>``)."""
    return f"{experiment}-{arch.replace(':', '_')}-{start}"


def _pretrain_key(arch: str) -> str:
    return f"pretrain-{arch.replace(':', '_')}"


def _pretrain(arch: str, cfg: ProbesConfig, device, run_root, *, train: bool = True) -> str | None:
    """A zoo network pretrained on ``PRETRAINING`` (shapes10 classes no probe uses), once."""
    k = len(PRETRAINING.classes)

    def data():
        return (
            ProbeDataset(
                PRETRAINING, "train", n_per_class=max(1, cfg.pretrain_n // k), size=cfg.image_size, split="train"
            ),
            ProbeDataset(
                PRETRAINING, "train", n_per_class=max(10, cfg.pretrain_n // (10 * k)), size=cfg.image_size, split="val"
            ),
        )

    settings = {"n": cfg.pretrain_n, "size": cfg.image_size, "classes": PRETRAINING.classes}
    return pretrained_once(
        arch,
        k,
        data,
        name="probes-pretrain",
        settings=settings,
        epochs=cfg.pretrain_epochs,
        lr=0.05,
        batch_size=cfg.batch_size,
        device=device,
        run_root=run_root,
        train=train,
    )


def _make_model(arch: str, start: str, k: int, cfg: ProbesConfig, frozen: dict, seed: int = 0) -> nn.Module:
    name, _ = resolve_architecture(arch)
    key = (arch, start, seed if start == "scratch" else 0)
    if start == "pretrained" and _imagenet(name):
        model = build_model(name, k, weights=cfg.weights.get(arch, "DEFAULT"))
    else:
        model = build_model(name, k)
        if key in frozen:  # the same starting network for every experiment: only the head is new
            own = model.state_dict()
            model.load_state_dict(
                {kk: v for kk, v in frozen[key].items() if kk in own and own[kk].shape == v.shape}, strict=False
            )
    return model


def check_pretrained_weights(cfg: ProbesConfig) -> None:
    """Every ImageNet file the config needs must exist before any training starts."""
    if "pretrained" not in cfg.starts:
        return
    from pathlib import Path

    from ..models.torchvision_models import hub_weights_file

    missing = []
    for arch in cfg.architectures:
        name, _ = resolve_architecture(arch)
        if name.startswith("tv:"):
            w = cfg.weights.get(arch, "DEFAULT")
            path = Path(w) if Path(str(w)).suffix else hub_weights_file(name[3:], str(w))[0]
            if not path.is_file():
                url = hub_weights_file(name[3:], "DEFAULT")[1]
                missing.append(f"{arch}: {path} (from {url})")
        elif name.startswith("timm:") and not cfg.weights.get(arch):
            missing.append(
                f"{arch}: pass weights={{'{arch}': 'DEFAULT'}} (timm's weights, read from the Hugging Face cache) or "
                f"weights={{'{arch}': 'path/to/{name[5:]}.pth'}}"
            )
    if missing:
        raise FileNotFoundError(
            "pretrained weights are missing (geoviz never downloads "
            "them; copy each file there, or use starts=('scratch',)):\n  " + "\n  ".join(missing)
        )


def task_floors(cfg: ProbesConfig) -> list[dict]:
    """The shortcut floor of every experiment: ``panel_floor``'s shape panel (mask statistics with
    the dots' positions, downsampled pixels, texture statistics × logistic regression, gradient
    boosting, a random forest, nearest neighbours; the member chosen by cross-validation), fitted
    on ``floor_n_per_class`` images per class of the training distribution and scored on the
    networks' own test images of the training distribution (``shortcut_floor``) and of each
    transfer set (``shortcut_floor_<set>``): the levels the networks' accuracies there must beat,
    as the networks too are trained on the training distribution alone. ``floor_member``: the
    chosen member; ``floor_cv``: the panel's table."""
    out = []
    for e in cfg.experiments:
        exp = get_experiment(e)
        train = ProbeDataset(
            e, "train", n_per_class=cfg.floor_n_per_class, size=image_size(cfg, e), split="train", channels=1
        )
        tests = {}
        for which in ("train", *cfg.transfer_sets):
            test = ProbeDataset(
                e, which, n_per_class=cfg.n_test_per_class, size=image_size(cfg, e), split="test", channels=1
            )
            tests[which] = (test.images, test.labels.numpy(), test.dots)
        floor = panel_floor(
            train.images, train.labels.numpy(), tests, panel="shape", train_extras=train.dots, trees=cfg.floor_trees
        )
        acc = dict(floor.accuracy)
        out.append(
            {
                "experiment": exp.key,
                "invariant": exp.invariant,
                "chance": 1.0 / len(exp.classes),
                "shortcut_floor": acc.pop("train"),
                **{f"shortcut_floor_{t}": v for t, v in acc.items()},
                "floor_member": floor.member,
                "floor_cv": floor.cv,
            }
        )
    return out


def _correct(model, data, device) -> list[int]:
    logits, labels = predict(model, data, device=device)
    return (logits.argmax(1) == labels).int().tolist()


class ProbesStudy(Study):
    """Steps: ``floors``, ``run_units`` (each zoo architecture pretrained once where a ``pretrained``
    start needs it, then every (experiment, architecture, start, seed) fine-tuning run after it:
    ``units()``, carried out by the executor), ``starting_networks`` (scratch per seed, pretrained
    once), ``layer_probes`` of the frozen starting networks (in this process: linear probes, no training)."""

    key = "probes"
    gpus_per_run = 0.25  # small zoo networks at 64 px; not measured on a GPU yet

    def steps(self) -> ProbesResult:
        cfg = self.cfg
        check_pretrained_weights(cfg)
        notes = sorted({n for a in cfg.architectures for n in [resolve_architecture(a)[1]] if n})
        self.open_run(self.run_name())
        if any(s == "pretrained" for s in cfg.starts) and any(
            not _imagenet(resolve_architecture(a)[0]) for a in cfg.architectures
        ):
            notes.append(
                "zoo networks: 'pretrained' = pretrained by geoviz on shapes10 classes no experiment uses "
                f"({', '.join(PRETRAINING.classes)}; no ImageNet weights exist for them)"
            )
        floors = task_floors(cfg)
        self.run_units()
        runs = self.gather()
        frozen = self.starting_networks()
        probes = self.layer_probes(frozen)
        for f in floors:  # the random network's best block, where a scratch start was probed
            rand = [p["cv_acc"] for p in probes if p["experiment"] == f["experiment"] and p["start"] == "scratch"]
            f["random_network_probe"] = max(rand) if rand else None
        return ProbesResult(cfg, runs, probes, notes, self.exp, frozen, floors=floors, histories=self.histories)

    def run_name(self) -> str:
        """The study's folder: ``probes-<config hash>``."""
        return f"probes-{config_hash(self.cfg)}"

    # the runs as units --------------------------------------------------------------------------
    def _pretrained_here(self, arch: str) -> bool:
        """Whether the ``pretrained`` start of ``arch`` is pretrained by geoviz (zoo networks)."""
        return "pretrained" in self.cfg.starts and not _imagenet(resolve_architecture(arch)[0])

    def units(self) -> list[RunUnit]:
        """Each zoo architecture's pretraining (shared by every experiment and seed), then every
        (experiment, architecture, start, seed) fine-tuning run, a pretrained one after its pretraining."""
        cfg = self.cfg
        pretrain = {
            a: RunUnit(_pretrain_key(a), inputs={"pretrain": a}) for a in cfg.architectures if self._pretrained_here(a)
        }
        runs = [
            RunUnit(
                f"{_arm(get_experiment(e).key, a, s)}-s{seed}",
                (pretrain[a].key,) if s == "pretrained" and a in pretrain else (),
                {"experiment": e, "architecture": a, "start": s, "seed": seed},
            )
            for e in cfg.experiments
            for a in cfg.architectures
            for s in cfg.starts
            for seed in cfg.seeds
        ]
        return [*pretrain.values(), *runs]

    def measure_unit(self, unit: RunUnit, deps: dict) -> dict:
        """One fine-tuning run (``fine_tune``)."""
        i = unit.inputs
        pretrained = deps[unit.needs[0]] if unit.needs else None  # the file its pretraining unit made
        return self.fine_tune(i["experiment"], i["architecture"], i["start"], i["seed"], pretrained)

    def pretrained_file(self, arch: str, *, train: bool) -> str | None:
        """Zoo architecture ``arch`` pretrained once (``_pretrain``): its file (``train=False``: None if not yet)."""
        return _pretrain(resolve_architecture(arch)[0], self.cfg, self.device, self.run_root, train=train)

    def gather(self) -> list[dict]:
        """The fine-tuning runs' rows in the units' order (their histories kept under ``(arm, seed)``)."""
        rows = []
        for unit in self.units():
            if "pretrain" in unit.inputs:
                continue
            done = self.units_report.results[unit.key]
            row = done["row"]
            self.histories[(_arm(row["experiment"], row["architecture"], row["start"]), row["seed"])] = done["history"]
            rows.append(row)
        return rows

    def starting_networks(self) -> dict:
        """The starting networks, shared by every experiment: scratch differs per seed, pretrained is one."""
        cfg = self.cfg
        keys = [
            (arch, start, seed)
            for arch in cfg.architectures
            for start in cfg.starts
            if not (_imagenet(resolve_architecture(arch)[0]) and start == "pretrained")
            for seed in (cfg.seeds if start == "scratch" else (0,))
        ]
        files = self.units_report.results  # the pretraining units' files, as their workers made them
        return {key: self.starting_network(*key, files.get(_pretrain_key(key[0]))) for key in keys}

    def starting_network(self, arch: str, start: str, seed: int, pretrained: str | None) -> dict:
        """One starting network's state dict (``pretrained``: its pretraining unit's file, for a zoo
        network's ``pretrained`` start)."""
        name, _ = resolve_architecture(arch)
        seed_everything(4321 + seed)
        m = build_model(name, 10)
        if start == "pretrained":
            load_backbone(m, pretrained)
        return {k: v.clone() for k, v in m.state_dict().items()}

    def fine_tune(self, e: str, a: str, s: str, seed: int, pretrained: str | None = None) -> dict:
        """One fine-tuning run on the training distribution, scored there and on every transfer set
        (``pretrained``: the file its pretraining unit made, for a zoo network's ``pretrained`` start)."""
        cfg, device = self.cfg, self.device
        exp = get_experiment(e)
        k = len(exp.classes)
        train = _probe_data(cfg, e, a, "train", cfg.n_per_class, "train")
        val = _probe_data(cfg, e, a, "train", cfg.n_val_per_class, "val")
        test = _probe_data(cfg, e, a, "train", cfg.n_test_per_class, "test")
        arm = _arm(exp.key, a, s)
        key = (a, s, seed if s == "scratch" else 0)
        imagenet = s == "pretrained" and _imagenet(resolve_architecture(a)[0])  # its weights come from the file
        frozen = {} if imagenet else {key: self.starting_network(*key, pretrained)}
        model, res = self.fit_arm(
            arm,
            seed,
            lambda: _make_model(a, s, k, cfg, frozen, seed),
            train,
            val,
            epochs=cfg.epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
        )
        curve = [(h["epoch"] * len(train), h["val_acc"]) for h in res.history]
        reach = next((n for n, acc in curve if acc >= cfg.target_acc), None)
        correct = {"test": _correct(model, test, device)}
        for t in cfg.transfer_sets:
            correct[t] = _correct(model, _probe_data(cfg, e, a, t, cfg.n_test_per_class, "test"), device)
        train_acc = float(np.mean(correct["test"]))
        acc = {t: float(np.mean(correct[t])) for t in cfg.transfer_sets}
        row = {
            "experiment": exp.key,
            "name": exp.name,
            "invariant": exp.invariant,
            "architecture": a,
            "start": s,
            "seed": seed,
            "depth": weight_layers(model),
            "train_acc": train_acc,
            "transfer_acc": acc,
            "transfer_cc": {t: chance_corrected(acc[t], train_acc, 1.0 / k) for t in cfg.transfer_sets},
            "curve": curve,
            "images_to_target": reach,
            "epochs_to_target": None if reach is None else reach // len(train),
            "curve_auc": float(np.mean([v for _, v in curve])),
            "chance": 1.0 / k,
            "correct": correct,
        }
        self.arm_run(f"{arm}-s{seed}").write_summary(
            transfer_acc=acc, transfer_cc=row["transfer_cc"], images_to_target=reach
        )
        return row

    def layer_probes(self, frozen: dict) -> list[dict]:
        """Layer-wise linear probes of the frozen starting networks (seed 0's scratch network)."""
        cfg, probes = self.cfg, []
        pjobs = [(e, a, s) for e in cfg.experiments for a in cfg.architectures for s in cfg.starts]
        for e, a, s in progress_bar(pjobs, desc="layer probes", enabled=self.progress):
            exp = get_experiment(e)
            model = _make_model(a, s, len(exp.classes), cfg, frozen, cfg.seeds[0]).to(self.device).eval()
            ptrain = _probe_data(cfg, e, a, "train", cfg.probe_n_per_class, "test")
            ptransfer = _probe_data(cfg, e, a, "both", cfg.probe_n_per_class, "test")
            for row in probe_layers(model, ptrain, ptransfer, folds=cfg.probe_folds, device=self.device):
                probes.append(
                    {
                        "experiment": exp.key,
                        "invariant": exp.invariant,
                        "architecture": a,
                        "start": s,
                        **row,
                        "chance": 1.0 / len(exp.classes),
                    }
                )
        return probes


def run_probes(
    cfg: ProbesConfig,
    *,
    run_root=None,
    progress: bool = True,
    reuse: str | None = None,
    **execution: Unpack[ExecutionOptions],
) -> ProbesResult:
    """Fine-tune every architecture from scratch and pretrained on each shape experiment, score the
    transfer sets, probe the frozen networks layer by layer, and decide H1, H2 and C
    (``ProbesStudy``); writes ``runs/probes-<hash>/`` (and ``runs/probes-pretrain-*`` once per network).
    ``executor="ray"`` hands each run to a Ray task (see ``run_transfer``); both give the same result."""
    return ProbesStudy.launch(cfg, run_root=run_root, progress=progress, reuse=reuse, **execution)
