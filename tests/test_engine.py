import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from geoviz._io import atomic_torch_save, load_weights_only
from geoviz.capture import MemoryBudgetError
from geoviz.engine import TeacherCache, choose_backend, ddp_device, evaluate, fit, rng_state, set_rng_state
from geoviz.models import build_model
from geoviz.runs import RunDir


def _blobs(n, seed):
    """A linearly separable 3-class image problem: the class sets the mean of one channel."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.3 * torch.randn(n, 3, 8, 8, generator=g)
    x[torch.arange(n), y] += 1.0
    return TensorDataset(x, y)


class _Noisy(Dataset):
    """Blobs with fresh noise at every access, drawn from torch's, NumPy's and Python's global
    generators: a resumed run only matches an uninterrupted one if all three are restored."""

    def __init__(self, n, seed):
        self.base = _blobs(n, seed)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        scale = 0.1 + 0.05 * float(np.random.rand()) + 0.05 * random.random()
        return x + scale * torch.randn_like(x), y


def test_fit_learns_and_reports_both_test_accuracies(tmp_path):
    seen = []
    res = fit(
        build_model("resnet8", 3),
        _blobs(96, 0),
        _blobs(48, 1),
        test=_blobs(48, 2),
        epochs=3,
        lr=0.05,
        batch_size=16,
        run=RunDir("t", tmp_path),
        callbacks=[lambda s: seen.append(s.epoch) or s.metrics.update(extra=1.0)],
    )
    assert seen == [1, 2, 3] and res.history[-1]["extra"] == 1.0
    assert res.summary["test_acc_last"] > 0.9 and "test_acc_best_val" in res.summary
    metrics = RunDir("t", tmp_path).read_metrics()
    assert metrics["status"] == "finished" and len(metrics["epochs"]) == 3
    assert evaluate(res.model, _blobs(48, 2))["acc"] == res.summary["test_acc_last"]


# the devices this machine has: CUDA runs too where there is a GPU (deterministic kernels for bit-exactness)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _train(tmp_path, name, stop_at=None, device="cpu", **kw):
    torch.manual_seed(0)
    m = build_model("resnet8", 3)

    def interrupt(state):
        if state.epoch == stop_at:  # before this epoch's checkpoint: the last one is epoch - 1
            raise KeyboardInterrupt

    fit(
        m,
        _Noisy(64, 0),
        _blobs(32, 1),
        epochs=3,
        lr=0.05,
        batch_size=16,
        run=RunDir(name, tmp_path),
        seed=3,
        callbacks=[interrupt],
        device=device,
        deterministic=device != "cpu",
        **kw,
    )
    return m


def _interrupted_and_resumed(tmp_path, **kw):
    straight = _train(tmp_path, "straight", **kw)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "resumed", stop_at=3, **kw)
    assert RunDir("resumed", tmp_path).load_checkpoint()["epoch"] == 2
    # a new process starts with other generator states: only the checkpoint's can make the noise match
    torch.manual_seed(12345), np.random.seed(12345), random.seed(12345)
    resumed = _train(tmp_path, "resumed", **kw)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert len(RunDir("resumed", tmp_path).read_metrics()["epochs"]) == 3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("amp, workers", [("off", 0), ("fp16", 0), ("off", 2)])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, device, amp, workers):
    _interrupted_and_resumed(tmp_path, device=device, amp=amp, num_workers=workers)
    with pytest.raises(ValueError, match=r"other training settings \{'epochs': \(3, 5\)\}"):
        fit(
            build_model("resnet8", 3),
            _blobs(64, 0),
            epochs=5,
            lr=0.05,
            batch_size=16,
            run=RunDir("resumed", tmp_path),
            seed=3,
            amp=amp,
        )


def test_resume_restores_the_fp16_loss_scale(tmp_path, monkeypatch):
    """With a scale that grows every step (and backs off on overflow) the scale changes within an
    epoch; a resumed run only matches if the checkpoint's scale is put back."""
    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **kw: real(*a, growth_interval=1, **kw))
    _interrupted_and_resumed(tmp_path, amp="fp16")
    scales = [RunDir(n, tmp_path).load_checkpoint()["scaler"]["scale"] for n in ("straight", "resumed")]
    assert scales[0] == scales[1] != 65536.0  # it moved, and both runs ended at the same scale


