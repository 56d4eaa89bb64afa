"""``geoviz explore``'s HTML report opened from disk in headless Chromium: plotly.js embedded once,
hovering a point of the explorer shows its image patch, the pair picker shows that pair's images."""

import pytest

from geoviz.experiments.explore import ExploreConfig, run_explore
from geoviz.viz import write_explore_report

from .conftest import SHOTS
from .lab import _figure_index, _figure_state, _point, _wait_change

pytestmark = pytest.mark.browser


def test_explore_report_hover_shows_the_patch_and_the_pair_picker_its_images(browser, tmp_path):
    result = run_explore(ExploreConfig.from_profile("smoke", n_images=40), run_root=tmp_path / "runs", progress=False)
    path = write_explore_report(result, tmp_path / "report.html")
    html = open(path, encoding="utf-8").read()
    assert html.count("plotly.js v") == 1
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"file://{path}")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4", timeout=30_000)
    scatter, patch = _figure_index(page, "of local features"), _figure_index(page, "sees")
    before = _figure_state(page, patch)
    page.locator(".js-plotly-plot").nth(scatter).scroll_into_view_if_needed()
    x, y = _point(page, scatter, 0.7)
    page.mouse.move(x - 30, y - 30)
    page.mouse.move(x, y, steps=5)
    assert _wait_change(page, patch, before), "hovering a point did not change the patch"
    src = page.evaluate("i => document.querySelectorAll('.js-plotly-plot')[i].layout.images[0].source", patch)
    assert src.startswith("data:image/jpeg;base64,")
    shapes = page.evaluate("i => document.querySelectorAll('.js-plotly-plot')[i].layout.shapes.length", patch)
    assert shapes == 2  # the receptive field and the position's cell
    first = page.evaluate("() => document.getElementById('explore-pair-images').innerHTML")
    ring = _figure_index(page, "Angle vs confusion")
    ring_before = _figure_state(page, ring)
    page.select_option("#explore-pair", index=3)
    assert page.evaluate("() => document.getElementById('explore-pair-images').innerHTML") != first
    assert _wait_change(page, ring, ring_before), "picking a pair did not move its ring on the scatter"
    layer_before = _figure_state(page, scatter)
    page.select_option("#explore-layer", index=0)
    assert _wait_change(page, scatter, layer_before), "picking a layer did not redraw the explorer"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "explore_report.png"), full_page=True)
    assert not errors, errors
    page.close()
