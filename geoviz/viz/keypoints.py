"""Sparse keypoints (notebook 04): error against the number kept, rate–distortion, the keypoint explorer.

Pure builders and apps: they display, never train."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import _WidgetApp, to_rgb_uint8
from .style import class_colors, class_symbols, finish


def error_vs_budget(curves: dict[str, dict], *, title: str) -> go.Figure:
    """Reconstruction error vs the number of (strongest) non-zeros kept per image, per method."""
    fig = go.Figure()
    colors, symbols = class_colors(max(4, len(curves))), class_symbols(len(curves))
    for i, (name, c) in enumerate(curves.items()):
        fig.add_trace(
            go.Scatter(
                x=c["keep"],
                y=c["mse"],
                name=name,
                mode="lines+markers",
                line={"color": colors[i]},
                marker={"symbol": symbols[i], "size": 9, "color": colors[i]},
            )
        )
    fig.update_xaxes(type="log", tickvals=sorted({k for c in curves.values() for k in c["keep"]}))
    return finish(
        fig,
        title,
        "keypoints (non-zeros) kept per image, strongest first (log scale)",
        "reconstruction error (MSE per pixel, intensities in [0, 1])",
        height=420,
        legend_title="code",
    )


def rate_distortion(rows: list[dict], *, title: str, floor: float | None = None) -> go.Figure:
    """Reconstruction error (mean ± std over seeds) against non-zeros per image (left) and bits per
    image (right), one line per method (``KeypointsResult.rd_table()`` rows)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colors, symbols = class_colors(max(4, len(methods))), class_symbols(len(methods))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("at equal non-zeros", "at equal bits"), horizontal_spacing=0.1)
    for i, m in enumerate(methods):
        rs = sorted((r for r in rows if r["method"] == m), key=lambda r: r["nonzeros_per_image"])
        for j, xkey in enumerate(("nonzeros_per_image", "bits_per_image")):
            fig.add_trace(
                go.Scatter(
                    x=[r[xkey] for r in rs],
                    y=[r["mse"] for r in rs],
                    error_y={"type": "data", "array": [r["mse_std"] for r in rs]},
                    name=m,
                    legendgroup=m,
                    showlegend=j == 0,
                    mode="lines+markers",
                    text=[r["setting"] for r in rs],
                    marker={"symbol": symbols[i], "size": 9, "color": colors[i]},
                    line={"color": colors[i]},
                    hovertemplate="%{text}: %{y:.4f}<extra>" + m + "</extra>",
                ),
                row=1,
                col=j + 1,
            )
    for j in (1, 2):
        if floor is not None:
            fig.add_hline(y=floor, line_dash="dot", line_color="black", annotation_text="mean image", row=1, col=j)
        fig.update_xaxes(type="log", row=1, col=j)
        fig.update_yaxes(title_text="reconstruction error (MSE per pixel, 8-bit code values)", row=1, col=j)
    fig.update_xaxes(title_text="non-zeros per image (log scale)", row=1, col=1)
    fig.update_xaxes(title_text="bits per image (position + type + value; log scale)", row=1, col=2)
    return finish(fig, title, height=450, legend_title="code")


