"""Drive JupyterLab in headless Chromium the way a user does.

``JupyterLab`` starts ``jupyter lab`` on a free loopback port with a random token and a throw-away
config/settings/workspace folder (announcements off, notebook windowing off so every cell stays in
the DOM). ``check_notebook`` opens a copy of a notebook, runs all cells, waits for the kernel to go
idle, and checks what the notebook declares in its metadata::

    "geoviz": {
      "figures": 5,                       # at least this many rendered plotly plots
      "widgets": ["Dropdown"],            # widget controls that must be present
      "interactions": [                   # each must visibly change a figure
        {"kind": "dropdown", "label": "colour", "value": "feature norm", "figure": "<title text>"},  # value null: another option
        {"kind": "slider", "label": "epoch", "figure": "<title text>"},
        {"kind": "hover", "figure": "<title text>", "target": "<title text of the figure that must change>", "at": 0.5},
        {"kind": "click", "figure": "<title text>", "target": "<title text>"},
        {"kind": "click_cell", "figure": "<title text>", "subplot": "x2y2", "at": [0.3, 0.7], "target": "<title text>"},
        {"kind": "checkbox", "label": "type", "all": true, "figure": "<title text>"}
      ]
    }

Figures are found by a substring of their title, so the checks do not depend on cell order.
"""  # noqa: E501 (embedded JavaScript / HTML)

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
WIDGET_CSS = {
    "Dropdown": ".widget-dropdown",
    "IntSlider": ".widget-slider",
    "FloatSlider": ".widget-slider",
    "SelectionSlider": ".widget-slider",
    "Checkbox": ".widget-checkbox",
    "ToggleButtons": ".widget-toggle-buttons",
    "Button": ".widget-button",
    "SelectMultiple": ".widget-select-multiple",
    "Text": ".widget-text",
}


def ensure_chromium() -> str | None:
    """Path of Debian's chromium, installing it with apt-get when missing and running as root.
    Returns None (with the reason printed) when it cannot be had."""
    if CHROMIUM.exists():
        return str(CHROMIUM)
    if os.geteuid() != 0:
        return None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, text=True)
    if r.returncode != 0:  # stale package lists on a fresh machine
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, text=True)
    return str(CHROMIUM) if CHROMIUM.exists() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JupyterLab:
    root: Path
    state: Path
    env: dict = field(default_factory=dict)
    port: int = 0
    token: str = ""
    proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> JupyterLab:
        self.port, self.token = _free_port(), secrets.token_hex(16)
        cfg, settings, ws = self.state / "config", self.state / "settings", self.state / "workspaces"
        (cfg / "labconfig").mkdir(parents=True, exist_ok=True)
        (cfg / "labconfig" / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
        )
        tracker = settings / "@jupyterlab" / "notebook-extension"
        tracker.mkdir(parents=True, exist_ok=True)
        (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        ws.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            JUPYTER_CONFIG_DIR=str(cfg),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(ws),
            **self.env,
        )
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        log = open(self.state / "jupyter.log", "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: see {self.state / 'jupyter.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"jupyter lab did not answer within {timeout:.0f} s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, rel: str) -> str:
        return f"{self.url}/lab/tree/{rel}?token={self.token}&reset"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


# ----------------------------------------------------------------------------- page helpers
_FIGURE_JS = """(needle) => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  return plots.findIndex(el => (el.layout && el.layout.title && String(el.layout.title.text || el.layout.title).includes(needle))
                               || (el.querySelector('.gtitle') && el.querySelector('.gtitle').textContent.includes(needle)));
}"""  # noqa: E501 (embedded JavaScript / HTML)

_STATE_JS = """(i) => {
  const el = document.querySelectorAll('.js-plotly-plot')[i];
  if (!el || !el.data) return null;
  const strip = (v) => (Array.isArray(v) || ArrayBuffer.isView(v)) ? Array.from(v).slice(0, 200) : v;
  return JSON.stringify({
    data: el.data.map(t => ({n: t.name, x: strip(t.x), y: strip(t.y), c: t.marker ? strip(t.marker.color) : null,
                             z: t.z ? String(strip(t.z)).length : null, s: t.source ? t.source.length : null})),
    title: el.layout && el.layout.title ? (el.layout.title.text || '') : '',
    shapes: el.layout && el.layout.shapes ? JSON.stringify(el.layout.shapes) : '',
  });
}"""


def _figure_index(page, needle: str, timeout: float = 20.0) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        i = page.evaluate(_FIGURE_JS, needle)
        if i >= 0:
            return i
        page.wait_for_timeout(250)
    titles = page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot')].map(e => e.layout && e.layout.title ? "
        "(e.layout.title.text || '') : '')"
    )
    raise AssertionError(f"no rendered figure titled like {needle!r}; rendered titles: {titles}")


def _figure_state(page, i: int) -> str:
    return page.evaluate(_STATE_JS, i)


