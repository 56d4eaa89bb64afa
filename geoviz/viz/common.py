"""Figure builders and widget pieces every study shares: embeddings, patches, curves, tables (claims
too), mosaics, the local-feature explorer and the Grad-CAM explorer.

Pure builders and apps: they display, never train."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import OKABE_ITO, SEQUENTIAL, class_colors, class_symbols, finish


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def thumbnail(image, side: int = 96):
    """An image (C, H, W) in [0, 1] area-downsampled so its longer side is at most ``side`` px."""
    import torch

    x = image if torch.is_tensor(image) else torch.as_tensor(np.asarray(image))
    if x.dtype == torch.uint8:
        x = x.float() / 255
    h, w = x.shape[-2:]
    if max(h, w) <= side:
        return x
    size = (max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w))))
    return torch.nn.functional.interpolate(x[None].float(), size=size, mode="area")[0]


def to_rgb_uint8(image) -> np.ndarray:
    """``(C, H, W)`` or ``(H, W)`` in [0, 1] (or uint8) → ``(H, W, 3)`` uint8 for ``go.Image``."""
    a = _np(image)
    if a.ndim == 2:
        a = a[None]
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    if a.shape[0] == 1:
        a = np.repeat(a, 3, axis=0)
    return np.ascontiguousarray(a[:3].transpose(1, 2, 0))


def embedding_traces(
    coords,
    labels=None,
    class_names: Sequence[str] | None = None,
    *,
    values=None,
    value_name: str = "value",
    point_ids=None,
    hover: Sequence[str] | None = None,
    marker_size: int = 6,
) -> list[go.Scatter]:
    """Scatter traces of a 2-D embedding: one per class (legend = class names), or one trace
    coloured by continuous ``values``. ``customdata`` holds each point's id, for callbacks."""
    xy = _np(coords)
    n = len(xy)
    ids = np.arange(n) if point_ids is None else _np(point_ids)
    hover = np.asarray(hover if hover is not None else [""] * n, dtype=object)
    if values is not None:
        v = _np(values).astype(float)
        return [
            go.Scatter(
                x=xy[:, 0],
                y=xy[:, 1],
                mode="markers",
                customdata=ids,
                text=hover,
                name=value_name,
                marker={
                    "size": marker_size,
                    "color": v,
                    "colorscale": SEQUENTIAL,
                    "showscale": True,
                    "colorbar": {"title": {"text": value_name}},
                    "line": {"width": 0},
                },
                hovertemplate="%{text}<br>" + value_name + "=%{marker.color:.3g}<extra></extra>",
            )
        ]
    labels = np.zeros(n, int) if labels is None else _np(labels).astype(int)
    k = int(labels.max()) + 1 if n else 0
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    colors, symbols = class_colors(len(names)), class_symbols(len(names))
    traces = []
    for c, name in enumerate(names):
        m = labels == c
        if not m.any():
            continue
        traces.append(
            go.Scatter(
                x=xy[m, 0],
                y=xy[m, 1],
                mode="markers",
                name=name,
                customdata=ids[m],
                text=hover[m],
                marker={
                    "size": marker_size,
                    "color": colors[c],
                    "symbol": symbols[c],
                    "opacity": 0.85,
                    "line": {"width": 0},
                },
                hovertemplate="%{text}<extra>" + name + "</extra>",
            )
        )
    return traces


def graph_caption(coords) -> str:
    """What a UMAP picture rests on, as ``project`` recorded it on its :class:`Embedding` ("exact
    15-NN graph", "approximate 15-NN graph (NN-descent)", ...); empty for PCA and for plain arrays,
    whose graph is not known."""
    return getattr(coords, "graph", "") or ""


def _with_caption(title: str, caption: str) -> str:
    return f"{title}<br><sup>{caption}</sup>" if caption else title


def embedding_scatter(
    coords,
    labels=None,
    class_names=None,
    *,
    title: str = "2-D embedding of local features",
    axis: str = "UMAP",
    values=None,
    value_name: str = "value",
    point_ids=None,
    hover=None,
    height: int = 480,
    width: int | None = None,
) -> go.Figure:
    fig = go.Figure(
        embedding_traces(
            coords, labels, class_names, values=values, value_name=value_name, point_ids=point_ids, hover=hover
        )
    )
    fig.update_layout(hovermode="closest")
    title = _with_caption(title, graph_caption(coords))
    return finish(fig, title, f"{axis} 1 (a.u.)", f"{axis} 2 (a.u.)", height=height, width=width, legend_title="class")


