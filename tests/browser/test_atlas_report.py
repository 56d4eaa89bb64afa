"""The atlas's HTML report opened from disk in headless Chromium: plotly.js embedded once, the
heatmap drawn, a click on a cell draws that pair of layers' local features."""

import pytest

from geoviz.atlas import compare
from geoviz.datasets import get_dataset
from geoviz.models import build_model
from geoviz.viz.atlas import write_atlas_report

from .conftest import SHOTS
from .lab import _figure_index, _figure_state, _visible_plots, run_interaction

pytestmark = pytest.mark.browser


def test_atlas_report_draws_its_heatmap_and_answers_a_click(browser, tmp_path):
    data = get_dataset("shapes10", "test", n=64)
    atlas = compare(
        build_model("resnet8", 10),
        build_model("resnet14", 10),
        data,
        knn_images=16,
        knn_points=300,
        embedding="pca",
        progress=False,
    )
    path = write_atlas_report(atlas, tmp_path / "report.html")
    html = open(path, encoding="utf-8").read()
    assert html.count("plotly.js v") == 1  # one copy of plotly.js, shared by every figure
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"file://{path}")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=30_000)
    heat = _figure_index(page, "Layer × layer linear CKA")
    z = page.evaluate("i => document.querySelectorAll('.js-plotly-plot')[i].data[0].z", heat)
    assert len(z) == 3 and len(z[0]) == 6 and abs(z[0][0] - atlas.cka[0, 0]) < 1e-9
    assert _visible_plots(page) >= 3
    pair = _figure_index(page, "of local features")
    first = page.evaluate("() => document.getElementById('atlas-selected').textContent")
    before = _figure_state(page, pair)
    # the bottom-left cell: the last layer of A against the first layer of B (the report starts on another pair)
    line = run_interaction(
        page,
        {"kind": "click_cell", "figure": "Layer × layer linear CKA", "at": [0.05, 0.95], "target": "of local features"},
    )
    assert "updated" in line and _figure_state(page, pair) != before
    now = page.evaluate("() => document.getElementById('atlas-selected').textContent")
    assert now != first and now == "layer3.0 ↔ layer1.0"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "atlas_report.png"), full_page=True)
    assert not errors, errors
    page.close()
