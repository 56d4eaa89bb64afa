"""Figures, apps and a one-file HTML report for ``experiments.explore`` (your network, your images).

The result they take provides: ``model``, ``data`` (item i: (image in [0, 1], label)), ``image(i)``,
``class_names``, ``layers``, ``bank``, ``coords`` / ``point_rows`` / ``receptive_fields`` of the
``explorer_layers``, ``purity``, ``probes``, ``floors``, ``geometry`` (a ``ClassGeometry`` or None),
``atlas`` (or None), ``cams`` and ``metrics``. They display; they compute nothing (a Grad-CAM a click
asks for comes from the result's ``cam_source()``).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .._io import atomic_write_text
from .angles import angle_confusion_heatmaps, angle_confusion_scatter, show_confused
from .common import _WidgetApp, graph_caption, image_mosaic, thumbnail, to_rgb_uint8
from .style import OKABE_ITO, SEQUENTIAL, class_colors, class_symbols, finish

__all__ = ["decodability_figure", "cam_figure", "ClassPairExplorer", "write_explore_report"]


def decodability_figure(probes: list[dict], floors: dict, purity: dict, *, title: str | None = None) -> go.Figure:
    """Left: held-out accuracy of a linear probe on each layer's pooled features (the network, and
    the same architecture with random weights), with chance and the pixel floor. Right: kNN class
    purity of each layer's local features (neighbours from other images) against chance."""
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("linear probe on pooled features (held-out images)", "kNN class purity of local features"),
        horizontal_spacing=0.12,
    )
    layers = [r["layer"] for r in probes]
    c = OKABE_ITO
    tested = [k for k in ("vs_pixel_floor", "vs_random_network") if probes and k in probes[0]]
    beats = [bool(tested) and all(r[k]["verdict"] == "supported" for k in tested) for r in probes]
    verdicts = [
        "<br>".join(f"{k[3:].replace('_', ' ')}: {r[k]['verdict']} (Holm p = {r[k]['p_holm']:.3g})" for k in tested)
        for r in probes
    ]
    floors_named = " and ".join(k[3:].replace("_", " ") for k in tested)
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=[r["accuracy"] for r in probes],
            mode="lines+markers",
            name=f"this network (filled: beats the {floors_named})" if tested else "this network",
            marker={
                "color": c[4],
                "symbol": ["circle" if b else "circle-open" for b in beats],
                "size": 10,
                "line": {"width": 2, "color": c[4]},
            },
            line={"color": c[4]},
            text=verdicts,
            hovertemplate="%{x}: %{y:.3f}<br>%{text}<extra>this network</extra>",
        ),
        row=1,
        col=1,
    )
    if probes and "random_network_accuracy" in probes[0]:
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=[r["random_network_accuracy"] for r in probes],
                mode="lines+markers",
                name="random weights",
                marker={"color": c[0], "symbol": "square", "size": 8},
                line={"color": c[0], "dash": "dash"},
                hovertemplate="%{x}: %{y:.3f}<extra>same architecture, random weights</extra>",
            ),
            row=1,
            col=1,
        )
    for key, name, dash, colour in (
        ("chance", "chance (majority class)", "dot", "#555555"),
        ("pixel", "pixel floor", "dashdot", c[5]),
    ):
        if key in floors:
            v = floors[key]["accuracy"] if isinstance(floors[key], dict) else floors[key]
            extra = (
                f": {floors[key]['features']} / {floors[key]['classifier']}" if isinstance(floors[key], dict) else ""
            )
            fig.add_trace(
                go.Scatter(
                    x=[layers[0], layers[-1]] if layers else [],
                    y=[v, v],
                    mode="lines",
                    name=name + extra,
                    line={"color": colour, "dash": dash},
                    hovertemplate=f"{name}{extra}: {v:.3f}<extra></extra>",
                ),
                row=1,
                col=1,
            )
    if purity:
        names = [l for l in layers if l in purity] or list(purity)
        fig.add_trace(
            go.Scatter(
                x=names,
                y=[purity[l][0] for l in names],
                mode="lines+markers",
                name="kNN class purity",
                marker={"color": c[2], "symbol": "diamond", "size": 9},
                line={"color": c[2]},
                hovertemplate="%{x}: %{y:.3f}<extra>same-class neighbours</extra>",
            ),
            row=1,
            col=2,
        )
        fig.add_trace(
            go.Scatter(
                x=names,
                y=[purity[l][1] for l in names],
                mode="lines",
                name="purity by chance",
                line={"color": "#555555", "dash": "dot"},
                hovertemplate="%{x}: %{y:.3f}<extra>chance</extra>",
            ),
            row=1,
            col=2,
        )
    fig.update_yaxes(title_text="accuracy (fraction)", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="same-class neighbours (fraction)", range=[0, 1.02], row=1, col=2)
    for col in (1, 2):
        fig.update_xaxes(title_text="layer (input → output)", tickangle=-40, row=1, col=col)
    sub = (
        (
            f"<br><sup>filled marker: the probe beats the {floors_named} on the same held-out images "
            "(McNemar's exact test, one-sided, Holm-adjusted over the layers, p < 0.05)</sup>"
        )
        if tested
        else ""
    )
    fig = finish(fig, (title or "Where the labels become decodable") + sub, height=520, legend_title="")
    return fig.update_layout(margin={"t": 110})  # room for the two-line title above the panels' own titles