def embedding_grid(
    panels: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    class_names,
    *,
    title: str,
    axis: str = "UMAP",
    height: int = 430,
) -> go.Figure:
    """Side-by-side embeddings (e.g. one per layer), classes coloured consistently, one legend; a
    UMAP's title says which neighbour graph it rests on."""
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels), horizontal_spacing=0.06)
    for j, (name, xy) in enumerate(panels.items()):
        for tr in embedding_traces(xy, labels[name], class_names, marker_size=5):
            tr.legendgroup, tr.showlegend = tr.name, j == 0
            fig.add_trace(tr, row=1, col=j + 1)
        fig.update_xaxes(title_text=f"{axis} 1 (a.u.)", row=1, col=j + 1)
        fig.update_yaxes(title_text=f"{axis} 2 (a.u.)", row=1, col=j + 1)
    captions = dict.fromkeys(graph_caption(xy) for xy in panels.values())
    return finish(fig, _with_caption(title, " · ".join(filter(None, captions))), height=height, legend_title="class")


def patch_figure(
    image, box: tuple[int, int, int, int] | None = None, *, title: str = "image patch", size: int = 340
) -> go.Figure:
    """An image with a receptive-field box ``(x0, y0, x1, y1)`` (pixels, half-open) drawn on it."""
    rgb = to_rgb_uint8(image)
    fig = go.Figure(go.Image(z=rgb, hovertemplate="x=%{x} px, y=%{y} px<extra></extra>"))
    fig.update_layout(shapes=[box_shape(box)] if box is not None else [])
    fig.update_xaxes(showgrid=False, range=[-0.5, rgb.shape[1] - 0.5], constrain="domain")
    fig.update_yaxes(showgrid=False, range=[rgb.shape[0] - 0.5, -0.5], scaleanchor="x", constrain="domain")
    return finish(fig, title, "x (px)", "y (px)", height=size + 60, width=size)


def box_shape(box: tuple[int, int, int, int], *, cell: bool = False) -> dict:
    """A receptive-field box (orange, filled), or with ``cell`` the position's own grid cell
    (blue outline, drawn over it)."""
    x0, y0, x1, y1 = box
    colour, fill = ("#0072B2", "rgba(0,0,0,0)") if cell else ("#E69F00", "rgba(230,159,0,0.12)")
    return {
        "type": "rect",
        "x0": x0 - 0.5,
        "y0": y0 - 0.5,
        "x1": x1 - 0.5,
        "y1": y1 - 0.5,
        "line": {"color": colour, "width": 2 if cell else 3},
        "fillcolor": fill,
    }


def training_curves(
    history: list[dict], *, title: str = "Training curves", keys: Sequence[str] = ("train_acc", "val_acc")
) -> go.Figure:
    """Accuracy (and loss on a second axis) per epoch."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    colors = class_colors(4)

    def series(k):  # validation may run only every few epochs
        pts = [(r["epoch"], r[k]) for r in history if k in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    for i, k in enumerate(keys):
        x, y = series(k)
        if x:
            fig.add_trace(
                go.Scatter(x=x, y=y, name=k.replace("_", " "), mode="lines+markers", line={"color": colors[i]}),
                secondary_y=False,
            )
    for i, k in enumerate(("train_loss", "val_loss")):
        x, y = series(k)
        if x:
            fig.add_trace(
                go.Scatter(x=x, y=y, name=k.replace("_", " "), mode="lines", line={"color": colors[i], "dash": "dot"}),
                secondary_y=True,
            )
    fig.update_yaxes(title_text="accuracy (fraction)", range=[0, 1.02], secondary_y=False)
    fig.update_yaxes(title_text="cross-entropy (nats)", secondary_y=True, showgrid=False)
    return finish(fig, title, "epoch", height=380)


def bar_by_layer(values: dict[str, float], *, title: str, y: str, color: str | None = None) -> go.Figure:
    fig = go.Figure(
        go.Bar(
            x=list(values),
            y=list(values.values()),
            marker_color=color or class_colors(1)[0],
            text=[f"{v:.3f}" for v in values.values()],
            textposition="outside",
        )
    )
    return finish(fig, title, "layer", y, height=340)


def _number(v) -> str:
    """A claim's number: 3 significant digits, signed; "–" where there is none."""
    return "–" if v is None or not np.isfinite(v) else f"{v:+.3g}"


