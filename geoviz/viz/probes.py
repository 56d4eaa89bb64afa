"""Shape probes (notebook 03): learning curves, transfer bars with floors and verdicts, probe depth
lines, the galleries.

Pure builders and apps: they display, never train."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import _WidgetApp, _with_caption, embedding_traces, graph_caption, image_mosaic, mosaic_data
from .style import class_colors, class_symbols, finish


def _series_key(r: dict) -> str:
    return f"{r['architecture']} · {r['start']}"


def learning_curves_grid(runs: list[dict], *, title: str, n_cols: int = 3) -> go.Figure:
    """Validation accuracy vs images seen, one panel per experiment, a line per (architecture, start)."""
    exps = list(dict.fromkeys(r["experiment"] for r in runs))
    keys = list(dict.fromkeys(_series_key(r) for r in runs))
    colors, symbols = class_colors(max(4, len(keys))), class_symbols(len(keys))
    rows = (len(exps) + n_cols - 1) // n_cols
    names = {r["experiment"]: f"{r['experiment']} {r['name']} ({r['invariant']})" for r in runs}
    fig = make_subplots(
        rows=rows, cols=n_cols, subplot_titles=[names[e] for e in exps], vertical_spacing=0.14, horizontal_spacing=0.07
    )
    for i, e in enumerate(exps):
        rr, cc = divmod(i, n_cols)
        for k, key in enumerate(keys):
            sel = [r for r in runs if r["experiment"] == e and _series_key(r) == key]
            if not sel:
                continue
            curve = np.mean([[acc for _, acc in r["curve"]] for r in sel], axis=0)
            fig.add_trace(
                go.Scatter(
                    x=[n for n, _ in sel[0]["curve"]],
                    y=curve,
                    name=key,
                    legendgroup=key,
                    showlegend=i == 0,
                    mode="lines+markers",
                    line={"color": colors[k]},
                    marker={"symbol": symbols[k], "color": colors[k]},
                ),
                row=rr + 1,
                col=cc + 1,
            )
        fig.add_hline(y=sel[0]["chance"] if sel else 0.5, line_dash="dot", line_color="#999999", row=rr + 1, col=cc + 1)
        fig.update_yaxes(range=[0, 1.02], row=rr + 1, col=cc + 1)
        fig.update_xaxes(title_text="images seen", row=rr + 1, col=cc + 1)
    fig.update_yaxes(title_text="val accuracy", col=1)
    return finish(fig, title, height=300 * rows + 120, legend_title="network · start")


def transfer_bars(
    table: list[dict],
    verdicts: list[dict],
    *,
    title: str,
    floors: list[dict] | None = None,
    transfer_sets=("style", "size", "both"),
) -> go.Figure:
    """Accuracy on the training distribution and on each transfer set, per experiment and network
    (mean over seeds), with each experiment's chance and shortcut floor as markers; the subtitle
    gives the overall verdicts."""
    starts = list(dict.fromkeys(r["start"] for r in table))
    fig = make_subplots(rows=len(starts), cols=1, subplot_titles=[f"start: {s}" for s in starts], vertical_spacing=0.2)
    colors = class_colors(len(transfer_sets) + 1)
    floor = {f["experiment"]: f for f in floors or []}
    for i, s in enumerate(starts):
        rows = [r for r in table if r["start"] == s]
        x = [[r["experiment"] for r in rows], [r["architecture"] for r in rows]]
        fig.add_trace(
            go.Bar(
                x=x,
                y=[r["train_acc"] for r in rows],
                name="training distribution",
                marker_color=colors[0],
                showlegend=i == 0,
                legendgroup="train",
            ),
            row=i + 1,
            col=1,
        )
        for k, t in enumerate(transfer_sets):
            fl = [floor.get(r["experiment"], {}).get(f"shortcut_floor_{t}", np.nan) for r in rows]
            fig.add_trace(
                go.Bar(
                    x=x,
                    y=[r[f"{t}_acc"] for r in rows],
                    name=f"transfer: {t}",
                    marker_color=colors[k + 1],
                    customdata=np.stack([[r[f"{t}_cc"] for r in rows], fl], 1),
                    showlegend=i == 0,
                    legendgroup=t,
                    hovertemplate="%{y:.3f} (chance-corrected transfer %{customdata[0]:.2f}; "
                    "this set's shortcut floor %{customdata[1]:.3f})<extra>" + t + "</extra>",
                ),
                row=i + 1,
                col=1,
            )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[r["chance"] for r in rows],
                mode="markers",
                name="chance",
                marker={"symbol": "line-ew-open", "size": 28, "color": "black"},
                showlegend=i == 0,
                legendgroup="chance",
            ),
            row=i + 1,
            col=1,
        )
        if floor:  # the training distribution's floor as a bar-wide line, each transfer set's as a diamond
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[floor.get(r["experiment"], {}).get("shortcut_floor") for r in rows],
                    mode="markers",
                    name="shortcut floor",
                    marker={"symbol": "line-ew-open", "size": 28, "color": "#CC3311", "line": {"width": 3}},
                    showlegend=i == 0,
                    legendgroup="floor",
                ),
                row=i + 1,
                col=1,
            )
            high = [
                np.nanmax(
                    [floor.get(r["experiment"], {}).get(f"shortcut_floor_{t}", np.nan) for t in transfer_sets]
                    + [-np.inf]
                )
                for r in rows
            ]
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[v if np.isfinite(v) else None for v in high],
                    mode="markers",
                    name="shortcut floor, highest transfer set (each set's on hover)",
                    marker={"symbol": "diamond-open", "size": 9, "color": "#CC3311"},
                    showlegend=i == 0,
                    legendgroup="floor_t",
                ),
                row=i + 1,
                col=1,
            )
        fig.update_yaxes(title_text="test accuracy (fraction)", range=[0, 1.05], row=i + 1, col=1)
        fig.update_xaxes(title_text="experiment / network", row=i + 1, col=1)
    fig.update_layout(barmode="group")
    lines = [
        f"{v['hypothesis'].split(' ')[0]} ({v['transfer_set']}): <b>{v['verdict']}</b>"
        for v in verdicts
        if v["scope"] == "overall" and (v["hypothesis"].startswith("H") or v["hypothesis"].startswith("C (both"))
    ]
    sub = "<br><sup>" + " · ".join(lines) + "</sup>" if lines else ""
    return finish(fig, title + sub, height=340 * len(starts) + 160, legend_title="test set")


def probe_depth_lines(probes: list[dict], *, title: str) -> go.Figure:
    """Linear-probe accuracy vs relative depth, per experiment (solid: cross-validated on the
    training distribution; dashed: on the transfer set), one panel per (architecture, start)."""
    panels = list(dict.fromkeys(_series_key(p) for p in probes))
    exps = list(dict.fromkeys(p["experiment"] for p in probes))
    colors, symbols = class_colors(max(4, len(exps))), class_symbols(len(exps))
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=panels, vertical_spacing=0.16, horizontal_spacing=0.08)
    for i, key in enumerate(panels):
        rr, cc = divmod(i, cols)
        for k, e in enumerate(exps):
            sel = sorted(
                (p for p in probes if _series_key(p) == key and p["experiment"] == e), key=lambda p: p["depth"]
            )
            if not sel:
                continue
            x = [p["relative_depth"] for p in sel]
            inv = sel[0]["invariant"]
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[p["cv_acc"] for p in sel],
                    name=f"{e} ({inv})",
                    legendgroup=e,
                    showlegend=i == 0,
                    mode="lines+markers",
                    line={"color": colors[k], "dash": "solid"},
                    marker={"symbol": symbols[k], "color": colors[k]},
                    text=[p["layer"] for p in sel],
                    hovertemplate="%{text}: %{y:.3f}<extra>" + e + " train distribution</extra>",
                ),
                row=rr + 1,
                col=cc + 1,
            )
            if "transfer_acc" in sel[0]:
                fig.add_trace(
                    go.Scatter(
                        x=x,
                        y=[p["transfer_acc"] for p in sel],
                        name=f"{e} transfer",
                        legendgroup=e,
                        showlegend=False,
                        mode="lines",
                        line={"color": colors[k], "dash": "dash"},
                        text=[p["layer"] for p in sel],
                        hovertemplate="%{text}: %{y:.3f}<extra>" + e + " transfer</extra>",
                    ),
                    row=rr + 1,
                    col=cc + 1,
                )
        fig.update_yaxes(range=[0, 1.02], row=rr + 1, col=cc + 1)
        fig.update_xaxes(title_text="relative depth of the block (0 = first, 1 = last)", row=rr + 1, col=cc + 1)
    fig.update_yaxes(title_text="probe accuracy", col=1)
    return finish(
        fig,
        title + "<br><sup>solid: cross-validated on the training distribution "
        "· dashed: probe trained there, tested on new shapes</sup>",
        height=330 * rows + 140,
        legend_title="experiment",
    )


class ShapeGallery(_WidgetApp):
    """Browse each experiment's classes: training images beside transfer images (new shapes)."""

    def __init__(self, gallery, experiments, *, per_class: int = 4):
        import ipywidgets as W

        self.gallery, self.per_class = (
            gallery,
            per_class,
        )  # gallery(experiment, per_class) -> (images, captions, n_cols)
        self.experiment = W.Dropdown(
            options=list(experiments),
            value=list(experiments)[0],
            description="experiment",
            layout=W.Layout(width="360px"),
        )
        self.fig = go.FigureWidget(image_mosaic([], [], title="shapes"))
        self.experiment.observe(self._draw, names="value")
        self._draw()
        self.widget = W.VBox([self.experiment, self.fig])

    def _draw(self, *_):
        images, captions, n_cols, title = self.gallery(self.experiment.value, self.per_class)
        z, anns = mosaic_data(images, captions, n_cols=n_cols, scale=2, label_px=16)
        with self.fig.batch_update():
            self.fig.data[0].z = z
            self.fig.layout.annotations = anns
            self.fig.layout.title.text = title
            self.fig.layout.height = z.shape[0] + 110
            self.fig.layout.width = max(500, z.shape[1] + 60)


