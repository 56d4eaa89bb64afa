"""Losses: local-feature geometry (the paper's method), KD and image-level transfer baselines,
and the ``Term`` wrappers the engine sums."""

from .angular import NormalizedLinear, ical_loss, use_normalized_head
from .distill import FitNet, at_loss, fitnet_loss, kd_loss, pkt_loss, rkd_loss, sp_loss
from .geometric import KINDS, LocalGeometryLoss, local_geometry_loss, paired_local_features
from .terms import TERMS, Term, TermInputs, build_term

__all__ = [
    "NormalizedLinear",
    "ical_loss",
    "use_normalized_head",
    "FitNet",
    "at_loss",
    "fitnet_loss",
    "kd_loss",
    "pkt_loss",
    "rkd_loss",
    "sp_loss",
    "KINDS",
    "LocalGeometryLoss",
    "local_geometry_loss",
    "paired_local_features",
    "TERMS",
    "Term",
    "TermInputs",
    "build_term",
]
