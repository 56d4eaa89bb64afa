"""ShapeNet-style transfer probes (Zheng et al., Front. Comput. Neurosci. 2021): do networks learn
local invariants (square vs rectangle, ...) or global ones (hole, connectivity, inside/outside),
how well does that learning transfer to new shapes, and where is each invariant decodable?

For each (experiment, architecture, start, seed) a network is fine-tuned on the experiment's
training distribution with a learning curve (validation accuracy vs images seen, and the images
needed to reach ``target_acc``), then scored on a held-out test split of the training
distribution and on the transfer set (irregular outlines, other sizes); the transfer ratio is
their quotient. Beyond the paper, each *frozen* starting network is probed block by block with
logistic regression (``analysis.probes``).

Starts: ``scratch`` is random initialisation. ``pretrained`` is ImageNet weights for ``tv:``
models (read from a local file or the torch hub cache, never downloaded: a missing file stops
the run before any training, naming every file needed). The small CPU networks have no ImageNet
weights; for them ``pretrained`` means pretrained on shapes10 by geoviz (our stand-in, cached in
``runs/``), which keeps the question — does prior visual training help local vs global learning? —
answerable on a laptop.

The two hypotheses the paper tested (and rejected), and its companion finding, are computed from
the data: H1 local invariants transfer better than global ones; H2 deeper networks transfer
global invariants better; C pretrained networks learn local tasks faster, networks from scratch
learn global tasks faster.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from .._utils import progress_bar, resolve_device, seed_everything
from ..analysis.probes import pooled_features, probe_layers
from ..config import ExperimentConfig
from ..datasets import get_dataset
from ..datasets.probe_tasks import EXPERIMENTS, ProbeDataset, get_experiment
from ..engine import evaluate, fit
from ..models import block_layers, build_model, list_models, save_model, weight_layers
from ..models import timm_available
from ..runs import RunDir, config_hash
from . import SavesSummary

STARTS = ("pretrained", "scratch")
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
    experiments: tuple = tuple(EXPERIMENTS)
    architectures: tuple = ("resnet8", "resnet14")
    starts: tuple = STARTS
    image_size: int = 32
    n_per_class: int = 150
    n_val_per_class: int = 40
    n_test_per_class: int = 80  # the held-out training distribution and the transfer set each
    epochs: int = 6
    batch_size: int = 32
    lr: float = 0.05  # from scratch
    lr_pretrained: float = 0.01  # fine-tuning
    seeds: tuple = (0,)
    target_acc: float = 0.9
    pretrain_epochs: int = 8  # zoo networks' "pretrained" start: shapes10
    pretrain_n: int = 2000
    weights: dict = field(default_factory=dict)  # architecture → local weights file ("DEFAULT": the torch hub cache)
    probe_n_per_class: int = 60
    probe_folds: int = 3
    device: str = "auto"

    PROFILE_OVERRIDES = {
        "smoke": dict(experiments=("E1", "E3"), architectures=("resnet8",), n_per_class=30, n_val_per_class=10, n_test_per_class=20,
                      epochs=2, pretrain_epochs=1, pretrain_n=200, probe_n_per_class=15),
        "full": dict(architectures=PAPER_ARCHITECTURES, image_size=224, n_per_class=500, n_val_per_class=100, n_test_per_class=200,
                     epochs=10, batch_size=64, lr=0.01, lr_pretrained=0.001, seeds=(0, 1, 2), probe_n_per_class=200),
    }

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "experiments", tuple(get_experiment(e).key for e in self.experiments))  # names → keys
        for a in self.architectures:
            resolve_architecture(a)
        bad = [s for s in self.starts if s not in STARTS]
        if bad:
            raise ValueError(f"unknown starts {bad}; allowed: {STARTS}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32 (the inside task needs room for a dot), got {self.image_size}")


@dataclass
class ProbesResult(SavesSummary):
    config: ProbesConfig
    runs: list[dict]
    probes: list[dict]
    notes: list[str]
    experiment: RunDir | None = None
    _frozen: dict = field(default_factory=dict, repr=False)  # (arch, start) → state dict of the starting network
    _cache: dict = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- tables
    def table(self) -> list[dict]:
        """Mean over seeds per (experiment, architecture, start)."""
        out = []
        keys = list(dict.fromkeys((r["experiment"], r["architecture"], r["start"]) for r in self.runs))
        for e, a, s in keys:
            rs = [r for r in self.runs if (r["experiment"], r["architecture"], r["start"]) == (e, a, s)]
            reach = [r["images_to_target"] for r in rs if r["images_to_target"] is not None]
            out.append({"experiment": e, "invariant": rs[0]["invariant"], "architecture": a, "start": s, "depth": rs[0]["depth"],
                        "train_acc": float(np.mean([r["train_acc"] for r in rs])), "transfer_acc": float(np.mean([r["transfer_acc"] for r in rs])),
                        "transfer_ratio": float(np.mean([r["transfer_ratio"] for r in rs])),
                        "images_to_target": float(np.mean(reach)) if len(reach) == len(rs) else None,
                        "curve_auc": float(np.mean([r["curve_auc"] for r in rs])), "n": len(rs)})
        return out

    def verdicts(self) -> dict:
        """H1, H2 and the companion finding, from the fine-tuning runs."""
        from scipy import stats

        rows = self.runs
        local = [r["transfer_ratio"] for r in rows if r["invariant"] == "local"]
        glob = [r["transfer_ratio"] for r in rows if r["invariant"] == "global"]
        out = {}
        if local and glob:
            p = float(stats.mannwhitneyu(local, glob, alternative="greater").pvalue) if len(local) > 1 and len(glob) > 1 else float("nan")
            ok = np.mean(local) > np.mean(glob) and p < 0.05
            out["H1_local_transfers_better"] = {
                "mean_transfer_ratio_local": float(np.mean(local)), "mean_transfer_ratio_global": float(np.mean(glob)),
                "mann_whitney_p_local_greater": p, "n_local": len(local), "n_global": len(glob),
                "verdict": "supported" if ok else "not supported"}
        by_arch = {}
        for r in rows:
            if r["invariant"] == "global":
                by_arch.setdefault(r["architecture"], (r["depth"], []))[1].append(r["transfer_ratio"])
        if len(by_arch) >= 2:
            depth = [d for d, _ in by_arch.values()]
            ratio = [float(np.mean(v)) for _, v in by_arch.values()]
            rho = float(stats.spearmanr(depth, ratio)[0]) if len(set(depth)) > 1 else float("nan")
            out["H2_deeper_transfers_global_better"] = {
                "global_transfer_ratio_by_depth": {a: {"depth": d, "ratio": float(np.mean(v))} for a, (d, v) in sorted(by_arch.items(), key=lambda kv: kv[1][0])},
                "spearman_depth_vs_ratio": rho, "n_architectures": len(by_arch),
                "verdict": "supported" if np.isfinite(rho) and rho > 0 else "not supported"}
        speed = {}
        for s in ("pretrained", "scratch"):
            for inv in ("local", "global"):
                v = [r["curve_auc"] for r in rows if r["start"] == s and r["invariant"] == inv]
                if v:
                    speed[f"{s}_{inv}"] = float(np.mean(v))
        if len(speed) == 4:
            faster_local = speed["pretrained_local"] > speed["scratch_local"]
            faster_global = speed["scratch_global"] > speed["pretrained_global"]
            out["C_pretrained_faster_local_scratch_faster_global"] = {
                "mean_learning_curve_auc": speed, "pretrained_faster_on_local": bool(faster_local),
                "scratch_faster_on_global": bool(faster_global), "verdict": "supported" if faster_local and faster_global else "not supported"}
        return out

    # ---------------------------------------------------------------- on demand
    def embedding(self, experiment: str, architecture: str, start: str, layer: str, method: str = "umap"):
        """2-D projection of the pooled activations of a frozen starting network at ``layer`` on
        the experiment's probe images (cached)."""
        from ..projection import project

        key = (experiment, architecture, start, layer, method)
        if key not in self._cache:
            cfg = self.config
            model = _make_model(architecture, start, len(get_experiment(experiment).classes), cfg, self._frozen)
            ds = _probe_data(cfg, experiment, architecture, "train", cfg.probe_n_per_class, "test")
            feats, labels = pooled_features(model, ds, [layer], device=resolve_device(cfg.device))
            self._cache[key] = (project(feats[layer], method, seed=0), labels)
        return self._cache[key]

    def gallery(self, experiment: str, per_class: int = 4):
        """Images for ``viz.ShapeGallery``: per class a row of training images, then transfer images."""
        exp = get_experiment(experiment)
        size = min(self.config.image_size, 64)  # the look of the task, at a browsable size
        tr = ProbeDataset(exp.key, "train", n_per_class=per_class, size=max(32, size), split="test", channels=1)
        te = ProbeDataset(exp.key, "transfer", n_per_class=per_class, size=max(32, size), split="test", channels=1)
        images, captions = [], []
        for c, name in enumerate(exp.classes):
            for ds, tag in ((tr, "train"), (te, "transfer")):
                sel = (ds.labels == c).nonzero()[:, 0][:per_class]
                images += [ds.images[i] for i in sel]
                captions += [f"{tag}: {name}"] * len(sel)
        title = f"{exp.key} {exp.name} ({exp.invariant}): training distribution | transfer set<br><sup>{exp.description}; transfer = {exp.tests_on}</sup>"
        return images, captions, 2 * per_class, title

    def layers_of(self, architecture: str) -> list[str]:
        return block_layers(build_model(resolve_architecture(architecture)[0], 2))

    def summary(self) -> dict:
        return {"table": self.table(), "verdicts": self.verdicts(), "probes": self.probes, "notes": self.notes}



