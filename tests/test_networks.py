"""Networks from anywhere (``models.load_network``), with no network access: tv: weights from a
temporary torch hub cache, timm weights from a temporary Hugging Face cache, files, checkpoints;
and their layers as local features (CNNs, ViT tokens on their grid, Swin's channels-last maps)."""

import numpy as np
import pytest
import torch
import torchvision
from data_files import write_hub_resnet18

from geoviz.capture import as_maps, collect, leaf_layers, resolve_layers
from geoviz.models import (
    block_layers,
    build_model,
    head_classes,
    hub_weights_file,
    load_network,
    save_model,
    untrained_copy,
)
from geoviz.preprocessing import IMAGENET_MEAN, IMAGENET_STD, InputSpec, normalization_of

pytestmark = pytest.mark.usefixtures("no_network")  # conftest: any connection attempt fails


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A torch hub cache holding a (randomly initialised) resnet18 state dict as torchvision names it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return write_hub_resnet18(seed=5)


def test_torchvision_weights_come_from_the_hub_cache_with_their_transforms_and_classes(hub):
    net = load_network("tv:resnet18", weights="DEFAULT")
    meta = torchvision.models.ResNet18_Weights.DEFAULT
    assert net.class_names == meta.meta["categories"] and len(net.class_names) == 1000 and not net.training
    assert net.input_spec == InputSpec(224, 256, "bilinear", IMAGENET_MEAN, IMAGENET_STD, net.input_spec.source)
    x = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(net(x), hub((x - mean) / std), atol=1e-5)  # the network normalises its own [0, 1] input
    assert list(net.state_dict()) == list(hub.state_dict())  # the normalisation adds nothing to the weights
    assert head_classes(net, ["goldfish", "Tench"]) == [1, 0] and head_classes(net, ["goldfish", "cat"]) is None
    fresh = untrained_copy(net, seed=1)
    assert normalization_of(fresh) == normalization_of(net) and fresh.input_spec == net.input_spec
    assert not torch.equal(fresh.conv1.weight, net.conv1.weight) and fresh.fc.out_features == 1000


def test_missing_unknown_and_mismatched_weights_say_what_to_do(hub, tmp_path, monkeypatch):
    with pytest.raises(
        FileNotFoundError,
        match=r"not found at .*resnet34-b627a593\.pth.*download=True \(--download\).*https://download\.pytorch\.org",
    ):
        load_network("tv:resnet34", weights="DEFAULT")
    with pytest.raises(ValueError, match=r"has no weights 'IMAGENET1K_V9'; available: \['DEFAULT', 'IMAGENET1K_V1'\]"):
        load_network("tv:resnet18", weights="IMAGENET1K_V9")
    tuned = torchvision.models.resnet18(num_classes=7)
    f = tmp_path / "tuned.pth"
    torch.save(tuned.state_dict(), f)
    net = load_network("tv:resnet18", weights=str(f))  # the file's own 7-class head is kept
    assert net.fc.out_features == 7 and torch.equal(net.fc.weight, tuned.fc.weight) and net.class_names is None
    with pytest.raises(ValueError, match=r"holds a 7-class head but num_classes=5: leave num_classes out"):
        load_network("tv:resnet18", weights=str(f), num_classes=5)
    with pytest.raises(ValueError, match=r"state dict without its architecture.*load_network\('tv:resnet50', weights="):
        load_network(str(f))
    # download=True hands the fetch to torchvision (here a stand-in that writes the cache file)
    calls = []

    def fetch(self, progress=True, check_hash=False):
        calls.append(self)
        path, _ = hub_weights_file("resnet34", "DEFAULT")
        torch.save(torchvision.models.resnet34().state_dict(), path)
        return torch.load(path, weights_only=True)

    monkeypatch.setattr(torchvision.models.ResNet34_Weights, "get_state_dict", fetch, raising=False)
    assert load_network("tv:resnet34", weights="DEFAULT", download=True).fc.out_features == 1000 and len(calls) == 1


