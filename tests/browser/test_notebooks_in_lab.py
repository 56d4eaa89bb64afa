"""Every notebook run in JupyterLab in headless Chromium: cells run without errors, declared
figures and widgets render, declared interactions update their figures, screenshots are kept."""

from pathlib import Path

import pytest

from .conftest import ROOT, SHOTS
from .lab import check_notebook

pytestmark = pytest.mark.browser
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FIXTURES = ROOT / "tests" / "browser" / "fixtures"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_renders_and_responds(lab, browser, workdir, notebook):
    report = check_notebook(lab, browser, notebook, workdir, SHOTS)
    print(f"\n{notebook.name}: {report['figures']} figures, run {report['run_seconds']} s, total {report['seconds']} s")
    for line in report["interactions"]:
        print(f"  interaction: {line}")
    print(f"  screenshot: {report['screenshot']}")
    assert Path(report["screenshot"]).stat().st_size > 20_000


def test_checker_passes_a_working_interaction(lab, browser, workdir):
    report = check_notebook(
        lab, browser, FIXTURES / "working_interaction.ipynb", workdir, SHOTS / "fixtures", timeout=60
    )
    assert report["interactions"] == ["dropdown 'direction' → figure 'live figure' updated"]


def test_checker_fails_when_a_widget_front_end_is_missing(lab, browser, workdir):
    with pytest.raises(AssertionError, match="0 plotly figures rendered, the notebook declares 1|error output"):
        check_notebook(lab, browser, FIXTURES / "broken_frontend.ipynb", workdir, SHOTS / "fixtures", timeout=60)


def test_checker_fails_when_an_interaction_does_not_update_its_figure(lab, browser, workdir):
    with pytest.raises(AssertionError, match="dropdown 'direction' changed but figure 'static figure' did not update"):
        check_notebook(lab, browser, FIXTURES / "broken_interaction.ipynb", workdir, SHOTS / "fixtures", timeout=60)
