"""ipywidgets apps composed of ``go.FigureWidget``s. They display results; they never train."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from .figures import box_shape, embedding_traces, patch_figure, to_rgb_uint8
from .style import finish


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
    import html

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

    def __init__(self, coords: dict[str, np.ndarray], bank, images, class_names: Sequence[str], receptive_fields: dict, *, axis: str = "UMAP",
                 rows: dict | None = None):
        import ipywidgets as W

        self.coords, self.bank, self.rfs, self.axis = coords, bank, receptive_fields, axis
        self.rows = rows or {}
        self.images = images
        self.class_names = list(class_names) or ["image (no labels)"]
        layers = list(coords)
        self.layer = W.Dropdown(options=layers, value=layers[-1], description="layer", layout=W.Layout(width="260px"))
        self.colour = W.Dropdown(options=self.COLOURS, value="class", description="colour", layout=W.Layout(width="300px"))
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
        return [f"image {b} ({self.class_names[l] if l >= 0 else 'no label'}) · y={y}, x={x}" for (b, y, x), l in zip(self._index(layer), lab)]

    def _redraw(self, *_):
        layer = self.layer.value
        values, vname = self._values(layer)
        traces = embedding_traces(self.coords[layer], self._labels(layer), self.class_names, values=values,
                                  value_name=vname or "value", hover=self._hover_text(layer))
        with self.scatter.batch_update():
            self.scatter.data = []
            self.scatter.add_traces(traces)
            finish(self.scatter, f"{self.axis} of local features · {layer} · {len(self.coords[layer])} points",
                   f"{self.axis} 1 (a.u.)", f"{self.axis} 2 (a.u.)", legend_title="class")
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
            self.patch.layout.title.text = f"image {b} · {name}<br><sup>{layer} (y={y}, x={x}) sees {box[2] - box[0]}×{box[3] - box[1]} px</sup>"
        self.selected = point_id
        self.info.value = (f"point {point_id}: image <b>{b}</b> ({name}), position y={y}, x={x} of {layer}; "
                           f"receptive field x∈[{box[0]}, {box[2]}), y∈[{box[1]}, {box[3]}) px (orange; unclipped size "
                           f"{rf.size[0]}×{rf.size[1]} px), grid cell x∈[{cell[0]}, {cell[2]}), y∈[{cell[1]}, {cell[3]}) px (blue)")
        return box


class TransferExplorer(_WidgetApp):
    """Pick a student run to see its training curves (accuracy and each loss term), and a layer
    pair to see how close each method's students come to the teacher there, by train fraction."""

    def __init__(self, result):
        import ipywidgets as W
        from .figures import training_curves

        self.result = result
        self._curves = training_curves
        names = list(result.histories)
        pairs = list(result.runs[0]["geometry"]) if result.runs else []
        self.run = W.Dropdown(options=names, value=names[-1] if names else None, description="run", layout=W.Layout(width="320px"))
        self.pair = W.Dropdown(options=pairs, value=pairs[-1] if pairs else None, description="layer", layout=W.Layout(width="260px"))
        self.measure = W.Dropdown(options=[("linear CKA", "cka"), ("kNN agreement", "knn_agreement")], value="cka", description="measure", layout=W.Layout(width="260px"))
        self.curves = go.FigureWidget(layout={"height": 380, "width": 560})
        self.layer_fig = go.FigureWidget(layout={"height": 380, "width": 560})
        self.run.observe(self._draw_run, names="value")
        self.pair.observe(self._draw_layer, names="value")
        self.measure.observe(self._draw_layer, names="value")
        self._draw_run()
        self._draw_layer()
        self.widget = W.VBox([W.HBox([self.run, self.pair, self.measure]), W.HBox([self.curves, self.layer_fig])])

    def _draw_run(self, *_):
        name = self.run.value
        fig = self._curves(self.result.histories[name], title=f"training run {name}", keys=("train_acc", "val_acc"))
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
            traces.append(go.Scatter(x=[100 * f for f in fr], y=[float(np.mean(pts[f])) for f in fr], name=m, mode="lines+markers",
                                     marker={"symbol": symbols[i], "color": colors[i], "size": 9}, line={"color": colors[i]}))
        init = float(np.mean([g[pair][measure] for g in res.geometry_init.values()]))
        xs = [100 * f for f in res.config.train_fractions]
        traces.append(go.Scatter(x=[min(xs), max(xs)], y=[init, init], name="untrained student", mode="lines",
                                 line={"dash": "dash", "color": "#555555"}))
        label = "linear CKA" if measure == "cka" else "kNN agreement (Jaccard)"
        with self.layer_fig.batch_update():
            self.layer_fig.data = []
            self.layer_fig.add_traces(traces)
            finish(self.layer_fig, f"student vs teacher at {pair}<br><sup>{label}</sup>", "training images used (% of split, log scale)", label, legend_title="method")
            self.layer_fig.update_xaxes(type="log")


