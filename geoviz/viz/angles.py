"""Class angles against confusion (notebook 02; the explore report reuses them): scatter, heatmaps,
a pair's trajectory, the explorer.

Pure builders and apps: they display, never train."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import _WidgetApp, image_mosaic, mosaic_data
from .style import class_colors, finish


def pair_trajectory(trajectory: dict, *, title: str) -> go.Figure:
    """One class pair through training: the angle between its class vectors (degrees, left axis)
    and its validation confusion rate (right axis) per epoch."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    colors = class_colors(2)
    fig.add_trace(
        go.Scatter(
            x=trajectory["epochs"],
            y=trajectory["angle"],
            name="angle (°)",
            mode="lines+markers",
            marker={"symbol": "circle", "color": colors[0]},
            line={"color": colors[0]},
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=trajectory["epochs"],
            y=trajectory["confusion"],
            name="confusion rate",
            mode="lines+markers",
            marker={"symbol": "square", "color": colors[1]},
            line={"color": colors[1], "dash": "dot"},
        ),
        secondary_y=True,
    )
    fig.update_yaxes(title_text="angle between class vectors (degrees)", secondary_y=False)
    fig.update_yaxes(
        title_text="pairwise confusion rate (fraction)", secondary_y=True, showgrid=False, rangemode="tozero"
    )
    return finish(fig, title, "epoch", height=360)


def _pairs(angles, confusion, class_names):
    a, c = np.asarray(angles, float), np.asarray(confusion, float)
    i, j = np.triu_indices(a.shape[0], k=1)
    names = [f"{class_names[p]} – {class_names[q]}" for p, q in zip(i, j)]
    return a[i, j], c[i, j], names


def angle_confusion_traces(angles, confusion, class_names) -> list[go.Scatter]:
    """Class pairs as points (angle between class vectors, pairwise confusion) and their
    least-squares line; the order of traces is fixed so widgets can update them in place."""
    x, y, names = _pairs(angles, confusion, class_names)
    ok = np.isfinite(x) & np.isfinite(y)
    line_x, line_y = [], []
    if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
        slope, icpt = np.polyfit(x[ok], y[ok], 1)
        line_x = [float(x[ok].min()), float(x[ok].max())]
        line_y = [slope * v + icpt for v in line_x]
    return [
        go.Scatter(
            x=x,
            y=y,
            text=names,
            mode="markers",
            name="class pairs",
            marker={"size": 9, "color": class_colors(2)[1], "line": {"width": 0.5, "color": "#333333"}},
            hovertemplate="%{text}<br>angle %{x:.1f}°<br>confusion %{y:.3f}<extra></extra>",
        ),
        go.Scatter(
            x=line_x, y=line_y, mode="lines", name="least-squares fit", line={"color": class_colors(2)[0], "width": 2}
        ),
    ]


def correlation_text(corr: dict) -> str:
    """r with its pair-bootstrap interval, as a description: pairs share classes, so a p-value
    over pairs would overstate significance (the Mantel test, permuting classes, is the test)."""
    if not np.isfinite(corr.get("pearson", np.nan)):
        return "r undefined (constant input)"
    lo, hi = corr["pearson_ci"]
    return (
        f"Pearson r = {corr['pearson']:.2f} (pair bootstrap [{lo:.2f}, {hi:.2f}], descriptive); "
        f"Spearman ρ = {corr['spearman']:.2f}"
    )


def angle_confusion_scatter(
    angles, confusion, class_names, corr: dict, *, title: str, angle_of: str = "class vectors"
) -> go.Figure:
    fig = go.Figure(angle_confusion_traces(angles, confusion, class_names))
    return finish(
        fig,
        f"{title}<br><sup>{correlation_text(corr)} over {corr['n_pairs']} class pairs</sup>",
        f"angle between {angle_of} (degrees)",
        "pairwise confusion rate (fraction)",
        height=440,
    )


def angle_confusion_heatmaps(
    angles, confusion, class_names, *, title: str, angle_of: str = "class vectors"
) -> go.Figure:
    names = list(class_names)
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(f"angle between {angle_of} (degrees)", "pairwise confusion rate"),
        horizontal_spacing=0.16,
    )
    fig.add_trace(
        go.Heatmap(
            z=np.asarray(angles, float),
            x=names,
            y=names,
            colorscale="Cividis",
            colorbar={"title": {"text": "degrees"}, "x": 0.42},
            hovertemplate="%{y} – %{x}: %{z:.1f}°<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Heatmap(
            z=np.asarray(confusion, float),
            x=names,
            y=names,
            colorscale="Cividis",
            reversescale=False,
            colorbar={"title": {"text": "rate"}},
            hovertemplate="%{y} – %{x}: %{z:.3f}<br>click: the images behind it<extra></extra>",
        ),
        row=1,
        col=2,
    )
    fig.update_yaxes(autorange="reversed")
    return finish(fig, title, height=470)


