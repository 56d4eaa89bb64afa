"""Plotly figures (pure functions) and ipywidgets apps. ``viz`` displays; it never trains."""
from .apps import ActivationEmbeddingApp, AngleConfusionExplorer, CamExplorer, CandidateExplorer, CorrelationExplorer, RobustnessExplorer, EmbeddingExplorer, KeypointExplorer, ShapeGallery, TransferExplorer
from .figures import (
    alignment_heatmap,
    angle_confusion_heatmaps,
    angle_confusion_scatter,
    band_curves,
    image_mosaic,
    learning_curves_grid,
    probe_depth_lines,
    table_figure,
    transfer_bars,
    bar_by_layer,
    claims_table,
    pair_trajectory,
    convergence_curves,
    box_shape,
    embedding_grid,
    embedding_scatter,
    embedding_traces,
    error_vs_budget,
    rate_distortion,
    fraction_curves,
    patch_figure,
    results_table,
    to_rgb_uint8,
    training_curves,
    accuracy_vs_flops,
    layer_spectra,
    robustness_heatmap,
    group_error_bars,
    ensemble_accuracy_bars,
    confusion_grid,
    diversity_gain_scatter,
    roc_pr_curves,
)
from .atlas import AtlasExplorer, atlas_best_match, atlas_heatmap, atlas_pair_figure, write_atlas_report
from .explore import ClassPairExplorer, cam_figure, decodability_figure, write_explore_report
from .style import OKABE_ITO, TOL_MUTED, class_colors, class_symbols, finish


def init_notebook() -> None:
    """Figures render in JupyterLab (mimetype) and in exported HTML (embedded plotly.js)."""
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook"


__all__ = [
    "ClassPairExplorer", "cam_figure", "decodability_figure", "write_explore_report",
    "AtlasExplorer", "atlas_best_match", "atlas_heatmap", "atlas_pair_figure", "write_atlas_report",
    "CorrelationExplorer", "CamExplorer", "CandidateExplorer", "roc_pr_curves", "ensemble_accuracy_bars", "confusion_grid", "diversity_gain_scatter", "accuracy_vs_flops", "layer_spectra", "robustness_heatmap", "group_error_bars", "RobustnessExplorer",
    "KeypointExplorer", "error_vs_budget", "rate_distortion",
    "ActivationEmbeddingApp", "ShapeGallery", "learning_curves_grid", "probe_depth_lines", "transfer_bars",
    "AngleConfusionExplorer", "angle_confusion_heatmaps", "angle_confusion_scatter", "band_curves", "image_mosaic", "table_figure",
    "TransferExplorer", "alignment_heatmap", "claims_table", "convergence_curves", "pair_trajectory", "fraction_curves", "results_table",
    "EmbeddingExplorer", "bar_by_layer", "box_shape", "embedding_grid", "embedding_scatter", "embedding_traces",
    "patch_figure", "to_rgb_uint8", "training_curves", "OKABE_ITO", "TOL_MUTED", "class_colors", "class_symbols",
    "finish", "init_notebook",
]