def test_a_geoviz_checkpoint_brings_its_classes_and_input(tmp_path):
    net = build_model("resnet8", 3)
    save_model(net, tmp_path / "m.pt", class_names=["a", "b", "c"], input_spec=InputSpec(32, source="trained at 32 px"))
    back = load_network(str(tmp_path / "m.pt"))
    assert back.class_names == ["a", "b", "c"] and back.input_spec.size == 32 and back.input_spec.mean is None
    assert normalization_of(back) is None and "resnet8" in back.display_name
    assert torch.equal(back.fc.weight, net.fc.weight)
    with pytest.raises(ValueError, match="carries its own weights"):
        load_network(str(tmp_path / "m.pt"), weights="DEFAULT")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_network(str(tmp_path / "nope.pt"))
    plain = load_network(net, normalize="imagenet", size=64)  # any module: spec and normalisation as asked
    assert plain is net and plain.input_spec.size == 64 and normalization_of(plain) == (IMAGENET_MEAN, IMAGENET_STD)


def _hf_cache(root, repo: str, state: dict):
    """A Hugging Face hub cache entry as huggingface_hub lays it out: refs/main → snapshots/<commit>/."""
    from safetensors.torch import save_file

    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "snapshots" / commit / "model.safetensors"))


def test_timm_weights_come_from_the_hugging_face_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc
    import timm
    from timm.data import ImageNetInfo

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(
        FileNotFoundError,
        match=r"timm:resnet18 not found in the Hugging Face cache \(repo timm/resnet18\.a1_in1k\).*download=True",
    ):
        load_network("timm:resnet18", weights="DEFAULT")
    torch.manual_seed(3)
    ref = timm.create_model("resnet18", pretrained=False).eval()
    _hf_cache(tmp_path / "hf", "timm/resnet18.a1_in1k", ref.state_dict())
    net = load_network("timm:resnet18", weights="DEFAULT")
    assert torch.equal(net.conv1.weight, ref.conv1.weight) and torch.equal(net.fc.weight, ref.fc.weight)
    info = ImageNetInfo("imagenet-1k")
    assert net.class_names[:2] == [
        info.index_to_description(0).split(",")[0],
        info.index_to_description(1).split(",")[0],
    ]
    assert (
        net.input_spec.size == 224
        and net.input_spec.resize == int(224 / 0.95)
        and net.input_spec.interpolation == "bicubic"
    )
    assert head_classes(net, ["n01443537", "n01440764"]) == [1, 0]  # an ImageNet-style folder of WordNet ids
    f = tmp_path / "tuned.pth"
    torch.save(timm.create_model("resnet18", num_classes=4).state_dict(), f)
    assert load_network("timm:resnet18", weights=str(f)).fc.out_features == 4
    other = tmp_path / "other.pth"
    torch.save({"backbone.conv.weight": torch.zeros(1)}, other)
    with pytest.raises(
        ValueError, match=r"does not fit timm:resnet18: missing \['conv1.weight'.*unexpected \['backbone.conv.weight'\]"
    ):
        load_network("timm:resnet18", weights=str(other))


def test_as_maps_lays_tokens_and_channels_last_maps_on_their_grid():
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)  # a class token and a 4 × 4 grid
    m = as_maps(tokens)
    assert m.shape == (2, 3, 4, 4) and torch.equal(m[1, :, 0, 1], tokens[1, 2])
    regs = torch.randn(1, 5 + 6, 2)  # five prefix tokens (class + 4 registers) and a 2 × 3 grid of a 32 × 48 image
    assert torch.equal(as_maps(regs, (32, 48), prefix_tokens=5)[0, :, 1, 2], regs[0, 5 + 5])
    nhwc = torch.randn(1, 7, 7, 96)  # Swin: channels last
    assert torch.equal(as_maps(nhwc, (224, 224)), nhwc.permute(0, 3, 1, 2))
    nchw = torch.randn(1, 96, 7, 7)
    assert as_maps(nchw, (224, 224)) is nchw and as_maps(torch.zeros(2, 7, 3)).shape == (2, 3, 7, 1)
    # shapes a loose aspect-ratio rule mis-lays: a channels-last map whose width and channels are close
    for shape, size in (((2, 64, 64, 96), (256, 256)), ((2, 56, 56, 64), (224, 224)), ((1, 8, 11, 40), (225, 321))):
        m = torch.randn(*shape)
        assert torch.equal(as_maps(m, size), m.permute(0, 3, 1, 2)), shape
    for shape, size in (((2, 96, 64, 64), (256, 256)), ((1, 2048, 8, 11), (225, 321)), ((1, 64, 56, 56), (224, 224))):
        m = torch.randn(*shape)
        assert as_maps(m, size) is m, shape  # channels first, kept
    cls31 = torch.randn(1, 1 + 31 * 31, 4)  # 962 tokens: 26 × 37 would multiply out too, but no one stride gives it
    assert torch.equal(as_maps(cls31, (496, 496))[0, :, 2, 3], cls31[0, 1 + 2 * 31 + 3])


