"""Tensor-backed data sets batched by index on the device (``DeviceLoader``): the same batches as the
per-item DataLoader, the same training, batched augmentation equal to a NumPy reference."""

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from geoviz.datasets import get_dataset
from geoviz.datasets._batched import batch_source, crop_flip
from geoviz.datasets.defects import leather
from geoviz.datasets.images import TensorImages
from geoviz.datasets.probe_tasks import ProbeDataset
from geoviz.datasets.regression import ShapeSizeDataset
from geoviz.engine import TeacherCache, fit
from geoviz.inference import DeviceLoader, as_loader, predict
from geoviz.models import build_model
from geoviz.runs import RunDir

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _crop_flip_numpy(x: np.ndarray, offsets: np.ndarray, flips: np.ndarray, pad: int = 4) -> np.ndarray:
    out = np.empty_like(x)
    h, w = x.shape[-2:]
    for b in range(len(x)):
        p = np.pad(x[b], ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        crop = p[:, offsets[b, 0] : offsets[b, 0] + h, offsets[b, 1] : offsets[b, 1] + w]
        out[b] = crop[:, :, ::-1] if flips[b] else crop
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_batched_crop_and_flip_match_numpy_per_image(device):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7, 3, 12, 20, generator=g)  # not square: rows and columns must not be swapped
    offsets = torch.randint(0, 9, (7, 2), generator=g)
    offsets[0] = torch.tensor([0, 8])  # the extreme offsets
    offsets[1] = torch.tensor([8, 0])
    flips = torch.tensor([True, False, True, False, True, True, False])
    got = crop_flip(x.to(device), offsets, flips).cpu().numpy()
    np.testing.assert_array_equal(got, _crop_flip_numpy(x.numpy(), offsets.numpy(), flips.numpy()))


def test_augmentation_keeps_the_image_size():
    """The crop used to be 32 × 32 whatever the image (a 64 × 64 defect image trained on a corner)."""
    ds = leather("train", n=8, size=48, augment=True)
    assert ds[0][0].shape == (3, 48, 48)
    x = next(iter(as_loader(ds, 4, device="cpu")))[0]
    assert x.shape == (4, 3, 48, 48)


def _same_batches(data, device="cpu", **kw):
    torch.manual_seed(5)
    per_item = [[t.cpu() for t in b] for b in as_loader(data, 6, **kw)]
    torch.manual_seed(5)
    loader = as_loader(data, 6, device=device, **kw)
    assert isinstance(loader, DeviceLoader)
    batched = [[t.cpu() if torch.is_tensor(t) else t for t in b] for b in loader]
    assert len(per_item) == len(batched) == len(loader)
    for a, b in zip(per_item, batched):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            assert u.dtype == v.dtype and torch.equal(u, v)


@pytest.mark.parametrize("device", DEVICES)
def test_device_batches_are_the_per_item_loaders_batches(device):
    shapes = get_dataset("shapes10", "train", n=40)
    _same_batches(shapes, device)
    _same_batches(Subset(shapes, [3, 1, 4, 1, 5, 9, 2, 6, 35, 38, 7]), device, shuffle=True, seed=2)
    _same_batches(Subset(Subset(shapes, list(range(10, 40))), range(0, 30, 3)), device)
    _same_batches(ShapeSizeDataset(20, seed=1), device)  # float targets
    _same_batches(ProbeDataset("E1", n_per_class=4, imagenet_norm=True), device)  # a batched normalisation
    _same_batches(
        TensorImages(torch.randint(0, 256, (13, 1, 9, 9), dtype=torch.uint8), torch.arange(13) % 2, ["a", "b"]),
        device,
        shuffle=True,
        seed=0,
        drop_last=True,
    )


def test_teacher_cache_indices_travel_with_device_batches():
    shapes = get_dataset("shapes10", "train", n=30)
    cache = TeacherCache(build_model("resnet8", 10), shapes, [], device="cpu")
    _same_batches(cache.indexed(shapes), shuffle=True, seed=1)
    sub = Subset(shapes, [29, 0, 17, 4, 4, 11])
    _same_batches(cache.indexed(sub))
    ids = torch.cat([b[2] for b in as_loader(cache.indexed(sub), 4, device="cpu")])
    assert ids.tolist() == [29, 0, 17, 4, 4, 11]


def test_data_without_a_batch_source_keep_the_data_loader():
    shapes = get_dataset("shapes10", "train", n=10)
    shapes.transform = lambda x: x.flip(-1)  # a per-item transform: only __getitem__ knows it
    assert batch_source(shapes) is None
    assert type(as_loader(shapes, 4, device="cpu")) is DataLoader


def test_augmented_device_batches_are_crops_of_the_stored_images():
    ds = TensorImages(
        torch.randint(0, 256, (9, 3, 16, 16), dtype=torch.uint8), torch.arange(9) % 3, "abc", augment=True
    )
    torch.manual_seed(0)
    x, y = next(iter(as_loader(ds, 9, device="cpu")))
    torch.manual_seed(0)
    torch.empty((), dtype=torch.int64).random_()  # the loader's base-seed draw
    offsets, flips = torch.randint(0, 9, (9, 2)), torch.rand(9) < 0.5
    want = _crop_flip_numpy(ds.images.float().numpy() / 255.0, offsets.numpy(), flips.numpy())
    np.testing.assert_allclose(x.numpy(), want, rtol=0, atol=1e-7)
    assert 0 < flips.sum() < 9 and y.tolist() == ds.labels.tolist()


