"""Data sets: procedural shapes (embedded default) and loaders for real data read from ``data/``."""

from ..paths import data_root
from . import (  # noqa: E402,F401  (registers cifar10, mnist, digits, shape_size, leather, mvtec_leather, defect_folder)
    defects,
    images,
    regression,
)
from .folders import FolderImages, ImageArrays, as_dataset, image_folder, parse_folder_spec, write_image_folder
from .registry import dataset_arguments, get_dataset, list_datasets, num_classes, register_dataset
from .shapes import TASKS, VARIANTS, ShapesDataset, make_shapes
from .splits import balanced_holdout, labels_of, train_fraction

__all__ = [
    "TASKS",
    "VARIANTS",
    "ShapesDataset",
    "make_shapes",
    "get_dataset",
    "dataset_arguments",
    "list_datasets",
    "register_dataset",
    "data_root",
    "num_classes",
    "balanced_holdout",
    "labels_of",
    "train_fraction",
    "FolderImages",
    "ImageArrays",
    "as_dataset",
    "image_folder",
    "parse_folder_spec",
    "write_image_folder",
]
