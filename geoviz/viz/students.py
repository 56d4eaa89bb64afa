"""Students and robustness (notebook 06): corruption heatmaps, group error bars, the robustness explorer.

Pure builders and apps: they display, never train."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import _WidgetApp, to_rgb_uint8
from .style import SEQUENTIAL, class_colors, finish


def robustness_heatmap(
    matrix, corruptions: Sequence[str], severities: Sequence[int], *, title: str, value: str = "MAE (px)"
) -> go.Figure:
    """(corruption × severity) errors of one model as a heatmap (CVD-safe sequential colours)."""

    m = np.asarray(matrix, dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=m,
            x=[str(s) for s in severities],
            y=list(corruptions),
            colorscale=SEQUENTIAL,
            colorbar={"title": value},
            text=np.round(m, 2),
            texttemplate="%{text}",
            hovertemplate="%{y}, severity %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return finish(fig, title, "severity (1 = mildest)", "corruption", height=max(380, 26 * len(corruptions) + 140))


def group_error_bars(rows: list[dict], *, title: str, value: str = "mean MAE (px)") -> go.Figure:
    """Mean error per corruption group (noise / blur / weather / digital) and clean, one bar group
    per model: ``rows`` = [{"model", "clean", "groups": {group: value}, "clean_std", "groups_std"}]."""
    groups = ["clean"] + list(dict.fromkeys(g for r in rows for g in r["groups"]))
    colors = class_colors(max(4, len(rows)))
    fig = go.Figure()
    for i, r in enumerate(rows):
        ys = [r["clean"]] + [r["groups"].get(g) for g in groups[1:]]
        err = [r.get("clean_std", 0.0)] + [r.get("groups_std", {}).get(g, 0.0) for g in groups[1:]]
        fig.add_trace(
            go.Bar(x=groups, y=ys, name=r["model"], marker_color=colors[i], error_y={"type": "data", "array": err})
        )
    fig.update_layout(barmode="group")
    return finish(fig, title, "images", value, height=430, legend_title="model")


class RobustnessExplorer(_WidgetApp):
    """Pick a test image, a corruption and a severity: the corrupted image beside every model's
    prediction (and the true target); below, the chosen model's error heatmap over corruptions ×
    severities. ``result`` provides ``corrupted(image, corruption, severity)`` → (image, {model:
    prediction}, truth) and ``heatmap(model, arm)``, ``config.corruptions`` / ``severities``."""

    def __init__(self, result, *, value: str = "size (px)"):
        import ipywidgets as W

        from .style import class_colors

        self.result, self.value = result, value
        cfg = result.config
        self.corruption = W.Dropdown(
            options=list(cfg.corruptions),
            value=cfg.corruptions[0],
            description="corruption",
            layout=W.Layout(width="300px"),
        )
        self.severity = W.IntSlider(
            min=min(cfg.severities),
            max=max(cfg.severities),
            value=min(cfg.severities),
            description="severity",
            continuous_update=False,
            layout=W.Layout(width="300px"),
        )
        self.image = W.IntSlider(
            min=0,
            max=len(result.test_images) - 1,
            value=0,
            description="image",
            continuous_update=False,
            layout=W.Layout(width="360px"),
        )
        keys = list(dict.fromkeys((r["model"], r["arm"]) for r in result.rows))
        self.model = W.Dropdown(
            options=[(f"{m} ({a})" if a != "teacher" else m, (m, a)) for m, a in keys],
            value=keys[0],
            description="heatmap of",
            layout=W.Layout(width="380px"),
        )
        names = list(result.models)
        fig = make_subplots(
            rows=1,
            cols=2,
            subplot_titles=("corrupted image", "predictions"),
            column_widths=[0.35, 0.65],
            horizontal_spacing=0.12,
        )
        blank = np.zeros((*result.test_images.shape[-2:], 3), np.uint8)
        fig.add_trace(go.Image(z=blank, hoverinfo="skip"), row=1, col=1)
        fig.add_trace(
            go.Bar(
                x=names,
                y=[0.0] * len(names),
                marker_color=class_colors(max(4, len(names)))[: len(names)],
                name="prediction",
                hovertemplate="%{x}: %{y:.2f}<extra></extra>",
            ),
            row=1,
            col=2,
        )
        fig.add_trace(
            go.Scatter(
                x=names,
                y=[0.0] * len(names),
                mode="lines",
                line={"color": "#000000", "dash": "dash"},
                name="true value",
            ),
            row=1,
            col=2,
        )
        fig.update_xaxes(showgrid=False, title_text="x (px)", row=1, col=1)
        fig.update_yaxes(showgrid=False, autorange="reversed", title_text="y (px)", row=1, col=1)
        fig.update_xaxes(title_text="model", row=1, col=2)
        fig.update_yaxes(title_text=f"predicted {value}", row=1, col=2)
        finish(fig, "predictions under corruption", height=420, width=980)
        self.fig = go.FigureWidget(fig)
        self._heat = robustness_heatmap
        self.heat = go.FigureWidget(self._heat_figure())
        for w in (self.corruption, self.severity, self.image):
            w.observe(self._draw, names="value")
        self.model.observe(self._draw_heat, names="value")
        self._draw()
        self.widget = W.VBox([W.HBox([self.image, self.corruption, self.severity]), self.fig, self.model, self.heat])

    def _heat_figure(self):
        m, a = self.model.value
        cfg = self.result.config
        return self._heat(
            self.result.heatmap(m, a),
            cfg.corruptions,
            cfg.severities,
            title=f"error per corruption × severity: {m} ({a}), mean over seeds",
        )

    def _draw_heat(self, *_):
        new = self._heat_figure()
        with self.heat.batch_update():
            self.heat.data[0].z, self.heat.data[0].text = new.data[0].z, new.data[0].text
            self.heat.layout.title.text = new.layout.title.text

    def _draw(self, *_):
        img, preds, truth = self.result.corrupted(self.image.value, self.corruption.value, self.severity.value)
        with self.fig.batch_update():
            self.fig.data[0].z = to_rgb_uint8(img)
            self.fig.data[1].y = [preds[k] for k in self.fig.data[1].x]
            self.fig.data[2].y = [truth] * len(preds)
            self.fig.layout.title.text = (
                f"predictions under {self.corruption.value}, severity {self.severity.value}: "
                f"test image {self.image.value}, true {self.value} {truth:.2f}"
            )