@pytest.mark.parametrize("device", DEVICES)
def test_fit_on_device_batches_trains_exactly_as_the_per_item_loader(device):
    shapes = get_dataset("shapes10", "train", n=96)
    val = get_dataset("shapes10", "val", n=40)
    states, summaries = [], []
    for device_data in (False, True):
        torch.manual_seed(0)
        m = build_model("resnet8", 10)
        r = fit(
            m,
            Subset(shapes, list(range(0, 96, 2))),
            val,
            test=val,
            epochs=2,
            batch_size=16,
            lr=0.05,
            device=device,
            progress=False,
            device_data=device_data,
            deterministic=device != "cpu",
        )
        states.append({k: v.cpu() for k, v in m.state_dict().items()})
        summaries.append(r.summary)
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    assert summaries[0] == summaries[1]


def _train_augmented(tmp_path, name, stop_at=None):
    torch.manual_seed(0)
    ds = TensorImages(
        torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)),
        torch.arange(48) % 3,
        "abc",
        augment=True,
    )
    m = build_model("resnet8", 3)

    def interrupt(state):
        if state.epoch == stop_at:
            raise KeyboardInterrupt

    fit(
        m,
        ds,
        epochs=3,
        batch_size=16,
        lr=0.05,
        run=RunDir(name, tmp_path),
        seed=3,
        callbacks=[interrupt],
        device="cpu",
        progress=False,
    )
    return m


def test_resume_with_batched_augmentation_matches_the_uninterrupted_run(tmp_path):
    straight = _train_augmented(tmp_path, "straight")
    with pytest.raises(KeyboardInterrupt):
        _train_augmented(tmp_path, "resumed", stop_at=3)
    torch.manual_seed(12345), np.random.seed(12345), random.seed(12345)
    resumed = _train_augmented(tmp_path, "resumed")
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_predict_on_device_batches_returns_cpu_labels():
    shapes = get_dataset("shapes10", "test", n=12)
    logits, labels = predict(build_model("resnet8", 10), shapes, device="cpu", batch_size=5)
    assert logits.shape == (12, 10) and labels.tolist() == shapes.labels.tolist() and labels.device.type == "cpu"


def test_a_subclass_that_reads_items_its_own_way_is_not_batched_around_it():
    class Noisy(TensorImages):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return x + 0.01, y

    ds = Noisy(torch.zeros(6, 1, 4, 4, dtype=torch.uint8), torch.arange(6) % 2, "ab")
    assert batch_source(ds) is None and type(as_loader(ds, 3, device="cpu")) is DataLoader
    assert batch_source(TensorImages(ds.images, ds.labels, "ab")) is not None

    class NoisySubset(Subset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return x + 0.01, y

        def __getitems__(self, indices):  # torch asks for it beside an overridden __getitem__
            return [self[i] for i in indices]

    plain = TensorImages(ds.images, ds.labels, "ab")
    assert batch_source(NoisySubset(plain, [0, 1])) is None and batch_source(Subset(plain, [0, 1])) is not None
    with pytest.raises(TypeError, match="uint8"):
        from geoviz.datasets._batched import BatchSource

        BatchSource(torch.zeros(2, 1, 4, 4), torch.zeros(2))


def test_a_resume_may_not_switch_how_augmentation_draws(tmp_path):
    ds = TensorImages(torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8), torch.arange(32) % 2, "ab", augment=True)
    fit(build_model("resnet8", 2), ds, epochs=1, batch_size=8, run=RunDir("r", tmp_path), device="cpu", progress=False)
    with pytest.raises(ValueError, match="augmentation_draws"):
        fit(
            build_model("resnet8", 2),
            ds,
            epochs=1,
            batch_size=8,
            run=RunDir("r", tmp_path),
            device="cpu",
            progress=False,
            device_data=False,
        )


def test_compiled_training_with_recorded_layers_matches_eager(monkeypatch):
    """torch.compile traces through the layer hooks a geometric term needs (the "eager" backend:
    the same kernels, so the same numbers)."""
    compiled, real = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled.append(kw) or real(m, **kw))
    data = get_dataset("shapes10", "train", n=32)
    teacher = build_model("resnet14", 10)
    terms = ["ce", {"name": "geometric", "pairs": {"layer2": "layer2"}, "m": 16}]
    states = []
    for compile in (False, "eager"):
        torch.manual_seed(0)
        m = build_model("resnet8", 10)
        fit(
            m, data, epochs=1, batch_size=8, teacher=teacher, terms=terms, device="cpu", progress=False, compile=compile
        )
        states.append(m.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-5, atol=1e-6)
    assert compiled == [{"backend": "eager"}]  # compiled once, the second run only
    with pytest.raises(TypeError, match="compile must be"):
        fit(build_model("resnet8", 10), data, epochs=1, compile=1, progress=False)


def test_a_data_set_too_large_for_the_gpu_is_read_item_by_item(monkeypatch):
    from geoviz.inference import _fits_on

    source = batch_source(get_dataset("shapes10", "train", n=100))  # 100 × 3 × 32 × 32 bytes = 300 KiB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2_000_000, 10_000_000))
    assert _fits_on(source, torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1_000_000, 10_000_000))  # a quarter is 244 KiB
    with pytest.warns(UserWarning, match="item by item"):
        assert not _fits_on(source, torch.device("cuda"))
    assert _fits_on(source.subset(range(50)), torch.device("cuda"))  # only a Subset's rows count
