import pytest
import torch
import torchvision

from geoviz.capture import record
from geoviz.models import build_model, hub_weights_file, list_models

ZOO = ["resnet8", "resnet20", "resnet8x4", "vgg8", "vgg13", "wrn_16_2", "wrn_40_1", "mobilenetv2_half"]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_shared_interface(name):
    m = build_model(name, 7, in_chans=1).eval()
    x = torch.randn(2, 1, 32, 32)
    logits, feats = m.forward_intermediates(x)
    assert logits.shape == (2, 7) and torch.allclose(logits, m(x), atol=1e-5)
    assert list(feats) == list(m.feature_layers)
    for info in m.feature_info:  # declared channels and reductions are the real ones
        f = feats[info["module"]]
        assert f.shape[1] == info["channels"] and 32 // f.shape[-1] == info["reduction"]
    assert m.forward_features(x).dim() == 4 and m.classifier.out_features == 7
    assert m.build_args == {"name": name, "num_classes": 7, "in_chans": 1}
    assert set(record(m, x, list(m.feature_layers))) == set(m.feature_layers)


def test_depths_and_parameter_counts():
    # ResNet-110 (CIFAR, basic blocks) has 1.7M parameters (He et al. 2016, table 6)
    n = sum(p.numel() for p in build_model("resnet110").parameters())
    assert 1.70e6 < n < 1.75e6
    assert len(build_model("resnet", depth=32).layer1) == 5
    with pytest.raises(ValueError, match="6n\\+2"):
        build_model("resnet", depth=21)
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn", depth=15)


def test_registry_errors():
    with pytest.raises(KeyError, match="unknown model 'resnet21'; closest: "):
        build_model("resnet21")
    with pytest.raises(TypeError, match="takes no argument\\(s\\) \\['widen'\\]"):
        build_model("resnet20", widen=2)
    with pytest.raises(KeyError, match="unknown torchvision model 'resnet19'"):
        build_model("tv:resnet19")
    assert "wrn_40_2" in list_models()


def test_torchvision_downloads_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path, url = hub_weights_file("resnet18")
    assert str(path).startswith(str(tmp_path)) and url.endswith(path.name)
    with pytest.raises(
        FileNotFoundError,
        match="downloads nothing unless asked: pass download=True .* fetch https://download.pytorch.org/models/resnet18-",
    ):
        build_model("tv:resnet18", 4, weights="DEFAULT")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model("tv:resnet18", 4, weights=tmp_path / "nope.pth")


def test_torchvision_weights_from_a_local_file_replace_the_head(tmp_path, monkeypatch):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(num_classes=1000)
    f = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), f)
    m = build_model("tv:resnet18", 4, weights=f)
    assert m.fc.out_features == 4 and torch.equal(m.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    assert m.stage_names == ("layer1", "layer2", "layer3", "layer4")
    # the same file in the hub cache is found by weights name
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path, _ = hub_weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    m2 = build_model("tv:resnet18", 4, weights="DEFAULT")
    assert torch.equal(m2.conv1.weight, ref.conv1.weight)
    bad = tmp_path / "bad.pth"
    torch.save({"nonsense": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="does not fit resnet18"):
        build_model("tv:resnet18", 4, weights=bad)
