"""``geoviz train --config configs/<name>.yaml``: one training run, headless, from a YAML file.

The YAML keys are the fields of ``TrainConfig``; unknown keys fail with the closest names. Every
run saves its fully resolved config (``runs/<name>/config.json``), per-epoch metrics, resumable
checkpoints and the final weights with their build metadata (``model.pt``). The same command
runs on several GPUs or nodes under ``torchrun``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .._utils import resolve_device, unknown_name_message
from ..datasets import get_dataset, num_classes, train_fraction
from ..engine import TeacherCache, fit
from ..models import build_model, load_state, save_model
from ..runs import RunDir


@dataclass(frozen=True)
class TrainConfig:
    name: str
    dataset: str = "shapes10"
    n_train: int | None = None  # None: the data set's own size / default
    n_val: int | None = None
    n_test: int | None = None
    train_fraction: float = 1.0
    augment: bool | None = None  # None: the data set's default (CIFAR-10 train: crop + flip)
    model: str = "resnet20"
    model_kwargs: dict = field(default_factory=dict)
    teacher: str | None = None
    teacher_kwargs: dict = field(default_factory=dict)
    teacher_checkpoint: str | None = None
    terms: tuple = ("ce",)
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple = (0.5, 0.75)
    warmup_epochs: float = 0.0
    device: str = "auto"
    amp: str = "auto"
    seed: int = 0
    num_workers: int = 0
    runs_root: str | None = None
    expected: dict = field(default_factory=dict)  # documentation: accuracy a working setup reaches

    @classmethod
    def from_dict(cls, data: dict, **overrides) -> "TrainConfig":
        data = {**data, **overrides}  # an explicit override wins, None included (--set teacher null)
        names = [f.name for f in dataclasses.fields(cls)]
        for k in data:
            if k not in names:
                raise KeyError(unknown_name_message("config key", k, names))
        if "name" not in data:
            raise ValueError("a training config needs a run 'name'")
        for k in ("terms", "milestones"):
            if isinstance(data.get(k), list):
                data[k] = tuple(data[k])
        return cls(**data)


def load_config(path: str | Path, **overrides) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist; see configs/ for examples")
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a YAML mapping of config keys")
    return TrainConfig.from_dict(data, **overrides)


def _split(cfg: TrainConfig, split: str, n):
    kw = {} if cfg.augment is None or split != "train" else {"augment": cfg.augment}
    return get_dataset(cfg.dataset, split, n=n, seed=0, **kw)


def run_train(cfg: TrainConfig, *, progress: bool = True):
    train = _split(cfg, "train", cfg.n_train)
    val = _split(cfg, "val", cfg.n_val)
    test = _split(cfg, "test", cfg.n_test)
    sub = train_fraction(train, cfg.train_fraction, seed=cfg.seed)
    k = num_classes(train)
    in_chans = train[0][0].shape[0]
    model = build_model(cfg.model, k, in_chans=in_chans, **cfg.model_kwargs)
    teacher = None
    if cfg.teacher:
        teacher = build_model(cfg.teacher, k, in_chans=in_chans, **cfg.teacher_kwargs)
        if not cfg.teacher_checkpoint:
            raise ValueError(f"config {cfg.name!r} names a teacher but no teacher_checkpoint: train the teacher first "
                             f"(its run writes runs/<teacher run>/model.pt) and point teacher_checkpoint at it")
        if not Path(cfg.teacher_checkpoint).is_file():
            raise FileNotFoundError(f"teacher_checkpoint {cfg.teacher_checkpoint} does not exist: train the teacher's config first")
        load_state(teacher, cfg.teacher_checkpoint)
    run = RunDir(cfg.name, cfg.runs_root)
    run.write_config(cfg)
    cache = None
    if teacher is not None and getattr(train, "deterministic", False):
        layers = sorted({l for t in cfg.terms if isinstance(t, dict) for l in dict(t.get("pairs", {})).values()})
        cache = TeacherCache(teacher, train, layers, device=resolve_device(cfg.device))
    result = fit(model, sub, val, test=test, teacher=teacher, terms=cfg.terms, epochs=cfg.epochs, lr=cfg.lr,
                 optimizer=cfg.optimizer, momentum=cfg.momentum, weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                 milestones=cfg.milestones, warmup_epochs=cfg.warmup_epochs, batch_size=cfg.batch_size,
                 device=cfg.device, amp=cfg.amp, run=run, seed=cfg.seed, progress=progress,
                 num_workers=cfg.num_workers, teacher_cache=cache)
    if result.run is not None:  # rank 0
        save_model(model, run.path / "model.pt")
        if cfg.expected:
            result.run.write_summary(expected=cfg.expected)
    return result
