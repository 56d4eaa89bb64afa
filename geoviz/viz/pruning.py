"""Decorrelated pruning (notebook 05): accuracy against FLOPs, layer spectra, the channel-correlation explorer.

Pure builders and apps: they display, never train."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import _WidgetApp
from .style import class_colors, class_symbols, finish


def accuracy_vs_flops(table: list[dict], *, title: str, chance: float | None = None) -> go.Figure:
    """Test accuracy (mean ± std over seeds) against measured FLOPs per image, before (left) and
    after (right) fine-tuning, one line per pruning method; the unpruned network as a star
    (``PruningResult.table()`` rows)."""
    methods = [m for m in dict.fromkeys(r["method"] for r in table) if m != "unpruned"]
    colors, symbols = class_colors(max(4, len(methods))), class_symbols(len(methods))
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("pruned, before fine-tuning", "after fine-tuning"),
        shared_yaxes=True,
        horizontal_spacing=0.06,
    )
    base = [r for r in table if r["method"] == "unpruned"]
    for j, key in enumerate(("acc_pruned", "acc_finetuned")):
        for i, m in enumerate(methods):
            rs = sorted((r for r in table if r["method"] == m), key=lambda r: r["flops"])
            fig.add_trace(
                go.Scatter(
                    x=[r["flops"] / 1e6 for r in rs],
                    y=[r[key] for r in rs],
                    error_y={"type": "data", "array": [r[key + "_std"] for r in rs]},
                    name=m,
                    legendgroup=m,
                    showlegend=j == 0,
                    mode="lines+markers",
                    text=[f"{r['speedup']:g}× target" for r in rs],
                    marker={"symbol": symbols[i], "size": 10, "color": colors[i]},
                    line={"color": colors[i]},
                    hovertemplate="%{text}: %{x:.2f} MFLOPs, accuracy %{y:.3f}<extra>" + m + "</extra>",
                ),
                row=1,
                col=j + 1,
            )
        if base:
            fig.add_trace(
                go.Scatter(
                    x=[base[0]["flops"] / 1e6],
                    y=[base[0]["acc_finetuned"]],
                    error_y={"type": "data", "array": [base[0]["acc_finetuned_std"]]},
                    name="unpruned",
                    legendgroup="unpruned",
                    showlegend=j == 0,
                    mode="markers",
                    marker={"symbol": "star", "size": 14, "color": "#000000"},
                ),
                row=1,
                col=j + 1,
            )
        if chance is not None:
            fig.add_hline(y=chance, line_dash="dot", line_color="black", annotation_text="chance", row=1, col=j + 1)
        fig.update_xaxes(title_text="FLOPs per image (millions, measured)", row=1, col=j + 1)
    fig.update_yaxes(title_text="test accuracy (fraction)", row=1, col=1)
    return finish(fig, title, height=440, legend_title="method")


def layer_spectra(spectra: dict, ranks: dict | None = None, *, title: str) -> go.Figure:
    """Explained-energy fraction against the number of kept directions, one line per layer
    (``{layer: LayerSpectrum}``), the chosen rank of each layer marked (``ranks``: layer → r, None
    where the layer was kept whole)."""
    names = list(spectra)
    colors = class_colors(max(4, len(names)))
    fig = go.Figure()
    for i, n in enumerate(names):
        e = spectra[n].energy()
        fig.add_trace(
            go.Scatter(
                x=np.arange(1, len(e) + 1),
                y=e,
                name=n,
                legendgroup=n,
                mode="lines",
                line={"color": colors[i], "width": 1.5},
                hovertemplate="%{x} directions: %{y:.3f} of the energy<extra>" + n + "</extra>",
            )
        )
        r = (ranks or {}).get(n)
        if r is not None:
            fig.add_trace(
                go.Scatter(
                    x=[r],
                    y=[e[r - 1]],
                    legendgroup=n,
                    showlegend=False,
                    mode="markers",
                    marker={
                        "symbol": "diamond",
                        "size": 10,
                        "color": colors[i],
                        "line": {"width": 1, "color": "#000000"},
                    },
                    hovertemplate="kept %{x}: %{y:.3f} of the energy<extra>" + n + "</extra>",
                )
            )
    return finish(
        fig,
        title,
        "directions kept (rank r)",
        "explained energy (fraction of the variance)",
        height=460,
        legend_title="layer (◆ chosen rank)",
    )


class CorrelationExplorer(_WidgetApp):
    """A layer's channel correlation matrix in its original basis beside the same in the
    decorrelated basis (``mode``: outputs or inputs), with its explained-energy curve: a dropdown
    picks the layer. ``spectra``: ``{mode: {layer: LayerSpectrum}}`` (``PruningResult.spectra``)
    and ``correlation(spectrum, basis)`` (``methods.pruning.channel_correlation``), passed in so
    that viz imports nothing that computes."""

    def __init__(self, spectra: dict, correlation, layer: str | None = None):
        import ipywidgets as W
        from plotly.subplots import make_subplots

        self.spectra, self.correlation = spectra, correlation
        modes = list(spectra)
        layers = list(spectra[modes[0]])
        self.mode = W.Dropdown(options=modes, value=modes[0], description="space", layout=W.Layout(width="220px"))
        self.layer = W.Dropdown(
            options=layers, value=layer or layers[len(layers) // 2], description="layer", layout=W.Layout(width="300px")
        )
        fig = make_subplots(
            rows=1,
            cols=3,
            subplot_titles=("channel correlation, original basis", "in the decorrelated basis", "explained energy"),
            horizontal_spacing=0.09,
            column_widths=[0.36, 0.36, 0.28],
        )
        for c in (1, 2):
            fig.add_trace(
                go.Heatmap(
                    z=[[0.0]],
                    zmin=-1,
                    zmax=1,
                    colorscale="RdBu_r",
                    showscale=c == 1,  # diverging red–blue: CVD-safe
                    colorbar={"title": "correlation", "x": 0.69, "len": 0.8},
                    hovertemplate="channels %{y} and %{x}: %{z:.2f}<extra></extra>",
                ),
                row=1,
                col=c,
            )
            fig.update_xaxes(title_text="channel" if c == 1 else "direction", row=1, col=c)
            fig.update_yaxes(title_text="channel" if c == 1 else "direction", autorange="reversed", row=1, col=c)
        fig.add_trace(
            go.Scatter(
                x=[],
                y=[],
                mode="lines+markers",
                marker={"size": 4, "color": "#0072B2"},
                showlegend=False,
                hovertemplate="%{x} directions: %{y:.3f}<extra></extra>",
            ),
            row=1,
            col=3,
        )
        fig.update_xaxes(title_text="directions kept", row=1, col=3)
        fig.update_yaxes(title_text="energy (fraction)", range=[0, 1.02], row=1, col=3)
        finish(fig, "channel correlation", height=430, width=1050)
        self.fig = go.FigureWidget(fig)
        self.mode.observe(self._draw, names="value")
        self.layer.observe(self._draw, names="value")
        self._draw()
        self.widget = W.VBox([W.HBox([self.mode, self.layer]), self.fig])

    def _draw(self, *_):
        s = self.spectra[self.mode.value][self.layer.value]
        orig, dec = self.correlation(s, basis="original"), self.correlation(s, basis="decorrelated")
        off = lambda m: float(np.abs(m - np.diag(np.diag(m))).mean())  # noqa: E731
        e = s.energy()
        with self.fig.batch_update():
            self.fig.data[0].z, self.fig.data[1].z = orig, dec
            self.fig.data[2].x, self.fig.data[2].y = np.arange(1, len(e) + 1), e
            self.fig.layout.title.text = (
                f"{self.layer.value} ({self.mode.value}, {s.channels} channels): mean |off-diagonal correlation| "
                f"{off(orig):.3f} → {off(dec):.3f} in the decorrelated basis"
            )
