"""Geometric knowledge transfer (notebook 01): accuracy against the data fraction, teacher–student
alignment, the run explorer.

Pure builders and apps: they display, never train."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import _WidgetApp, training_curves
from .style import class_colors, class_symbols, finish


def fraction_curves(
    table: list[dict],
    *,
    title: str,
    reference: float | None = None,
    reference_name: str = "teacher",
    y: str = "test accuracy (fraction)",
    floors: dict | None = None,
) -> go.Figure:
    """Accuracy vs train fraction, one line per method, mean ± std over seeds as error bars.
    ``floors``: ``{"chance": value, "<name>": {"<fraction>": value}}``: the levels a network must
    beat, drawn grey and dashed."""
    methods = list(dict.fromkeys(r["method"] for r in table))
    colors, symbols = class_colors(max(4, len(methods))), class_symbols(len(methods))
    fig = go.Figure()
    for i, m in enumerate(methods):
        rows = sorted((r for r in table if r["method"] == m), key=lambda r: r["fraction"])
        fig.add_trace(
            go.Scatter(
                x=[100 * r["fraction"] for r in rows],
                y=[r["mean"] for r in rows],
                name=m,
                mode="lines+markers",
                error_y={"type": "data", "array": [r["std"] for r in rows], "visible": True},
                marker={"symbol": symbols[i], "size": 9, "color": colors[i]},
                line={"color": colors[i]},
                hovertemplate=m + ": %{y:.3f} at %{x:g}% of the training set<extra></extra>",
            )
        )
    if reference is not None:
        fig.add_hline(
            y=reference, line_dash="dash", line_color="#555555", annotation_text=f"{reference_name} {reference:.3f}"
        )
    for name, level in (floors or {}).items():
        if isinstance(level, dict):
            pts = sorted((float(f), v) for f, v in level.items())
            fig.add_trace(
                go.Scatter(
                    x=[100 * f for f, _ in pts],
                    y=[v for _, v in pts],
                    name=f"floor: {name.replace('_', ' ')}",
                    mode="lines",
                    line={"color": "#888888", "dash": "dot"},
                )
            )
        else:
            fig.add_hline(y=level, line_dash="dot", line_color="#888888", annotation_text=f"floor: {name}")
    fig.update_xaxes(type="log", tickvals=sorted({100 * r["fraction"] for r in table}))
    return finish(
        fig, title, "training images used (% of the training split, log scale)", y, height=460, legend_title="method"
    )


def alignment_heatmap(geometry: dict[str, dict[str, dict[str, float]]], *, title: str) -> go.Figure:
    """Student–teacher kNN agreement and linear CKA per layer pair (columns) for each row
    ("init" = untrained student, then one row per method)."""
    rows = list(geometry)
    pairs = list(next(iter(geometry.values())))
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("kNN agreement (Jaccard, k=10)", "linear CKA"), horizontal_spacing=0.12
    )
    for j, measure in enumerate(("knn_agreement", "cka")):
        z = [[geometry[r][p][measure] for p in pairs] for r in rows]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=pairs,
                y=rows,
                zmin=0,
                zmax=1 if measure == "cka" else max(0.05, max(max(v) for v in z)),
                colorscale="Cividis",
                text=[[f"{v:.3f}" for v in row] for row in z],
                texttemplate="%{text}",
                colorbar={
                    "title": {"text": "CKA" if measure == "cka" else "Jaccard"},
                    "x": 0.44 if j == 0 else 1.0,
                    "len": 0.9,
                },
                hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>",
            ),
            row=1,
            col=j + 1,
        )
        fig.update_xaxes(title_text="student layer → teacher layer", row=1, col=j + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(title_text="student", row=1, col=1)
    return finish(fig, title, height=140 + 45 * len(rows))


class TransferExplorer(_WidgetApp):
    """Pick a student run to see its training curves (accuracy and each loss term), and a layer
    pair to see how close each method's students come to the teacher there, by train fraction."""

    def __init__(self, result):
        import ipywidgets as W

        self.result = result
        self._curves = training_curves
        names = [(f"{arm}, seed {seed}", (arm, seed)) for arm, seed in result.curves()]  # label, (arm, seed)
        pairs = list(result.runs[0]["geometry"]) if result.runs else []
        self.run = W.Dropdown(
            options=names, value=names[-1][1] if names else None, description="run", layout=W.Layout(width="320px")
        )
        self.pair = W.Dropdown(
            options=pairs, value=pairs[-1] if pairs else None, description="layer", layout=W.Layout(width="260px")
        )
        self.measure = W.Dropdown(
            options=[("linear CKA", "cka"), ("kNN agreement", "knn_agreement")],
            value="cka",
            description="measure",
            layout=W.Layout(width="260px"),
        )
        self.curves = go.FigureWidget(layout={"height": 380, "width": 560})
        self.layer_fig = go.FigureWidget(layout={"height": 380, "width": 560})
        self.run.observe(self._draw_run, names="value")
        self.pair.observe(self._draw_layer, names="value")
        self.measure.observe(self._draw_layer, names="value")
        self._draw_run()
        self._draw_layer()
        self.widget = W.VBox([W.HBox([self.run, self.pair, self.measure]), W.HBox([self.curves, self.layer_fig])])

    def _draw_run(self, *_):
        arm, seed = self.run.value
        fig = self._curves(
            self.result.curves()[(arm, seed)], title=f"training run {arm}, seed {seed}", keys=("train_acc", "val_acc")
        )
        with self.curves.batch_update():
            self.curves.data = []
            self.curves.add_traces(fig.data)
            self.curves.layout = fig.layout
            self.curves.layout.height, self.curves.layout.width = 380, 560

    def _draw_layer(self, *_):
        from .style import class_colors, class_symbols

        pair, measure = self.pair.value, self.measure.value
        res = self.result
        methods = list(res.config.methods)
        colors, symbols = class_colors(max(4, len(methods))), class_symbols(len(methods))
        traces = []
        for i, m in enumerate(methods):
            pts = {}
            for r in res.runs:
                if r["method"] == m:
                    pts.setdefault(r["fraction"], []).append(r["geometry"][pair][measure])
            fr = sorted(pts)
            traces.append(
                go.Scatter(
                    x=[100 * f for f in fr],
                    y=[float(np.mean(pts[f])) for f in fr],
                    name=m,
                    mode="lines+markers",
                    marker={"symbol": symbols[i], "color": colors[i], "size": 9},
                    line={"color": colors[i]},
                )
            )
        init = float(np.mean([g[pair][measure] for g in res.geometry_init.values()]))
        xs = [100 * f for f in res.config.train_fractions]
        traces.append(
            go.Scatter(
                x=[min(xs), max(xs)],
                y=[init, init],
                name="untrained student",
                mode="lines",
                line={"dash": "dash", "color": "#555555"},
            )
        )
        label = "linear CKA" if measure == "cka" else "kNN agreement (Jaccard)"
        with self.layer_fig.batch_update():
            self.layer_fig.data = []
            self.layer_fig.add_traces(traces)
            finish(
                self.layer_fig,
                f"student vs teacher at {pair}<br><sup>{label}</sup>",
                "training images used (% of split, log scale)",
                label,
                legend_title="method",
            )
            self.layer_fig.update_xaxes(type="log")