@functools.lru_cache(maxsize=1)
def _sequential_rgb() -> np.ndarray:
    """The sequential colour scale as a (256, 3) RGB table (sampled once)."""
    import plotly.colors as pc

    return np.asarray(
        [
            pc.hex_to_rgb(h) if h.startswith("#") else pc.unlabel_rgb(h)
            for h in pc.sample_colorscale(SEQUENTIAL, np.linspace(0, 1, 256))
        ],
        np.float32,
    )


def _overlay(image, cam) -> np.ndarray:
    """An image (C, H, W) in [0, 1] with a Grad-CAM map (H, W) in [0, 1] blended over it in Cividis
    (uint8 RGB), so the map is readable without the colour of the image."""
    rgb = to_rgb_uint8(image).astype(np.float32)
    heat = _sequential_rgb()[(np.clip(np.asarray(cam, np.float32), 0, 1) * 255).astype(int)]
    return (0.45 * rgb + 0.55 * heat).round().clip(0, 255).astype(np.uint8)


def cam_figure(images, maps, captions, *, title: str) -> go.Figure:
    """A mosaic of images with their Grad-CAM maps blended over them (Cividis: bright = the class
    evidence), one caption each, as one embedded PNG."""
    tiles = [
        np.asarray(thumbnail(np.transpose(_overlay(im, m), (2, 0, 1)).astype(np.float32) / 255, 112))
        for im, m in zip(images, maps)
    ]
    fig = image_mosaic(
        tiles, captions, n_cols=4, scale=2 if tiles and tiles[0].shape[-1] <= 64 else 1, title=title, png=True
    )
    return fig.update_layout(width=max(fig.layout.width or 0, 760))


MAX_PAIRS = 200  # pairs a picker offers, most confused first (1,000 classes have 499,500)
MAX_CLASSES = 40  # classes the scatter and heatmaps draw: those most involved in confusion


def _pair_options(geometry, top: int = MAX_PAIRS) -> list:
    names, conf = geometry.class_names, np.nan_to_num(np.asarray(geometry.confusion), nan=-1.0)
    i, j = np.triu_indices(len(names), 1)
    order = np.argsort(-conf[i, j], kind="stable")[:top]
    return [(f"{names[a]} – {names[b]} ({conf[a, b]:.3f})", (int(a), int(b))) for a, b in zip(i[order], j[order])]


def _geometry_figures(g, *, title: str, angle_of: str) -> tuple[go.Figure, go.Figure]:
    """The angle–confusion scatter (its statistics over every pair) and the two heatmaps, drawn over
    at most ``MAX_CLASSES`` classes (those with the most confusion) so a 1,000-class head stays legible."""
    n = len(g.class_names)
    keep = (
        np.arange(n)
        if n <= MAX_CLASSES
        else np.sort(np.argsort(-np.nan_to_num(g.confusion).sum(1), kind="stable")[:MAX_CLASSES])
    )
    sub = lambda m: np.asarray(m)[np.ix_(keep, keep)]  # noqa: E731
    names = [g.class_names[k] for k in keep]
    shown = (
        ""
        if n <= MAX_CLASSES
        else f" · drawn: the pairs of the {MAX_CLASSES} most confused of {n} classes (statistics over all)"
    )
    scatter = angle_confusion_scatter(
        sub(g.angles), sub(g.confusion), names, g.correlation, angle_of=angle_of, title=title + shown
    )
    scatter.add_trace(
        go.Scatter(
            x=[],
            y=[],
            mode="markers",
            name="picked pair",
            hoverinfo="skip",
            marker={"size": 18, "color": "rgba(0,0,0,0)", "line": {"width": 2.5, "color": OKABE_ITO[5]}},
        )
    )
    heat = angle_confusion_heatmaps(
        sub(g.angles),
        sub(g.confusion),
        names,
        angle_of=angle_of,
        title="Class angles and pairwise confusion — click a confusion cell" + shown,
    )
    return scatter, heat