class AngleConfusionExplorer(_WidgetApp):
    """One training run at a time: an epoch slider moves the angle–confusion scatter and the two
    heatmaps through training (validation split; figures updated in place). A pair picker shows
    that class pair's angle and confusion per epoch. Clicking a cell of the confusion heatmap picks
    that pair and shows the test images of it the final model confuses most."""

    def __init__(self, result, *, n_images: int = 8):
        import ipywidgets as W

        from .figures import angle_confusion_heatmaps, angle_confusion_scatter, image_mosaic

        self.result, self.n_images = result, n_images
        self.names = list(result.class_names)
        runs = [r.name for r in result.runs]
        first = result.runs[0]
        epochs = [h["epoch"] for h in first.history]
        self.run = W.Dropdown(options=runs, value=runs[0], description="run", layout=W.Layout(width="260px"))
        self.epoch = W.IntSlider(min=epochs[0], max=epochs[-1], value=epochs[-1], description="epoch", continuous_update=False, layout=W.Layout(width="420px"))
        h = first.history[-1]
        self.scatter = go.FigureWidget(angle_confusion_scatter(h["angles"], h["confusion"], self.names, h["angle_confusion"], title="angle vs confusion"))
        self.scatter.update_layout(width=560)
        self.heat = go.FigureWidget(angle_confusion_heatmaps(h["angles"], h["confusion"], self.names, title="angles and confusion"))
        self.heat.update_layout(width=980)
        self.grid = go.FigureWidget(image_mosaic([], [], title="most confused test images"))
        n = len(self.names)
        pairs = [(f"{self.names[i]} – {self.names[j]}", (i, j)) for i in range(n) for j in range(i + 1, n)]
        conf = np.asarray(first.test_confusion)
        i, j = np.unravel_index(np.nanargmax(np.triu(conf, 1)), conf.shape)
        self.pair = W.Dropdown(options=pairs, value=(int(min(i, j)), int(max(i, j))), description="pair", layout=W.Layout(width="320px"))
        self.trajectory = go.FigureWidget(layout={"height": 360, "width": 700})
        self.run.observe(self._on_run, names="value")
        self.epoch.observe(self._draw, names="value")
        self.pair.observe(self._on_pair, names="value")
        self.heat.data[1].on_click(self._on_cell)
        self._draw()
        self._on_pair()
        self.widget = W.VBox([W.HBox([self.run, self.epoch, self.pair]), W.HBox([self.scatter, self.grid]), self.trajectory, self.heat])

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
        from .figures import pair_trajectory

        i, j = self.pair.value
        run = self.current
        fig = pair_trajectory(run.pair_trajectory(i, j), title=f"{self.names[i]} – {self.names[j]} through training ({run.name}, validation)")
        with self.trajectory.batch_update():
            self.trajectory.data = []
            self.trajectory.add_traces(fig.data)
            self.trajectory.layout = fig.layout
            self.trajectory.layout.width = 700
        self.show_pair(i, j)

    def _draw(self, *_):
        from .figures import angle_confusion_traces, correlation_text

        run = self.current
        h = next(r for r in run.history if r["epoch"] == self.epoch.value)
        new = angle_confusion_traces(h["angles"], h["confusion"], self.names)
        corr = h["angle_confusion"]
        with self.scatter.batch_update():
            for old, tr in zip(self.scatter.data, new):
                old.x, old.y, old.text = tr.x, tr.y, tr.text
            self.scatter.layout.title.text = (f"{run.name}, epoch {h['epoch']}: angle vs confusion (validation)<br>"
                                              f"<sup>{correlation_text(corr)} over {corr['n_pairs']} class pairs</sup>")
        with self.heat.batch_update():
            self.heat.data[0].z = np.asarray(h["angles"], float)
            self.heat.data[1].z = np.asarray(h["confusion"], float)
            self.heat.layout.title.text = f"{run.name}, epoch {h['epoch']}: class-vector angles and pairwise confusion (validation) — click a confusion cell"

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
        show_confused(self.grid, [self.result.test_images[n] for n, _, _ in picks], picks, self.names, i, j,
                      f"{self.names[i]} ↔ {self.names[j]}: test images the final model of {run.name} confuses most")