# -------------------------------------------------------------------- helpers
def _probe_data(cfg: ProbesConfig, experiment: str, architecture: str, which: str, n: int, split: str) -> ProbeDataset:
    return ProbeDataset(experiment, which, n_per_class=n, size=cfg.image_size, split=split, seed=0, imagenet_norm=_imagenet(architecture))


def _pretrain_shapes10(arch: str, cfg: ProbesConfig, device, run_root) -> str:
    """Pretrain a zoo network on shapes10 once (cached by its settings); returns its model file."""
    settings = {"arch": arch, "n": cfg.pretrain_n, "epochs": cfg.pretrain_epochs, "size": cfg.image_size}
    run = RunDir(f"probes-pretrain-{arch}-{config_hash(settings)}", run_root)
    path = run.path / "model.pt"
    if not path.is_file():
        seed_everything(1234)
        model = build_model(arch, 10)
        train = get_dataset("shapes10", "train", n=cfg.pretrain_n, size=cfg.image_size)
        val = get_dataset("shapes10", "val", n=max(100, cfg.pretrain_n // 10), size=cfg.image_size)
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


def _make_model(arch: str, start: str, k: int, cfg: ProbesConfig, frozen: dict) -> nn.Module:
    name, _ = resolve_architecture(arch)
    key = (arch, start)
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


def run_probes(cfg: ProbesConfig, *, run_root=None, progress: bool = True) -> ProbesResult:
    check_pretrained_weights(cfg)
    device = resolve_device(cfg.device)
    notes = sorted({n for a in cfg.architectures for n in [resolve_architecture(a)[1]] if n})
    exp_dir = RunDir(f"probes-{config_hash(cfg)}", run_root)
    exp_dir.write_config(cfg)

    # the starting networks, shared by every experiment
    frozen = {}
    for arch in cfg.architectures:
        name, _ = resolve_architecture(arch)
        for start in cfg.starts:
            if start == "scratch" or not _imagenet(name):
                seed_everything(4321)
                m = build_model(name, 10)
                if start == "pretrained":
                    _load_backbone(m, _pretrain_shapes10(name, cfg, device, run_root))
                frozen[(arch, start)] = {k: v.clone() for k, v in m.state_dict().items()}
    if any(s == "pretrained" for s in cfg.starts) and any(not _imagenet(resolve_architecture(a)[0]) for a in cfg.architectures):
        notes.append("zoo networks: 'pretrained' = pretrained on shapes10 by geoviz (no ImageNet weights exist for them)")

    runs, probes = [], []
    jobs = [(e, a, s, seed) for e in cfg.experiments for a in cfg.architectures for s in cfg.starts for seed in cfg.seeds]
    for e, a, s, seed in progress_bar(jobs, desc="fine-tuning runs", enabled=progress):
        exp = get_experiment(e)
        k = len(exp.classes)
        train = _probe_data(cfg, e, a, "train", cfg.n_per_class, "train")
        val = _probe_data(cfg, e, a, "train", cfg.n_val_per_class, "val")
        test = _probe_data(cfg, e, a, "train", cfg.n_test_per_class, "test")
        transfer = _probe_data(cfg, e, a, "transfer", cfg.n_test_per_class, "test")
        name = f"{exp.key}-{a.replace(':', '_')}-{s}-s{seed}"
        rd = RunDir(name, exp_dir.path)
        seed_everything(seed)
        model = _make_model(a, s, k, cfg, frozen)
        res = fit(model, train, val, test=test, epochs=cfg.epochs, lr=cfg.lr_pretrained if s == "pretrained" else cfg.lr,
                  batch_size=cfg.batch_size, device=device, run=rd, seed=seed, progress=False)
        curve = [(h["epoch"] * len(train), h["val_acc"]) for h in res.history]
        reach = next((n for n, acc in curve if acc >= cfg.target_acc), None)
        train_acc = res.summary["test_acc_last"]
        transfer_acc = evaluate(model, transfer, device=device)["acc"]
        runs.append({"experiment": exp.key, "name": exp.name, "invariant": exp.invariant, "architecture": a, "start": s, "seed": seed,
                     "depth": weight_layers(model), "train_acc": train_acc, "transfer_acc": transfer_acc,
                     "transfer_ratio": transfer_acc / train_acc if train_acc > 0 else float("nan"), "curve": curve,
                     "images_to_target": reach, "epochs_to_target": None if reach is None else reach // len(train),
                     "curve_auc": float(np.mean([acc for _, acc in curve])), "chance": 1.0 / k})
        rd.write_summary(transfer_acc=transfer_acc, transfer_ratio=runs[-1]["transfer_ratio"], images_to_target=reach)

    # layer-wise linear probes of the frozen starting networks
    pjobs = [(e, a, s) for e in cfg.experiments for a in cfg.architectures for s in cfg.starts]
    for e, a, s in progress_bar(pjobs, desc="layer probes", enabled=progress):
        exp = get_experiment(e)
        model = _make_model(a, s, len(exp.classes), cfg, frozen).to(device).eval()
        ptrain = _probe_data(cfg, e, a, "train", cfg.probe_n_per_class, "test")
        ptransfer = _probe_data(cfg, e, a, "transfer", cfg.probe_n_per_class, "test")
        for row in probe_layers(model, ptrain, ptransfer, folds=cfg.probe_folds, device=device):
            probes.append({"experiment": exp.key, "invariant": exp.invariant, "architecture": a, "start": s, **row,
                           "chance": 1.0 / len(exp.classes)})
    return ProbesResult(cfg, runs, probes, notes, exp_dir, frozen)
