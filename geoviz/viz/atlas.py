"""Figures, an explorer and a one-file HTML report for ``geoviz.atlas.Atlas`` (layer × layer CKA)."""

from __future__ import annotations

import html
import json

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .._io import atomic_write_text
from .common import _WidgetApp, embedding_grid
from .style import SEQUENTIAL, class_colors, class_symbols, finish

HEATMAP_ID = "atlas-heatmap"
PAIR_ID = "atlas-pair"


def _axis(atlas) -> str:
    return {"umap": "UMAP", "pca": "PCA"}.get(atlas.embedding or "", "embedding")


def atlas_heatmap(atlas, *, title: str | None = None, floor=None) -> go.Figure:
    """Linear CKA of every layer of A (rows, input to output) against every layer of B (columns),
    the best-matching layer of B for each layer of A marked ×. With ``floor`` (another Atlas of
    the same layers, e.g. against an untrained B), a second panel shows it on the same scale."""
    panels = [(atlas, f"{atlas.name_a} vs {atlas.name_b}")] + (
        [(floor, f"floor: {floor.name_a} vs {floor.name_b} (untrained)")] if floor else []
    )
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[1] for p in panels], horizontal_spacing=0.14)
    for j, (a, _) in enumerate(panels):
        fig.add_trace(
            go.Heatmap(
                z=a.cka.tolist(),
                x=a.layers_b,
                y=a.layers_a,
                zmin=0,
                zmax=1,
                colorscale=SEQUENTIAL,
                colorbar={"title": {"text": "CKA"}, "x": 1.0 if j == len(panels) - 1 else 0.43, "len": 0.9},
                showscale=j == len(panels) - 1,
                hovertemplate=f"{a.name_a} %{{y}} · {a.name_b} %{{x}}: CKA "
                "%{z:.3f}<br>click: both layers' local features<extra></extra>",
            ),
            row=1,
            col=j + 1,
        )
        best = a.best_match()
        fig.add_trace(
            go.Scatter(
                x=[b for _, b, _ in best],
                y=[la for la, _, _ in best],
                mode="markers",
                name="best match in B",
                marker={"symbol": "x", "size": 11, "color": "#D55E00", "line": {"width": 1, "color": "white"}},
                showlegend=j == 0,
                hovertemplate="best match of %{y}: %{x}<extra></extra>",
            ),
            row=1,
            col=j + 1,
        )
        fig.update_xaxes(title_text=f"layer of {a.name_b} (input → output)", tickangle=-45, row=1, col=j + 1)
        fig.update_yaxes(title_text=f"layer of {a.name_a}", autorange="reversed", row=1, col=j + 1)
    n = atlas.n_images
    return finish(
        fig,
        title or f"Layer × layer linear CKA (minibatch, unbiased HSIC) · {n} images",
        height=max(420, 28 * len(atlas.layers_a) + 220),
        width=None if floor else max(560, 34 * len(atlas.layers_b) + 260),
    )