def _angle_of(g) -> str:
    return "class vectors" if g.mode == "class vectors" else "class means (penultimate features, centred)"


class ClassPairExplorer(_WidgetApp):
    """Class geometry against confusion with a pair picker: the scatter of every class pair (angle
    vs confusion, the Mantel test in the title; the picked pair ringed), the angle and confusion
    heatmaps (click a confusion cell to pick its pair), and the picked pair's most-confused images.
    ``images[row]`` is the image of a data-set row."""

    def __init__(self, geometry, images, *, n_images: int = 8):
        import ipywidgets as W

        self.geometry, self.images, self.n_images = geometry, images, n_images
        g = geometry
        self.names = list(g.class_names)
        m = g.mantel
        test = (
            f"Mantel r = {m['r']:.3f}, one-sided p = {m['p_value']:.4f}: {m['verdict']}"
            if m
            else "Mantel test: needs 4 classes"
        )
        scatter, heat = _geometry_figures(
            g,
            angle_of=_angle_of(g),
            title=f"Angle vs confusion ({g.mode}; accuracy {g.accuracy:.3f} on {len(g.rows)} images) · {test}",
        )
        self.scatter = go.FigureWidget(scatter)
        self.scatter.update_layout(width=620)
        self.heat = go.FigureWidget(heat)
        self.heat.update_layout(width=1000)
        self.grid = go.FigureWidget(image_mosaic([], [], title="most confused images"))
        options = _pair_options(g)
        self.pair = W.Dropdown(options=options, value=options[0][1], description="pair", layout=W.Layout(width="420px"))
        self.pair.observe(self._draw, names="value")
        self.heat.data[1].on_click(self._on_cell)
        self._draw()
        self.widget = W.VBox([self.pair, W.HBox([self.scatter, self.grid]), self.heat])

    def _on_cell(self, trace, points, state):
        if points.xs and points.ys:
            i, j = self.names.index(points.ys[0]), self.names.index(points.xs[0])
            if i != j:
                self.pair.value = (min(i, j), max(i, j))

    def _draw(self, *_):
        i, j = self.pair.value
        g = self.geometry
        with self.scatter.batch_update():
            self.scatter.data[-1].x, self.scatter.data[-1].y = [float(g.angles[i, j])], [float(g.confusion[i, j])]
        picks = g.most_confused(i, j, self.n_images)
        show_confused(
            self.grid,
            [thumbnail(self.images[r]) for r, _, _ in picks],
            picks,
            self.names,
            i,
            j,
            f"{self.names[i]} ↔ {self.names[j]}: the images most confused between them",
        )


# ----------------------------------------------------------------------------- the report
def _jpeg_uri(image, side: int = 96) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_rgb_uint8(thumbnail(image, side))).save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _explorer_data(result, max_images: int) -> dict:
    """Each pictured layer's points (of at most ``max_images`` images), their boxes, and a thumbnail
    of every image they come from."""
    first = {}
    for layer in result.explorer_layers:
        for b in np.asarray(result.bank.index[layer])[result.point_rows[layer], 0]:
            if len(first) >= max_images:
                break
            first.setdefault(int(b), len(first))
    layers, names = {}, result.class_names or ["image (no labels)"]
    for layer in result.explorer_layers:
        idx = np.asarray(result.bank.index[layer])[result.point_rows[layer]]
        keep = np.flatnonzero(np.isin(idx[:, 0], list(first)))
        rf = result.receptive_fields[layer]
        pts = []
        for k in keep:
            b, y, x = (int(v) for v in idx[k])
            lab = int(result.bank.labels[b])
            pts.append(
                [
                    round(float(result.coords[layer][k, 0]), 3),
                    round(float(result.coords[layer][k, 1]), 3),
                    b,
                    max(lab, 0),
                    y,
                    x,
                    *rf.box(y, x),
                    *rf.cell(y, x),
                ]
            )
        layers[layer] = {
            "points": pts,
            "shown": len(keep),
            "of": len(idx),
            "graph": graph_caption(result.coords[layer]),
        }
    size = list(result.receptive_fields[result.explorer_layers[0]].input_size)
    return {
        "layers": layers,
        "thumbs": {str(b): _jpeg_uri(result.image(b)) for b in first},
        "classes": names,
        "size": size,
        "colors": class_colors(len(names)),
        "symbols": class_symbols(len(names)),
    }


