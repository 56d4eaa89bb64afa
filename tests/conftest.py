import os

import pytest
import torch

os.environ.setdefault("GEOVIZ_PROGRESS", "0")
# two xdist workers on two cores: one thread each avoids oversubscription
torch.set_num_threads(1)


@pytest.fixture
def run_root(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("GEOVIZ_RUNS", str(root))
    return root
