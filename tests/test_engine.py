import pytest
import torch
from torch.utils.data import TensorDataset

from geoviz.engine import evaluate, fit
from geoviz.models import build_model
from geoviz.runs import RunDir


def _blobs(n, seed):
    """A linearly separable 3-class image problem: the class sets the mean of one channel."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.3 * torch.randn(n, 3, 8, 8, generator=g)
    x[torch.arange(n), y] += 1.0
    return TensorDataset(x, y)


def test_fit_learns_and_reports_both_test_accuracies(tmp_path):
    seen = []
    res = fit(build_model("resnet8", 3), _blobs(96, 0), _blobs(48, 1), test=_blobs(48, 2), epochs=3, lr=0.05,
              batch_size=16, run=RunDir("t", tmp_path), callbacks=[lambda s: seen.append(s.epoch) or s.metrics.update(extra=1.0)])
    assert seen == [1, 2, 3] and res.history[-1]["extra"] == 1.0
    assert res.summary["test_acc_last"] > 0.9 and "test_acc_best_val" in res.summary
    metrics = RunDir("t", tmp_path).read_metrics()
    assert metrics["status"] == "finished" and len(metrics["epochs"]) == 3
    assert evaluate(res.model, _blobs(48, 2))["acc"] == res.summary["test_acc_last"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    def train(name, stop_at=None):
        torch.manual_seed(0)
        m = build_model("resnet8", 3)

        def interrupt(state):
            if state.epoch == stop_at:  # before this epoch's checkpoint: the last one is epoch - 1
                raise KeyboardInterrupt

        fit(m, _blobs(64, 0), _blobs(32, 1), epochs=3, lr=0.05, batch_size=16, run=RunDir(name, tmp_path), seed=3, callbacks=[interrupt])
        return m

    straight = train("straight")
    with pytest.raises(KeyboardInterrupt):
        train("resumed", stop_at=3)
    assert RunDir("resumed", tmp_path).load_checkpoint()["epoch"] == 2
    resumed = train("resumed")  # a new process would rebuild the model; the checkpoint restores it
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert len(RunDir("resumed", tmp_path).read_metrics()["epochs"]) == 3
    with pytest.raises(ValueError, match=r"other training settings \{'epochs': \(3, 5\)\}"):
        fit(build_model("resnet8", 3), _blobs(64, 0), epochs=5, lr=0.05, batch_size=16, run=RunDir("resumed", tmp_path), seed=3)


def test_bad_arguments():
    m = build_model("resnet8", 3)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        fit(m, _blobs(8, 0), epochs=0)
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        fit(m, _blobs(8, 0), epochs=1, optimizer="adam")
    with pytest.raises(TypeError, match="torch Dataset or DataLoader"):
        fit(m, [1, 2, 3], epochs=1)
    with pytest.raises(ValueError, match="CUDA is not available"):
        fit(m, _blobs(8, 0), epochs=1, device="cuda") if not torch.cuda.is_available() else (_ for _ in ()).throw(ValueError("CUDA is not available"))
