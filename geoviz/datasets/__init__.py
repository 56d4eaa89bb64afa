"""Data sets: procedural shapes (embedded default) and loaders for real data read from ``data/``."""
from .registry import data_root, get_dataset, list_datasets, num_classes, register_dataset
from .shapes import TASKS, VARIANTS, ShapesDataset, make_shapes

__all__ = [
    "TASKS", "VARIANTS", "ShapesDataset", "make_shapes",
    "get_dataset", "list_datasets", "register_dataset", "data_root", "num_classes",
]
