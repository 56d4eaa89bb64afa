import os
import socket

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


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the internet fails at once, as it would on CI and these machines."""

    def refuse(*a, **k):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