def atlas_best_match(atlas, *, title: str | None = None, floor=None) -> go.Figure:
    """For each layer of A: the depth of its best-matching layer of B (left) and, where it was
    measured, the kNN agreement of their local features, with the overlap of random neighbour
    sets marked as a reference (right; the floor, when given, is the baseline)."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("best-matching layer of B", "kNN agreement of local features at that pair"),
        horizontal_spacing=0.14,
    )
    colors = class_colors(4)
    for i, (a, name) in enumerate([(atlas, "trained")] + ([(floor, "floor (untrained B)")] if floor else [])):
        best = a.best_match()
        fig.add_trace(
            go.Scatter(
                x=a.layers_a,
                y=[a.layers_b.index(b) for _, b, _ in best],
                mode="lines+markers",
                name=name,
                marker={"color": colors[i], "symbol": class_symbols(4)[i], "size": 9},
                line={"color": colors[i]},
                text=[f"{b} (CKA {c:.3f})" for _, b, c in best],
                hovertemplate="%{x} → %{text}<extra></extra>",
                legendgroup=name,
            ),
            row=1,
            col=1,
        )
        pairs = [(la, b) for la, b, _ in best if (la, b) in a.knn]
        if pairs:
            fig.add_trace(
                go.Bar(
                    x=[p[0] for p in pairs],
                    y=[a.knn[p] for p in pairs],
                    name=name,
                    marker_color=colors[i],
                    showlegend=False,
                    text=[p[1] for p in pairs],
                    hovertemplate="%{x} ↔ %{text}: %{y:.3f}<extra></extra>",
                    legendgroup=name,
                ),
                row=1,
                col=2,
            )
        if pairs:
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in pairs],
                    y=[a.knn_chance(p) for p in pairs],
                    mode="markers",
                    name="random neighbour sets",
                    marker={"symbol": "line-ew-open", "size": 26, "color": "#555555"},
                    showlegend=i == 0,
                    hovertemplate="random neighbour sets: %{y:.4f}<extra></extra>",
                ),
                row=1,
                col=2,
            )
    fig.update_yaxes(
        title_text=f"layer of {atlas.name_b} (index, input → output)",
        tickvals=list(range(len(atlas.layers_b))),
        ticktext=atlas.layers_b,
        range=[-0.5, len(atlas.layers_b) - 0.5],
        row=1,
        col=1,
    )
    fig.update_yaxes(title_text=f"Jaccard overlap of k={atlas.knn_k} neighbour sets", row=1, col=2)
    for c in (1, 2):
        fig.update_xaxes(title_text=f"layer of {atlas.name_a}", tickangle=-45, row=1, col=c)
    return finish(fig, title or "Where each layer of A lands in B", height=440, legend_title="comparison")


def atlas_pair_figure(atlas, layer_a: str, layer_b: str) -> go.Figure:
    """The 2-D pictures of both layers' sampled local features side by side, coloured by class."""
    if not atlas.embeddings:
        raise ValueError("this atlas has no pictures: run compare(..., embedding='umap' or 'pca')")
    j = atlas.layers_a.index(layer_a), atlas.layers_b.index(layer_b)
    panels = {
        f"{atlas.name_a} {layer_a}": atlas.embeddings[("a", layer_a)],
        f"{atlas.name_b} {layer_b}": atlas.embeddings[("b", layer_b)],
    }
    labels = dict(zip(panels, (atlas.embedding_labels[("a", layer_a)], atlas.embedding_labels[("b", layer_b)])))
    knn = atlas.knn.get((layer_a, layer_b))
    sub = f"CKA {atlas.cka[j]:.3f}" + (f" · kNN agreement {knn:.3f}" if knn is not None else "")
    return embedding_grid(
        panels,
        labels,
        atlas.classes or [],
        title=f"{_axis(atlas)} of local features<br><sup>{sub}</sup>",
        axis=_axis(atlas),
    )


