"""fit under DistributedDataParallel: two CPU processes with gloo end with identical weights."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from geoviz.datasets import get_dataset
    from geoviz.engine import fit
    from geoviz.models import build_model
    from geoviz.runs import RunDir

    torch.manual_seed(0)  # same initial weights on both ranks (DDP also broadcasts rank 0's)
    student, teacher = build_model("resnet8", 10), build_model("resnet14", 10)
    train = get_dataset("shapes10", "train", n=128)
    terms = [
        "ce",
        {"name": "kd"},
        {"name": "geometric", "pairs": {"layer2": "layer2"}, "m": 64},
        {"name": "fitnet", "pairs": {"layer3": "layer3"}, "weight": 1.0},
    ]
    res = fit(
        student,
        train,
        teacher=teacher,
        terms=terms,
        epochs=2,
        lr=0.05,
        batch_size=32,
        device="cpu",
        progress=False,
        run=RunDir("run", os.path.join(out_dir, f"rank{rank}")),
    )  # each rank its own folder: who wrote?
    state = {"student": student.state_dict(), "terms": [t.state_dict() for t in res.terms]}
    torch.save(state, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn")
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a["student"].keys() == b["student"].keys()
    for k in a["student"]:
        assert torch.equal(a["student"][k], b["student"][k]), k
    hint = a["terms"][3]  # FitNet's regressor (conv + BN): trained and synchronised with the student
    assert "hints.0.regressor.0.weight" in hint and all(torch.equal(v, b["terms"][3][k]) for k, v in hint.items())
    # the weights moved: DDP trained something
    torch.manual_seed(0)
    from geoviz.models import build_model

    init = build_model("resnet8", 10).state_dict()
    assert not torch.equal(init["conv1.weight"], a["student"]["conv1.weight"])
    # only rank 0 wrote its run: metrics of both epochs and a checkpoint; rank 1's folder stayed empty
    written = json.loads((tmp_path / "rank0" / "run" / "metrics.json").read_text())
    assert [r["epoch"] for r in written["epochs"]] == [1, 2] and (tmp_path / "rank0" / "run" / "last.pt").is_file()
    ck = torch.load(tmp_path / "rank0" / "run" / "last.pt", weights_only=True)
    assert len(ck["rng"]["ranks"]) == 2  # each rank's generators, so that each resumes its own
    assert list((tmp_path / "rank1" / "run").iterdir()) == []
