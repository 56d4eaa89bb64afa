import os

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from geoviz.capture import (
    ActivationRecorder,
    FeatureBank,
    MemoryBudgetError,
    collect,
    layer_names,
    local_features,
    receptive_field,
    record,
    resolve_layers,
)
from geoviz.models import build_model


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture
def net():
    torch.manual_seed(0)
    return build_model("resnet8", 10).eval()


def test_layer_names_and_globs(net):
    names = layer_names(net)
    assert names[:3] == ["conv1", "bn1", "relu"] and "layer3.0.conv2" in names
    assert resolve_layers(net, "layer*.0.conv2") == ["layer1.0.conv2", "layer2.0.conv2", "layer3.0.conv2"]
    assert resolve_layers(net, ["layer1", "layer1"]) == ["layer1"]


def test_unknown_layer_lists_close_matches(net):
    with pytest.raises(KeyError, match="unknown layer 'layer3.0.conv3'; closest: 'layer3.0.conv2', 'layer3.0.conv1'"):
        ActivationRecorder(net, ["layer3.0.conv3"])
    with pytest.raises(KeyError, match="matches nothing"):
        resolve_layers(net, "block*")


def test_hooks_are_removed_on_exit_and_after_an_exception(net):
    x = torch.randn(2, 3, 32, 32)
    with ActivationRecorder(net, ["layer1", "layer2.0.conv1"]) as rec:
        net(x)
        assert set(rec.activations) == {"layer1", "layer2.0.conv1"}
        assert not _no_hooks(net)
    assert _no_hooks(net)
    with pytest.raises(RuntimeError, match="boom"):
        with ActivationRecorder(net, ["layer1"]):
            raise RuntimeError("boom")
    assert _no_hooks(net)
    bad = torch.randn(2, 5, 32, 32)  # wrong channels: torch raises inside the forward
    with pytest.raises(RuntimeError):
        record(net, bad, ["layer1"])
    assert _no_hooks(net)


def test_activations_match_an_independent_forward(net):
    x = torch.randn(3, 3, 32, 32)
    acts = record(net, x, ["layer1", "layer3", "fc"])
    with torch.no_grad():
        h = net.relu(net.bn1(net.conv1(x)))
        l1 = net.layer1(h)
        l3 = net.layer3(net.layer2(l1))
        logits = net(x)
    assert torch.allclose(acts["layer1"], l1) and torch.allclose(acts["layer3"], l3)
    assert torch.allclose(acts["fc"], logits)


def test_module_called_twice_keeps_both_calls_in_order(net):
    x = torch.randn(2, 3, 32, 32)
    acts = record(net, x, ["layer1.0.relu"])
    assert set(acts) == {"layer1.0.relu#0", "layer1.0.relu#1"}
    blk = net.layer1[0]
    with torch.no_grad():
        h = net.relu(net.bn1(net.conv1(x)))
        first = torch.relu(blk.bn1(blk.conv1(h)))
        second = torch.relu(blk.bn2(blk.conv2(first)) + h)
    assert torch.allclose(acts["layer1.0.relu#0"], first) and torch.allclose(acts["layer1.0.relu#1"], second)
    # a second forward resets: still two calls, not four
    with ActivationRecorder(net, ["layer1.0.relu"]) as rec:
        net(x)
        net(x)
        assert len(rec.activations) == 2


def test_capture_happens_before_in_place_ops_overwrite(net):
    # bn1's output is overwritten by ReLU(inplace=True); bn2's by `out += identity`
    x = torch.randn(2, 3, 32, 32)
    acts = record(net, x, ["layer1.0.bn1", "layer1.0.bn2"])
    blk = net.layer1[0]
    with torch.no_grad():
        h = net.relu(net.bn1(net.conv1(x)))
        pre = blk.bn1(blk.conv1(h))
        bn2 = blk.bn2(blk.conv2(torch.relu(pre)))
    assert (acts["layer1.0.bn1"] < 0).any()
    assert torch.allclose(acts["layer1.0.bn1"], pre) and torch.allclose(acts["layer1.0.bn2"], bn2)


def test_torchvision_model_sequential_and_modulelist_children():
    tv = torchvision.models.resnet18(num_classes=4).eval()
    acts = record(tv, torch.randn(2, 3, 32, 32), ["layer*.1.conv2", "layer4"])
    assert acts["layer4"].shape == (2, 512, 1, 1) and "layer2.1.conv2" in acts

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 3, padding=1)])
            self.seq = nn.Sequential(nn.ReLU(), nn.Conv2d(5, 6, 1))

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return self.seq(x)

    m = Stack()
    acts = record(m, torch.randn(1, 3, 8, 8), ["blocks.1", "seq.1"])
    assert acts["blocks.1"].shape == (1, 5, 8, 8) and acts["seq.1"].shape == (1, 6, 8, 8)


