"""Colour-blind-safe colours and one layout for every geoviz figure."""

from __future__ import annotations

import plotly.graph_objects as go

# Okabe & Ito (2008), the standard CVD-safe qualitative set (black last).
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"]
# Paul Tol's "muted" set (9 CVD-safe hues) and black, for up to ten classes.
TOL_MUTED = [
    "#CC6677",
    "#332288",
    "#DDCC77",
    "#117733",
    "#88CCEE",
    "#882255",
    "#44AA99",
    "#999933",
    "#AA4499",
    "#000000",
]
# Marker symbols double-code classes, so no class depends on hue alone.
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x", "cross", "triangle-down", "star", "pentagon", "hexagon"]
SEQUENTIAL = "Cividis"  # perceptually uniform and CVD-safe
TEMPLATE = "simple_white"


def class_colors(n: int) -> list[str]:
    """n qualitative colours: Okabe–Ito up to 8 classes, Tol muted + black up to 10, then cycling
    (from 11 on, marker symbols keep classes apart)."""
    base = OKABE_ITO if n <= len(OKABE_ITO) else TOL_MUTED
    return [base[i % len(base)] for i in range(n)]


def class_symbols(n: int) -> list[str]:
    return [SYMBOLS[i % len(SYMBOLS)] for i in range(n)]


def finish(
    fig: go.Figure,
    title: str,
    x: str | None = None,
    y: str | None = None,
    *,
    height: int | None = None,
    width: int | None = None,
    legend_title: str | None = None,
) -> go.Figure:
    """Title, axis labels (with units), the shared template and font."""
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title, "x": 0.02, "xanchor": "left"},
        font={"size": 13},
        margin={"l": 60, "r": 20, "t": 60, "b": 55},
    )
    if x is not None:
        fig.update_xaxes(title_text=x)
    if y is not None:
        fig.update_yaxes(title_text=y)
    if height:
        fig.update_layout(height=height)
    if width:
        fig.update_layout(width=width)
    if legend_title:
        fig.update_layout(legend_title_text=legend_title)
    return fig