@pytest.mark.parametrize(
    "name, layer, shape",
    [
        ("resnet50", "layer4.2", (2048, 2, 2)),
        ("convnext_tiny", "features.5.8", (384, 4, 4)),
        ("vit_b_16", "encoder.layers.encoder_layer_11", (768, 4, 4)),
        ("swin_t", "features.1.1", (96, 16, 16)),
    ],
)
def test_every_family_gives_local_features_on_its_grid(name, layer, shape):
    """The families the README lists: blocks found by "auto", each block's output as maps whose
    rows are the very vectors at those positions (checked against a plain forward hook)."""
    kw = {"image_size": 64} if name == "vit_b_16" else {}
    net = build_model(f"tv:{name}", 5, **kw).eval()
    assert layer in block_layers(net) and layer in resolve_layers(net, "auto")
    x = torch.rand(2, 3, 64, 64)
    seen = {}

    def keep(module, inputs, out):  # the last call's output (the batch of two); returns None: the output stays as it is
        seen["out"] = out.detach().clone()

    h = net.get_submodule(layer).register_forward_hook(keep)
    bank = collect(
        net,
        torch.utils.data.TensorDataset(x, torch.tensor([0, 1])),
        [layer],
        positions_per_image=5,
        batch_size=2,
        progress=False,
    )
    h.remove()
    assert bank.shapes[layer] == shape
    out = seen["out"]
    for row in (0, 7):
        b, y, xx = bank.index[layer][row]
        if out.dim() == 3:  # tokens: the class token first, then the grid row by row
            ref = out[b, 1 + y * shape[2] + xx]
        elif name == "swin_t":
            ref = out[b, y, xx]
        else:
            ref = out[b, :, y, xx]
        assert np.allclose(bank.features[layer][row], ref.numpy(), atol=1e-5)


def test_a_timm_vit_with_register_tokens_drops_all_its_prefix_tokens():
    net = build_model("timm:vit_tiny_patch16_224", 3, reg_tokens=4, img_size=64).eval()
    assert net.num_prefix_tokens == 5 and "blocks.11" in block_layers(net)
    x = torch.rand(2, 3, 64, 64)
    seen = {}
    h = net.blocks[11].register_forward_hook(lambda m, i, o: seen.__setitem__("out", o.detach().clone()))
    bank = collect(
        net,
        torch.utils.data.TensorDataset(x, torch.tensor([0, 1])),
        ["blocks.11"],
        positions_per_image=6,
        batch_size=2,
        progress=False,
    )
    h.remove()
    assert bank.shapes["blocks.11"] == (192, 4, 4)
    for row in (1, 8):
        b, y, xx = bank.index["blocks.11"][row]
        assert np.allclose(bank.features["blocks.11"][row], seen["out"][b, 5 + y * 4 + xx].numpy(), atol=1e-5)


def test_every_leaf_and_a_modules_input_can_be_captured():
    net = torchvision.models.resnet18().eval()
    leaves = leaf_layers(net)
    assert "layer1.0.conv1" in leaves and "fc" in leaves and "layer1" not in leaves
    x = torch.rand(3, 3, 32, 32)
    bank = collect(
        net,
        torch.utils.data.TensorDataset(x, torch.zeros(3, dtype=torch.long)),
        "leaves",
        positions_per_image=2,
        pooled=["fc:input", "layer4"],
        outputs=True,
        batch_size=2,
        progress=False,
    )
    assert "layer1.0.relu#1" in bank.layers  # a module called twice: both calls
    with torch.no_grad():
        logits = net(x)
        feats = torch.flatten(
            net.avgpool(net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))), 1
        )
    assert np.allclose(bank.outputs, logits.numpy(), atol=1e-5) and np.allclose(
        bank.pooled["fc:input"], feats.numpy(), atol=1e-5
    )
    assert np.allclose(bank.pooled["layer4"], feats.numpy(), atol=1e-5)  # the pooled last stage is what the head reads
    with pytest.raises(KeyError, match="unknown layer 'fcc'"):
        resolve_layers(net, "fcc:input")


