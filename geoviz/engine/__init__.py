"""The one training / evaluation engine, split by concern:

- ``loop``: ``fit`` (checks, the epoch loop, model selection, the summary);
- ``step``: ``TrainStep``, one optimisation step (forwards, loss terms, backward with loss scaling);
- ``optim``: optimisers and learning-rate schedules by name;
- ``checkpoints``: random-generator states, settings checks, deterministic mode (exact resume);
- ``distributed``: DistributedDataParallel under ``torchrun`` (device and backend per process);
- ``teacher_cache``: a frozen teacher's outputs computed once, within a memory budget;
- ``pseudo_labels``: offline distillation: a teacher labels an unlabelled pool once (stored with
  the run, resumable), a student regresses the labels, then fine-tunes on the labelled set.

``predict`` / ``evaluate`` live in ``geoviz.inference`` (below ``analysis``, which needs them too)
and are re-exported here.
"""

from ..inference import evaluate, evaluate_reconstruction, evaluate_regression, predict
from .checkpoints import deterministic_mode, rng_state, set_rng_state
from .distributed import choose_backend, ddp_device
from .loop import EpochState, FitResult, build_terms, fit
from .optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from .pseudo_labels import distill_offline, pseudo_label
from .step import OBJECTIVES, Trainable, TrainStep
from .teacher_cache import TeacherCache

__all__ = [
    "fit",
    "FitResult",
    "EpochState",
    "build_terms",
    "TrainStep",
    "Trainable",
    "TeacherCache",
    "predict",
    "evaluate",
    "evaluate_reconstruction",
    "evaluate_regression",
    "pseudo_label",
    "distill_offline",
    "make_optimizer",
    "make_schedule",
    "OPTIMIZERS",
    "SCHEDULES",
    "OBJECTIVES",
    "rng_state",
    "set_rng_state",
    "deterministic_mode",
    "choose_backend",
    "ddp_device",
]