def _wait_change(page, i: int, before: str, timeout: float = 15.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _figure_state(page, i) != before:
            return True
        page.wait_for_timeout(200)
    return False


def _point(page, i: int, at: float = 0.5):
    """Centre (x, y) on the page of the scatter point at fraction ``at`` of figure i's points."""
    box = page.evaluate(
        """([i, at]) => {
      const el = document.querySelectorAll('.js-plotly-plot')[i];
      const pts = [...el.querySelectorAll('.scatterlayer .points path')];
      const p = pts[Math.min(pts.length - 1, Math.floor(pts.length * at))];
      if (!p) return null;
      const r = p.getBoundingClientRect();
      return {x: r.x + r.width / 2, y: r.y + r.height / 2};
    }""",
        [i, at],
    )
    if box is None:
        raise AssertionError(f"figure {i} has no scatter points to hover")
    return box["x"], box["y"]


def run_interaction(page, spec: dict) -> str:
    kind = spec["kind"]
    if kind in ("dropdown", "slider"):
        fig = _figure_index(page, spec["figure"])
        before = _figure_state(page, fig)
        ctl = (
            page.locator(f".widget-{'dropdown' if kind == 'dropdown' else 'slider'}")
            .filter(has_text=spec["label"])
            .first
        )
        ctl.scroll_into_view_if_needed()
        if kind == "dropdown":
            sel = ctl.locator("select")
            if spec.get("value") is None:  # any other option than the current one
                current = sel.evaluate("s => s.selectedIndex")
                sel.select_option(index=0 if current != 0 else 1)
            else:
                sel.select_option(label=spec["value"])
        else:
            handle = ctl.locator(".noUi-handle, .ui-slider-handle, .slider-handle").first
            handle.focus()
            for _ in range(spec.get("steps", 3)):
                page.keyboard.press(spec.get("key", "ArrowLeft"))
        if not _wait_change(page, fig, before):
            raise AssertionError(f"{kind} {spec['label']!r} changed but figure {spec['figure']!r} did not update")
        return f"{kind} '{spec['label']}' → figure '{spec['figure']}' updated"
    if kind == "checkbox":  # toggle the labelled checkbox (with "all": every checkbox whose label contains it)
        fig = _figure_index(page, spec["figure"])
        before = _figure_state(page, fig)
        boxes = page.locator(".widget-checkbox").filter(has_text=spec["label"])
        targets = [boxes.nth(i) for i in range(boxes.count())] if spec.get("all") else [boxes.first]
        for box in targets:
            box.scroll_into_view_if_needed()
            box.locator("input").click()
            page.wait_for_timeout(300)
        if not _wait_change(page, fig, before):
            raise AssertionError(f"checkbox {spec['label']!r} toggled but figure {spec['figure']!r} did not update")
        return (
            f"checkbox{'es' if len(targets) > 1 else ''} '{spec['label']}' ({len(targets)}) "
            f"→ figure '{spec['figure']}' updated"
        )
    if kind in ("hover", "click"):
        src, dst = _figure_index(page, spec["figure"]), _figure_index(page, spec["target"])
        before = _figure_state(page, dst)
        page.locator(".js-plotly-plot").nth(src).scroll_into_view_if_needed()
        x, y = _point(page, src, spec.get("at", 0.5))
        page.mouse.move(x - 30, y - 30)
        page.mouse.move(x, y, steps=5)
        if kind == "click":
            page.mouse.click(x, y)
        if not _wait_change(page, dst, before):
            raise AssertionError(
                f"{kind} on a point of {spec['figure']!r} did not change the figure {spec['target']!r}"
            )
        return f"{kind} on '{spec['figure']}' → '{spec['target']}' updated"
    if kind == "click_cell":  # a cell of a heatmap: a point at fractions `at` of a subplot's plot area
        src, dst = _figure_index(page, spec["figure"]), _figure_index(page, spec["target"])
        before = _figure_state(page, dst)
        page.locator(".js-plotly-plot").nth(src).scroll_into_view_if_needed()
        box = page.evaluate(
            """([i, sub]) => {
          const el = document.querySelectorAll('.js-plotly-plot')[i];
          const r = el.querySelector(`.nsewdrag[data-subplot="${sub}"]`) || el.querySelector('.nsewdrag');
          const b = r.getBoundingClientRect(); return {x: b.x, y: b.y, w: b.width, h: b.height};
        }""",
            [src, spec.get("subplot", "xy")],
        )
        fx, fy = spec.get("at", [0.5, 0.5])
        page.mouse.move(box["x"] + fx * box["w"], box["y"] + fy * box["h"], steps=5)
        page.mouse.click(box["x"] + fx * box["w"], box["y"] + fy * box["h"])
        if not _wait_change(page, dst, before):
            raise AssertionError(f"clicking a cell of {spec['figure']!r} did not change the figure {spec['target']!r}")
        return f"click on a cell of '{spec['figure']}' → '{spec['target']}' updated"
    raise ValueError(f"unknown interaction kind {kind!r}")


def _visible_plots(page) -> int:
    """Plots that are really drawn: a plotly SVG with a non-zero size (a widget whose front end failed
    can leave an empty, zero-size plot div behind)."""
    return page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].filter(el => {
        const svg = el.querySelector('svg.main-svg'); if (!svg) return false;
        const r = el.getBoundingClientRect(); return r.width > 20 && r.height > 20; }).length""")


def _run_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def _prompts(page) -> list[str]:
    return page.evaluate(
        "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim())"
    )


def _error_outputs(page) -> list[str]:
    return page.evaluate("""() => [...document.querySelectorAll('.jp-OutputArea-output')]
        .map(e => e.textContent).filter(t => /Traceback \\(most recent call last\\)|Error displaying widget|Failed to load model/.test(t))
        .map(t => t.slice(0, 400))""")  # noqa: E501 (embedded JavaScript / HTML)


def check_notebook(
    lab: JupyterLab, browser, notebook: Path, work: Path, shots: Path, *, timeout: float = 240.0
) -> dict:
    """Open ``notebook`` (a copy in ``work``, under the server root) in JupyterLab, run all cells,
    check the declared figures, widgets and interactions; save a full-page screenshot."""
    meta = json.loads(notebook.read_text())["metadata"].get("geoviz", {})
    work.mkdir(parents=True, exist_ok=True)
    copy = work / notebook.name
    shutil.copyfile(notebook, copy)
    rel = copy.resolve().relative_to(lab.root.resolve()).as_posix()
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    t0 = time.time()
    report = {"notebook": notebook.name, "interactions": []}
    try:
        page.goto(lab.notebook_url(rel), wait_until="domcontentloaded")
        page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=60_000)
        # the indicator reads idle before a kernel is attached: wait for the status bar's "<kernel> | Idle"
        page.wait_for_function(
            "() => /\\| Idle/.test(document.querySelector('.jp-StatusBar-Widget, "
            "#jp-main-statusbar')?.textContent || '')",
            timeout=90_000,
        )
        _run_all(page)
        deadline, retried = time.time() + timeout, False
        while True:
            prompts = _prompts(page)
            if not retried and time.time() - t0 > 20 and all(p in ("[ ]:", "") for p in prompts):
                _run_all(page)  # the first request went to a kernel that was still starting
                retried = True
            done = prompts and all(p.startswith("[") and p[1:-2].strip().isdigit() for p in prompts)
            errors = _error_outputs(page)
            if errors:
                raise AssertionError(f"{notebook.name}: a cell shows an error output: {errors[0]}")
            if done and page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count():
                break
            if time.time() > deadline:
                raise AssertionError(
                    f"{notebook.name}: cells still not finished after {timeout:.0f} s: prompts {prompts}"
                )
            page.wait_for_timeout(500)
        report["run_seconds"] = round(time.time() - t0, 1)
        page.wait_for_timeout(1500)  # let late widget views render
        errors = _error_outputs(page)
        if errors:
            raise AssertionError(f"{notebook.name}: a cell shows an error output: {errors[0]}")
        n_plots = _visible_plots(page)
        report["figures"] = n_plots
        if n_plots < meta.get("figures", 0):
            raise AssertionError(
                f"{notebook.name}: {n_plots} plotly figures rendered, the notebook declares {meta['figures']}"
            )
        for w in meta.get("widgets", []):
            if page.locator(WIDGET_CSS[w]).count() == 0:
                raise AssertionError(f"{notebook.name}: no {w} widget rendered")
        for spec in meta.get("interactions", []):
            report["interactions"].append(run_interaction(page, spec))
        height = page.evaluate(
            "() => Math.max(...[...document.querySelectorAll('.jp-WindowedPanel-outer, "
            ".jp-Notebook')].map(e => e.scrollHeight))"
        )
        page.set_viewport_size({"width": 1500, "height": int(min(max(height + 200, 1000), 16000))})
        page.evaluate(
            "() => document.querySelectorAll('.jp-WindowedPanel-outer, .jp-Notebook').forEach(e => e.scrollTop = 0)"
        )
        page.mouse.move(5, 5)  # no hover label on the screenshot
        page.wait_for_timeout(800)
        shots.mkdir(parents=True, exist_ok=True)
        shot = shots / f"{notebook.stem}.png"
        page.screenshot(path=str(shot), full_page=True)
        report["screenshot"] = str(shot)
    finally:
        report["seconds"] = round(time.time() - t0, 1)
        try:
            page.evaluate("() => 0")
            # shut the kernel down so kernels do not pile up across notebooks
            page.locator(".lm-MenuBar-itemLabel", has_text="Kernel").first.click(timeout=2000)
            page.locator(".lm-Menu-itemLabel", has_text="Shut Down Kernel").first.click(timeout=2000)
        except Exception:
            pass
        page.close()
    return report
