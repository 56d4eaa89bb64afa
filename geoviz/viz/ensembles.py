"""Ensembles and defects (notebook 07): accuracy bars against the floors, diversity against gain.

Pure builders and apps: they display, never train."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .style import class_colors, class_symbols, finish


def ensemble_accuracy_bars(table: list[dict], floors: dict, *, title: str) -> go.Figure:
    """Test accuracy (mean ± std over seeds) of every member and fusion rule, one bar per start
    (``EnsemblesResult.table()`` rows), with chance and the panel floor as lines."""
    starts = list(dict.fromkeys(r["start"] for r in table))
    names = list(dict.fromkeys((r["name"], r["kind"]) for r in table))
    x = [[kind for _, kind in names], [name for name, _ in names]]
    colors = class_colors(max(4, len(starts)))
    fig = go.Figure()
    for i, s in enumerate(starts):
        by = {(r["name"], r["kind"]): r for r in table if r["start"] == s}
        rs = [by.get(k) for k in names]
        fig.add_trace(
            go.Bar(
                x=x,
                y=[r["acc"] if r else None for r in rs],
                error_y={"type": "data", "array": [r["acc_std"] if r else 0 for r in rs]},
                name=s,
                marker_color=colors[i],
                customdata=[r["n"] if r else 0 for r in rs],
                hovertemplate="%{x}: %{y:.3f} (mean of %{customdata} seeds)<extra>" + s + "</extra>",
            )
        )
    for name, value, dash, where in (
        ("chance", floors.get("chance"), "dot", "bottom right"),
        ("panel floor", floors.get("panel"), "dash", "top left"),
    ):
        if value is not None:  # labels on opposite sides, so two close levels stay readable
            fig.add_hline(
                y=value,
                line_dash=dash,
                line_color="#000000",
                annotation_text=f"{name} {value:.3f}",
                annotation_position=where,
            )
    fig.update_layout(barmode="group")
    fig.update_yaxes(rangemode="tozero")
    return finish(
        fig, title, "member network / fusion rule", "test accuracy (fraction)", height=440, legend_title="start"
    )


def diversity_gain_scatter(
    diversity: list[dict], fusions: Sequence[str], *, title: str, correlations: dict | None = None
) -> go.Figure:
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
            fig.add_trace(
                go.Scatter(
                    x=[d["disagreement"] for d in ds],
                    y=[d[f"gain_{f}"] for d in ds],
                    mode="markers",
                    name=label,
                    legendgroup=f,
                    showlegend=j == 0,
                    text=[f"seed {d['seed']}, {s}, best member {d['best_member']}" for d in ds],
                    marker={
                        "color": colors[i],
                        "symbol": symbols[j],
                        "size": 11,
                        "line": {"width": 0.5, "color": "#333333"},
                    },
                    hovertemplate="%{text}<br>disagreement %{x:.3f}, gain %{y:+.3f}<extra>" + f + "</extra>",
                )
            )
    fig.add_hline(y=0, line_color="#999999", line_width=1)
    sym = ", ".join(f"{s}: {m}" for s, m in zip(starts, symbols))
    return finish(
        fig,
        f"{title}<br><sup>marker shape by start ({sym})</sup>",
        "mean pairwise disagreement of the members (fraction of test images)",
        "ensemble accuracy − best member's (fraction)",
        height=440,
        legend_title="fusion rule",
    )