def test_fp16_trains_with_loss_scaling_and_amp_may_change_on_resume(tmp_path):
    res = fit(
        build_model("resnet8", 3),
        _blobs(96, 0),
        _blobs(48, 1),
        epochs=3,
        lr=0.05,
        batch_size=16,
        amp="fp16",
        device="cpu",
        run=RunDir("fp16", tmp_path),
    )
    ck = RunDir("fp16", tmp_path).load_checkpoint()
    assert (
        ck["scaler"]["scale"] > 1
        and all(r["loss_scale"] > 1 for r in res.history)
        and res.summary["val_acc_best"] > 0.9
    )

    def stop(state):
        if state.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(
            build_model("resnet8", 3),
            _blobs(96, 0),
            epochs=3,
            batch_size=16,
            amp="fp16",
            device="cpu",
            run=RunDir("switch", tmp_path),
            callbacks=[stop],
        )
    more = fit(
        build_model("resnet8", 3),
        _blobs(96, 0),
        epochs=3,
        batch_size=16,
        amp="off",
        device="cpu",
        run=RunDir("switch", tmp_path),
    )
    assert (
        [r["epoch"] for r in more.history] == [1, 2, 3]
        and "loss_scale" in more.history[0]
        and "loss_scale" not in more.history[2]
    )


def test_resuming_with_another_architecture_names_it(tmp_path):
    fit(build_model("resnet8", 3), _blobs(32, 0), epochs=1, batch_size=16, run=RunDir("arch", tmp_path), device="cpu")
    with pytest.raises(ValueError, match=r"other training settings \{'model': .*'resnet8'.*'resnet14'"):
        fit(
            build_model("resnet14", 3),
            _blobs(32, 0),
            epochs=1,
            batch_size=16,
            run=RunDir("arch", tmp_path),
            device="cpu",
        )
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    plain(torch.zeros(1, 3, 8, 8))
    fit(plain, _blobs(32, 0), epochs=1, batch_size=16, run=RunDir("plain", tmp_path), device="cpu")
    wider = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3))
    wider(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"other training settings \{'model'"):
        fit(wider, _blobs(32, 0), epochs=1, batch_size=16, run=RunDir("plain", tmp_path), device="cpu")


def test_each_rank_of_a_distributed_run_restores_its_own_generators():
    torch.manual_seed(1)
    rank0 = rng_state()
    torch.manual_seed(2)
    rank1 = rng_state()
    expected = torch.rand(3)
    torch.manual_seed(0)
    set_rng_state({"ranks": [rank0, rank1]}, rank=1)
    assert torch.equal(torch.rand(3), expected)
    with pytest.warns(UserWarning, match="holds generator states of 2 process"):
        set_rng_state({"ranks": [rank0, rank1]}, rank=3)


def test_rng_state_round_trips_through_a_checkpoint_file(tmp_path):
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    atomic_torch_save({"rng": rng_state()}, tmp_path / "ck.pt")
    expected = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    set_rng_state(load_weights_only(tmp_path / "ck.pt")["rng"])  # weights_only: every part must be a plain type
    got = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]
    # an older checkpoint's bare CPU state still restores
    torch.manual_seed(3)
    bare = torch.get_rng_state()
    a = torch.rand(3)
    set_rng_state(bare)
    assert torch.equal(a, torch.rand(3))


def test_cuda_generator_states_are_saved_and_restored_as_cpu_byte_tensors(tmp_path, monkeypatch):
    """What a GPU machine does, simulated on the CPU: the CUDA states go into the checkpoint, come
    back from a CPU load, and reach torch.cuda as CPU ByteTensors (a CUDA tensor there raised
    'RNG state must be a torch.ByteTensor' before)."""
    fake = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(fake))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.extend(states))
    atomic_torch_save({"rng": rng_state()}, tmp_path / "ck.pt")
    state = load_weights_only(tmp_path / "ck.pt")["rng"]
    state["cuda"] = [s.to(torch.int64) for s in state["cuda"]]  # whatever dtype a loader hands back
    set_rng_state(state)
    assert len(restored) == 2 and all(s.device.type == "cpu" and s.dtype == torch.uint8 for s in restored)
    assert all(torch.equal(a, b) for a, b in zip(restored, fake))
    # the same checkpoint resumed where there is no CUDA: the CPU state is restored, with a warning
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="CUDA is not available here"):
        set_rng_state(state)