def test_batchnorm_recalibration_takes_the_datas_statistics():
    """Batches of 8 and 4 images: the running mean is the mean over all 12 images (each image counts
    once, the short batch no more); every module keeps its own mode (a frozen BatchNorm in a training
    network stays in eval)."""
    from geoviz.inference import recalibrate_batchnorm

    torch.manual_seed(0)
    net = torchvision.models.resnet18().train()
    net.bn1.eval()  # frozen
    x = torch.rand(12, 3, 32, 32) * torch.linspace(0.5, 2, 12)[:, None, None, None]  # batches with other statistics
    with torch.no_grad():
        ref = torchvision.models.resnet18().eval()
        ref.load_state_dict(net.state_dict())
        stem = ref.conv1(x)  # what bn1 receives
    assert (
        recalibrate_batchnorm(net, torch.utils.data.TensorDataset(x, torch.zeros(12)), batch_size=8, device="cpu") == 20
    )
    assert torch.allclose(net.bn1.running_mean, stem.mean((0, 2, 3)), atol=1e-5)
    per_batch = [stem[:8].var((0, 2, 3), unbiased=True), stem[8:].var((0, 2, 3), unbiased=True)]
    assert torch.allclose(net.bn1.running_var, (8 * per_batch[0] + 4 * per_batch[1]) / 12, rtol=1e-4)
    assert net.training and not net.bn1.training and net.layer1[0].bn1.training and net.bn1.momentum == 0.1


def test_cells_sit_where_receptive_fields_are_centred():
    from geoviz.capture import receptive_field

    net = torchvision.models.resnet18().eval()
    rf = receptive_field(net, "layer1.0", 64)
    for y, x in ((3, 5), (8, 8)):
        x0, y0, x1, y1 = rf.box(y, x)  # 27 px, centred on the position (not clipped here)
        cx0, cy0, cx1, cy1 = rf.cell(y, x)
        assert (
            (cx1 - cx0, cy1 - cy0) == (4, 4)
            and abs((cx0 + cx1) / 2 - (x0 + x1) / 2) <= 1
            and abs((cy0 + cy1) / 2 - (y0 + y1) / 2) <= 1
        )
    vit = build_model("tv:vit_b_16", 3, image_size=64).eval()
    rf = receptive_field(vit, "encoder.layers.encoder_layer_1", 64)
    assert rf.box(1, 2) == (0, 0, 64, 64) and rf.cell(1, 2) == (
        32,
        16,
        48,
        32,
    )  # attention sees it all; the token is its patch


def test_grad_cam_on_a_vits_tokens_is_the_formula_on_their_grid():
    """Grad-CAM at the input of a timm ViT's last block, by hand: the tokens after the class token laid
    on the 4 × 4 grid, weights = the spatial mean of the gradient, ReLU of the weighted sum, upsampled."""
    from geoviz.analysis.cam import cam_layer, grad_cam

    torch.manual_seed(0)
    net = build_model("timm:vit_tiny_patch16_224", 3, img_size=64).eval()
    assert cam_layer(net) is net.blocks[10]
    x = torch.rand(2, 3, 64, 64)
    maps, target = grad_cam(net, x)
    store = {}

    def keep(module, inputs, out):  # returns None: the output stays as it is
        out.retain_grad()
        store["t"] = out

    h = net.blocks[10].register_forward_hook(keep)
    out = net(x)
    out.gather(1, out.argmax(1)[:, None]).sum().backward()
    h.remove()
    t, g = store["t"][:, 1:], store["t"].grad[:, 1:]  # (2, 16, 192)
    a = t.transpose(1, 2).reshape(2, 192, 4, 4)
    w = g.transpose(1, 2).reshape(2, 192, 4, 4).mean((2, 3), keepdim=True)
    cam = torch.relu((w * a).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)[:, 0].detach()
    cam = cam / cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    assert torch.equal(target, out.argmax(1)) and torch.allclose(maps, cam, atol=1e-5)