def show_confused(fig: go.FigureWidget, images, picks, names, i: int, j: int, title: str) -> None:
    """Draw ``images`` (the ``picks`` of ``most_confused``: (row, true class, probability of the other
    class)) into a mosaic FigureWidget, captioned true→other and that probability."""
    from .figures import mosaic_data

    caps = [f"{names[t]}→{names[j if t == i else i]} {p:.2f}" for _, t, p in picks]
    z, anns = mosaic_data(images, caps)
    with fig.batch_update():
        fig.data[0].z = z
        fig.layout.annotations = anns
        fig.layout.title.text = f"{title}<br><sup>caption: true→other class, the probability given to the other class</sup>"


class ShapeGallery(_WidgetApp):
    """Browse each experiment's classes: training images beside transfer images (new shapes)."""

    def __init__(self, gallery, experiments, *, per_class: int = 4):
        import ipywidgets as W

        from .figures import image_mosaic

        self.gallery, self.per_class = gallery, per_class  # gallery(experiment, per_class) -> (images, captions, n_cols)
        self.experiment = W.Dropdown(options=list(experiments), value=list(experiments)[0], description="experiment", layout=W.Layout(width="360px"))
        self.fig = go.FigureWidget(image_mosaic([], [], title="shapes"))
        self.experiment.observe(self._draw, names="value")
        self._draw()
        self.widget = W.VBox([self.experiment, self.fig])

    def _draw(self, *_):
        from .figures import mosaic_data

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
        lay = lambda w: W.Layout(width=w)
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
        traces = embedding_traces(xy, labels, self.class_names_of(e), hover=[f"image {i}" for i in range(len(labels))], marker_size=7)
        with self.fig.batch_update():
            self.fig.data = []
            self.fig.add_traces(traces)
            finish(self.fig, f"{self.axis} of pooled activations · {e} · {a} ({s}) · {l}", f"{self.axis} 1 (a.u.)", f"{self.axis} 2 (a.u.)", legend_title="class")


