"""CNNMDA (notebook 08): ROC and PR curves per fold, the candidate explorer.

Pure builders and apps: they display, never train."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .common import _WidgetApp
from .style import OKABE_ITO, class_colors, finish


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
            fig.add_trace(
                go.Scatter(
                    x=c["fpr"],
                    y=c["tpr"],
                    mode="lines",
                    line=style,
                    name=label,
                    legendgroup=m,
                    showlegend=k == 0,
                    hovertemplate=f"{m}, fold {f['fold']}: FPR %{{x:.3f}}, TPR %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=1,
            )
            fig.add_trace(
                go.Scatter(
                    x=c["recall"],
                    y=c["precision"],
                    mode="lines",
                    line=style,
                    name=label,
                    legendgroup=m,
                    showlegend=False,
                    hovertemplate=f"{m}, fold {f['fold']}: recall %{{x:.3f}}, precision %{{y:.3f}}<extra></extra>",
                ),
                row=1,
                col=2,
            )
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", line={"color": "#999999", "dash": "dot", "width": 1}, name="chance (ROC)"
        ),
        row=1,
        col=1,
    )
    prevalence = float(np.mean([f["n_test_pos"] / f["n_eval"] for f in folds]))  # a random ranking's precision
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[prevalence] * 2,
            mode="lines",
            line={"color": "#999999", "dash": "dot", "width": 1},
            name=f"chance (PR: prevalence {prevalence:.4f})",
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="false-positive rate (fraction)", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="true-positive rate (fraction)", range=[0, 1.02], row=1, col=1)
    fig.update_xaxes(title_text="recall (fraction)", range=[0, 1], row=1, col=2)
    fig.update_yaxes(title_text="precision (fraction)", rangemode="tozero", row=1, col=2)
    fig.update_layout(legend={"orientation": "h", "y": -0.25})
    return finish(fig, title, height=500, legend_title="method (mean ± std over folds)")


class CandidateExplorer(_WidgetApp):
    """Pick a disease: its top-k unknown miRNAs ranked by a model trained on every known
    association (the paper's case studies), as bars; on synthetic data a bar is dark where the
    pair is in the planted truth. A candidate the model was trained on as a negative is marked.
    ``result`` provides ``data.diseases``, ``data.A``, ``disease`` (the first shown) and
    ``top_candidates(disease)``."""

    def __init__(self, result):
        import ipywidgets as W

        self.result = result
        known = result.data.A.sum(0)
        options = [
            (f"{d} ({int(known[j])} known)", d)
            for j, d in sorted(enumerate(result.data.diseases), key=lambda t: -known[t[0]])
        ]
        self.disease = W.Dropdown(
            options=options, value=result.disease, description="disease", layout=W.Layout(width="380px")
        )
        self._colours = (OKABE_ITO[4], OKABE_ITO[1])
        fig = go.Figure(go.Bar(x=[], y=[], orientation="h", hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
        self.fig = go.FigureWidget(
            finish(fig, "Top candidates", "predicted association probability", "miRNA (rank order)", height=520)
        )
        self.disease.observe(self._draw, names="value")
        self._draw()
        self.widget = W.VBox([self.disease, self.fig])

    def _draw(self, *_):
        top = self.result.top_candidates(self.disease.value)
        truth = ["in_planted_truth" in t for t in top]
        with self.fig.batch_update():
            self.fig.data[0].x = [t["score"] for t in top]
            self.fig.data[0].y = [
                f"{t['rank']}. {t['mirna']}" + (" (trained as negative)" if t.get("trained_as_negative") else "")
                for t in top
            ]
            self.fig.data[0].marker.color = [
                self._colours[0] if t.get("in_planted_truth") else self._colours[1] for t in top
            ]
            hit = sum(bool(t.get("in_planted_truth")) for t in top)
            note = f": {hit} of {len(top)} in the planted truth (dark)" if any(truth) else ""
            negatives = sum(bool(t.get("trained_as_negative")) for t in top)
            note += f"; {negatives} trained as negatives" if negatives else ""
            self.fig.layout.title.text = (
                f"Top {len(top)} candidate miRNAs for {self.disease.value} (unknown pairs only){note}"
            )
