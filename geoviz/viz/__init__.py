"""Plotly figures (pure functions) and ipywidgets apps, one module per study (``common`` holds what
they share). ``viz`` displays; it never trains."""

from .angles import AngleConfusionExplorer, angle_confusion_heatmaps, angle_confusion_scatter, pair_trajectory
from .atlas import AtlasExplorer, atlas_best_match, atlas_heatmap, atlas_pair_figure, write_atlas_report
from .cnnmda import CandidateExplorer, roc_pr_curves
from .common import (
    CamExplorer,
    EmbeddingExplorer,
    band_curves,
    bar_by_layer,
    box_shape,
    claims_table,
    confusion_grid,
    convergence_curves,
    embedding_grid,
    embedding_scatter,
    embedding_traces,
    image_mosaic,
    patch_figure,
    results_table,
    table_figure,
    to_rgb_uint8,
    training_curves,
)
from .ensembles import diversity_gain_scatter, ensemble_accuracy_bars
from .explore import ClassPairExplorer, cam_figure, decodability_figure, write_explore_report
from .keypoints import KeypointExplorer, error_vs_budget, rate_distortion
from .probes import ActivationEmbeddingApp, ShapeGallery, learning_curves_grid, probe_depth_lines, transfer_bars
from .pruning import CorrelationExplorer, accuracy_vs_flops, layer_spectra
from .students import RobustnessExplorer, group_error_bars, robustness_heatmap
from .style import OKABE_ITO, TOL_MUTED, class_colors, class_symbols, finish
from .transfer import TransferExplorer, alignment_heatmap, fraction_curves


def init_notebook() -> None:
    """Figures render in JupyterLab (mimetype) and in exported HTML (embedded plotly.js)."""
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook"


__all__ = [
    "ClassPairExplorer",
    "cam_figure",
    "decodability_figure",
    "write_explore_report",
    "AtlasExplorer",
    "atlas_best_match",
    "atlas_heatmap",
    "atlas_pair_figure",
    "write_atlas_report",
    "CorrelationExplorer",
    "CamExplorer",
    "CandidateExplorer",
    "roc_pr_curves",
    "ensemble_accuracy_bars",
    "confusion_grid",
    "diversity_gain_scatter",
    "accuracy_vs_flops",
    "layer_spectra",
    "robustness_heatmap",
    "group_error_bars",
    "RobustnessExplorer",
    "KeypointExplorer",
    "error_vs_budget",
    "rate_distortion",
    "ActivationEmbeddingApp",
    "ShapeGallery",
    "learning_curves_grid",
    "probe_depth_lines",
    "transfer_bars",
    "AngleConfusionExplorer",
    "angle_confusion_heatmaps",
    "angle_confusion_scatter",
    "band_curves",
    "image_mosaic",
    "table_figure",
    "TransferExplorer",
    "alignment_heatmap",
    "claims_table",
    "convergence_curves",
    "pair_trajectory",
    "fraction_curves",
    "results_table",
    "EmbeddingExplorer",
    "bar_by_layer",
    "box_shape",
    "embedding_grid",
    "embedding_scatter",
    "embedding_traces",
    "patch_figure",
    "to_rgb_uint8",
    "training_curves",
    "OKABE_ITO",
    "TOL_MUTED",
    "class_colors",
    "class_symbols",
    "finish",
    "init_notebook",
]
