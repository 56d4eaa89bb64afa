"""``geoviz train --config configs/<name>.yaml``: one training run, headless, from a YAML file.

The YAML keys are the fields of ``TrainConfig``; unknown keys fail with the closest names, and the
whole config (types, names, ranges, loss terms and their layers, the teacher checkpoint) is
checked before the run folder is created, so a typo never leaves a run behind that the corrected
rerun would refuse. Every run saves its fully resolved config (``runs/<name>/config.json``),
per-epoch metrics, resumable checkpoints and the final weights with their build metadata
(``model.pt``). The same command runs on several GPUs or nodes under ``torchrun``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .._utils import resolve_device, unknown_name_message
from ..config import check_field_types, check_range
from ..datasets import dataset_arguments, get_dataset, num_classes, train_fraction
from ..engine import OPTIMIZERS, SCHEDULES, TeacherCache, build_terms, ddp_device, fit
from ..engine.teacher_cache import DEFAULT_MAX_BYTES
from ..inference import AMP_MODES
from ..losses.terms import build_term
from ..models import build_model, list_models, load_state, save_model
from ..paths import resolve_in_root
from ..runs import RunDir, default_root

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


@dataclass(frozen=True)
class TrainConfig:
    """One training run (``geoviz train --config``): model, data, terms, optimiser, schedule, epochs and
    the run's name; read from YAML with ``load_config``."""

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
    # a path; a relative one is taken inside the runs root: "cifar10-resnet56/model.pt"
    teacher_checkpoint: str | None = None
    terms: tuple = ("ce",)
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    warmup_epochs: float = 0.0
    device: str = "auto"
    amp: str = "auto"
    deterministic: bool = False
    seed: int = 0
    num_workers: int = 0
    runs_root: str | None = None
    teacher_cache_max_bytes: int = DEFAULT_MAX_BYTES
    expected: dict = field(default_factory=dict)  # documentation: accuracy a working setup reaches

    def __post_init__(self):
        for k in ("terms", "milestones"):  # YAML lists; a single term may be written alone (terms: ce)
            v = getattr(self, k)
            if isinstance(v, (str, dict)) and k == "terms":
                v = (v,)
            if isinstance(v, list):
                v = tuple(v)
            object.__setattr__(self, k, v)
        check_field_types(self)
        self._check_values()

    def _check_values(self) -> None:
        if not RunDir.valid_name(self.name):
            raise ValueError(
                f"name {self.name!r} must start with a letter or digit and use only letters, digits and _ . = + -"
            )
        dataset_arguments(self.dataset)  # an unknown name raises, naming the close ones; folder:<path> is a name too
        for key in ("model", "teacher"):
            name = getattr(self, key)
            if name is not None and not name.startswith(("tv:", "timm:")) and name not in list_models():
                raise KeyError(unknown_name_message(f"{key} model", name, list_models()))
        for key, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("amp", AMP_MODES)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"unknown {key} {getattr(self, key)!r}; allowed: {', '.join(map(repr, allowed))}")
        if not _DEVICE.match(self.device):
            raise ValueError(f"unknown device {self.device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
        for key, low in (
            ("epochs", 1),
            ("batch_size", 1),
            ("n_train", 1),
            ("n_val", 1),
            ("n_test", 1),
            ("num_workers", 0),
            ("teacher_cache_max_bytes", 0),
        ):
            check_range(key, getattr(self, key), low)
        check_range("seed", self.seed, 0, 2**32 - 1)
        check_range("train_fraction", self.train_fraction, 0, 1, low_open=True)
        check_range("lr", self.lr, 0, low_open=True)
        check_range("momentum", self.momentum, 0, 0.999)
        check_range("weight_decay", self.weight_decay, 0)
        check_range("warmup_epochs", self.warmup_epochs, 0, self.epochs)
        if self.augment is not None and "augment" not in dataset_arguments(self.dataset):
            raise ValueError(f"data set {self.dataset!r} has no augmentation: leave augment unset (null)")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones are fractions of training in (0, 1), got {list(self.milestones)}")
        terms = [build_term(t) for t in self.terms]  # names and settings of every term
        needs = [t.name for t in terms if t.needs_teacher]
        if needs and not self.teacher:
            raise ValueError(f"loss terms {needs} need a teacher: set teacher: and teacher_checkpoint:")
        if self.teacher and not self.teacher_checkpoint:
            raise ValueError(
                f"config {self.name!r} names a teacher but no teacher_checkpoint: train the teacher first "
                f"(its run writes <runs>/<teacher run>/model.pt) and point teacher_checkpoint at it"
            )

    @classmethod
    def from_dict(cls, data: dict, **overrides) -> TrainConfig:
        """A config from a dict (YAML), unknown keys named with their close matches."""
        data = {**data, **overrides}  # an explicit override wins, None included (--set teacher null)
        names = [f.name for f in dataclasses.fields(cls)]
        for k in data:
            if k not in names:
                raise KeyError(unknown_name_message("config key", k, names))
        if "name" not in data:
            raise ValueError("a training config needs a run 'name'")
        return cls(**data)

    def replace(self, **changes) -> TrainConfig:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def runs_dir(self) -> Path:
        """Where the run folder goes (``runs_root`` or the runs root)."""
        return resolve_in_root(self.runs_root) if self.runs_root else default_root()

    def teacher_path(self) -> Path | None:
        """The teacher checkpoint: an absolute path as it is, a relative one inside the runs root."""
        if not self.teacher_checkpoint:
            return None
        p = Path(self.teacher_checkpoint).expanduser()
        return p if p.is_absolute() else self.runs_dir() / p


def load_config(path: str | Path, **overrides) -> TrainConfig:
    """A ``TrainConfig`` from a YAML file, with ``overrides``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist; see configs/ for examples")
    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a YAML mapping of config keys")
    try:
        return TrainConfig.from_dict(data, **overrides)
    except (TypeError, ValueError, KeyError) as err:
        msg = err.args[0] if err.args else str(err)
        raise type(err)(f"{path}: {msg}") from None


def _split(cfg: TrainConfig, split: str, n):
    kw = {} if cfg.augment is None or split != "train" else {"augment": cfg.augment}
    return get_dataset(cfg.dataset, split, n=n, seed=0, **kw)


def _teacher(cfg: TrainConfig, k: int, in_chans: int):
    if not cfg.teacher:
        return None
    path = cfg.teacher_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"teacher_checkpoint {cfg.teacher_checkpoint!r} → {path} does not exist: train the teacher's "
            f"config first (relative paths are taken inside the runs root {cfg.runs_dir()})"
        )
    return load_state(build_model(cfg.teacher, k, in_chans=in_chans, **cfg.teacher_kwargs), path)


@dataclass
class PreparedRun:
    """Everything a training run needs, built and checked; no file written yet."""

    cfg: TrainConfig
    model: object
    teacher: object
    terms: list
    train: object
    val: object
    test: object
    cache: TeacherCache | None


def prepare_train(cfg: TrainConfig) -> PreparedRun:
    """Build data, models, teacher and terms and check them against each other (device, layer
    names, the teacher checkpoint): what can fail from the config fails here, before any run exists."""
    if cfg.deterministic:  # cuBLAS reads this once, when it starts: before the teacher cache's first GPU matmul
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    resolve_device(cfg.device)
    train = _split(cfg, "train", cfg.n_train)
    val = _split(cfg, "val", cfg.n_val)
    test = _split(cfg, "test", cfg.n_test)
    k = num_classes(train)
    in_chans = train[0][0].shape[0]
    model = build_model(cfg.model, k, in_chans=in_chans, **cfg.model_kwargs)
    teacher = _teacher(cfg, k, in_chans)
    terms = build_terms(cfg.terms, model, teacher, None)  # layer names checked against both models
    cache = None
    if teacher is not None:  # the teacher's outputs computed once, when the data allow it and it fits the budget
        dev = ddp_device(cfg.device)
        cache = TeacherCache.if_it_fits(
            teacher.to(dev),
            train,
            sorted({l for t in terms for l in t.teacher_layers}),
            device=dev,
            max_bytes=cfg.teacher_cache_max_bytes,
        )
    return PreparedRun(cfg, model, teacher, terms, train, val, test, cache)


def run_train(cfg: TrainConfig | PreparedRun, *, progress: bool = True):
    """Prepare (unless given a prepared run), then create the run and train (resuming a run of the same name)."""
    prep = cfg if isinstance(cfg, PreparedRun) else prepare_train(cfg)
    cfg, model = prep.cfg, prep.model
    run = RunDir(cfg.name, cfg.runs_dir())  # nothing is created before this line
    run.write_config(cfg)
    sub = train_fraction(prep.train, cfg.train_fraction, seed=cfg.seed)
    result = fit(
        model,
        sub,
        prep.val,
        test=prep.test,
        teacher=prep.teacher,
        terms=prep.terms,
        epochs=cfg.epochs,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        schedule=cfg.schedule,
        milestones=cfg.milestones,
        warmup_epochs=cfg.warmup_epochs,
        batch_size=cfg.batch_size,
        device=cfg.device,
        amp=cfg.amp,
        run=run,
        seed=cfg.seed,
        progress=progress,
        num_workers=cfg.num_workers,
        teacher_cache=prep.cache,
        deterministic=cfg.deterministic,
    )
    if result.run is not None:  # rank 0
        save_model(model, run.path / "model.pt")
        if cfg.expected:
            result.run.write_summary(expected=cfg.expected)
    return result