def test_detach_false_keeps_the_graph_and_device_dtype(net):
    x = torch.randn(2, 3, 32, 32)
    with ActivationRecorder(net, ["layer2"], detach=False, device=None) as rec:
        net(x)
        a = rec.activations["layer2"]
    assert a.requires_grad
    a.sum().backward()
    assert net.conv1.weight.grad is not None
    half = record(net, x, ["layer2"], dtype=torch.float16)["layer2"]
    assert half.dtype == torch.float16


def test_local_features_layout():
    act = torch.randn(2, 3, 4, 5)
    f, idx = local_features(act)
    ref = act.numpy().transpose(0, 2, 3, 1).reshape(-1, 3)
    assert np.array_equal(f.numpy(), ref)
    b, y, x = idx[17].tolist()
    assert torch.equal(f[17], act[b, :, y, x]) and (b, y, x) == (0, 3, 2)
    f2, i2 = local_features(torch.randn(4, 6))
    assert f2.shape == (4, 6) and i2[:, 1:].abs().sum() == 0
    with pytest.raises(ValueError, match="expects"):
        local_features(torch.randn(2, 3, 4))


def _analytic_rf(layers):
    """Receptive field size and jump of a conv chain: r += (k-1)*j; j *= s (independent formula)."""
    r, j = 1, 1
    for k, s in layers:
        r += (k - 1) * j
        j *= s
    return r, j