def _interval(c) -> str:
    """The deciding interval, and the threshold it is decided against where that is not 0."""
    if not np.isfinite(c.interval[0]):
        return "–"
    threshold = c.extra.get("threshold", 0.0)
    return f"[{_number(c.interval[0])}, {_number(c.interval[1])}]" + (f" vs {threshold:+.3g}" if threshold else "")


def claims_table(claims, *, title: str) -> go.Figure:
    """One row per ``Claim`` (``analysis.statistics``): the claim, where it was tested, the estimate
    with the interval that decides, p, the units of replication, the verdict and any note. The
    estimate is in the unit the metric column names."""
    claims = list(claims)
    keys = list(dict.fromkeys(k for c in claims for k in c.conditions))

    def where(c) -> str:
        return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in c.conditions.items())

    rows = [
        [c.claim]
        + ([where(c)] if keys else [])
        + [
            c.metric,
            _number(c.mean),
            _interval(c),
            "–" if not np.isfinite(c.p) else f"{c.p:.3g}",
            f"{c.n} {c.unit}",
            c.verdict,
            c.note,
        ]
        for c in claims
    ]
    header = (
        ["claim"]
        + (["where"] if keys else [])
        + ["estimate of", "estimate", "interval (decides; vs 0 unless shown)", "p", "n", "verdict", "note"]
    )
    return table_figure(header, rows, title=title)


def convergence_curves(
    runs: dict[str | tuple[str, int], list[dict]],
    *,
    title: str,
    key: str = "val_acc",
    y_title: str = "validation accuracy (fraction)",
    floor: tuple[str, float] | None = None,
) -> go.Figure:
    """A validation measure per epoch of several runs (e.g. the teacher, and ce on all the data
    with its budget and twice it): has it stopped moving? ``floor`` = (name, value) draws a level
    every run must beat."""
    colors, symbols = class_colors(max(4, len(runs))), class_symbols(len(runs))
    fig = go.Figure()
    for i, (run, history) in enumerate(runs.items()):
        name = f"{run[0]}, seed {run[1]}" if isinstance(run, tuple) else run  # curves() are keyed by (arm, seed)
        pts = [(r["epoch"], r[key]) for r in history if key in r]
        if pts:
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in pts],
                    y=[p[1] for p in pts],
                    name=name,
                    mode="lines+markers",
                    marker={"symbol": symbols[i], "color": colors[i]},
                    line={"color": colors[i]},
                )
            )
    if floor is not None:
        fig.add_hline(
            y=floor[1], line_dash="dot", line_color="black", annotation_text=floor[0], annotation_position="top right"
        )
    return finish(fig, title, "epoch", y_title, height=400, legend_title="run")


def table_figure(header: Sequence[str], rows: Sequence[Sequence], *, title: str) -> go.Figure:
    """A plotly table (rows of already formatted cells)."""
    cols = [list(c) for c in zip(*rows)] if rows else [[] for _ in header]
    fig = go.Figure(
        go.Table(
            header={"values": list(header), "fill_color": "#DDDDDD", "align": "left"},
            cells={"values": cols, "align": "left", "height": 26},
        )
    )
    return finish(fig, title, height=170 + 32 * len(rows))


