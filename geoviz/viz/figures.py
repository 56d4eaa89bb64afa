"""Plotly figure builders: pure functions, data in, ``go.Figure`` out. They never train."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import SEQUENTIAL, class_colors, class_symbols, finish


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


def embedding_traces(coords, labels=None, class_names: Sequence[str] | None = None, *, values=None, value_name: str = "value", point_ids=None, hover: Sequence[str] | None = None, marker_size: int = 6) -> list[go.Scatter]:
    """Scatter traces of a 2-D embedding: one per class (legend = class names), or one trace
    coloured by continuous ``values``. ``customdata`` holds each point's id, for callbacks."""
    xy = _np(coords)
    n = len(xy)
    ids = np.arange(n) if point_ids is None else _np(point_ids)
    hover = np.asarray(hover if hover is not None else [""] * n, dtype=object)
    if values is not None:
        v = _np(values).astype(float)
        return [go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", customdata=ids, text=hover, name=value_name,
                           marker={"size": marker_size, "color": v, "colorscale": SEQUENTIAL, "showscale": True,
                                   "colorbar": {"title": {"text": value_name}}, "line": {"width": 0}},
                           hovertemplate="%{text}<br>" + value_name + "=%{marker.color:.3g}<extra></extra>")]
    labels = np.zeros(n, int) if labels is None else _np(labels).astype(int)
    k = int(labels.max()) + 1 if n else 0
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    colors, symbols = class_colors(len(names)), class_symbols(len(names))
    traces = []
    for c, name in enumerate(names):
        m = labels == c
        if not m.any():
            continue
        traces.append(go.Scatter(x=xy[m, 0], y=xy[m, 1], mode="markers", name=name, customdata=ids[m], text=hover[m],
                                 marker={"size": marker_size, "color": colors[c], "symbol": symbols[c], "opacity": 0.85, "line": {"width": 0}},
                                 hovertemplate="%{text}<extra>" + name + "</extra>"))
    return traces


def embedding_scatter(coords, labels=None, class_names=None, *, title: str = "2-D embedding of local features", axis: str = "UMAP", values=None, value_name: str = "value", point_ids=None, hover=None, height: int = 480, width: int | None = None) -> go.Figure:
    fig = go.Figure(embedding_traces(coords, labels, class_names, values=values, value_name=value_name, point_ids=point_ids, hover=hover))
    fig.update_layout(hovermode="closest")
    return finish(fig, title, f"{axis} 1 (a.u.)", f"{axis} 2 (a.u.)", height=height, width=width, legend_title="class")


def embedding_grid(panels: dict[str, np.ndarray], labels: dict[str, np.ndarray], class_names, *, title: str, axis: str = "UMAP", height: int = 430) -> go.Figure:
    """Side-by-side embeddings (e.g. one per layer), classes coloured consistently, one legend."""
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels), horizontal_spacing=0.06)
    for j, (name, xy) in enumerate(panels.items()):
        for tr in embedding_traces(xy, labels[name], class_names, marker_size=5):
            tr.legendgroup, tr.showlegend = tr.name, j == 0
            fig.add_trace(tr, row=1, col=j + 1)
        fig.update_xaxes(title_text=f"{axis} 1 (a.u.)", row=1, col=j + 1)
        fig.update_yaxes(title_text=f"{axis} 2 (a.u.)", row=1, col=j + 1)
    return finish(fig, title, height=height, legend_title="class")


def patch_figure(image, box: tuple[int, int, int, int] | None = None, *, title: str = "image patch", size: int = 340) -> go.Figure:
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
    return {"type": "rect", "x0": x0 - 0.5, "y0": y0 - 0.5, "x1": x1 - 0.5, "y1": y1 - 0.5,
            "line": {"color": colour, "width": 2 if cell else 3}, "fillcolor": fill}