def test_resume_loads_the_checkpoint_onto_the_cpu(tmp_path, monkeypatch):
    fit(build_model("resnet8", 3), _blobs(32, 0), epochs=1, batch_size=16, run=RunDir("cpu", tmp_path), device="cpu")
    seen = []
    original = RunDir.load_checkpoint

    def spy(self, name="last.pt", map_location="cpu"):
        seen.append(map_location)
        return original(self, name, map_location)

    monkeypatch.setattr(RunDir, "load_checkpoint", spy)
    fit(
        build_model("resnet8", 3),
        _blobs(32, 0),
        epochs=1,
        batch_size=16,
        run=RunDir("cpu", tmp_path),
        device=torch.device("cpu"),
    )
    assert seen and all(m == "cpu" for m in seen)


def test_deterministic_mode_is_on_during_fit_and_restored_after():
    inside = []
    before = torch.are_deterministic_algorithms_enabled()
    fit(
        build_model("resnet8", 3),
        _blobs(32, 0),
        epochs=1,
        batch_size=16,
        device="cpu",
        deterministic=True,
        callbacks=[
            lambda s: inside.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark))
        ],
    )
    assert inside == [(True, False)] and torch.are_deterministic_algorithms_enabled() == before


def test_model_keeps_its_mode_when_the_setup_forward_raises():
    class Fails(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = build_model("resnet8", 3)

        def forward(self, x):
            if not self.training:
                raise RuntimeError("boom in eval mode")
            return self.net(x)

    m, t = Fails(), build_model("resnet8", 3)
    with pytest.raises(RuntimeError, match="boom"):
        fit(
            m,
            _blobs(16, 0),
            teacher=t,
            terms=["ce", {"name": "at", "pairs": {"net.layer2": "layer2"}}],
            epochs=1,
            device="cpu",
        )
    assert m.training


def test_nan_in_the_input_is_called_a_data_problem():
    x, y = _blobs(32, 0).tensors
    x[5, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"input batch holds 1 NaN/inf value.*data are broken"):
        fit(build_model("resnet8", 3), TensorDataset(x, y), epochs=1, batch_size=32, device="cpu")
    with pytest.raises(FloatingPointError, match="lower the learning rate"):  # a real divergence keeps that advice
        fit(build_model("resnet8", 3), _blobs(32, 0), epochs=3, batch_size=8, lr=1e12, momentum=0.0, device="cpu")


def test_dataloaders_are_accepted_where_they_can_be_and_refused_clearly_where_not():
    loader = DataLoader(_blobs(96, 0), batch_size=16, shuffle=True)
    res = fit(build_model("resnet8", 3), loader, _blobs(48, 1), epochs=3, lr=0.05, device="cpu")
    assert res.summary["val_acc_best"] > 0.9
    t = build_model("resnet8", 3)

    class Fixed(TensorDataset):
        deterministic = True

    ds = Fixed(*_blobs(32, 0).tensors)
    cache = TeacherCache(t, ds, ["layer3"], device="cpu")
    with pytest.raises(TypeError, match="teacher_cache needs the training Dataset .* not a DataLoader"):
        fit(
            build_model("resnet8", 3),
            DataLoader(ds, batch_size=8),
            teacher=t,
            teacher_cache=cache,
            terms=["ce", "kd"],
            epochs=1,
        )


def test_teacher_cache_estimates_its_size_and_refuses_over_budget():
    class Fixed(TensorDataset):
        deterministic = True

    t, ds = build_model("resnet8", 3), Fixed(*_blobs(40, 0).tensors)
    est = TeacherCache.estimate_bytes(t, ds, ["layer2", "layer3"], device="cpu")
    cache = TeacherCache(t, ds, ["layer2", "layer3"], device="cpu")
    # independently: logits (3) + layer2 (32×4×4) + layer3 (64×2×2) float32 values per image
    assert est == cache.nbytes() == 40 * 4 * (3 + 32 * 4 * 4 + 64 * 2 * 2)
    with pytest.raises(
        MemoryBudgetError, match=r"would hold 120\.5 KiB, over max_bytes=10\.0 KiB\. Train without a cache"
    ):
        TeacherCache(t, ds, ["layer2", "layer3"], device="cpu", max_bytes=10 * 1024)


def test_bad_arguments(monkeypatch):
    m = build_model("resnet8", 3)
    for kw, msg in [
        (dict(epochs=0), "epochs must be >= 1, got 0"),
        (dict(epochs="two"), r"epochs must be a whole number, got 'two' \(str\)"),
        (dict(lr=-1), "lr must be > 0, got -1"),
        (dict(lr=float("nan")), "lr must be a finite number, got nan"),
        (dict(momentum=1.5), "momentum must be < 1, got 1.5"),
        (dict(seed=2**40), "seed must be <= 4294967295"),
        (dict(warmup_epochs=20, epochs=10), "warmup_epochs must be <= 10, got 20"),
        (dict(amp="fp32"), "unknown amp 'fp32'"),
        (dict(milestones=(50, 75)), r"each of milestones \(fractions of training\) must be < 1, got 50"),
        (dict(optimizer="adam"), "unknown optimizer 'adam'"),
    ]:
        with pytest.raises((ValueError, TypeError), match=msg):
            fit(m, _blobs(8, 0), **kw)
    with pytest.raises(TypeError, match="torch Dataset or DataLoader"):
        fit(m, [1, 2, 3], epochs=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on machines with and without a GPU
    with pytest.raises(ValueError, match="CUDA is not available here"):
        fit(m, _blobs(8, 0), epochs=1, device="cuda")


def test_distributed_backend_and_device_per_process(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert choose_backend(cpu, 2, 0) == "gloo"
    assert choose_backend(gpu, 2, 2) == "nccl" and choose_backend(gpu, 1, 8) == "nccl"
    with pytest.warns(UserWarning, match="2 processes per node but 1 GPU"):
        assert choose_backend(gpu, 2, 1) == "gloo"
    monkeypatch.setenv("GEOVIZ_DIST_BACKEND", "nccl")  # e.g. one GPU visible per process
    assert choose_backend(gpu, 8, 1) == "nccl"
    monkeypatch.delenv("GEOVIZ_DIST_BACKEND")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ddp_device("auto") == torch.device("cuda", 0)  # two processes share the one GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert ddp_device("auto") == torch.device("cuda", 1) and ddp_device("cpu") == cpu
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="'cuda:0' under torchrun would put every process on the same GPU"):
        ddp_device("cuda:0")


def test_unlabelled_images_feed_the_teacher_terms_only():
    from geoviz.losses.terms import Term

    class Recorder(Term):
        name = "recorder"
        needs_teacher = True
        seen: list = []

        def forward(self, inp):
            Recorder.seen.append(
                (inp.logits.shape[0], len(inp.targets), inp.teacher_logits.shape[0], inp.labelled_logits.shape[0])
            )
            return (inp.logits - inp.teacher_logits).square().mean()

    torch.manual_seed(0)
    teacher = build_model("resnet8", 3)
    labelled, pool = _blobs(24, 0), _blobs(40, 5)
    fit(
        build_model("resnet8", 3),
        labelled,
        teacher=teacher,
        terms=["ce", Recorder()],
        epochs=2,
        batch_size=8,
        unlabelled=pool,
        unlabelled_batch_size=5,
        device="cpu",
    )
    assert Recorder.seen and all(s == (13, 8, 13, 8) for s in Recorder.seen) and len(Recorder.seen) == 6
    with pytest.raises(ValueError, match="unlabelled data feed the terms that need a teacher"):
        fit(build_model("resnet8", 3), labelled, terms=["ce"], epochs=1, unlabelled=pool)
    with pytest.raises(TypeError, match="unlabelled: pass a Dataset"):
        fit(
            build_model("resnet8", 3),
            labelled,
            teacher=teacher,
            terms=["ce", "kd"],
            epochs=1,
            unlabelled=DataLoader(pool),
        )


def test_a_student_learns_the_teachers_function_from_unlabelled_images():
    """KD on unlabelled images only (no labels at all): the student moves towards the teacher's
    predictions on held-out images, far more than without them."""
    torch.manual_seed(0)
    teacher = build_model("resnet8", 3)
    fit(teacher, _blobs(120, 0), epochs=4, lr=0.05, batch_size=16, device="cpu")
    # the labelled images all come from one class: only the unlabelled pool shows the other two
    few, pool, held = torch.utils.data.Subset(_blobs(120, 0), range(0, 18, 3)), _blobs(200, 7), _blobs(90, 8)
    t_pred = teacher.eval()(held.tensors[0]).argmax(1)

    def agreement(unlabelled):
        torch.manual_seed(1)
        s = build_model("resnet8", 3)
        fit(
            s,
            few,
            teacher=teacher,
            terms=[{"name": "kd", "T": 4.0}],
            epochs=6,
            lr=0.05,
            batch_size=6,
            device="cpu",
            unlabelled=unlabelled,
            unlabelled_batch_size=32,
        )
        return (s.eval()(held.tensors[0]).argmax(1) == t_pred).float().mean().item()

    with_pool, without = agreement(pool), agreement(None)
    assert with_pool > 0.9 and with_pool > without + 0.2, (with_pool, without)


def test_teacher_cache_covers_an_unlabelled_subset_of_its_data_set():
    class Fixed(TensorDataset):
        deterministic = True

    ds = Fixed(*_blobs(48, 0).tensors)
    t = build_model("resnet8", 3)
    cache = TeacherCache(t, ds, ["layer3"], device="cpu")
    labelled, rest = torch.utils.data.Subset(ds, range(16)), torch.utils.data.Subset(ds, range(16, 48))
    res = fit(
        build_model("resnet8", 3),
        labelled,
        teacher=t,
        teacher_cache=cache,
        epochs=1,
        batch_size=8,
        device="cpu",
        terms=["ce", "kd", {"name": "geometric", "pairs": {"layer3": "layer3"}, "m": 32}],
        unlabelled=rest,
    )
    assert len(res.history) == 1
    with pytest.raises(ValueError, match="another data set"):
        fit(
            build_model("resnet8", 3),
            labelled,
            teacher=t,
            teacher_cache=cache,
            terms=["ce", "kd"],
            epochs=1,
            unlabelled=_blobs(8, 3),
        )


def _train_with_unlabelled(tmp_path, name, *, cache: bool, stop_at=None):
    """A student with CE, KD and geometric terms; 32 labelled and 64 unlabelled images of one data set."""

    class Fixed(TensorDataset):
        deterministic = True

    torch.manual_seed(0)
    teacher = build_model("resnet8", 3).eval()
    student = build_model("resnet8", 3)
    full = Fixed(*_blobs(96, 0).tensors)
    labelled, rest = torch.utils.data.Subset(full, range(32)), torch.utils.data.Subset(full, range(32, 96))

    def interrupt(state):
        if state.epoch == stop_at:
            raise KeyboardInterrupt

    fit(
        student,
        labelled,
        _blobs(24, 1),
        teacher=teacher,
        teacher_cache=TeacherCache(teacher, full, ["layer3"], device="cpu") if cache else None,
        terms=["ce", "kd", {"name": "geometric", "pairs": {"layer3": "layer3"}, "m": 32}],
        epochs=3,
        lr=0.05,
        batch_size=8,
        seed=3,
        device="cpu",
        unlabelled=rest,
        run=RunDir(name, tmp_path),
        callbacks=[interrupt],
    )
    return student


def test_cached_teacher_outputs_for_unlabelled_images_are_the_right_ones(tmp_path):
    """With the cache the unlabelled rows must get their own teacher outputs (looked up by their
    indices): training then ends where training with the teacher run every step ends."""
    a = _train_with_unlabelled(tmp_path, "nocache", cache=False)
    b = _train_with_unlabelled(tmp_path, "cache", cache=True)
    worst = max(
        (x.float() - y.float()).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values())
    )
    assert worst < 1e-4, worst


def test_resume_with_unlabelled_images_is_exact(tmp_path):
    straight = _train_with_unlabelled(tmp_path, "straight", cache=True)
    with pytest.raises(KeyboardInterrupt):
        _train_with_unlabelled(tmp_path, "resumed", cache=True, stop_at=3)
    torch.manual_seed(12345), np.random.seed(12345), random.seed(12345)
    resumed = _train_with_unlabelled(tmp_path, "resumed", cache=True)
    for (k, x), y in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(x, y), k


def test_epoch_size_makes_passes_in_their_own_orders_and_resumes_exactly(tmp_path):
    seen = []

    class Spy(TensorDataset):
        def __getitem__(self, i):
            seen.append(i)
            return super().__getitem__(i)

    data = Spy(*_blobs(10, 0).tensors)
    fit(build_model("resnet8", 3), data, epochs=1, batch_size=5, epoch_size=30, device="cpu")
    seen = seen[len(seen) - 30 :]  # the example batch fit draws first is not part of the epoch
    assert [sorted(seen[i : i + 10]) for i in (0, 10, 20)] == [list(range(10))] * 3  # three whole passes
    assert seen[:10] != seen[10:20]  # each in its own order
    with pytest.raises(ValueError, match="epoch_size must be >= 5"):
        fit(build_model("resnet8", 3), data, epochs=1, batch_size=5, epoch_size=3)