def test_receptive_field_matches_the_analytic_formula():
    torch.manual_seed(0)
    convs = [(3, 1), (3, 2), (5, 1), (3, 2)]
    net = nn.Sequential(*[nn.Sequential(nn.Conv2d(2, 2, k, s, padding=k // 2), nn.ReLU()) for k, s in convs])
    rf = receptive_field(net, "3", 64)
    r, j = _analytic_rf(convs)
    assert rf.size == (r, r) and rf.jump == (j, j) and rf.output_size == (16, 16)
    # a central position is not clipped: its box is r wide; with symmetric padding (k-1)/2 the
    # centre of output position i is input pixel i*jump
    x0, y0, x1, y1 = rf.box(8, 8)
    assert (x1 - x0, y1 - y0) == (r, r) and (x0 + x1 - 1) / 2 == 8 * j
    x0, y0, _, _ = rf.box(0, 0)
    assert (x0, y0) == (0, 0)  # clipped to the image
    res = build_model("resnet8", 10).eval()
    assert receptive_field(res, "layer1", 32).size == (7, 7)
    assert receptive_field(res, "layer3", 32).size == (25, 25)
    assert receptive_field(res, "layer1.0.relu#1", 32).size == (7, 7)
    res.train()
    with pytest.raises(
        ValueError,
        match=r"'layer1.0.relu' runs 2 time\(s\) per forward, so 'layer1.0.relu#5' does not exist: "
        r"use 'layer1.0.relu#0', 'layer1.0.relu#1'",
    ):
        receptive_field(res, "layer1.0.relu#5", 32)
    assert res.training  # the failed call gave the model its mode back


def test_collect_in_memory_matches_record(net):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(10, 3, 32, 32, generator=g), torch.arange(10) % 3)
    bank = collect(net, data, ["layer1", "layer3"], batch_size=4)
    acts = record(net, data.tensors[0], ["layer1", "layer3"])
    for layer in ("layer1", "layer3"):
        f, idx = local_features(acts[layer])
        assert np.allclose(bank.features[layer], f.numpy(), atol=1e-5)
        assert np.array_equal(bank.index[layer], idx.numpy())
    assert bank.labels.tolist() == (torch.arange(10) % 3).tolist()
    sampled = collect(net, data, ["layer1"], positions_per_image=5, batch_size=3, max_images=7)
    assert sampled.features["layer1"].shape == (35, 16)
    per_image = sampled.index["layer1"].reshape(7, 5, 3)
    assert all(len({tuple(p) for p in img[:, 1:]}) == 5 for img in per_image)  # no repeats
    b, y, x = sampled.index["layer1"][12]
    assert np.allclose(sampled.features["layer1"][12], acts["layer1"][b, :, y, x].numpy(), atol=1e-5)


def test_collect_refuses_over_budget_with_the_estimate(net):
    data = TensorDataset(torch.rand(64, 3, 32, 32), torch.zeros(64, dtype=torch.long))
    net.train()
    with pytest.raises(MemoryBudgetError, match=r"would hold 4\.\d MiB .* over max_bytes=1\.0 MiB.*out_dir="):
        collect(net, data, ["layer1"], max_bytes=2**20)
    assert net.training
    with pytest.raises(ValueError, match="without shuffle"):
        collect(net, DataLoader(data, shuffle=True), ["layer1"])


class _Flaky(torch.utils.data.Dataset):
    def __init__(self, base, fail_at):
        self.base, self.fail_at = base, fail_at

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if self.fail_at is not None and i == self.fail_at:
            raise KeyboardInterrupt("interrupted")
        return self.base[i]


def test_collect_to_disk_is_lazy_and_resumes(net, tmp_path, monkeypatch):
    real_save = np.save

    def save_to_memory_only(file, arr, *a, **kw):  # a file written in place could be read half-written
        assert not isinstance(file, (str, os.PathLike)), f"np.save straight to {file}: not atomic"
        return real_save(file, arr, *a, **kw)

    monkeypatch.setattr(np, "save", save_to_memory_only)
    from geoviz.capture import _BankWriter

    monkeypatch.setattr(
        _BankWriter, "CHECKPOINT_SECONDS", 0.0
    )  # a checkpoint after every batch (normally at most every 5 s)
    g = torch.Generator().manual_seed(1)
    base = TensorDataset(torch.rand(20, 3, 32, 32, generator=g), torch.arange(20) % 4)
    ref = collect(net, base, ["layer2"], positions_per_image=6, batch_size=4)
    out = tmp_path / "bank"
    with pytest.raises(KeyboardInterrupt):
        collect(net, _Flaky(base, 13), ["layer2"], positions_per_image=6, batch_size=4, out_dir=out)
    assert not (out / "bank.json").exists() and (tmp_path / "bank.partial" / "progress.json").exists()
    bank = collect(net, _Flaky(base, None), ["layer2"], positions_per_image=6, batch_size=4, out_dir=out)
    assert isinstance(bank.features["layer2"], np.memmap)
    assert np.allclose(bank.features["layer2"], ref.features["layer2"], atol=1e-6)
    assert np.array_equal(bank.index["layer2"], ref.index["layer2"]) and np.array_equal(bank.labels, ref.labels)
    again = FeatureBank.open(out)
    assert again.layers == ["layer2"] and again.shapes["layer2"] == (32, 16, 16)
    with pytest.raises(FileExistsError, match="other settings"):
        collect(net, base, ["layer2"], positions_per_image=3, out_dir=out)
    with pytest.raises(FileNotFoundError, match="no bank.json"):
        FeatureBank.open(tmp_path)


def test_collect_pooled_keeps_one_mean_vector_per_image(net):
    data = TensorDataset(torch.rand(6, 3, 32, 32), torch.arange(6) % 2)
    bank = collect(net, data, ["layer1", "layer3", "fc"], pool=True, batch_size=4)
    acts = record(net, data.tensors[0], ["layer1", "layer3"])
    assert bank.features["layer1"].shape == (6, 16) and bank.shapes["layer3"] == (64, 1, 1)
    assert np.allclose(bank.features["layer3"], acts["layer3"].mean(dim=(2, 3)).numpy(), atol=1e-5)
    assert bank.index["fc"][:, 1:].sum() == 0 and bank.index["layer1"][:, 0].tolist() == list(range(6))
    with pytest.raises(ValueError, match="pool=True keeps one vector per image"):
        collect(net, data, ["layer1"], pool=True, positions_per_image=3)


def test_paused_recorder_records_nothing_and_resumes(net):
    x = torch.randn(2, 3, 32, 32)
    with ActivationRecorder(net, ["layer1"]) as rec:
        net(x)
        first = rec.activations["layer1"]
        with rec.paused():
            net(x * 2)  # the forward pre-hook still resets; nothing new is recorded
            assert rec.activations == {}
        net(x)
        assert torch.allclose(rec.activations["layer1"], first)
    assert _no_hooks(net)


def test_collect_to_disk_writes_every_array_as_in_memory(net, tmp_path):
    """The streamed files (features, positions, pooled vectors, outputs; written by blocks of rows
    with pwrite) hold exactly what the in-memory bank holds, for every position of every layer."""
    data = TensorDataset(torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(2)), torch.arange(10) % 3)
    kw = dict(pooled=["layer3"], outputs=True, batch_size=3)
    mem = collect(net, data, ["layer1", "layer3"], **kw)
    disk = collect(net, data, ["layer1", "layer3"], out_dir=tmp_path / "bank", **kw)
    for layer in ("layer1", "layer3"):
        assert (
            isinstance(disk.features[layer], np.memmap) and len(disk.features[layer]) == 10 * mem.shapes[layer][1] ** 2
        )
        assert np.array_equal(disk.features[layer], mem.features[layer])
        assert np.array_equal(disk.index[layer], mem.index[layer])
    assert np.array_equal(disk.pooled["layer3"], mem.pooled["layer3"]) and np.array_equal(disk.outputs, mem.outputs)
    assert np.array_equal(disk.labels, data.tensors[1].numpy())
    assert not list(tmp_path.glob("*.partial"))


def test_block_writes_refuse_rows_that_do_not_fit(tmp_path):
    from geoviz.capture import _NpyRows

    f = _NpyRows(tmp_path / "a.npy", (6, 3), np.float32, create=True)
    f.write(2, np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"rows 4:7 of shape \(3, 3\) do not fit \(6, 3\)"):
        f.write(4, np.ones((3, 3)))  # past the end: a memory map would have refused it too
    with pytest.raises(ValueError, match="do not fit"):
        f.write(0, np.ones((2, 4)))
    f.sync()
    f.close()
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.r_[np.zeros((2, 3)), np.ones((3, 3)), np.zeros((1, 3))])