_SCRIPT = """
(function() {
  var E = %(explorer)s, P = %(pairs)s, axis = %(axis)s;
  function draw(layer) {
    var pts = E.layers[layer].points, byClass = {};
    pts.forEach(function(p, k) { (byClass[p[3]] = byClass[p[3]] || []).push(k); });
    var traces = Object.keys(byClass).map(function(c) {
      var ks = byClass[c], ci = parseInt(c);
      return {type: "scatter", mode: "markers", name: E.classes[ci], customdata: ks,
        x: ks.map(function(k) { return pts[k][0]; }), y: ks.map(function(k) { return pts[k][1]; }),
        text: ks.map(function(k) { return "image " + pts[k][2] + " · y=" + pts[k][4] + ", x=" + pts[k][5]; }),
        hovertemplate: "%%{text}<extra>" + E.classes[ci] + "</extra>",
        marker: {size: 6, color: E.colors[ci %% E.colors.length], symbol: E.symbols[ci %% E.symbols.length], opacity: 0.85}};
    });
    var L = E.layers[layer];
    Plotly.react("explore-scatter", traces, {template: "simple_white", height: 480, hovermode: "closest",
      title: {text: axis + " of local features · " + layer + " · " + L.shown + " of " + L.of + " points (hover a point)" +
        (L.graph ? "<br><sup>" + L.graph + "</sup>" : ""), x: 0.02},
      xaxis: {title: {text: axis + " 1 (a.u.)"}}, yaxis: {title: {text: axis + " 2 (a.u.)"}}, legend: {title: {text: "class"}}});
    var el = document.getElementById("explore-scatter");
    el.removeAllListeners && el.removeAllListeners("plotly_hover");
    el.on("plotly_hover", function(ev) { var p = ev.points[0]; if (p) { patch(layer, pts[p.customdata]); } });
    el.on("plotly_click", function(ev) { var p = ev.points[0]; if (p) { patch(layer, pts[p.customdata]); } });
    if (pts.length) { patch(layer, pts[0]); }
  }
  function rect(b, cell) {
    return {type: "rect", x0: b[0] - 0.5, y0: b[1] - 0.5, x1: b[2] - 0.5, y1: b[3] - 0.5,
      line: {color: cell ? "#0072B2" : "#E69F00", width: cell ? 2 : 3}, fillcolor: cell ? "rgba(0,0,0,0)" : "rgba(230,159,0,0.12)"};
  }
  function patch(layer, p) {
    var H = E.size[0], W = E.size[1];
    Plotly.react("explore-patch", [{type: "scatter", x: [], y: []}], {template: "simple_white", width: 380, height: 430,
      title: {text: "image " + p[2] + " · " + E.classes[p[3]] + "<br><sup>" + layer + " (y=" + p[4] + ", x=" + p[5] + ") sees " +
        (p[8] - p[6]) + "×" + (p[9] - p[7]) + " px (orange); its cell in blue</sup>", x: 0.02},
      images: [{source: E.thumbs[String(p[2])], xref: "x", yref: "y", x: -0.5, y: -0.5, sizex: W, sizey: H, sizing: "stretch", layer: "below"}],
      xaxis: {range: [-0.5, W - 0.5], showgrid: false, title: {text: "x (px)"}, constrain: "domain"},
      yaxis: {range: [H - 0.5, -0.5], showgrid: false, title: {text: "y (px)"}, scaleanchor: "x"},
      shapes: [rect(p.slice(6, 10), false), rect(p.slice(10, 14), true)]});
    document.getElementById("explore-selected").textContent = "image " + p[2] + ", " + layer + " y=" + p[4] + " x=" + p[5];
  }
  var sel = document.getElementById("explore-layer");
  sel.addEventListener("change", function() { draw(sel.value); });
  draw(sel.value);
  var pick = document.getElementById("explore-pair");
  if (pick) {
    var show = function() {
      var k = pick.value, box = document.getElementById("explore-pair-images");
      box.innerHTML = P.pairs[k].map(function(c) {
        return '<figure class="thumb"><img src="' + P.thumbs[String(c[0])] + '" width="112" height="112" alt="image ' + c[0] + '">' +
          '<figcaption>' + c[1] + '</figcaption></figure>';
      }).join("") || "<i>no images of this pair</i>";
      Plotly.restyle("explore-angles", {x: [[P.points[k][0]]], y: [[P.points[k][1]]]}, [P.ring]);
    };
    pick.addEventListener("change", show);
    show();
  }
})();
"""  # noqa: E501 (embedded JavaScript / HTML)