def training_curves(history: list[dict], *, title: str = "Training curves", keys: Sequence[str] = ("train_acc", "val_acc")) -> go.Figure:
    """Accuracy (and loss on a second axis) per epoch."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    colors = class_colors(4)
    def series(k):  # validation may run only every few epochs
        pts = [(r["epoch"], r[k]) for r in history if k in r]
        return [p[0] for p in pts], [p[1] for p in pts]

    for i, k in enumerate(keys):
        x, y = series(k)
        if x:
            fig.add_trace(go.Scatter(x=x, y=y, name=k.replace("_", " "), mode="lines+markers", line={"color": colors[i]}), secondary_y=False)
    for i, k in enumerate(("train_loss", "val_loss")):
        x, y = series(k)
        if x:
            fig.add_trace(go.Scatter(x=x, y=y, name=k.replace("_", " "), mode="lines", line={"color": colors[i], "dash": "dot"}), secondary_y=True)
    fig.update_yaxes(title_text="accuracy (fraction)", range=[0, 1.02], secondary_y=False)
    fig.update_yaxes(title_text="cross-entropy (nats)", secondary_y=True, showgrid=False)
    return finish(fig, title, "epoch", height=380)


def bar_by_layer(values: dict[str, float], *, title: str, y: str, color: str | None = None) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(values), y=list(values.values()), marker_color=color or class_colors(1)[0],
                           text=[f"{v:.3f}" for v in values.values()], textposition="outside"))
    return finish(fig, title, "layer", y, height=340)


def fraction_curves(table: list[dict], *, title: str, reference: float | None = None, reference_name: str = "teacher",
                    y: str = "test accuracy (fraction)", floors: dict | None = None) -> go.Figure:
    """Accuracy vs train fraction, one line per method, mean ± std over seeds as error bars.
    ``floors``: ``{"chance": value, "<name>": {"<fraction>": value}}``: the levels a network must
    beat, drawn grey and dashed."""
    methods = list(dict.fromkeys(r["method"] for r in table))
    colors, symbols = class_colors(max(4, len(methods))), class_symbols(len(methods))
    fig = go.Figure()
    for i, m in enumerate(methods):
        rows = sorted((r for r in table if r["method"] == m), key=lambda r: r["fraction"])
        fig.add_trace(go.Scatter(x=[100 * r["fraction"] for r in rows], y=[r["mean"] for r in rows], name=m, mode="lines+markers",
                                 error_y={"type": "data", "array": [r["std"] for r in rows], "visible": True},
                                 marker={"symbol": symbols[i], "size": 9, "color": colors[i]}, line={"color": colors[i]},
                                 hovertemplate=m + ": %{y:.3f} at %{x:g}% of the training set<extra></extra>"))
    if reference is not None:
        fig.add_hline(y=reference, line_dash="dash", line_color="#555555", annotation_text=f"{reference_name} {reference:.3f}")
    for name, level in (floors or {}).items():
        if isinstance(level, dict):
            pts = sorted((float(f), v) for f, v in level.items())
            fig.add_trace(go.Scatter(x=[100 * f for f, _ in pts], y=[v for _, v in pts], name=f"floor: {name.replace('_', ' ')}",
                                     mode="lines", line={"color": "#888888", "dash": "dot"}))
        else:
            fig.add_hline(y=level, line_dash="dot", line_color="#888888", annotation_text=f"floor: {name}")
    fig.update_xaxes(type="log", tickvals=sorted({100 * r["fraction"] for r in table}))
    return finish(fig, title, "training images used (% of the training split, log scale)", y, height=460, legend_title="method")


def pair_trajectory(trajectory: dict, *, title: str) -> go.Figure:
    """One class pair through training: the angle between its class vectors (degrees, left axis)
    and its validation confusion rate (right axis) per epoch."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    colors = class_colors(2)
    fig.add_trace(go.Scatter(x=trajectory["epochs"], y=trajectory["angle"], name="angle (°)", mode="lines+markers",
                             marker={"symbol": "circle", "color": colors[0]}, line={"color": colors[0]}), secondary_y=False)
    fig.add_trace(go.Scatter(x=trajectory["epochs"], y=trajectory["confusion"], name="confusion rate", mode="lines+markers",
                             marker={"symbol": "square", "color": colors[1]}, line={"color": colors[1], "dash": "dot"}), secondary_y=True)
    fig.update_yaxes(title_text="angle between class vectors (degrees)", secondary_y=False)
    fig.update_yaxes(title_text="pairwise confusion rate (fraction)", secondary_y=True, showgrid=False, rangemode="tozero")
    return finish(fig, title, "epoch", height=360)


def claims_table(claims: dict, *, title: str) -> go.Figure:
    """One row per claim (and fraction, when the claims have one): the mean paired difference, its
    intervals, p and the verdict. Accuracy differences in points, angles in degrees."""
    comps = claims["comparisons"]
    by_fraction = all("fraction" in c for c in comps)

    def fmt(c, v):
        return f"{v:+.1f}°" if str(c.get("metric", "")).endswith("angle_deg") else f"{100 * v:+.2f}"

    rows = [[c["claim"]] + ([f"{100 * c['fraction']:g}%"] if by_fraction else []) +
            [fmt(c, c["mean"]), f"[{fmt(c, c['ci'][0])}, {fmt(c, c['ci'][1])}]", f"[{fmt(c, c['bootstrap_ci'][0])}, {fmt(c, c['bootstrap_ci'][1])}]",
             f"{c['p_value']:.3f}", f"{c['n']}", c["verdict"]] for c in comps]
    header = ["claim"] + (["data"] if by_fraction else []) + ["mean difference (points or °)", "95% t interval (decides)",
                                                               "bootstrap interval", "p (sign flips)", "seeds", "verdict"]
    return table_figure(header, rows, title=title)