class KeypointExplorer(_WidgetApp):
    """A test image with its keypoints drawn on it (marker = feature type, size = intensity) beside
    the decoder's reconstruction from the kept keypoints: sliders pick the image and how many of
    the strongest keypoints to keep, checkboxes which feature types; the reconstruction updates live.
    ``reconstruct(setup, image, keep, types)`` and ``keypoints_of(setup, image)`` come from the result."""

    def __init__(self, result, setup: str | None = None):
        import ipywidgets as W
        from plotly.subplots import make_subplots

        from .style import class_colors, class_symbols

        self.result = result
        setups = list(result.models)
        self._rgb = to_rgb_uint8
        self.setup = W.Dropdown(
            options=setups, value=setup or setups[-1], description="set-up", layout=W.Layout(width="200px")
        )
        n = len(result.test_images)
        self.image = W.IntSlider(
            min=0, max=n - 1, value=0, description="image", continuous_update=False, layout=W.Layout(width="360px")
        )
        kmax = self._most_keypoints(setup or setups[-1], 0)
        self.keep = W.IntSlider(
            min=0, max=kmax, value=kmax, description="keep", continuous_update=False, layout=W.Layout(width="360px")
        )
        self.types_box = W.HBox()
        self._make_type_boxes()
        fig = make_subplots(
            rows=1,
            cols=2,
            subplot_titles=("image and its keypoints", "reconstruction from the kept keypoints"),
            horizontal_spacing=0.08,
        )
        blank = np.zeros((*result.test_images.shape[-2:], 3), np.uint8)
        fig.add_trace(go.Image(z=blank, hoverinfo="skip"), row=1, col=1)
        self.colors, self.symbols = class_colors(5), class_symbols(5)
        for t in range(5):
            fig.add_trace(
                go.Scatter(
                    x=[],
                    y=[],
                    mode="markers",
                    name=f"type {t}",
                    marker={
                        "symbol": self.symbols[t],
                        "color": self.colors[t],
                        "line": {"width": 1, "color": "#000000"},
                    },
                    hovertemplate="type " + str(t) + " at (%{x}, %{y}), intensity %{customdata:.2f}<extra></extra>",
                ),
                row=1,
                col=1,
            )
        fig.add_trace(go.Image(z=blank, hoverinfo="skip"), row=1, col=2)
        for c in (1, 2):
            fig.update_xaxes(showgrid=False, title_text="x (px)", row=1, col=c)
            fig.update_yaxes(
                showgrid=False,
                autorange="reversed",
                scaleanchor="x" if c == 1 else "x2",
                title_text="y (px)",
                row=1,
                col=c,
            )
        finish(fig, "keypoints and reconstruction", height=440, width=900, legend_title="feature type")
        self.fig = go.FigureWidget(fig)
        self.keep.observe(self._draw, names="value")
        self.image.observe(self._new_image, names="value")
        self.setup.observe(self._new_setup, names="value")
        self._draw()
        self.widget = W.VBox([W.HBox([self.setup, self.image, self.keep]), self.types_box, self.fig])

    def _make_type_boxes(self):
        import ipywidgets as W

        k = self.result.models[self.setup.value].num_types
        self.types = [
            W.Checkbox(value=True, description=f"type {t}", indent=False, layout=W.Layout(width="90px"))
            for t in range(k)
        ]
        for c in self.types:
            c.observe(self._draw, names="value")
        self.types_box.children = self.types

    def _most_keypoints(self, setup: str, image: int = 0) -> int:
        """The slider's range: the keypoints this test image has under this set-up (the budget is
        an upper bound that local-maximum suppression often leaves unreached)."""
        return max(1, len(self.result.keypoints[setup].of_image(image)))

    def _fit_keep(self):
        kmax = self._most_keypoints(self.setup.value, self.image.value)
        with self.keep.hold_trait_notifications():
            self.keep.max, self.keep.value = kmax, kmax

    def _new_setup(self, *_):
        self._fit_keep()
        self._make_type_boxes()
        self._draw()

    def _new_image(self, *_):
        self._fit_keep()
        self._draw()

    def _draw(self, *_):
        r, s, i = self.result, self.setup.value, self.image.value
        types = [t for t, c in enumerate(self.types) if c.value]
        kp = r.keypoints[s].of_image(i).select(types=types, top=self.keep.value)
        rec = r.reconstruct(s, i, keep=self.keep.value, types=types)
        label = r.class_names[int(r.test_labels[i])]
        mse = float(((rec - r.test_images[i].numpy()) ** 2).mean())
        with self.fig.batch_update():
            self.fig.data[0].z = self._rgb(r.test_images[i])
            for t in range(5):
                sel = (kp.type == t).numpy()
                inten = kp.intensity.numpy()[sel]
                size = 6 + 14 * inten / max(1e-6, float(r.keypoints[s].intensity.max()))
                tr = self.fig.data[1 + t]
                tr.x, tr.y, tr.customdata = kp.x.numpy()[sel], kp.y.numpy()[sel], inten
                tr.marker.size = size
                tr.visible = t < r.models[s].num_types
            self.fig.data[6].z = self._rgb(rec)
            self.fig.layout.title.text = (
                f"{s}: test image {i} (class {label}) — {len(kp)} keypoints kept of "
                f"{len(r.keypoints[s].of_image(i))}; reconstruction MSE {mse:.4f}"
            )