def band_curves(series: dict[str, dict], *, title: str, x: str, y: str) -> go.Figure:
    """Mean line ± std band over seeds for each method; ``series[m] = {"epochs", "values"}``."""
    fig = go.Figure()
    colors = class_colors(max(4, len(series)))
    for k, (name, s) in enumerate(series.items()):
        v = np.asarray(s["values"], dtype=float)
        mean, std = np.nanmean(v, 0), np.nanstd(v, 0)
        e = list(s["epochs"])
        fig.add_trace(
            go.Scatter(
                x=e + e[::-1],
                y=list(mean + std) + list((mean - std)[::-1]),
                fill="toself",
                line={"width": 0},
                fillcolor=colors[k],
                opacity=0.2,
                hoverinfo="skip",
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(x=e, y=mean, name=f"{name} (n={len(v)})", mode="lines+markers", line={"color": colors[k]})
        )
    fig.add_hline(y=0, line_color="#999999", line_width=1)
    return finish(fig, title, x, y, height=400, legend_title="method")


def image_mosaic(
    images, captions: Sequence[str], *, n_cols: int = 4, title: str, pad: int = 2, scale: int = 3, png: bool = False
) -> go.Figure:
    """Images in a grid (one ``go.Image``, so a widget can swap it in one update), a caption under each.
    ``png``: the grid as an embedded PNG (``source``) instead of a pixel array, 20-50× smaller in
    a notebook or an HTML export; for figures no widget updates (widgets set ``z``)."""
    z, anns = mosaic_data(images, captions, n_cols=n_cols, pad=pad, scale=scale)
    fig = go.Figure(go.Image(source=_png_uri(z), hoverinfo="skip") if png else go.Image(z=z, hoverinfo="skip"))
    fig.update_layout(annotations=anns)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return finish(fig, title, height=max(260, z.shape[0] + 110), width=max(420, z.shape[1] + 60))


def _png_uri(rgb: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def mosaic_data(images, captions, *, n_cols: int = 4, pad: int = 2, scale: int = 3, label_px: int = 14):
    imgs = [to_rgb_uint8(im).repeat(scale, 0).repeat(scale, 1) for im in images]
    if not imgs:
        return np.full((40, 160, 3), 255, np.uint8), [dict(x=80, y=20, text="no images", showarrow=False)]
    h, w = imgs[0].shape[:2]
    rows = (len(imgs) + n_cols - 1) // n_cols
    z = np.full((rows * (h + pad + label_px), n_cols * (w + pad), 3), 255, np.uint8)
    anns = []
    for k, im in enumerate(imgs):
        r, c = divmod(k, n_cols)
        y0, x0 = r * (h + pad + label_px), c * (w + pad)
        z[y0 : y0 + h, x0 : x0 + w] = im
        anns.append(
            dict(
                x=x0 + w / 2,
                y=y0 + h + label_px / 2,
                text=captions[k],
                showarrow=False,
                font={"size": 10},
                xref="x",
                yref="y",
            )
        )
    return z, anns


def confusion_grid(
    matrices: dict[str, np.ndarray], class_names: Sequence[str], *, title: str, n_cols: int = 2
) -> go.Figure:
    """Row-normalised confusion matrices (rows: true class, so each row sums to 1), one panel each."""
    names, keys = list(class_names), list(matrices)
    rows = (len(keys) + n_cols - 1) // n_cols
    fig = make_subplots(rows=rows, cols=n_cols, subplot_titles=keys, horizontal_spacing=0.14, vertical_spacing=0.16)
    for k, key in enumerate(keys):
        m = np.asarray(matrices[key], float)
        frac = m / np.maximum(m.sum(1, keepdims=True), 1)
        r, c = divmod(k, n_cols)
        fig.add_trace(
            go.Heatmap(
                z=frac,
                x=names,
                y=names,
                zmin=0,
                zmax=1,
                colorscale=SEQUENTIAL,
                showscale=k == 0,
                customdata=m,
                colorbar={"title": {"text": "fraction of<br>the true class"}},
                hovertemplate="true %{y}, predicted %{x}: %{z:.2f} (%{customdata:.0f} images)<extra></extra>",
            ),
            row=r + 1,
            col=c + 1,
        )
        fig.update_xaxes(title_text="predicted class", row=r + 1, col=c + 1)
        fig.update_yaxes(title_text="true class", autorange="reversed", row=r + 1, col=c + 1)
    return finish(fig, title, height=420 * rows + 80)


def results_table(table: list[dict], *, title: str, value: str = "test accuracy") -> go.Figure:
    """Mean ± std (n seeds) per method (rows) and train fraction (columns), as a plotly table."""
    methods = list(dict.fromkeys(r["method"] for r in table))
    fracs = sorted({r["fraction"] for r in table})
    cell = {(r["method"], r["fraction"]): f"{r['mean']:.3f} ± {r['std']:.3f} (n={r['n']})" for r in table}
    rows = [[m] + [cell.get((m, f), "") for f in fracs] for m in methods]
    return table_figure(
        ["method"] + [f"{100 * f:g}% of the data" for f in fracs],
        rows,
        title=f"{title} — {value}, mean ± std over seeds",
    )


class _WidgetApp:
    """An app shows itself as its ``widget`` when it is the value of a notebook cell, with a static
    HTML snapshot beside it: JupyterLab draws the live widget (the richer mimetype), an exported
    HTML file, which cannot run widgets offline, shows the snapshot."""

    widget = None

    def _ipython_display_(self):
        from IPython.display import display

        bundle = dict(self.widget._repr_mimebundle_() or {})
        bundle["text/html"] = self.static_html()
        display(bundle, raw=True)

    def static_html(self) -> str:
        """The app as it looks now: figures as plotly divs (plotly.js not included), controls as text."""
        return _static_html(self.widget)


def _static_html(w) -> str:
    import ipywidgets as W
    import plotly.io as pio

    if isinstance(w, go.FigureWidget):
        return pio.to_html(go.Figure(w), include_plotlyjs=False, full_html=False, validate=False)
    if isinstance(w, W.Box):
        direction = "row" if isinstance(w, W.HBox) else "column"
        inner = "".join(_static_html(c) for c in w.children)
        return f'<div style="display:flex;flex-direction:{direction};flex-wrap:wrap;gap:6px">{inner}</div>'
    if isinstance(w, (W.HTML, W.HTMLMath)):
        return f"<div>{w.value}</div>"
    if hasattr(w, "value") and getattr(w, "description", None) is not None:
        shown = w.label if isinstance(w, W.Dropdown) and w.label is not None else w.value  # a dropdown's visible text
        return f"<div><b>{html.escape(str(w.description))}</b>: {html.escape(str(shown))}</div>"
    return ""


class EmbeddingExplorer(_WidgetApp):
    """A UMAP (or PCA) scatter of local features linked to the image patch each point sees.

    Hovering or clicking a point draws its receptive field (orange) and its own grid cell (blue) on
    its image. Dropdowns choose the layer and what colours the points (class, feature norm,
    distance of the position from the image centre). ``select(point_id)`` does programmatically
    what a click does. ``rows[layer]`` says which bank rows the layer's points are (None: all, in
    order); data without labels (-1) is drawn as one group.
    """

    COLOURS = ("class", "feature norm", "distance from centre (px)")

    def __init__(
        self,
        coords: dict[str, np.ndarray],
        bank,
        images,
        class_names: Sequence[str],
        receptive_fields: dict,
        *,
        axis: str = "UMAP",
        rows: dict | None = None,
    ):
        import ipywidgets as W

        self.coords, self.bank, self.rfs, self.axis = coords, bank, receptive_fields, axis
        self.rows = rows or {}
        self.images = images
        self.class_names = list(class_names) or ["image (no labels)"]
        layers = list(coords)
        self.layer = W.Dropdown(options=layers, value=layers[-1], description="layer", layout=W.Layout(width="260px"))
        self.colour = W.Dropdown(
            options=self.COLOURS, value="class", description="colour", layout=W.Layout(width="300px")
        )
        self.scatter = go.FigureWidget(layout={"height": 470, "width": 620})
        self.patch = go.FigureWidget(patch_figure(self.images[0], None, title="hover or click a point"))
        self.info = W.HTML("<i>hover or click a point to see the image patch it comes from</i>")
        self.selected: int | None = None
        self._shown_image: int | None = 0
        self.layer.observe(self._redraw, names="value")
        self.colour.observe(self._redraw, names="value")
        self._redraw()
        self.widget = W.VBox([W.HBox([self.layer, self.colour]), W.HBox([self.scatter, self.patch]), self.info])

    # the layer's points ------------------------------------------------------
    def _rows(self, layer: str) -> np.ndarray:
        return self.rows[layer] if layer in self.rows else np.arange(len(self.coords[layer]))

    def _index(self, layer: str) -> np.ndarray:
        return np.asarray(self.bank.index[layer])[self._rows(layer)]

    def _labels(self, layer: str) -> np.ndarray:
        lab = self.bank.point_labels(layer)[self._rows(layer)]
        return np.where(lab < 0, 0, lab)  # no labels: one group

    # drawing ----------------------------------------------------------------
    def _values(self, layer: str):
        mode = self.colour.value
        if mode == "class":
            return None, None
        if mode == "feature norm":
            feats = np.asarray(self.bank.features[layer][self._rows(layer)], dtype=np.float32)
            return np.linalg.norm(feats, axis=1), "‖feature‖ (a.u.)"
        idx = self._index(layer)
        rf = self.rfs[layer]
        cy = (idx[:, 1] + 0.5) * rf.jump[0] - rf.input_size[0] / 2
        cx = (idx[:, 2] + 0.5) * rf.jump[1] - rf.input_size[1] / 2
        return np.hypot(cy, cx), "distance from centre (px)"

    def _hover_text(self, layer: str) -> list[str]:
        lab = self.bank.point_labels(layer)[self._rows(layer)]
        return [
            f"image {b} ({self.class_names[l] if l >= 0 else 'no label'}) · y={y}, x={x}"
            for (b, y, x), l in zip(self._index(layer), lab)
        ]

    def _redraw(self, *_):
        layer = self.layer.value
        values, vname = self._values(layer)
        traces = embedding_traces(
            self.coords[layer],
            self._labels(layer),
            self.class_names,
            values=values,
            value_name=vname or "value",
            hover=self._hover_text(layer),
        )
        with self.scatter.batch_update():
            self.scatter.data = []
            self.scatter.add_traces(traces)
            finish(
                self.scatter,
                _with_caption(
                    f"{self.axis} of local features · {layer} · {len(self.coords[layer])} points",
                    graph_caption(self.coords[layer]),
                ),
                f"{self.axis} 1 (a.u.)",
                f"{self.axis} 2 (a.u.)",
                legend_title="class",
            )
            self.scatter.update_layout(hovermode="closest")
        for tr in self.scatter.data:
            tr.on_click(self._on_point)
            tr.on_hover(self._on_point)

    def _on_point(self, trace, points, state):
        if points.point_inds:
            self.select(int(trace.customdata[points.point_inds[0]]))

    def select(self, point_id: int) -> tuple[int, int, int, int]:
        """Show point ``point_id`` of the current layer: its image, receptive field and grid cell."""
        layer = self.layer.value
        b, y, x = (int(v) for v in self._index(layer)[point_id])
        rf = self.rfs[layer]
        box, cell = rf.box(y, x), rf.cell(y, x)
        label = int(self.bank.labels[b])
        name = self.class_names[label] if label >= 0 else "no label"
        with self.patch.batch_update():
            if self._shown_image != b:
                self.patch.data[0].z = to_rgb_uint8(self.images[b])
                self._shown_image = b
            self.patch.layout.shapes = [box_shape(box), box_shape(cell, cell=True)]
            self.patch.layout.title.text = (
                f"image {b} · {name}<br><sup>{layer} (y={y}, x={x}) sees {box[2] - box[0]}×{box[3] - box[1]} px</sup>"
            )
        self.selected = point_id
        self.info.value = (
            f"point {point_id}: image <b>{b}</b> ({name}), position y={y}, x={x} of {layer}; "
            f"receptive field x∈[{box[0]}, {box[2]}), y∈[{box[1]}, {box[3]}) px (orange; unclipped size "
            f"{rf.size[0]}×{rf.size[1]} px), grid cell x∈[{cell[0]}, {cell[2]}), y∈[{cell[1]}, {cell[3]}) px (blue)"
        )
        return box


class CamExplorer(_WidgetApp):
    """Pick a test image and an ensemble member: the image, the member's Grad-CAM over it (for the
    predicted class, or a class chosen in ``explain``) and the member's class probabilities (the
    true class in vermillion); below, every member's prediction for the image. ``result``
    provides ``models`` ({(start, member): model}), ``classes``, ``test_images`` and
    ``cam(index, start, member, target)`` → {"image", "map", "probabilities", "explained", "label"}."""

    def __init__(self, result):
        import ipywidgets as W
        from plotly.subplots import make_subplots

        from .style import SEQUENTIAL

        self.result, self.classes = result, list(result.classes)
        self._image_word = getattr(result, "image_word", "test image")  # what the images are called in titles
        keys = list(result.models)
        self.image = W.IntSlider(
            min=0,
            max=len(result.test_images) - 1,
            value=0,
            description="image",
            continuous_update=False,
            layout=W.Layout(width="360px"),
        )
        self.member = W.Dropdown(
            options=[(f"{m} ({s})", (s, m)) for s, m in keys],
            value=keys[0],
            description="member",
            layout=W.Layout(width="300px"),
        )
        self.target = W.Dropdown(
            options=[("predicted class", -1)] + [(c, i) for i, c in enumerate(self.classes)],
            value=-1,
            description="explain",
            layout=W.Layout(width="300px"),
        )
        size = tuple(result.test_images.shape[-2:])
        fig = make_subplots(
            rows=1,
            cols=3,
            subplot_titles=("test image", "Grad-CAM over the image", "the member's class probabilities"),
            column_widths=[0.27, 0.27, 0.46],
            horizontal_spacing=0.14,
        )
        blank = np.zeros((*size, 3), np.uint8)
        fig.add_trace(go.Image(z=blank, hoverinfo="skip"), row=1, col=1)
        fig.add_trace(go.Image(z=blank, hoverinfo="skip"), row=1, col=2)
        fig.add_trace(
            go.Heatmap(
                z=np.zeros(size),
                zmin=0,
                zmax=1,
                opacity=0.55,
                colorscale=SEQUENTIAL,
                colorbar={"title": {"text": "Grad-CAM<br>(÷ max)"}, "x": 0.54, "len": 0.8, "thickness": 12},
                hovertemplate="x %{x}, y %{y}: %{z:.2f}<extra></extra>",
            ),
            row=1,
            col=2,
        )
        fig.add_trace(
            go.Bar(
                x=self.classes,
                y=[0.0] * len(self.classes),
                marker_color=[OKABE_ITO[4]] * len(self.classes),
                name="probability",
                hovertemplate="%{x}: %{y:.3f}<extra></extra>",
            ),
            row=1,
            col=3,
        )
        for c in (1, 2):
            fig.update_xaxes(showgrid=False, title_text="x (px)", row=1, col=c)
            fig.update_yaxes(showgrid=False, autorange="reversed", title_text="y (px)", row=1, col=c)
        fig.update_xaxes(title_text="class", row=1, col=3)
        fig.update_yaxes(title_text="probability", range=[0, 1], row=1, col=3)
        finish(fig, "Grad-CAM", height=430, width=1080)
        fig.update_layout(showlegend=False)
        self.fig = go.FigureWidget(fig)
        self._true_colour, self._other_colour = OKABE_ITO[5], OKABE_ITO[4]
        self.info = W.HTML()
        for w in (self.image, self.member, self.target):
            w.observe(self._draw, names="value")
        self._draw()
        self.widget = W.VBox([W.HBox([self.image, self.member, self.target]), self.fig, self.info])

    def _draw(self, *_):
        start, member = self.member.value
        target = None if self.target.value < 0 else self.target.value
        c = self.result.cam(self.image.value, start, member, target)
        probs, label, explained = c["probabilities"], c["label"], c["explained"]
        pred = int(np.argmax(probs))
        img = to_rgb_uint8(c["image"])
        with self.fig.batch_update():
            self.fig.data[0].z, self.fig.data[1].z, self.fig.data[2].z = img, img, c["map"]
            self.fig.data[3].y = probs
            self.fig.data[3].marker.color = [
                self._true_colour if i == label else self._other_colour for i in range(len(probs))
            ]
            true = self.classes[label] if 0 <= label < len(self.classes) else "not among these classes"
            self.fig.layout.title.text = (
                f"Grad-CAM of {member} ({start}) on {self._image_word} {self.image.value}: true {true}, predicted "
                f"{self.classes[pred]} ({probs[pred]:.2f}), explaining {self.classes[explained]}"
            )
        mark = lambda p: "" if label < 0 else (" ✓" if int(np.argmax(p)) == label else " ✗")  # noqa: E731
        votes = [
            f"{m} ({s}): {self.classes[int(np.argmax(p))]} {np.max(p):.2f}" + mark(p)
            for (s, m), p in self.result.member_probabilities(self.image.value).items()
        ]
        self.info.value = "<b>every member on this image</b> (predicted class, probability): " + " · ".join(votes)
