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
``probe_verdicts`` with bootstrap intervals over seeds and test images, three-valued
(supported / contradicted / undecided): H1 local invariants transfer better than global ones;
H2 deeper networks transfer global invariants better (needs >= 3 depths); C pretrained networks
learn local tasks faster and networks from scratch learn global tasks faster.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from .._utils import progress_bar, resolve_device, seed_everything
from ..analysis.probes import pooled_features, probe_layers
from ..config import ExperimentConfig
from ..analysis.floors import mask_statistics, shortcut_floor
from ..datasets.probe_tasks import EXPERIMENTS, PRETRAINING, TRANSFER_SETS, ProbeDataset, get_experiment
from ..engine import fit
from ..inference import predict
from ..models import block_layers, build_model, list_models, save_model, weight_layers
from ..models import timm_available
from ..runs import RunDir, config_hash
from . import SavesSummary

STARTS = ("pretrained", "scratch")
MIN_SEEDS = 3  # fewer seeds cannot decide a hypothesis
MIN_DEPTHS = 3  # H2 needs at least three depths
PAPER_ARCHITECTURES = ("tv:alexnet", "tv:vgg16", "tv:resnet101", "inception_resnet_v2")


def resolve_architecture(name: str) -> tuple[str, str | None]:
    """The registry name to build, and a note when a substitute is used."""
    if name == "inception_resnet_v2":
        if timm_available():
            return "timm:inception_resnet_v2", None
        return "tv:inception_v3", "Inception-ResNet-v2 is not in torchvision and timm is not installed: Inception-v3 stands in"
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
    bootstrap: int = 2000
    confidence: float = 0.95
    weights: dict = field(default_factory=dict)  # architecture → local weights file ("DEFAULT": the torch hub cache)
    probe_n_per_class: int = 60
    probe_folds: int = 3
    device: str = "auto"

    PROFILE_OVERRIDES = {
        "smoke": dict(experiments=("E1", "E3"), architectures=("resnet8",), n_per_class=30, n_val_per_class=10, n_test_per_class=20,
                      epochs=2, seeds=(0,), pretrain_epochs=1, pretrain_n=200, probe_n_per_class=15, floor_n_per_class=40, bootstrap=200),
        "full": dict(experiments=tuple(EXPERIMENTS), architectures=PAPER_ARCHITECTURES, image_size=224, n_per_class=500, n_val_per_class=100, n_test_per_class=200,
                     epochs=10, batch_size=64, lr=0.01, seeds=(0, 1, 2, 3, 4), probe_n_per_class=200),
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
        from ..datasets.shapes import TASK_MIN_SIZE

        need = max([32] + [TASK_MIN_SIZE.get(t, 0) for e in self.experiments for t, _ in get_experiment(e).sources])
        if self.image_size < need:
            raise ValueError(f"image_size must be >= {need} for experiments {list(self.experiments)} (inside/outside needs 32 px, "
                             f"same_curve 64 px: room for their dots), got {self.image_size}")


def _nanmean(x, axis=None):
    """Mean without NaN (runs that did not learn their task), NaN when nothing is left, silently."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


LEARNT = 0.2  # a run has learnt its task when it is this far from chance towards 1 (else its transfer is undefined)


def _learnt(train_acc, chance):
    return train_acc >= chance + LEARNT * (1 - chance)


def chance_corrected(acc: float, train_acc: float, chance: float) -> float:
    """(acc − chance) / (train_acc − chance): 1 = transfers fully, 0 = down to chance; NaN when the
    network did not learn the training distribution (less than ``LEARNT`` of the way from chance
    to 1: the ratio of two near-chance accuracies is noise, not transfer)."""
    return (acc - chance) / (train_acc - chance) if _learnt(train_acc, chance) else float("nan")


def _interval_verdict(lo: float, hi: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undecided"
    return "supported" if lo > 0 else "contradicted" if hi < 0 else "undecided"


def _replicates(correct: np.ndarray, B: int, rng) -> np.ndarray:
    """(B,) accuracies of the test images resampled with replacement."""
    c = np.asarray(correct, dtype=np.float64)
    return c[rng.integers(0, len(c), size=(B, len(c)))].mean(axis=1)


def probe_verdicts(runs: list[dict], *, transfer_sets=TRANSFER_SETS, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """H1, H2 and C from fine-tuning runs, with bootstrap intervals over seeds and test images.

    Each run needs ``experiment``, ``invariant`` ("local" / "global"), ``architecture``, ``start``,
    ``seed``, ``depth``, ``chance``, ``curve_auc`` and ``correct``: per test set ("test" and each
    transfer set) a 0/1 list, one entry per image. A bootstrap replicate resamples the images of
    every test set (so chance-corrected transfer is recomputed) and then the seeds. Rows: one per
    (hypothesis, transfer set, scope = "overall" or an architecture) with the point estimate, the
    interval and a verdict — supported (interval above 0), contradicted (below 0), undecided (it
    contains 0), or undecided with the reason when there are fewer than ``MIN_SEEDS`` seeds (or,
    for H2, fewer than ``MIN_DEPTHS`` depths).
    """
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    seeds = sorted({r["seed"] for r in runs})
    archs = list(dict.fromkeys(r["architecture"] for r in runs))
    B = n_boot
    few = f"undecided ({len(seeds)} seed{'s' if len(seeds) != 1 else ''})" if len(seeds) < MIN_SEEDS else None
    # image-level replicates of chance-corrected transfer, per run and set: (B,) arrays (+ point value)
    cc = {}
    for i, r in enumerate(runs):
        train_b = _replicates(r["correct"]["test"], B, rng)
        train = float(np.mean(r["correct"]["test"]))
        for t in transfer_sets:
            acc_b = _replicates(r["correct"][t], B, rng)
            with np.errstate(divide="ignore", invalid="ignore"):
                rep = np.where(_learnt(train_b, r["chance"]), (acc_b - r["chance"]) / (train_b - r["chance"]), np.nan)
            cc[(i, t)] = (chance_corrected(float(np.mean(r["correct"][t])), train, r["chance"]), rep)
    seed_draws = rng.integers(0, len(seeds), size=(B, len(seeds)))

    def per_seed(select, value):
        """(point, (B,) replicate) of the mean over seeds of value(runs of that seed), seeds resampled."""
        pts, reps = [], []
        for sd in seeds:
            idx = [i for i, r in enumerate(runs) if r["seed"] == sd and select(r)]
            if not idx:
                return float("nan"), np.full(B, np.nan)
            p, rep = value(idx)
            pts.append(p), reps.append(rep)
        reps = np.stack(reps, 1)  # (B, seeds)
        return float(np.mean(pts)), np.take_along_axis(reps, seed_draws, 1).mean(axis=1)

    def mean_cc(t):
        return lambda idx: (_nanmean([cc[(i, t)][0] for i in idx]), _nanmean(np.stack([cc[(i, t)][1] for i in idx]), 0))

    def row(hyp, t, scope, point, rep, extra=None, reason=None):
        lo, hi = (np.nanquantile(rep, [alpha, 1 - alpha]) if np.isfinite(rep).any() else (np.nan, np.nan))
        verdict = reason or _interval_verdict(lo, hi)
        return {"hypothesis": hyp, "transfer_set": t, "scope": scope, "estimate": point, "ci": [float(lo), float(hi)],
                "n_seeds": len(seeds), "verdict": verdict, **(extra or {})}

    out = []
    for t in transfer_sets:
        for scope in ["overall"] + (archs if len(archs) > 1 else []):
            in_scope = (lambda r: True) if scope == "overall" else (lambda r, a=scope: r["architecture"] == a)
            lp, lrep = per_seed(lambda r: in_scope(r) and r["invariant"] == "local", mean_cc(t))
            gp, grep_ = per_seed(lambda r: in_scope(r) and r["invariant"] == "global", mean_cc(t))
            out.append(row("H1 local transfers better than global", t, scope, lp - gp, lrep - grep_,
                           {"local": lp, "global": gp, "statistic": "chance-corrected transfer, local minus global"}, few))
        # H2: Spearman correlation of depth and global transfer across architectures
        depth = {a: next(r["depth"] for r in runs if r["architecture"] == a) for a in archs}
        vals = {a: per_seed(lambda r, a=a: r["architecture"] == a and r["invariant"] == "global", mean_cc(t)) for a in archs}
        n_depths = len(set(depth.values()))
        reason = few or (f"undecided ({n_depths} depth{'s' if n_depths != 1 else ''})" if n_depths < MIN_DEPTHS else None)
        if n_depths >= 2:
            from scipy.stats import spearmanr

            d = np.array([depth[a] for a in archs], dtype=float)
            point = float(spearmanr(d, [vals[a][0] for a in archs])[0])
            reps = np.stack([vals[a][1] for a in archs], 1)
            rep = np.array([spearmanr(d, reps[b])[0] if np.isfinite(reps[b]).all() and np.ptp(reps[b]) > 0 else np.nan for b in range(B)])
        else:
            point, rep = float("nan"), np.full(B, np.nan)
        out.append(row("H2 deeper transfers global better", t, "overall", point, rep,
                       {"depths": depth, "global_by_architecture": {a: vals[a][0] for a in archs}, "statistic": "Spearman rho, depth vs global chance-corrected transfer"}, reason))
    # C: learning speed (mean validation accuracy over the curve), paired per seed
    for scope in ["overall"] + (archs if len(archs) > 1 else []):
        in_scope = (lambda r: True) if scope == "overall" else (lambda r, a=scope: r["architecture"] == a)

        def auc(start, inv):
            return per_seed(lambda r: in_scope(r) and r["start"] == start and r["invariant"] == inv,
                            lambda idx: (float(np.mean([runs[i]["curve_auc"] for i in idx])), np.full(B, np.mean([runs[i]["curve_auc"] for i in idx]))))

        pl, pl_r = auc("pretrained", "local")
        sl, sl_r = auc("scratch", "local")
        sg, sg_r = auc("scratch", "global")
        pg, pg_r = auc("pretrained", "global")
        local_row = row("C pretrained learns local tasks faster", "-", scope, pl - sl, pl_r - sl_r, {"statistic": "curve AUC, pretrained minus scratch"}, few)
        global_row = row("C scratch learns global tasks faster", "-", scope, sg - pg, sg_r - pg_r, {"statistic": "curve AUC, scratch minus pretrained"}, few)
        both = ("supported" if local_row["verdict"] == global_row["verdict"] == "supported" else
                "contradicted" if "contradicted" in (local_row["verdict"], global_row["verdict"]) else few or "undecided")
        out += [local_row, global_row, {"hypothesis": "C (both parts)", "transfer_set": "-", "scope": scope, "estimate": float("nan"),
                                        "ci": [float("nan"), float("nan")], "n_seeds": len(seeds), "verdict": both}]
    return out


@dataclass
class ProbesResult(SavesSummary):
    config: ProbesConfig
    runs: list[dict]
    probes: list[dict]
    notes: list[str]
    experiment: RunDir | None = None
    _frozen: dict = field(default_factory=dict, repr=False)  # (arch, start, seed) → state dict of the starting network
    _cache: dict = field(default_factory=dict, repr=False)
    floors: list[dict] = field(default_factory=list)

    # ---------------------------------------------------------------- tables
    def table(self) -> list[dict]:
        """Mean over seeds per (experiment, architecture, start): accuracies and chance-corrected
        transfer per transfer set."""
        out = []
        keys = list(dict.fromkeys((r["experiment"], r["architecture"], r["start"]) for r in self.runs))
        for e, a, s in keys:
            rs = [r for r in self.runs if (r["experiment"], r["architecture"], r["start"]) == (e, a, s)]
            reach = [r["images_to_target"] for r in rs if r["images_to_target"] is not None]
            row = {"experiment": e, "invariant": rs[0]["invariant"], "architecture": a, "start": s, "depth": rs[0]["depth"], "chance": rs[0]["chance"],
                   "train_acc": float(np.mean([r["train_acc"] for r in rs])),
                   "images_to_target": float(np.mean(reach)) if len(reach) == len(rs) else None,
                   "curve_auc": float(np.mean([r["curve_auc"] for r in rs])), "n": len(rs),
                   "n_learnt": sum(_learnt(r["train_acc"], r["chance"]) for r in rs)}
            for t in self.config.transfer_sets:
                row[f"{t}_acc"] = float(np.mean([r["transfer_acc"][t] for r in rs]))
                row[f"{t}_cc"] = float(_nanmean([r["transfer_cc"][t] for r in rs]))
            out.append(row)
        return out

    def verdicts(self) -> list[dict]:
        """H1, H2 and C, decided with bootstrap intervals (``probe_verdicts``)."""
        cfg = self.config
        return probe_verdicts(self.runs, transfer_sets=cfg.transfer_sets, n_boot=cfg.bootstrap, confidence=cfg.confidence)

    # ---------------------------------------------------------------- on demand
    def embedding(self, experiment: str, architecture: str, start: str, layer: str, method: str = "umap"):
        """2-D projection of the pooled activations of a frozen starting network at ``layer`` on
        the experiment's probe images (cached)."""
        from ..projection import project

        key = (experiment, architecture, start, layer, method)
        if key not in self._cache:
            cfg = self.config
            model = _make_model(architecture, start, len(get_experiment(experiment).classes), cfg, self._frozen, cfg.seeds[0])
            ds = _probe_data(cfg, experiment, architecture, "train", cfg.probe_n_per_class, "test")
            feats, labels = pooled_features(model, ds, [layer], device=resolve_device(cfg.device))
            self._cache[key] = (project(feats[layer], method, seed=0), labels)
        return self._cache[key]

    def gallery(self, experiment: str, per_class: int = 3):
        """Images for ``viz.ShapeGallery``: per class a row of training images, then each transfer set's."""
        exp = get_experiment(experiment)
        size = max(32, min(self.config.image_size, 64))  # the look of the task, at a browsable size
        sets = [("train", ProbeDataset(exp.key, "train", n_per_class=per_class, size=size, split="test", channels=1))]
        sets += [(t, ProbeDataset(exp.key, t, n_per_class=per_class, size=size, split="test", channels=1)) for t in self.config.transfer_sets]
        images, captions = [], []
        for c, name in enumerate(exp.classes):
            for tag, ds in sets:
                sel = (ds.labels == c).nonzero()[:, 0][:per_class]
                images += [ds.images[i] for i in sel]
                captions += [f"{tag}: {name}"] * len(sel)
        changes = "; ".join(f"{t} = {exp.tests_on(t)}" for t in self.config.transfer_sets)
        title = f"{exp.key} {exp.name} ({exp.invariant}): training distribution | " + " | ".join(self.config.transfer_sets) + f"<br><sup>{exp.description}; {changes}</sup>"
        return images, captions, len(sets) * per_class, title

    def layers_of(self, architecture: str) -> list[str]:
        return block_layers(build_model(resolve_architecture(architecture)[0], 2))

    def summary(self) -> dict:
        return {"table": self.table(), "verdicts": self.verdicts(), "floors": self.floors, "probes": self.probes, "notes": self.notes}



# -------------------------------------------------------------------- helpers
def _probe_data(cfg: ProbesConfig, experiment: str, architecture: str, which: str, n: int, split: str) -> ProbeDataset:
    return ProbeDataset(experiment, which, n_per_class=n, size=cfg.image_size, split=split, seed=0, imagenet_norm=_imagenet(architecture))


def _pretrain(arch: str, cfg: ProbesConfig, device, run_root) -> str:
    """Pretrain a zoo network on ``PRETRAINING`` (shapes10 classes no probe uses) once, cached by
    its settings; returns its model file."""
    settings = {"arch": arch, "n": cfg.pretrain_n, "epochs": cfg.pretrain_epochs, "size": cfg.image_size, "classes": PRETRAINING.classes}
    run = RunDir(f"probes-pretrain-{arch}-{config_hash(settings)}", run_root)
    path = run.path / "model.pt"
    if not path.is_file():
        seed_everything(1234)
        k = len(PRETRAINING.classes)
        model = build_model(arch, k)
        train = ProbeDataset(PRETRAINING, "train", n_per_class=max(1, cfg.pretrain_n // k), size=cfg.image_size, split="train")
        val = ProbeDataset(PRETRAINING, "train", n_per_class=max(10, cfg.pretrain_n // (10 * k)), size=cfg.image_size, split="val")
        fit(model, train, val, epochs=cfg.pretrain_epochs, lr=0.05, batch_size=cfg.batch_size, device=device, run=run, seed=1234, progress=False)
        save_model(model, path)
    return str(path)


def _load_backbone(model: nn.Module, path: str) -> None:
    """Pretrained weights except the classifier (the task has other classes)."""
    from .._io import load_weights_only

    blob = load_weights_only(path)
    state = blob.get("state_dict", blob)
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in keep and not k.startswith("fc.")]
    if missing:
        raise ValueError(f"{path} lacks weights for {missing[:5]} of this architecture")
    model.load_state_dict(keep, strict=False)


def _make_model(arch: str, start: str, k: int, cfg: ProbesConfig, frozen: dict, seed: int = 0) -> nn.Module:
    name, _ = resolve_architecture(arch)
    key = (arch, start, seed if start == "scratch" else 0)
    if start == "pretrained" and _imagenet(name):
        model = build_model(name, k, weights=cfg.weights.get(arch, "DEFAULT"))
    else:
        model = build_model(name, k)
        if key in frozen:  # the same starting network for every experiment: only the head is new
            own = model.state_dict()
            model.load_state_dict({kk: v for kk, v in frozen[key].items() if kk in own and own[kk].shape == v.shape}, strict=False)
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
            missing.append(f"{arch}: pass weights={{'{arch}': 'path/to/{name[5:]}.pth'}} (timm weights are never downloaded)")
    if missing:
        raise FileNotFoundError("pretrained weights are missing (geoviz never downloads them; copy each file there, or use starts=('scratch',)):\n  "
                                + "\n  ".join(missing))


def task_floors(cfg: ProbesConfig) -> list[dict]:
    """The shortcut floor of every experiment: a gradient-boosted classifier on mask statistics
    (plus the dot's position for inside/outside), trained on ``floor_n_per_class`` images per class
    and scored on the networks' own test images."""
    out = []
    for e in cfg.experiments:
        exp = get_experiment(e)
        train = ProbeDataset(e, "train", n_per_class=cfg.floor_n_per_class, size=cfg.image_size, split="train", channels=1)
        test = ProbeDataset(e, "train", n_per_class=cfg.n_test_per_class, size=cfg.image_size, split="test", channels=1)
        acc = shortcut_floor(mask_statistics(train.images, train.dots), train.labels.numpy(), mask_statistics(test.images, test.dots), test.labels.numpy())
        out.append({"experiment": exp.key, "invariant": exp.invariant, "chance": 1.0 / len(exp.classes), "shortcut_floor": acc})
    return out


def _correct(model, data, device) -> list[int]:
    logits, labels = predict(model, data, device=device)
    return (logits.argmax(1) == labels).int().tolist()


def run_probes(cfg: ProbesConfig, *, run_root=None, progress: bool = True) -> ProbesResult:
    check_pretrained_weights(cfg)
    device = resolve_device(cfg.device)
    notes = sorted({n for a in cfg.architectures for n in [resolve_architecture(a)[1]] if n})
    exp_dir = RunDir(f"probes-{config_hash(cfg)}", run_root)
    exp_dir.write_config(cfg)

    # the starting networks, shared by every experiment: scratch differs per seed, pretrained is one
    frozen = {}
    for arch in cfg.architectures:
        name, _ = resolve_architecture(arch)
        for start in cfg.starts:
            if _imagenet(name) and start == "pretrained":
                continue
            for seed in (cfg.seeds if start == "scratch" else (0,)):
                seed_everything(4321 + seed)
                m = build_model(name, 10)
                if start == "pretrained":
                    _load_backbone(m, _pretrain(name, cfg, device, run_root))
                frozen[(arch, start, seed)] = {k: v.clone() for k, v in m.state_dict().items()}
    if any(s == "pretrained" for s in cfg.starts) and any(not _imagenet(resolve_architecture(a)[0]) for a in cfg.architectures):
        notes.append("zoo networks: 'pretrained' = pretrained by geoviz on shapes10 classes no experiment uses "
                     f"({', '.join(PRETRAINING.classes)}; no ImageNet weights exist for them)")

    floors = task_floors(cfg)
    runs, probes = [], []
    jobs = [(e, a, s, seed) for e in cfg.experiments for a in cfg.architectures for s in cfg.starts for seed in cfg.seeds]
    for e, a, s, seed in progress_bar(jobs, desc="fine-tuning runs", enabled=progress):
        exp = get_experiment(e)
        k = len(exp.classes)
        train = _probe_data(cfg, e, a, "train", cfg.n_per_class, "train")
        val = _probe_data(cfg, e, a, "train", cfg.n_val_per_class, "val")
        test = _probe_data(cfg, e, a, "train", cfg.n_test_per_class, "test")
        name = f"{exp.key}-{a.replace(':', '_')}-{s}-s{seed}"
        rd = RunDir(name, exp_dir.path)
        seed_everything(seed)
        model = _make_model(a, s, k, cfg, frozen, seed)
        res = fit(model, train, val, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, device=device, run=rd, seed=seed, progress=False)
        curve = [(h["epoch"] * len(train), h["val_acc"]) for h in res.history]
        reach = next((n for n, acc in curve if acc >= cfg.target_acc), None)
        correct = {"test": _correct(model, test, device)}
        for t in cfg.transfer_sets:
            correct[t] = _correct(model, _probe_data(cfg, e, a, t, cfg.n_test_per_class, "test"), device)
        train_acc = float(np.mean(correct["test"]))
        acc = {t: float(np.mean(correct[t])) for t in cfg.transfer_sets}
        runs.append({"experiment": exp.key, "name": exp.name, "invariant": exp.invariant, "architecture": a, "start": s, "seed": seed,
                     "depth": weight_layers(model), "train_acc": train_acc, "transfer_acc": acc,
                     "transfer_cc": {t: chance_corrected(acc[t], train_acc, 1.0 / k) for t in cfg.transfer_sets}, "curve": curve,
                     "images_to_target": reach, "epochs_to_target": None if reach is None else reach // len(train),
                     "curve_auc": float(np.mean([v for _, v in curve])), "chance": 1.0 / k, "correct": correct})
        rd.write_summary(transfer_acc=acc, transfer_cc=runs[-1]["transfer_cc"], images_to_target=reach)

    # layer-wise linear probes of the frozen starting networks (seed 0's scratch network)
    pjobs = [(e, a, s) for e in cfg.experiments for a in cfg.architectures for s in cfg.starts]
    for e, a, s in progress_bar(pjobs, desc="layer probes", enabled=progress):
        exp = get_experiment(e)
        model = _make_model(a, s, len(exp.classes), cfg, frozen, cfg.seeds[0]).to(device).eval()
        ptrain = _probe_data(cfg, e, a, "train", cfg.probe_n_per_class, "test")
        ptransfer = _probe_data(cfg, e, a, "both", cfg.probe_n_per_class, "test")
        for row in probe_layers(model, ptrain, ptransfer, folds=cfg.probe_folds, device=device):
            probes.append({"experiment": exp.key, "invariant": exp.invariant, "architecture": a, "start": s, **row,
                           "chance": 1.0 / len(exp.classes)})
    for f in floors:  # the random network's best block, where a scratch start was probed
        rand = [p["cv_acc"] for p in probes if p["experiment"] == f["experiment"] and p["start"] == "scratch"]
        f["random_network_probe"] = max(rand) if rand else None
    return ProbesResult(cfg, runs, probes, notes, exp_dir, frozen, floors=floors)