def _pairs_data(result, options: list, n_images: int = 8) -> dict:
    g = result.geometry
    pairs, thumbs, points = {}, {}, {}
    for label, (i, j) in options:
        picks = g.most_confused(i, j, n_images)
        key = f"{i}-{j}"
        pairs[key] = [
            [r, html.escape(f"{g.class_names[t]}→{g.class_names[j if t == i else i]} {p:.2f}")] for r, t, p in picks
        ]
        points[key] = [float(g.angles[i, j]), float(g.confusion[i, j])]
        for r, _, _ in picks:
            thumbs.setdefault(str(r), _jpeg_uri(result.image(r), 112))
    return {"pairs": pairs, "thumbs": thumbs, "points": points}


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table class='t'><tr>{head}</tr>{body}</table>"


def write_explore_report(result, path, *, title: str | None = None, max_images: int = 300) -> str:
    """One self-contained HTML file (plotly.js embedded once): what was loaded, the local-feature
    explorer (pick a layer, hover a point: its image with the receptive field and the grid cell;
    thumbnails of up to ``max_images`` images embedded), decodability and class purity per layer
    with their floors, angle ↔ confusion with a pair picker (that pair's most-confused images), the
    atlas against the second network, and Grad-CAM maps. Returns the path written."""
    import plotly.io as pio

    from .atlas import atlas_best_match, atlas_heatmap

    m = result.metrics
    axis = {"umap": "UMAP", "pca": "PCA"}[result.config.projection]
    from plotly.offline import get_plotlyjs

    script_pairs = {"pairs": {}, "thumbs": {}, "points": {}, "ring": 0}
    to_div = lambda fig, **kw: pio.to_html(fig, include_plotlyjs=False, full_html=False, **kw)  # noqa: E731
    spec = m.get("input_spec") or {}
    info = [
        ["network", m["display_name"]],
        [
            "input",
            f"{spec.get('size', '?')} px crop of the shorter side resized to "
            f"{spec.get('resize') or spec.get('size', '?')} px; normalisation "
            f"{'mean ' + str(spec.get('mean')) + ', std ' + str(spec.get('std')) if spec.get('mean') else 'none'} "
            f"({spec.get('source', 'given')})",
        ],
        *([["second network (atlas)", m["display_name_b"]]] if m.get("display_name_b") else []),
        ["images", f"{m['n_images']} from {m['data']}"],
        ["classes", ", ".join(map(str, result.class_names)) or "none (unlabelled)"],
        ["layers analysed", ", ".join(result.layers)],
        ["time (s)", json.dumps(m["seconds"])],
    ]
    if "folder" in m:
        info.append(
            [
                "image sizes found",
                ", ".join(f"{w}×{h} ({n})" for (w, h), n in m["folder"]["source_sizes"][:6])
                + (f", … ({m['folder']['n_source_sizes']} sizes)" if m["folder"]["n_source_sizes"] > 6 else ""),
            ]
        )
    sections = [
        f"<h2>What was loaded</h2>{_table(info, ['', ''])}"
        + "".join(f"<p class='note'>{html.escape(n)}</p>" for n in result.notes)
    ]
    options = "".join(
        "<option "
        f"value='{html.escape(l)}'{' selected' if l == result.explorer_layers[-1] else ''}>{html.escape(l)}</option>"
        for l in result.explorer_layers
    )
    sections.append(f"""<h2>Local features</h2><p class='note'>Each point is one position of one image in the layer's feature map
(sampled positions, {axis} of the local features). Hover a point: its image, the position's receptive field (orange) and
its own
grid cell (blue).</p><label>layer <select id="explore-layer">{options}</select></label> <span
id="explore-selected"></span>
<div style="display:flex;flex-wrap:wrap"><div id="explore-scatter" style="width:640px;height:480px"></div>
<div id="explore-patch" style="width:380px;height:430px"></div></div>""")  # noqa: E501 (embedded JavaScript / HTML)
    if result.probes:
        sections.append(
            "<h2>Where the labels become decodable</h2>"
            + to_div(decodability_figure(result.probes, result.floors, result.purity))
            + "<p class='note'>Probes: logistic regression on each layer's globally pooled features, fitted on "
            f"{len(result.train)} images and scored on {len(result.test)} held out. Pixel floor: the best of cheap "
            "feature sets × classifiers chosen on the training images alone. Random weights: the same architecture, "
            "its BatchNorm statistics recalibrated on the training images. Purity: the share of a point's "
            f"{result.config.k} nearest neighbours (from other images) whose image has its class. Filled markers: "
            "the layer beats the floors on the same held-out images (McNemar, Holm-adjusted over the layers).</p>"
        )
    if result.geometry is not None:
        g = result.geometry
        scatter, heat = _geometry_figures(
            g,
            angle_of=_angle_of(g),
            title=f"Angle vs confusion ({g.mode}; accuracy {g.accuracy:.3f} on {len(g.rows)} images)",
        )
        options = _pair_options(g)
        script_pairs = {**_pairs_data(result, options), "ring": len(scatter.data) - 1}
        mt = g.mantel
        verdict = (
            f"Mantel test (class labels permuted): r = {mt['r']:.3f}, "
            f"one-sided p = {mt['p_value']:.4f} → <b>{mt['verdict']}</b>"
            if mt
            else "Mantel test: needs 4 classes or more"
        )
        opts = "".join(f"<option value='{i}-{j}'>{html.escape(lbl)}</option>" for lbl, (i, j) in options)
        sections.append(
            f"<h2>Class geometry and confusion</h2><p class='note'>{html.escape(g.note)}. {verdict}.</p>"
            + to_div(scatter, div_id="explore-angles")
            + f"<label>pair <select id='explore-pair'>{opts}</select></label><div "
            "id='explore-pair-images' class='thumbs'></div>" + to_div(heat)
        )
    if result.atlas is not None:
        sections.append(
            "<h2>Atlas against the second network</h2>"
            + to_div(atlas_heatmap(result.atlas))
            + to_div(atlas_best_match(result.atlas))
        )
    if len(result.cams["rows"]):
        caps = [f"image {r}: {t}" for r, t in zip(result.cams["rows"], m.get("cams", {}).get("targets", []))]
        sections.append(
            "<h2>Grad-CAM</h2>"
            + to_div(
                cam_figure(
                    [result.image(r) for r in result.cams["rows"]],
                    result.cams["maps"].numpy(),
                    caps,
                    title="Grad-CAM of the predicted class (bright: evidence for it)",
                )
            )
            + "<p class='note'>captum's LayerGradCam at the network's last block (a transformer: the input of its last "
            "block), for the class the network predicts; the most confused images first.</p>"
        )
    script = (
        "<script>"
        + _SCRIPT
        % {
            "explorer": json.dumps(_explorer_data(result, max_images)),
            "pairs": json.dumps(script_pairs),
            "axis": json.dumps(axis),
        }
        + "</script>"
    )
    head = title or f"geoviz explore: {m['display_name']} on {m['data']}"
    doc = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(head)}</title>
<style>body{{font-family:sans-serif;margin:20px;max-width:1400px}} table.t{{border-collapse:collapse;margin:8px 0}}
table.t td,table.t th{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}} .note{{color:#444}}
.thumbs{{display:flex;flex-wrap:wrap;gap:6px}} figure.thumb{{margin:0;font-size:11px;text-align:center}}</style>
<script>{get_plotlyjs()}</script></head>
<body><h1>{html.escape(head)}</h1>
{"".join(sections)}
{script}
</body></html>"""
    atomic_write_text(path, doc)
    return str(path)