def convergence_curves(runs: dict[str, list[dict]], *, title: str, key: str = "val_acc", y_title: str = "validation accuracy (fraction)",
                       floor: tuple[str, float] | None = None) -> go.Figure:
    """A validation measure per epoch of several runs (e.g. the teacher, and ce on all the data
    with its budget and twice it): has it stopped moving? ``floor`` = (name, value) draws a level
    every run must beat."""
    colors, symbols = class_colors(max(4, len(runs))), class_symbols(len(runs))
    fig = go.Figure()
    for i, (name, history) in enumerate(runs.items()):
        pts = [(r["epoch"], r[key]) for r in history if key in r]
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], name=name, mode="lines+markers",
                                     marker={"symbol": symbols[i], "color": colors[i]}, line={"color": colors[i]}))
    if floor is not None:
        fig.add_hline(y=floor[1], line_dash="dot", line_color="black", annotation_text=floor[0], annotation_position="top right")
    return finish(fig, title, "epoch", y_title, height=400, legend_title="run")


def rate_distortion(rows: list[dict], *, title: str, floor: float | None = None) -> go.Figure:
    """Reconstruction error (mean ± std over seeds) against non-zeros per image (left) and bits per
    image (right), one line per method (``KeypointsResult.rd_table()`` rows)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colors, symbols = class_colors(max(4, len(methods))), class_symbols(len(methods))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("at equal non-zeros", "at equal bits"), horizontal_spacing=0.1)
    for i, m in enumerate(methods):
        rs = sorted((r for r in rows if r["method"] == m), key=lambda r: r["nonzeros_per_image"])
        for j, xkey in enumerate(("nonzeros_per_image", "bits_per_image")):
            fig.add_trace(go.Scatter(x=[r[xkey] for r in rs], y=[r["mse"] for r in rs], error_y={"type": "data", "array": [r["mse_std"] for r in rs]},
                                     name=m, legendgroup=m, showlegend=j == 0, mode="lines+markers", text=[r["setting"] for r in rs],
                                     marker={"symbol": symbols[i], "size": 9, "color": colors[i]}, line={"color": colors[i]},
                                     hovertemplate="%{text}: %{y:.4f}<extra>" + m + "</extra>"), row=1, col=j + 1)
    for j in (1, 2):
        if floor is not None:
            fig.add_hline(y=floor, line_dash="dot", line_color="black", annotation_text="mean image", row=1, col=j)
        fig.update_xaxes(type="log", row=1, col=j)
        fig.update_yaxes(title_text="reconstruction error (MSE per pixel, 8-bit code values)", row=1, col=j)
    fig.update_xaxes(title_text="non-zeros per image (log scale)", row=1, col=1)
    fig.update_xaxes(title_text="bits per image (position + type + value; log scale)", row=1, col=2)
    return finish(fig, title, height=450, legend_title="code")


def results_table(table: list[dict], *, title: str, value: str = "test accuracy") -> go.Figure:
    """Mean ± std (n seeds) per method (rows) and train fraction (columns), as a plotly table."""
    methods = list(dict.fromkeys(r["method"] for r in table))
    fracs = sorted({r["fraction"] for r in table})
    cell = {(r["method"], r["fraction"]): f"{r['mean']:.3f} ± {r['std']:.3f} (n={r['n']})" for r in table}
    rows = [[m] + [cell.get((m, f), "") for f in fracs] for m in methods]
    return table_figure(["method"] + [f"{100 * f:g}% of the data" for f in fracs], rows, title=f"{title} — {value}, mean ± std over seeds")


def alignment_heatmap(geometry: dict[str, dict[str, dict[str, float]]], *, title: str) -> go.Figure:
    """Student–teacher kNN agreement and linear CKA per layer pair (columns) for each row
    ("init" = untrained student, then one row per method)."""
    rows = list(geometry)
    pairs = list(next(iter(geometry.values())))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("kNN agreement (Jaccard, k=10)", "linear CKA"), horizontal_spacing=0.12)
    for j, measure in enumerate(("knn_agreement", "cka")):
        z = [[geometry[r][p][measure] for p in pairs] for r in rows]
        fig.add_trace(go.Heatmap(z=z, x=pairs, y=rows, zmin=0, zmax=1 if measure == "cka" else max(0.05, max(max(v) for v in z)),
                                 colorscale="Cividis", text=[[f"{v:.3f}" for v in row] for row in z], texttemplate="%{text}",
                                 colorbar={"title": {"text": "CKA" if measure == "cka" else "Jaccard"}, "x": 0.44 if j == 0 else 1.0, "len": 0.9},
                                 hovertemplate="%{y} · %{x}: %{z:.3f}<extra></extra>"), row=1, col=j + 1)
        fig.update_xaxes(title_text="student layer → teacher layer", row=1, col=j + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(title_text="student", row=1, col=1)
    return finish(fig, title, height=140 + 45 * len(rows))


def table_figure(header: Sequence[str], rows: Sequence[Sequence], *, title: str) -> go.Figure:
    """A plotly table (rows of already formatted cells)."""
    cols = [list(c) for c in zip(*rows)] if rows else [[] for _ in header]
    fig = go.Figure(go.Table(header={"values": list(header), "fill_color": "#DDDDDD", "align": "left"},
                             cells={"values": cols, "align": "left", "height": 26}))
    return finish(fig, title, height=170 + 32 * len(rows))


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
    return [go.Scatter(x=x, y=y, text=names, mode="markers", name="class pairs", marker={"size": 9, "color": class_colors(2)[1], "line": {"width": 0.5, "color": "#333333"}},
                       hovertemplate="%{text}<br>angle %{x:.1f}°<br>confusion %{y:.3f}<extra></extra>"),
            go.Scatter(x=line_x, y=line_y, mode="lines", name="least-squares fit", line={"color": class_colors(2)[0], "width": 2})]


def correlation_text(corr: dict) -> str:
    """r with its pair-bootstrap interval, as a description: pairs share classes, so a p-value
    over pairs would overstate significance (the Mantel test, permuting classes, is the test)."""
    if not np.isfinite(corr.get("pearson", np.nan)):
        return "r undefined (constant input)"
    lo, hi = corr["pearson_ci"]
    return f"Pearson r = {corr['pearson']:.2f} (pair bootstrap [{lo:.2f}, {hi:.2f}], descriptive); Spearman ρ = {corr['spearman']:.2f}"


def angle_confusion_scatter(angles, confusion, class_names, corr: dict, *, title: str, angle_of: str = "class vectors") -> go.Figure:
    fig = go.Figure(angle_confusion_traces(angles, confusion, class_names))
    return finish(fig, f"{title}<br><sup>{correlation_text(corr)} over {corr['n_pairs']} class pairs</sup>",
                  f"angle between {angle_of} (degrees)", "pairwise confusion rate (fraction)", height=440)


def angle_confusion_heatmaps(angles, confusion, class_names, *, title: str, angle_of: str = "class vectors") -> go.Figure:
    names = list(class_names)
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"angle between {angle_of} (degrees)", "pairwise confusion rate"), horizontal_spacing=0.16)
    fig.add_trace(go.Heatmap(z=np.asarray(angles, float), x=names, y=names, colorscale="Cividis", colorbar={"title": {"text": "degrees"}, "x": 0.42},
                             hovertemplate="%{y} – %{x}: %{z:.1f}°<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=np.asarray(confusion, float), x=names, y=names, colorscale="Cividis", reversescale=False, colorbar={"title": {"text": "rate"}},
                             hovertemplate="%{y} – %{x}: %{z:.3f}<br>click: the images behind it<extra></extra>"), row=1, col=2)
    fig.update_yaxes(autorange="reversed")
    return finish(fig, title, height=470)


def band_curves(series: dict[str, dict], *, title: str, x: str, y: str) -> go.Figure:
    """Mean line ± std band over seeds for each method; ``series[m] = {"epochs", "values"}``."""
    fig = go.Figure()
    colors = class_colors(max(4, len(series)))
    for k, (name, s) in enumerate(series.items()):
        v = np.asarray(s["values"], dtype=float)
        mean, std = np.nanmean(v, 0), np.nanstd(v, 0)
        e = list(s["epochs"])
        fig.add_trace(go.Scatter(x=e + e[::-1], y=list(mean + std) + list((mean - std)[::-1]), fill="toself", line={"width": 0},
                                 fillcolor=colors[k], opacity=0.2, hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=e, y=mean, name=f"{name} (n={len(v)})", mode="lines+markers", line={"color": colors[k]}))
    fig.add_hline(y=0, line_color="#999999", line_width=1)
    return finish(fig, title, x, y, height=400, legend_title="method")


def image_mosaic(images, captions: Sequence[str], *, n_cols: int = 4, title: str, pad: int = 2, scale: int = 3, png: bool = False) -> go.Figure:
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
        anns.append(dict(x=x0 + w / 2, y=y0 + h + label_px / 2, text=captions[k], showarrow=False, font={"size": 10}, xref="x", yref="y"))
    return z, anns


def _series_key(r: dict) -> str:
    return f"{r['architecture']} · {r['start']}"


def learning_curves_grid(runs: list[dict], *, title: str, n_cols: int = 3) -> go.Figure:
    """Validation accuracy vs images seen, one panel per experiment, a line per (architecture, start)."""
    exps = list(dict.fromkeys(r["experiment"] for r in runs))
    keys = list(dict.fromkeys(_series_key(r) for r in runs))
    colors, symbols = class_colors(max(4, len(keys))), class_symbols(len(keys))
    rows = (len(exps) + n_cols - 1) // n_cols
    names = {r["experiment"]: f"{r['experiment']} {r['name']} ({r['invariant']})" for r in runs}
    fig = make_subplots(rows=rows, cols=n_cols, subplot_titles=[names[e] for e in exps], vertical_spacing=0.14, horizontal_spacing=0.07)
    for i, e in enumerate(exps):
        rr, cc = divmod(i, n_cols)
        for k, key in enumerate(keys):
            sel = [r for r in runs if r["experiment"] == e and _series_key(r) == key]
            if not sel:
                continue
            curve = np.mean([[acc for _, acc in r["curve"]] for r in sel], axis=0)
            fig.add_trace(go.Scatter(x=[n for n, _ in sel[0]["curve"]], y=curve, name=key, legendgroup=key, showlegend=i == 0, mode="lines+markers",
                                     line={"color": colors[k]}, marker={"symbol": symbols[k], "color": colors[k]}), row=rr + 1, col=cc + 1)
        fig.add_hline(y=sel[0]["chance"] if sel else 0.5, line_dash="dot", line_color="#999999", row=rr + 1, col=cc + 1)
        fig.update_yaxes(range=[0, 1.02], row=rr + 1, col=cc + 1)
        fig.update_xaxes(title_text="images seen", row=rr + 1, col=cc + 1)
    fig.update_yaxes(title_text="val accuracy", col=1)
    return finish(fig, title, height=300 * rows + 120, legend_title="network · start")


def transfer_bars(table: list[dict], verdicts: list[dict], *, title: str, floors: list[dict] | None = None,
                  transfer_sets=("style", "size", "both")) -> go.Figure:
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
        fig.add_trace(go.Bar(x=x, y=[r["train_acc"] for r in rows], name="training distribution", marker_color=colors[0],
                             showlegend=i == 0, legendgroup="train"), row=i + 1, col=1)
        for k, t in enumerate(transfer_sets):
            fl = [floor.get(r["experiment"], {}).get(f"shortcut_floor_{t}", np.nan) for r in rows]
            fig.add_trace(go.Bar(x=x, y=[r[f"{t}_acc"] for r in rows], name=f"transfer: {t}", marker_color=colors[k + 1],
                                 customdata=np.stack([[r[f"{t}_cc"] for r in rows], fl], 1), showlegend=i == 0, legendgroup=t,
                                 hovertemplate="%{y:.3f} (chance-corrected transfer %{customdata[0]:.2f}; this set's shortcut floor "
                                               "%{customdata[1]:.3f})<extra>" + t + "</extra>"), row=i + 1, col=1)
        fig.add_trace(go.Scatter(x=x, y=[r["chance"] for r in rows], mode="markers", name="chance", marker={"symbol": "line-ew-open", "size": 28, "color": "black"},
                                 showlegend=i == 0, legendgroup="chance"), row=i + 1, col=1)
        if floor:  # the training distribution's floor as a bar-wide line, each transfer set's as a diamond
            fig.add_trace(go.Scatter(x=x, y=[floor.get(r["experiment"], {}).get("shortcut_floor") for r in rows], mode="markers", name="shortcut floor",
                                     marker={"symbol": "line-ew-open", "size": 28, "color": "#CC3311", "line": {"width": 3}}, showlegend=i == 0,
                                     legendgroup="floor"), row=i + 1, col=1)
            high = [np.nanmax([floor.get(r["experiment"], {}).get(f"shortcut_floor_{t}", np.nan) for t in transfer_sets] + [-np.inf]) for r in rows]
            fig.add_trace(go.Scatter(x=x, y=[v if np.isfinite(v) else None for v in high], mode="markers", name="shortcut floor, highest transfer set (each set's on hover)",
                                     marker={"symbol": "diamond-open", "size": 9, "color": "#CC3311"}, showlegend=i == 0,
                                     legendgroup="floor_t"), row=i + 1, col=1)
        fig.update_yaxes(title_text="test accuracy (fraction)", range=[0, 1.05], row=i + 1, col=1)
        fig.update_xaxes(title_text="experiment / network", row=i + 1, col=1)
    fig.update_layout(barmode="group")
    lines = [f"{v['hypothesis'].split(' ')[0]} ({v['transfer_set']}): <b>{v['verdict']}</b>" for v in verdicts
             if v["scope"] == "overall" and (v["hypothesis"].startswith("H") or v["hypothesis"].startswith("C (both"))]
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
            sel = sorted((p for p in probes if _series_key(p) == key and p["experiment"] == e), key=lambda p: p["depth"])
            if not sel:
                continue
            x = [p["relative_depth"] for p in sel]
            inv = sel[0]["invariant"]
            fig.add_trace(go.Scatter(x=x, y=[p["cv_acc"] for p in sel], name=f"{e} ({inv})", legendgroup=e, showlegend=i == 0, mode="lines+markers",
                                     line={"color": colors[k], "dash": "solid"}, marker={"symbol": symbols[k], "color": colors[k]},
                                     text=[p["layer"] for p in sel], hovertemplate="%{text}: %{y:.3f}<extra>" + e + " train distribution</extra>"),
                          row=rr + 1, col=cc + 1)
            if "transfer_acc" in sel[0]:
                fig.add_trace(go.Scatter(x=x, y=[p["transfer_acc"] for p in sel], name=f"{e} transfer", legendgroup=e, showlegend=False, mode="lines",
                                         line={"color": colors[k], "dash": "dash"}, text=[p["layer"] for p in sel],
                                         hovertemplate="%{text}: %{y:.3f}<extra>" + e + " transfer</extra>"), row=rr + 1, col=cc + 1)
        fig.update_yaxes(range=[0, 1.02], row=rr + 1, col=cc + 1)
        fig.update_xaxes(title_text="relative depth of the block (0 = first, 1 = last)", row=rr + 1, col=cc + 1)
    fig.update_yaxes(title_text="probe accuracy", col=1)
    return finish(fig, title + "<br><sup>solid: cross-validated on the training distribution · dashed: probe trained there, tested on new shapes</sup>",
                  height=330 * rows + 140, legend_title="experiment")


def error_vs_budget(curves: dict[str, dict], *, title: str) -> go.Figure:
    """Reconstruction error vs the number of (strongest) non-zeros kept per image, per method."""
    fig = go.Figure()
    colors, symbols = class_colors(max(4, len(curves))), class_symbols(len(curves))
    for i, (name, c) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=c["keep"], y=c["mse"], name=name, mode="lines+markers", line={"color": colors[i]},
                                 marker={"symbol": symbols[i], "size": 9, "color": colors[i]}))
    fig.update_xaxes(type="log", tickvals=sorted({k for c in curves.values() for k in c["keep"]}))
    return finish(fig, title, "keypoints (non-zeros) kept per image, strongest first (log scale)", "reconstruction error (MSE per pixel, intensities in [0, 1])",
                  height=420, legend_title="code")


def accuracy_vs_flops(table: list[dict], *, title: str, chance: float | None = None) -> go.Figure:
    """Test accuracy (mean ± std over seeds) against measured FLOPs per image, before (left) and
    after (right) fine-tuning, one line per pruning method; the unpruned network as a star
    (``PruningResult.table()`` rows)."""
    methods = [m for m in dict.fromkeys(r["method"] for r in table) if m != "unpruned"]
    colors, symbols = class_colors(max(4, len(methods))), class_symbols(len(methods))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("pruned, before fine-tuning", "after fine-tuning"), shared_yaxes=True, horizontal_spacing=0.06)
    base = [r for r in table if r["method"] == "unpruned"]
    for j, key in enumerate(("acc_pruned", "acc_finetuned")):
        for i, m in enumerate(methods):
            rs = sorted((r for r in table if r["method"] == m), key=lambda r: r["flops"])
            fig.add_trace(go.Scatter(x=[r["flops"] / 1e6 for r in rs], y=[r[key] for r in rs], error_y={"type": "data", "array": [r[key + "_std"] for r in rs]},
                                     name=m, legendgroup=m, showlegend=j == 0, mode="lines+markers", text=[f"{r['speedup']:g}× target" for r in rs],
                                     marker={"symbol": symbols[i], "size": 10, "color": colors[i]}, line={"color": colors[i]},
                                     hovertemplate="%{text}: %{x:.2f} MFLOPs, accuracy %{y:.3f}<extra>" + m + "</extra>"), row=1, col=j + 1)
        if base:
            fig.add_trace(go.Scatter(x=[base[0]["flops"] / 1e6], y=[base[0]["acc_finetuned"]], error_y={"type": "data", "array": [base[0]["acc_finetuned_std"]]},
                                     name="unpruned", legendgroup="unpruned", showlegend=j == 0, mode="markers",
                                     marker={"symbol": "star", "size": 14, "color": "#000000"}), row=1, col=j + 1)
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
        fig.add_trace(go.Scatter(x=np.arange(1, len(e) + 1), y=e, name=n, legendgroup=n, mode="lines", line={"color": colors[i], "width": 1.5},
                                 hovertemplate="%{x} directions: %{y:.3f} of the energy<extra>" + n + "</extra>"))
        r = (ranks or {}).get(n)
        if r is not None:
            fig.add_trace(go.Scatter(x=[r], y=[e[r - 1]], legendgroup=n, showlegend=False, mode="markers",
                                     marker={"symbol": "diamond", "size": 10, "color": colors[i], "line": {"width": 1, "color": "#000000"}},
                                     hovertemplate="kept %{x}: %{y:.3f} of the energy<extra>" + n + "</extra>"))
    return finish(fig, title, "directions kept (rank r)", "explained energy (fraction of the variance)", height=460, legend_title="layer (◆ chosen rank)")


def robustness_heatmap(matrix, corruptions: Sequence[str], severities: Sequence[int], *, title: str, value: str = "MAE (px)") -> go.Figure:
    """(corruption × severity) errors of one model as a heatmap (CVD-safe sequential colours)."""
    from .style import SEQUENTIAL

    m = np.asarray(matrix, dtype=float)
    fig = go.Figure(go.Heatmap(z=m, x=[str(s) for s in severities], y=list(corruptions), colorscale=SEQUENTIAL, colorbar={"title": value},
                               text=np.round(m, 2), texttemplate="%{text}", hovertemplate="%{y}, severity %{x}: %{z:.3f}<extra></extra>"))
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
        fig.add_trace(go.Bar(x=groups, y=ys, name=r["model"], marker_color=colors[i], error_y={"type": "data", "array": err}))
    fig.update_layout(barmode="group")
    return finish(fig, title, "images", value, height=430, legend_title="model")


def ensemble_accuracy_bars(table: list[dict], floors: dict, *, title: str) -> go.Figure:
    """Test accuracy (mean ± std over seeds) of every member and fusion rule, one bar per start
    (``EnsemblesResult.table()`` rows), with chance and the image-statistics floor as lines."""
    starts = list(dict.fromkeys(r["start"] for r in table))
    names = list(dict.fromkeys((r["name"], r["kind"]) for r in table))
    x = [[kind for _, kind in names], [name for name, _ in names]]
    colors = class_colors(max(4, len(starts)))
    fig = go.Figure()
    for i, s in enumerate(starts):
        by = {(r["name"], r["kind"]): r for r in table if r["start"] == s}
        rs = [by.get(k) for k in names]
        fig.add_trace(go.Bar(x=x, y=[r["acc"] if r else None for r in rs], error_y={"type": "data", "array": [r["acc_std"] if r else 0 for r in rs]},
                             name=s, marker_color=colors[i], customdata=[r["n"] if r else 0 for r in rs],
                             hovertemplate="%{x}: %{y:.3f} (mean of %{customdata} seeds)<extra>" + s + "</extra>"))
    for name, value, dash, where in (("chance", floors.get("chance"), "dot", "bottom right"),
                                     ("image-statistics floor", floors.get("image_statistics"), "dash", "top left")):
        if value is not None:  # labels on opposite sides, so two close levels stay readable
            fig.add_hline(y=value, line_dash=dash, line_color="#000000", annotation_text=f"{name} {value:.3f}", annotation_position=where)
    fig.update_layout(barmode="group")
    fig.update_yaxes(rangemode="tozero")
    return finish(fig, title, "member network / fusion rule", "test accuracy (fraction)", height=440, legend_title="start")


def confusion_grid(matrices: dict[str, np.ndarray], class_names: Sequence[str], *, title: str, n_cols: int = 2) -> go.Figure:
    """Row-normalised confusion matrices (rows: true class, so each row sums to 1), one panel each."""
    names, keys = list(class_names), list(matrices)
    rows = (len(keys) + n_cols - 1) // n_cols
    fig = make_subplots(rows=rows, cols=n_cols, subplot_titles=keys, horizontal_spacing=0.14, vertical_spacing=0.16)
    for k, key in enumerate(keys):
        m = np.asarray(matrices[key], float)
        frac = m / np.maximum(m.sum(1, keepdims=True), 1)
        r, c = divmod(k, n_cols)
        fig.add_trace(go.Heatmap(z=frac, x=names, y=names, zmin=0, zmax=1, colorscale=SEQUENTIAL, showscale=k == 0, customdata=m,
                                 colorbar={"title": {"text": "fraction of<br>the true class"}},
                                 hovertemplate="true %{y}, predicted %{x}: %{z:.2f} (%{customdata:.0f} images)<extra></extra>"), row=r + 1, col=c + 1)
        fig.update_xaxes(title_text="predicted class", row=r + 1, col=c + 1)
        fig.update_yaxes(title_text="true class", autorange="reversed", row=r + 1, col=c + 1)
    return finish(fig, title, height=420 * rows + 80)


def diversity_gain_scatter(diversity: list[dict], fusions: Sequence[str], *, title: str, correlations: dict | None = None) -> go.Figure:
    """Each (seed, start) as points: the members' mean pairwise disagreement on the test images
    against each fusion rule's gain over the best member (chosen on validation); Spearman's ρ per
    rule in the legend when given."""
    colors = class_colors(max(4, len(fusions)))
    starts = list(dict.fromkeys(d["start"] for d in diversity))
    symbols = class_symbols(len(starts))
    fig = go.Figure()
    for i, f in enumerate(fusions):
        rho = (correlations or {}).get(f, {}).get("rho")
        label = f if rho is None or not np.isfinite(rho) else f"{f} (Spearman ρ {rho:+.2f})"
        for j, s in enumerate(starts):
            ds = [d for d in diversity if d["start"] == s]
            fig.add_trace(go.Scatter(x=[d["disagreement"] for d in ds], y=[d[f"gain_{f}"] for d in ds], mode="markers", name=label,
                                     legendgroup=f, showlegend=j == 0, text=[f"seed {d['seed']}, {s}, best member {d['best_member']}" for d in ds],
                                     marker={"color": colors[i], "symbol": symbols[j], "size": 11, "line": {"width": 0.5, "color": "#333333"}},
                                     hovertemplate="%{text}<br>disagreement %{x:.3f}, gain %{y:+.3f}<extra>" + f + "</extra>"))
    fig.add_hline(y=0, line_color="#999999", line_width=1)
    sym = ", ".join(f"{s}: {m}" for s, m in zip(starts, symbols))
    return finish(fig, f"{title}<br><sup>marker shape by start ({sym})</sup>", "mean pairwise disagreement of the members (fraction of test images)",
                  "ensemble accuracy − best member's (fraction)", height=440, legend_title="fusion rule")


def roc_pr_curves(folds: list[dict], methods: Sequence[str], *, title: str) -> go.Figure:
    """ROC (left) and precision–recall (right) curves of every method, one thin line per fold;
    the legend gives each method's AUC / AUPR, mean ± std over folds (``CnnmdaResult.folds``)."""
    colors, dashes = class_colors(max(4, len(methods))), ["solid", "dash", "dot", "dashdot"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ROC", "precision–recall"), horizontal_spacing=0.1)
    for i, m in enumerate(methods):
        def mean_sd(key):
            v = [f[m][key] for f in folds]
            return f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}"

        label = f"{m}: AUC {mean_sd('auc')}, AUPR {mean_sd('aupr')}"
        for k, f in enumerate(folds):
            c = f["curves"][m]
            style = {"color": colors[i], "width": 1.5, "dash": dashes[i % len(dashes)]}
            fig.add_trace(go.Scatter(x=c["fpr"], y=c["tpr"], mode="lines", line=style, name=label, legendgroup=m, showlegend=k == 0,
                                     hovertemplate=f"{m}, fold {f['fold']}: FPR %{{x:.3f}}, TPR %{{y:.3f}}<extra></extra>"), row=1, col=1)
            fig.add_trace(go.Scatter(x=c["recall"], y=c["precision"], mode="lines", line=style, name=label, legendgroup=m, showlegend=False,
                                     hovertemplate=f"{m}, fold {f['fold']}: recall %{{x:.3f}}, precision %{{y:.3f}}<extra></extra>"), row=1, col=2)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"color": "#999999", "dash": "dot", "width": 1}, name="chance (ROC)"), row=1, col=1)
    prevalence = float(np.mean([f["n_test_pos"] / f["n_eval"] for f in folds]))  # a random ranking's precision
    fig.add_trace(go.Scatter(x=[0, 1], y=[prevalence] * 2, mode="lines", line={"color": "#999999", "dash": "dot", "width": 1},
                             name=f"chance (PR: prevalence {prevalence:.4f})"), row=1, col=2)
    fig.update_xaxes(title_text="false-positive rate (fraction)", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="true-positive rate (fraction)", range=[0, 1.02], row=1, col=1)
    fig.update_xaxes(title_text="recall (fraction)", range=[0, 1], row=1, col=2)
    fig.update_yaxes(title_text="precision (fraction)", rangemode="tozero", row=1, col=2)
    fig.update_layout(legend={"orientation": "h", "y": -0.25})
    return finish(fig, title, height=500, legend_title="method (mean ± std over folds)")