class AngleConfusionExplorer(_WidgetApp):
    """One training run at a time: an epoch slider moves the angle–confusion scatter and the two
    heatmaps through training (validation split; figures updated in place). A pair picker shows
    that class pair's angle and confusion per epoch. Clicking a cell of the confusion heatmap picks
    that pair and shows the test images of it the final model confuses most."""

    def __init__(self, result, *, n_images: int = 8):
        import ipywidgets as W

        self.result, self.n_images = result, n_images
        self.names = list(result.class_names)
        runs = [r.name for r in result.runs]
        first = result.runs[0]
        epochs = [h["epoch"] for h in first.history]
        self.run = W.Dropdown(options=runs, value=runs[0], description="run", layout=W.Layout(width="260px"))
        self.epoch = W.IntSlider(
            min=epochs[0],
            max=epochs[-1],
            value=epochs[-1],
            description="epoch",
            continuous_update=False,
            layout=W.Layout(width="420px"),
        )
        h = first.history[-1]
        self.scatter = go.FigureWidget(
            angle_confusion_scatter(
                h["angles"], h["confusion"], self.names, h["angle_confusion"], title="angle vs confusion"
            )
        )
        self.scatter.update_layout(width=560)
        self.heat = go.FigureWidget(
            angle_confusion_heatmaps(h["angles"], h["confusion"], self.names, title="angles and confusion")
        )
        self.heat.update_layout(width=980)
        self.grid = go.FigureWidget(image_mosaic([], [], title="most confused test images"))
        n = len(self.names)
        pairs = [(f"{self.names[i]} – {self.names[j]}", (i, j)) for i in range(n) for j in range(i + 1, n)]
        conf = np.asarray(first.test_confusion)
        i, j = np.unravel_index(np.nanargmax(np.triu(conf, 1)), conf.shape)
        self.pair = W.Dropdown(
            options=pairs, value=(int(min(i, j)), int(max(i, j))), description="pair", layout=W.Layout(width="320px")
        )
        self.trajectory = go.FigureWidget(layout={"height": 360, "width": 700})
        self.run.observe(self._on_run, names="value")
        self.epoch.observe(self._draw, names="value")
        self.pair.observe(self._on_pair, names="value")
        self.heat.data[1].on_click(self._on_cell)
        self._draw()
        self._on_pair()
        self.widget = W.VBox(
            [W.HBox([self.run, self.epoch, self.pair]), W.HBox([self.scatter, self.grid]), self.trajectory, self.heat]
        )

    @property
    def current(self):
        return self.result.run(self.run.value)

    def _on_run(self, *_):
        epochs = [h["epoch"] for h in self.current.history]
        self.epoch.max = epochs[-1]
        self.epoch.value = epochs[-1]
        self._draw()
        self._on_pair()

    def _on_pair(self, *_):
        i, j = self.pair.value
        run = self.current
        fig = pair_trajectory(
            run.pair_trajectory(i, j),
            title=f"{self.names[i]} – {self.names[j]} through training ({run.name}, validation)",
        )
        with self.trajectory.batch_update():
            self.trajectory.data = []
            self.trajectory.add_traces(fig.data)
            self.trajectory.layout = fig.layout
            self.trajectory.layout.width = 700
        self.show_pair(i, j)

    def _draw(self, *_):
        run = self.current
        h = next(r for r in run.history if r["epoch"] == self.epoch.value)
        new = angle_confusion_traces(h["angles"], h["confusion"], self.names)
        corr = h["angle_confusion"]
        with self.scatter.batch_update():
            for old, tr in zip(self.scatter.data, new):
                old.x, old.y, old.text = tr.x, tr.y, tr.text
            self.scatter.layout.title.text = (
                f"{run.name}, epoch {h['epoch']}: angle vs confusion (validation)<br>"
                f"<sup>{correlation_text(corr)} over {corr['n_pairs']} class pairs</sup>"
            )
        with self.heat.batch_update():
            self.heat.data[0].z = np.asarray(h["angles"], float)
            self.heat.data[1].z = np.asarray(h["confusion"], float)
            self.heat.layout.title.text = (
                f"{run.name}, epoch {h['epoch']}: class-vector angles and "
                "pairwise confusion (validation) — click a confusion cell"
            )

    def _on_cell(self, trace, points, state):
        if points.xs and points.ys:
            i, j = self.names.index(points.ys[0]), self.names.index(points.xs[0])
            if i != j:
                self.pair.value = (min(i, j), max(i, j))  # draws the trajectory and the images

    def show_pair(self, i: int, j: int) -> None:
        """Show the test images of classes i and j the run's final model confuses most."""
        run = self.current
        if i == j:
            return
        picks = self.result.most_confused(run, i, j, self.n_images)
        show_confused(
            self.grid,
            [self.result.test_images[n] for n, _, _ in picks],
            picks,
            self.names,
            i,
            j,
            f"{self.names[i]} ↔ {self.names[j]}: test images the final model of {run.name} confuses most",
        )


def show_confused(fig: go.FigureWidget, images, picks, names, i: int, j: int, title: str) -> None:
    """Draw ``images`` (the ``picks`` of ``most_confused``: (row, true class, probability of the other
    class)) into a mosaic FigureWidget, captioned true→other and that probability."""

    caps = [f"{names[t]}→{names[j if t == i else i]} {p:.2f}" for _, t, p in picks]
    z, anns = mosaic_data(images, caps)
    with fig.batch_update():
        fig.data[0].z = z
        fig.layout.annotations = anns
        fig.layout.title.text = (
            f"{title}<br><sup>caption: true→other class, the probability given to the other class</sup>"
        )