class AtlasExplorer(_WidgetApp):
    """The CKA heatmap with a cell picker: clicking a cell (or choosing both layers in the
    dropdowns) draws both layers' local features side by side. ``select(layer_a, layer_b)`` does
    programmatically what a click does."""

    def __init__(self, atlas):
        import ipywidgets as W

        self.atlas = atlas
        best = atlas.best_match()[0]
        self.heatmap = go.FigureWidget(
            atlas_heatmap(atlas, title=f"Pick a cell: CKA of {atlas.name_a} (rows) vs {atlas.name_b} (columns)")
        )
        self.layer_a = W.Dropdown(
            options=atlas.layers_a, value=best[0], description="layer of A", layout=W.Layout(width="300px")
        )
        self.layer_b = W.Dropdown(
            options=atlas.layers_b, value=best[1], description="layer of B", layout=W.Layout(width="300px")
        )
        self.pair = go.FigureWidget(layout={"height": 430})
        self.layer_a.observe(self._draw, names="value")
        self.layer_b.observe(self._draw, names="value")
        for trace in self.heatmap.data:  # the cells and the × markers drawn on some of them
            trace.on_click(self._on_cell)
        self._draw()
        self.widget = W.VBox([self.heatmap, W.HBox([self.layer_a, self.layer_b]), self.pair])

    def _on_cell(self, trace, points, state):
        if points.xs and points.ys:  # a heatmap's point: x and y are the layer names of the cell
            self.select(str(points.ys[0]), str(points.xs[0]))

    def select(self, layer_a: str, layer_b: str) -> None:
        with self.layer_a.hold_trait_notifications(), self.layer_b.hold_trait_notifications():
            self.layer_a.value, self.layer_b.value = layer_a, layer_b
        self._draw()

    def _draw(self, *_):
        if not self.atlas.embeddings:
            return
        fig = atlas_pair_figure(self.atlas, self.layer_a.value, self.layer_b.value)
        with self.pair.batch_update():
            self.pair.data = []
            self.pair.add_traces(fig.data)
            self.pair.layout = fig.layout


def _pair_data(atlas) -> dict:
    """What the report's script needs to draw any cell: each layer's points by class."""
    out = {}
    for (side, layer), xy in atlas.embeddings.items():
        lab = atlas.embedding_labels[(side, layer)]
        out[f"{side}|{layer}"] = {str(int(c)): np.round(xy[lab == c], 3).tolist() for c in np.unique(lab)}
    return out


_SCRIPT = """
(function() {
  var data = %(data)s, meta = %(meta)s;
  function draw(la, lb) {
    var traces = [], names = meta.classes;
    [["a", la, "x", "y"], ["b", lb, "x2", "y2"]].forEach(function(p, k) {
      var pts = data[p[0] + "|" + p[1]] || {};
      Object.keys(pts).forEach(function(c) {
        var ci = parseInt(c), xy = pts[c];
        traces.push({type: "scattergl", mode: "markers", x: xy.map(function(v) { return v[0]; }), y: xy.map(function(v) { return v[1]; }),
          xaxis: p[2], yaxis: p[3], name: names[ci] || ("class " + c), legendgroup: c, showlegend: k === 0,
          marker: {color: meta.colors[ci %% meta.colors.length], symbol: meta.symbols[ci %% meta.symbols.length], size: 5}});
      });
    });
    var i = meta.layers_a.indexOf(la), j = meta.layers_b.indexOf(lb), knn = meta.knn[la + "|" + lb];
    var sub = "CKA " + meta.cka[i][j].toFixed(3) + (knn === undefined ? "" : " · kNN agreement " + knn.toFixed(3));
    Plotly.react(%(pair)s, traces, {
      template: "simple_white", height: 440, title: {text: meta.axis + " of local features: " + meta.name_a + " " + la + " (left) and " +
        meta.name_b + " " + lb + " (right)<br><sup>" + sub + "</sup>", x: 0.02},
      grid: {rows: 1, columns: 2, pattern: "independent"}, legend: {title: {text: "class"}},
      xaxis: {title: {text: meta.axis + " 1 (a.u.)"}}, yaxis: {title: {text: meta.axis + " 2 (a.u.)"}},
      xaxis2: {title: {text: meta.axis + " 1 (a.u.)"}}, yaxis2: {title: {text: meta.axis + " 2 (a.u.)"}}});
    document.getElementById("atlas-selected").textContent = la + " ↔ " + lb;
  }
  var heat = document.getElementById(%(heat)s);
  heat.on("plotly_click", function(ev) {
    var p = ev.points[0];
    if (p && meta.layers_a.indexOf(p.y) >= 0 && meta.layers_b.indexOf(p.x) >= 0) { draw(p.y, p.x); }  // a cell, or the × on one
  });
  draw(meta.start[0], meta.start[1]);
})();
"""  # noqa: E501 (embedded JavaScript / HTML)