class KeypointExplorer(_WidgetApp):
    """A test image with its keypoints drawn on it (marker = feature type, size = intensity) beside
    the decoder's reconstruction from the kept keypoints: sliders pick the image and how many of
    the strongest keypoints to keep, checkboxes which feature types; the reconstruction updates live.
    ``reconstruct(setup, image, keep, types)`` and ``keypoints_of(setup, image)`` come from the result."""

    def __init__(self, result, setup: str | None = None):
        import ipywidgets as W
        from plotly.subplots import make_subplots

        from .figures import to_rgb_uint8
        from .style import class_colors, class_symbols

        self.result = result
        setups = list(result.models)
        self._rgb = to_rgb_uint8
        self.setup = W.Dropdown(options=setups, value=setup or setups[-1], description="set-up", layout=W.Layout(width="200px"))
        n = len(result.test_images)
        self.image = W.IntSlider(min=0, max=n - 1, value=0, description="image", continuous_update=False, layout=W.Layout(width="360px"))
        kmax = self._most_keypoints(setup or setups[-1], 0)
        self.keep = W.IntSlider(min=0, max=kmax, value=kmax, description="keep", continuous_update=False, layout=W.Layout(width="360px"))
        self.types_box = W.HBox()
        self._make_type_boxes()
        fig = make_subplots(rows=1, cols=2, subplot_titles=("image and its keypoints", "reconstruction from the kept keypoints"), horizontal_spacing=0.08)
        blank = np.zeros((*result.test_images.shape[-2:], 3), np.uint8)
        fig.add_trace(go.Image(z=blank, hoverinfo="skip"), row=1, col=1)
        self.colors, self.symbols = class_colors(5), class_symbols(5)
        for t in range(5):
            fig.add_trace(go.Scatter(x=[], y=[], mode="markers", name=f"type {t}", marker={"symbol": self.symbols[t], "color": self.colors[t], "line": {"width": 1, "color": "#000000"}},
                                     hovertemplate="type " + str(t) + " at (%{x}, %{y}), intensity %{customdata:.2f}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Image(z=blank, hoverinfo="skip"), row=1, col=2)
        for c in (1, 2):
            fig.update_xaxes(showgrid=False, title_text="x (px)", row=1, col=c)
            fig.update_yaxes(showgrid=False, autorange="reversed", scaleanchor="x" if c == 1 else "x2", title_text="y (px)", row=1, col=c)
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
        self.types = [W.Checkbox(value=True, description=f"type {t}", indent=False, layout=W.Layout(width="90px")) for t in range(k)]
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
            self.fig.layout.title.text = (f"{s}: test image {i} (class {label}) — {len(kp)} keypoints kept of {len(r.keypoints[s].of_image(i))}; "
                                          f"reconstruction MSE {mse:.4f}")


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
        self.layer = W.Dropdown(options=layers, value=layer or layers[len(layers) // 2], description="layer", layout=W.Layout(width="300px"))
        fig = make_subplots(rows=1, cols=3, subplot_titles=("channel correlation, original basis", "in the decorrelated basis", "explained energy"),
                            horizontal_spacing=0.09, column_widths=[0.36, 0.36, 0.28])
        for c in (1, 2):
            fig.add_trace(go.Heatmap(z=[[0.0]], zmin=-1, zmax=1, colorscale="RdBu_r", showscale=c == 1,  # diverging red–blue: CVD-safe
                                     colorbar={"title": "correlation", "x": 0.69, "len": 0.8},
                                     hovertemplate="channels %{y} and %{x}: %{z:.2f}<extra></extra>"), row=1, col=c)
            fig.update_xaxes(title_text="channel" if c == 1 else "direction", row=1, col=c)
            fig.update_yaxes(title_text="channel" if c == 1 else "direction", autorange="reversed", row=1, col=c)
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", marker={"size": 4, "color": "#0072B2"}, showlegend=False,
                                 hovertemplate="%{x} directions: %{y:.3f}<extra></extra>"), row=1, col=3)
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
            self.fig.layout.title.text = (f"{self.layer.value} ({self.mode.value}, {s.channels} channels): mean |off-diagonal correlation| "
                                          f"{off(orig):.3f} → {off(dec):.3f} in the decorrelated basis")


class RobustnessExplorer(_WidgetApp):
    """Pick a test image, a corruption and a severity: the corrupted image beside every model's
    prediction (and the true target); below, the chosen model's error heatmap over corruptions ×
    severities. ``result`` provides ``corrupted(image, corruption, severity)`` → (image, {model:
    prediction}, truth) and ``heatmap(model, arm)``, ``config.corruptions`` / ``severities``."""

    def __init__(self, result, *, value: str = "size (px)"):
        import ipywidgets as W
        from plotly.subplots import make_subplots

        from .figures import robustness_heatmap
        from .style import class_colors

        self.result, self.value = result, value
        cfg = result.config
        self.corruption = W.Dropdown(options=list(cfg.corruptions), value=cfg.corruptions[0], description="corruption", layout=W.Layout(width="300px"))
        self.severity = W.IntSlider(min=min(cfg.severities), max=max(cfg.severities), value=min(cfg.severities), description="severity",
                                    continuous_update=False, layout=W.Layout(width="300px"))
        self.image = W.IntSlider(min=0, max=len(result.test_images) - 1, value=0, description="image", continuous_update=False, layout=W.Layout(width="360px"))
        keys = list(dict.fromkeys((r["model"], r["arm"]) for r in result.rows))
        self.model = W.Dropdown(options=[(f"{m} ({a})" if a != "teacher" else m, (m, a)) for m, a in keys], value=keys[0], description="heatmap of",
                                layout=W.Layout(width="380px"))
        names = list(result.models)
        fig = make_subplots(rows=1, cols=2, subplot_titles=("corrupted image", "predictions"), column_widths=[0.35, 0.65], horizontal_spacing=0.12)
        blank = np.zeros((*result.test_images.shape[-2:], 3), np.uint8)
        fig.add_trace(go.Image(z=blank, hoverinfo="skip"), row=1, col=1)
        fig.add_trace(go.Bar(x=names, y=[0.0] * len(names), marker_color=class_colors(max(4, len(names)))[: len(names)], name="prediction",
                             hovertemplate="%{x}: %{y:.2f}<extra></extra>"), row=1, col=2)
        fig.add_trace(go.Scatter(x=names, y=[0.0] * len(names), mode="lines", line={"color": "#000000", "dash": "dash"}, name="true value"), row=1, col=2)
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
        return self._heat(self.result.heatmap(m, a), cfg.corruptions, cfg.severities, title=f"error per corruption × severity: {m} ({a}), mean over seeds")

    def _draw_heat(self, *_):
        new = self._heat_figure()
        with self.heat.batch_update():
            self.heat.data[0].z, self.heat.data[0].text = new.data[0].z, new.data[0].text
            self.heat.layout.title.text = new.layout.title.text

    def _draw(self, *_):
        from .figures import to_rgb_uint8

        img, preds, truth = self.result.corrupted(self.image.value, self.corruption.value, self.severity.value)
        with self.fig.batch_update():
            self.fig.data[0].z = to_rgb_uint8(img)
            self.fig.data[1].y = [preds[k] for k in self.fig.data[1].x]
            self.fig.data[2].y = [truth] * len(preds)
            self.fig.layout.title.text = (f"predictions under {self.corruption.value}, severity {self.severity.value}: test image {self.image.value}, "
                                          f"true {self.value} {truth:.2f}")


class CamExplorer(_WidgetApp):
    """Pick a test image and an ensemble member: the image, the member's Grad-CAM over it (for the
    predicted class, or a class chosen in ``explain``) and the member's class probabilities (the
    true class in vermillion); below, every member's prediction for the image. ``result``
    provides ``models`` ({(start, member): model}), ``classes``, ``test_images`` and
    ``cam(index, start, member, target)`` → {"image", "map", "probabilities", "explained", "label"}."""

    def __init__(self, result):
        import ipywidgets as W
        from plotly.subplots import make_subplots

        from .style import OKABE_ITO, SEQUENTIAL

        self.result, self.classes = result, list(result.classes)
        self._image_word = getattr(result, "image_word", "test image")  # what the images are called in titles
        keys = list(result.models)
        self.image = W.IntSlider(min=0, max=len(result.test_images) - 1, value=0, description="image", continuous_update=False, layout=W.Layout(width="360px"))
        self.member = W.Dropdown(options=[(f"{m} ({s})", (s, m)) for s, m in keys], value=keys[0], description="member", layout=W.Layout(width="300px"))
        self.target = W.Dropdown(options=[("predicted class", -1)] + [(c, i) for i, c in enumerate(self.classes)], value=-1, description="explain",
                                 layout=W.Layout(width="300px"))
        size = tuple(result.test_images.shape[-2:])
        fig = make_subplots(rows=1, cols=3, subplot_titles=("test image", "Grad-CAM over the image", "the member's class probabilities"),
                            column_widths=[0.27, 0.27, 0.46], horizontal_spacing=0.14)
        blank = np.zeros((*size, 3), np.uint8)
        fig.add_trace(go.Image(z=blank, hoverinfo="skip"), row=1, col=1)
        fig.add_trace(go.Image(z=blank, hoverinfo="skip"), row=1, col=2)
        fig.add_trace(go.Heatmap(z=np.zeros(size), zmin=0, zmax=1, opacity=0.55, colorscale=SEQUENTIAL, colorbar={"title": {"text": "Grad-CAM<br>(÷ max)"}, "x": 0.54, "len": 0.8, "thickness": 12},
                                 hovertemplate="x %{x}, y %{y}: %{z:.2f}<extra></extra>"), row=1, col=2)
        fig.add_trace(go.Bar(x=self.classes, y=[0.0] * len(self.classes), marker_color=[OKABE_ITO[4]] * len(self.classes), name="probability",
                             hovertemplate="%{x}: %{y:.3f}<extra></extra>"), row=1, col=3)
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
            self.fig.data[3].marker.color = [self._true_colour if i == label else self._other_colour for i in range(len(probs))]
            true = self.classes[label] if 0 <= label < len(self.classes) else "not among these classes"
            self.fig.layout.title.text = (f"Grad-CAM of {member} ({start}) on {self._image_word} {self.image.value}: true {true}, predicted "
                                          f"{self.classes[pred]} ({probs[pred]:.2f}), explaining {self.classes[explained]}")
        mark = lambda p: "" if label < 0 else (" ✓" if int(np.argmax(p)) == label else " ✗")  # noqa: E731
        votes = [f"{m} ({s}): {self.classes[int(np.argmax(p))]} {np.max(p):.2f}" + mark(p)
                 for (s, m), p in self.result.member_probabilities(self.image.value).items()]
        self.info.value = "<b>every member on this image</b> (predicted class, probability): " + " · ".join(votes)


class CandidateExplorer(_WidgetApp):
    """Pick a disease: its top-k unknown miRNAs ranked by a model trained on every known
    association (the paper's case studies), as bars; on synthetic data a bar is dark where the
    pair is in the planted truth. A candidate the model was trained on as a negative is marked.
    ``result`` provides ``data.diseases``, ``data.A``, ``disease`` (the first shown) and
    ``top_candidates(disease)``."""

    def __init__(self, result):
        import ipywidgets as W

        from .style import OKABE_ITO

        self.result = result
        known = result.data.A.sum(0)
        options = [(f"{d} ({int(known[j])} known)", d) for j, d in sorted(enumerate(result.data.diseases), key=lambda t: -known[t[0]])]
        self.disease = W.Dropdown(options=options, value=result.disease, description="disease", layout=W.Layout(width="380px"))
        self._colours = (OKABE_ITO[4], OKABE_ITO[1])
        fig = go.Figure(go.Bar(x=[], y=[], orientation="h", hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
        self.fig = go.FigureWidget(finish(fig, "Top candidates", "predicted association probability", "miRNA (rank order)", height=520))
        self.disease.observe(self._draw, names="value")
        self._draw()
        self.widget = W.VBox([self.disease, self.fig])

    def _draw(self, *_):
        top = self.result.top_candidates(self.disease.value)
        truth = ["in_planted_truth" in t for t in top]
        with self.fig.batch_update():
            self.fig.data[0].x = [t["score"] for t in top]
            self.fig.data[0].y = [f"{t['rank']}. {t['mirna']}" + (" (trained as negative)" if t.get("trained_as_negative") else "") for t in top]
            self.fig.data[0].marker.color = [self._colours[0] if t.get("in_planted_truth") else self._colours[1] for t in top]
            hit = sum(bool(t.get("in_planted_truth")) for t in top)
            note = f": {hit} of {len(top)} in the planted truth (dark)" if any(truth) else ""
            negatives = sum(bool(t.get("trained_as_negative")) for t in top)
            note += f"; {negatives} trained as negatives" if negatives else ""
            self.fig.layout.title.text = f"Top {len(top)} candidate miRNAs for {self.disease.value} (unknown pairs only){note}"