class ActivationEmbeddingApp(_WidgetApp):
    """For a frozen network and a block, a 2-D projection of the pooled activations of the
    experiment's images, coloured by class (computed on demand by ``embed``)."""

    def __init__(self, embed, experiments, architectures, starts, layers_of, class_names_of, *, axis: str = "UMAP"):
        import ipywidgets as W

        self.embed, self.layers_of, self.class_names_of, self.axis = embed, layers_of, class_names_of, axis
        lay = lambda w: W.Layout(width=w)  # noqa: E731
        self.experiment = W.Dropdown(options=list(experiments), description="experiment", layout=lay("260px"))
        self.architecture = W.Dropdown(options=list(architectures), description="network", layout=lay("240px"))
        self.start = W.Dropdown(options=list(starts), description="start", layout=lay("220px"))
        self.layer = W.Dropdown(options=layers_of(self.architecture.value), description="layer", layout=lay("240px"))
        self.layer.value = self.layer.options[-1]
        self.fig = go.FigureWidget(layout={"height": 460, "width": 640})
        for w in (self.experiment, self.start, self.layer):
            w.observe(self._draw, names="value")
        self.architecture.observe(self._new_arch, names="value")
        self._draw()
        self.widget = W.VBox([W.HBox([self.experiment, self.architecture, self.start, self.layer]), self.fig])

    def _new_arch(self, *_):
        opts = self.layers_of(self.architecture.value)
        self.layer.unobserve(self._draw, names="value")
        self.layer.options = opts
        self.layer.value = opts[-1]
        self.layer.observe(self._draw, names="value")
        self._draw()

    def _draw(self, *_):
        e, a, s, l = self.experiment.value, self.architecture.value, self.start.value, self.layer.value
        xy, labels = self.embed(e, a, s, l)
        traces = embedding_traces(
            xy, labels, self.class_names_of(e), hover=[f"image {i}" for i in range(len(labels))], marker_size=7
        )
        with self.fig.batch_update():
            self.fig.data = []
            self.fig.add_traces(traces)
            finish(
                self.fig,
                _with_caption(f"{self.axis} of pooled activations · {e} · {a} ({s}) · {l}", graph_caption(xy)),
                f"{self.axis} 1 (a.u.)",
                f"{self.axis} 2 (a.u.)",
                legend_title="class",
            )
