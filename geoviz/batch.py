"""Notebooks in batch: find them, run them with papermill, export HTML that opens offline.

The HTML export keeps one copy of plotly.js (``plotly.min.js``, ~4.8 MB) beside the HTML files
instead of one per file, and drops the saved ipywidgets state (about 5 MB per ``FigureWidget``,
whose front-end bundle carries its own plotly.js; it needs the widget manager from a CDN, so
offline it draws nothing). The apps of ``geoviz.viz`` display a static HTML snapshot beside
their live widget, and that snapshot is what the HTML shows: figures with zoom and hover,
controls as text. So ``geoviz demo`` writes files of about 0.3–1 MB instead of 13–21 MB.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._io import atomic_write_text
from .paths import notebooks_dir


class NoNotebooks(SystemExit):
    """No notebooks where geoviz looks (a plain ``pip install`` carries the package only)."""


def list_notebooks() -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in ``geoviz.paths.notebooks_dir()``."""
    return sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))


def no_notebooks_message() -> str:
    return (
        f"no notebooks found in {notebooks_dir()}. The notebooks come with geoviz's source checkout, not with a plain "
        f"`pip install`: run geoviz from the checkout (or install it there with `pip install -e .`), or point "
        f"GEOVIZ_NOTEBOOKS (or GEOVIZ_ROOT) at the folder that holds them."
    )


def find_notebook(name: str) -> Path:
    """A notebook by file path, number (``00``), full stem or name without number (``quickstart``)."""
    p = Path(name)
    if p.is_file():
        return p
    nbs = list_notebooks()
    if not nbs:
        raise NoNotebooks(no_notebooks_message())
    hits = [nb for nb in nbs if nb.stem == name or nb.stem.startswith(name) or nb.stem.split("_", 1)[-1] == name]
    if not hits:
        from ._utils import unknown_name_message

        raise SystemExit(unknown_name_message("notebook", name, [nb.stem for nb in nbs]))
    return hits[0]


def _kernel_name() -> str:
    from jupyter_client.kernelspec import KernelSpecManager

    return "geoviz" if "geoviz" in KernelSpecManager().find_kernel_specs() else "python3"


def run_notebook(
    path: Path,
    out_dir: Path,
    parameters: dict | None = None,
    *,
    profile: str | None = None,
    html: bool = True,
    timeout: int | None = None,
) -> Path:
    """Execute a notebook with papermill into ``out_dir`` and (optionally) export HTML beside it."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    env_profile = os.environ.get("GEOVIZ_PROFILE")
    if profile:
        os.environ["GEOVIZ_PROFILE"] = profile
    try:
        # the kernel starts beside the notebook, as in JupyterLab; geoviz.paths finds data/ and runs/ from there
        pm.execute_notebook(
            str(path),
            str(out),
            parameters=parameters or {},
            kernel_name=_kernel_name(),
            cwd=str(Path(path).resolve().parent),
            progress_bar=False,
            execution_timeout=timeout,
        )
    finally:
        if profile:
            if env_profile is None:
                os.environ.pop("GEOVIZ_PROFILE", None)
            else:
                os.environ["GEOVIZ_PROFILE"] = env_profile
    if html:
        export_html(out)
    return out


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PLOTLY_JS = "plotly.min.js"  # one copy beside the HTML files, shared by all of them


def _offline_outputs(outputs: list, inline_plotly: str) -> tuple[list, bool]:
    """Outputs as the offline HTML shows them, and whether any of them draws a plotly figure."""
    kept, plotly = [], False
    for o in outputs:
        data = o.get("data")
        if data is None:  # streams, errors
            kept.append(o)
            continue
        html = data.get("text/html")
        if isinstance(html, list):
            html = data["text/html"] = "".join(html)
        if html and inline_plotly in html:  # plotly's notebook renderer inlines plotly.js once per notebook
            data["text/html"] = html = html.replace(inline_plotly, "")
        if WIDGET_VIEW in data:  # a widget: its static snapshot if it has one (the viz apps), else nothing (tqdm bars)
            data.pop(WIDGET_VIEW)
            if not html:
                continue
        plotly = plotly or "Plotly.newPlot" in (html or "")
        kept.append(o)
    return kept, plotly


def export_html(ipynb: Path) -> Path:
    """``<notebook>.html`` beside an executed notebook, for reading offline (see the module docstring)."""
    import nbformat
    from nbconvert import HTMLExporter
    from plotly.offline import get_plotlyjs

    nb = nbformat.read(str(ipynb), as_version=4)
    nb.metadata.pop("widgets", None)
    plotlyjs = get_plotlyjs()
    uses_plotly = False
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, plotly = _offline_outputs(cell.outputs, f"<script>{plotlyjs}</script>")
            uses_plotly |= plotly
    body, _ = HTMLExporter().from_notebook_node(nb)
    if uses_plotly:
        body = body.replace("</head>", f'<script src="{PLOTLY_JS}"></script>\n</head>', 1)
        shared = ipynb.parent / PLOTLY_JS
        if not shared.is_file() or shared.stat().st_size != len(plotlyjs.encode()):
            atomic_write_text(shared, plotlyjs)
    return atomic_write_text(ipynb.with_suffix(".html"), body)
