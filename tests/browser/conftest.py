import os
import tempfile
from pathlib import Path

import pytest

from .lab import CHROMIUM_FLAGS, JupyterLab, ensure_chromium

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "runs" / "browser"


@pytest.fixture(scope="session")
def browser():
    path = ensure_chromium()
    if path is None:
        pytest.skip(
            "Debian's chromium is missing and cannot be installed without root: `sudo apt-get install -y chromium`"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def lab():
    state = Path(tempfile.mkdtemp(prefix="geoviz-lab-"))
    runs = Path(os.environ.get("GEOVIZ_RUNS", ROOT / "runs" / "test" / "browser")).resolve()
    # kernels inherit this environment: CI's smoke profile, and runs kept out of the notebooks folder
    env = {"GEOVIZ_PROFILE": os.environ.get("GEOVIZ_PROFILE", "smoke"), "GEOVIZ_RUNS": str(runs)}
    server = JupyterLab(root=ROOT, state=state, env=env).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def workdir():
    d = ROOT / "runs" / "browser" / "work"
    d.mkdir(parents=True, exist_ok=True)
    return d