def write_atlas_report(atlas, path, *, floor=None, title: str | None = None) -> str:
    """One self-contained HTML file (plotly.js embedded once): the heatmap(s), the best-matching
    layers, the kNN agreement at the measured pairs, and a panel that draws both layers' local
    features for any heatmap cell clicked. Returns the path written."""
    import plotly.io as pio

    heat = atlas_heatmap(atlas, floor=floor)
    parts = [
        pio.to_html(heat, include_plotlyjs=True, full_html=False, div_id=HEATMAP_ID),
        pio.to_html(atlas_best_match(atlas, floor=floor), include_plotlyjs=False, full_html=False),
    ]
    best = atlas.best_match()

    def knn_cells(a, b):
        if (a, b) not in atlas.knn:
            return "<td></td><td></td><td></td>"
        return (
            f"<td>{atlas.knn[(a, b)]:.3f}</td><td>{atlas.knn_chance((a, b)):.4f}</td>"
            f"<td>{atlas.knn_points[(a, b)]}</td>"
        )

    rows = "".join(
        f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{c:.3f}</td>{knn_cells(a, b)}</tr>"
        for a, b, c in best
    )
    table = (
        f"<table class='best'><tr><th>layer of {html.escape(atlas.name_a)}</th><th>best match in "
        f"{html.escape(atlas.name_b)}</th>"
        f"<th>CKA</th><th>kNN agreement</th><th>random neighbour sets</th><th>points</th></tr>{rows}</table>"
    )
    script = ""
    if atlas.embeddings:
        n = len(atlas.classes)  # compare names the classes whenever it draws pictures
        meta = {
            "classes": list(atlas.classes),
            "colors": class_colors(n),
            "symbols": class_symbols(n),
            "layers_a": atlas.layers_a,
            "layers_b": atlas.layers_b,
            "cka": np.round(atlas.cka, 4).tolist(),
            "knn": {f"{a}|{b}": v for (a, b), v in atlas.knn.items()},
            "name_a": atlas.name_a,
            "name_b": atlas.name_b,
            "axis": _axis(atlas),
            "start": [best[0][0], best[0][1]],
        }
        script = (
            "<script>"
            + _SCRIPT
            % {
                "data": json.dumps(_pair_data(atlas)),
                "meta": json.dumps(meta),
                "pair": json.dumps(PAIR_ID),
                "heat": json.dumps(HEATMAP_ID),
            }
            + "</script>"
        )
    head = title or f"Geometry atlas: {atlas.name_a} vs {atlas.name_b}"
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in atlas.seconds.items())
    doc = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(head)}</title>
<style>body{{font-family:sans-serif;margin:20px;max-width:1400px}} table.best{{border-collapse:collapse;margin:10px 0}}
table.best td,table.best th{{border:1px solid #ccc;padding:3px 8px;text-align:left}} .note{{color:#444}}</style></head>
<body><h1>{html.escape(head)}</h1>
<p class="note">{atlas.n_images} images; linear CKA of every pair of layers by the unbiased HSIC estimator summed over minibatches
(Nguyen, Raghu &amp; Kornblith 2021); kNN agreement (Jaccard overlap of k={atlas.knn_k} neighbour sets) of local features at the
same positions of the same images, both maps area-pooled to the coarser grid. Random neighbour sets score far lower than any
two networks do (local features follow the pixels): compare against a floor, such as network B untrained
(<code>geoviz atlas --floor</code>), not against them. Time: {html.escape(secs)}.
Click a heatmap cell to see both layers' local features ({_axis(atlas)}, coloured by the class of their image).</p>
{parts[0]}
<h2>Selected cell: <span id="atlas-selected">—</span></h2>
<div id="{PAIR_ID}" style="height:440px"></div>
<h2>Best matches</h2>
{parts[1]}
{table}
{script}
</body></html>"""  # noqa: E501 (embedded JavaScript / HTML)
    atomic_write_text(path, doc)
    return str(path)
