"""Measurements that combine capture and geometry (no training, no plotting)."""

from .alignment import layer_alignment
from .angles import (
    AngleConfusionTracker,
    angle_confusion_correlation,
    class_mean_angles,
    class_vector_angles,
    confusion_rates,
    pair_values,
)
from .probes import linear_probe, pooled_features, probe_layers

__all__ = [
    "layer_alignment",
    "linear_probe",
    "pooled_features",
    "probe_layers",
    "AngleConfusionTracker",
    "angle_confusion_correlation",
    "class_mean_angles",
    "class_vector_angles",
    "confusion_rates",
    "pair_values",
]
