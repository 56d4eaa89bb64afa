"""Your network on your images: every analysis of ``experiments.explore`` through ``folder:`` and
``tv:resnet18`` with ``weights="DEFAULT"`` (read from a temporary torch hub cache, no network), each
checked against an independent computation on a plain torchvision ResNet-18 fed by torchvision's
own preset transform."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from data_files import write_hub_resnet18
from PIL import Image

from geoviz.experiments.explore import ExploreConfig, _random_bank, cam_rows, run_explore
from geoviz.models import hub_weights_file
from geoviz.viz import EmbeddingExplorer, write_explore_report

IMAGENET_NAMES = ["tench", "goldfish", "great white shark", "tiger shark"]  # head outputs 0..3
FOLDER_ORDER = sorted(IMAGENET_NAMES)  # class folders are read in name order, as ImageFolder does
HEAD_ROWS = [IMAGENET_NAMES.index(c) for c in FOLDER_ORDER]
COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (220, 220, 40)]
GEOVIZ = Path(sys.executable).with_name("geoviz")


pytestmark = pytest.mark.usefixtures("no_network")  # conftest: any connection attempt fails


def _folder(root: Path, names, per_class: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for k, (name, colour) in enumerate(zip(names, COLOURS)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = (260, 200) if i % 2 else (200, 300)
            a = (rng.random((h, w, 3)) * 120 + np.asarray(colour) * 0.5).astype(np.uint8)
            a[rng.integers(0, h - 40) :, ::7] = 255 * (k % 2)  # some structure besides colour
            Image.fromarray(a).save(root / name / (f"{i}.png" if i % 2 else f"{i}.jpg"))
    return root


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A temporary torch hub cache with a resnet18 state dict, and two image folders: one named by
    ImageNet classes (the head's), one not."""
    root = tmp_path_factory.mktemp("explore")
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(root / "torch"))
    mp.setenv("GEOVIZ_RUNS", str(root / "runs"))
    ref = write_hub_resnet18(seed=11)
    yield {
        "root": root,
        "ref": ref,
        "head_folder": _folder(root / "inet", IMAGENET_NAMES),
        "other_folder": _folder(root / "mine", ["alpha", "beta", "gamma", "delta"], seed=1),
    }
    mp.undo()


def _cfg(setting, folder, **kw):
    base = dict(
        model="tv:resnet18",
        weights="DEFAULT",
        data=f"folder:{folder}" if folder else None,
        model_b="none",
        n_images=24,
        max_points=400,
        batch_size=12,
    )  # the rest as the smoke profile has it (four positions, two layers, PCA, four CAMs)
    return ExploreConfig.from_profile("smoke", **{**base, **kw})


@pytest.fixture(scope="module")
def head_result(setting):
    return run_explore(_cfg(setting, setting["head_folder"]), progress=False)


def _preset_images(files, size=224, resize=256):
    """The images as torchvision's own ImageNet preset makes them (normalised)."""
    from torchvision.datasets.folder import default_loader
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification

    t = ImageClassification(crop_size=size, resize_size=resize, interpolation=InterpolationMode.BILINEAR)
    return torch.stack([t(default_loader(str(f))) for f in files])


def _pooled_and_logits(net, x, layers):
    acts = {}
    hooks = [
        net.get_submodule(l).register_forward_hook(lambda m, i, o, l=l: acts.__setitem__(l, o.mean((2, 3))))
        for l in layers
    ]
    with torch.no_grad():
        logits = net(x)
    for h in hooks:
        h.remove()
    return {l: a.numpy().astype(np.float64) for l, a in acts.items()}, logits


def test_probes_match_a_plain_torchvision_model_fed_by_torchvisions_transform(setting, head_result):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    r = head_result
    assert r.layers == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0", "layer4.1"]
    assert r.model.input_spec.size == 224 and r.class_names == FOLDER_ORDER and len(r.data) == 24
    y = r.data.labels.numpy()
    assert not set(r.train) & set(r.test) and sorted([*r.train, *r.test]) == list(range(len(y)))  # a split, no leak
    assert all((y[r.test] == c).sum() == 3 for c in range(4))  # half of each class held out
    x = _preset_images(r.data.files)
    pooled, logits = _pooled_and_logits(setting["ref"], x, r.layers)
    for row in r.probes:
        f = pooled[row["layer"]]
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(f[r.train], y[r.train])
        assert abs(clf.score(f[r.test], y[r.test]) - row["accuracy"]) <= 1 / len(r.test) + 1e-9, row
        assert row["vs_pixel_floor"]["verdict"] in ("supported", "contradicted", "undecided")
        assert np.allclose(np.asarray(r.bank.pooled[row["layer"]]), f, atol=1e-3)
    assert np.allclose(np.asarray(r.bank.outputs), logits.numpy(), atol=1e-3)
    assert r.floors["chance"] == pytest.approx(0.25) and 0 <= r.floors["pixel"]["accuracy"] <= 1
    members = 5 * (4 if r.config.floor_trees else 2)  # five feature sets × four classifiers (two in smoke)
    assert len(r.floors["pixel"]["cv"]) == members and all("random_network_accuracy" in p for p in r.probes)


def test_the_random_network_floor_is_the_architecture_with_recalibrated_statistics(setting, head_result):
    """Recomputed by hand: a fresh resnet18 (the seed's weights), its BatchNorm running statistics set
    to the training images' by a plain train-mode pass (cumulative averages), pooled features by
    forward hooks, the same probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    r = head_result
    torch.manual_seed(r.config.seed)
    fresh = torchvision.models.resnet18()
    for m in fresh.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    x = _preset_images(r.data.files)
    fresh.train()
    with torch.no_grad():
        for batch in x[r.train].split(r.config.batch_size):
            fresh(batch)
    fresh.eval()
    pooled, _ = _pooled_and_logits(fresh, x, r.layers)
    mine, _ = _pooled_and_logits(setting["ref"], x, r.layers)
    bank = _random_bank(r.config, r.model, r.data, r.layers, r.train, torch.device("cpu"), False)
    y = r.data.labels.numpy()

    def probe(f):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(f[r.train], y[r.train])
        return clf.predict(f[r.test]) == y[r.test]

    for row in r.probes:
        f = pooled[row["layer"]]
        assert np.allclose(np.asarray(bank.features[row["layer"]]), f, rtol=1e-3, atol=1e-3), row[
            "layer"
        ]  # statistics of the training half only
        right_random, right = probe(f), probe(mine[row["layer"]])
        assert abs(right_random.mean() - row["random_network_accuracy"]) <= 1 / len(r.test) + 1e-9, row
        v = row["vs_random_network"]  # McNemar on the same held-out images: this network first
        assert (
            abs(v["a_only"] - (right & ~right_random).sum()) <= 1
            and abs(v["b_only"] - (right_random & ~right).sum()) <= 1
        )
    holm = [row["vs_random_network"]["p_holm"] for row in r.probes]
    raw = sorted(row["vs_random_network"]["p_value"] for row in r.probes)
    assert max(holm) <= 1 and min(holm) == pytest.approx(min(1.0, len(raw) * raw[0]))


def test_purity_matches_a_brute_force_count(head_result):
    r = head_result
    for layer, (purity, chance) in r.purity.items():
        f = np.asarray(r.bank.features[layer], np.float64)
        img = np.asarray(r.bank.index[layer])[:, 0]
        y = r.bank.labels[img]
        d = ((f[:, None] - f[None]) ** 2).sum(-1)
        same, ch = [], []
        for i in range(len(f)):
            others = np.flatnonzero(img != img[i])
            nn = others[np.lexsort((others, d[i, others]))[:10]]
            same.append((y[nn] == y[i]).mean())
            ch.append((y[others] == y[i]).mean())
        assert purity == pytest.approx(np.mean(same), abs=1e-9) and chance == pytest.approx(np.mean(ch), abs=1e-12), (
            layer
        )


def test_class_geometry_uses_the_heads_class_vectors_when_its_classes_are_the_folders(setting, head_result):
    r = head_result
    g = r.geometry
    assert g.mode == "class vectors" and g.class_names == FOLDER_ORDER
    w = setting["ref"].fc.weight.detach().numpy()[HEAD_ROWS].astype(np.float64)
    cos = (w @ w.T) / np.outer(np.linalg.norm(w, axis=1), np.linalg.norm(w, axis=1))
    assert np.allclose(g.angles, np.degrees(np.arccos(np.clip(cos, -1, 1))), atol=1e-4)
    _, logits = _pooled_and_logits(setting["ref"], _preset_images(r.data.files), [])
    pred, y = logits[:, HEAD_ROWS].argmax(1).numpy(), r.data.labels.numpy()
    conf = _pair_rates(y, pred, 4)
    assert np.allclose(g.confusion, conf) and g.accuracy == pytest.approx((pred == y).mean())
    iu = np.triu_indices(4, 1)
    if np.ptp(conf[iu]) > 0:
        assert g.mantel["r"] == pytest.approx(np.corrcoef(g.angles[iu], conf[iu])[0, 1], abs=1e-9)
    else:
        assert g.mantel["verdict"] == "undecided" and np.isnan(g.mantel["r"])
    picks = g.most_confused(0, 1, 3)
    assert all(int(y[row]) in (0, 1) for row, _, _ in picks)


def _pair_rates(y, pred, k):
    conf = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            if i != j:
                conf[i, j] = (((y == i) & (pred == j)).sum() + ((y == j) & (pred == i)).sum()) / (
                    (y == i).sum() + (y == j).sum()
                )
    return conf


def test_class_means_when_the_heads_classes_are_not_the_folders(setting):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    r = run_explore(_cfg(setting, setting["other_folder"], size=64, random_floor=False, cam_images=0), progress=False)
    g = r.geometry
    assert g.mode == "class means" and "not the data's" in g.note and r.model.input_spec.size == 64
    f = np.asarray(r.bank.pooled["fc:input"], np.float64)
    y = r.data.labels.numpy()
    means = np.stack([f[r.train][y[r.train] == c].mean(0) for c in range(4)]) - f[r.train].mean(
        0
    )  # centred on the global mean
    cos = (means @ means.T) / np.outer(np.linalg.norm(means, axis=1), np.linalg.norm(means, axis=1))
    assert np.allclose(g.angles, np.degrees(np.arccos(np.clip(cos, -1, 1))), atol=1e-4)
    pred = (
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        .fit(f[r.train], y[r.train])
        .predict(f[r.test])
    )
    assert np.allclose(g.confusion, _pair_rates(y[r.test], pred, 4))
    assert list(g.rows) == list(r.test) and "random-network floor left out (random_floor=False)" in r.notes
    assert r.cams["rows"] == []
    with pytest.raises(
        ValueError,
        match=r"class_geometry='head' but the head's 1000 classes \(tench, goldfish, .*do not include .*alpha.*"
        r"class_geometry='means'",
    ):
        run_explore(
            _cfg(setting, setting["other_folder"], size=64, random_floor=False, cam_images=0, class_geometry="head"),
            progress=False,
        )


def test_grad_cam_matches_the_formula_on_the_plain_model(setting, head_result):
    r = head_result
    ref = setting["ref"]
    x = _preset_images([r.data.files[i] for i in r.cams["rows"]])
    store = {}
    h1 = ref.layer4.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    h2 = ref.layer4.register_full_backward_hook(lambda m, gi, go: store.__setitem__("g", go[0]))
    out = ref(x)
    target = out.argmax(1)
    out.gather(1, target[:, None]).sum().backward()
    h1.remove(), h2.remove()
    cam = torch.relu((store["g"].mean((2, 3), keepdim=True) * store["a"]).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=(224, 224), mode="bilinear", align_corners=False)[:, 0].detach()
    cam = cam / cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    assert r.cams["targets"] == target.tolist() and torch.allclose(r.cams["maps"], cam, atol=1e-4)


def test_explorer_report_and_receptive_fields(setting, head_result, tmp_path):
    r = head_result
    assert r.explorer_layers == ["layer1.0", "layer4.1"]
    assert r.receptive_fields["layer1.0"].size == (27, 27)  # conv 7/2, max-pool 3/2, two 3 × 3 convs: 7 + 2·2 + 2·2·4
    ex = EmbeddingExplorer(r.coords, r.bank, r.images, r.class_names, r.receptive_fields, axis="PCA", rows=r.point_rows)
    ex.layer.value = "layer1.0"
    row = r.point_rows["layer1.0"][5]
    b, y, x = (int(v) for v in r.bank.index["layer1.0"][row])
    assert ex.select(5) == r.receptive_fields["layer1.0"].box(y, x) and ex._shown_image == b
    path = write_explore_report(r, tmp_path / "report.html")
    html = open(path, encoding="utf-8").read()
    assert html.count("plotly.js v") == 1 and "explore-scatter" in html and "explore-pair" in html
    assert (
        html.count("<option value='0-") + html.count("<option value='1-") + html.count("<option value='2-") == 6
    )  # 4 classes: 6 pairs
    assert "data:image/jpeg;base64," in html and "Where the labels become decodable" in html and "Grad-CAM" in html
    summary = r.save_metrics()
    assert json.loads((r.run.path / "metrics.json").read_text())["summary"]["class_geometry"]["mode"] == "class vectors"
    assert summary["folder"]["source_sizes"] == [[[200, 300], 12], [[260, 200], 12]]


def test_other_weights_or_images_never_reuse_a_run(setting, head_result, tmp_path):
    cfg = _cfg(setting, setting["head_folder"], cam_images=0, random_floor=False)
    again = run_explore(cfg, progress=False)
    path, _ = hub_weights_file("resnet18", "DEFAULT")
    saved = path.read_bytes()
    try:
        torch.manual_seed(99)
        torch.save(torchvision.models.resnet18().state_dict(), path)
        other = run_explore(cfg, progress=False)
    finally:
        path.write_bytes(saved)
    assert other.run.path != again.run.path and not np.allclose(
        np.asarray(other.bank.outputs), np.asarray(again.bank.outputs)
    )
    first = sorted(Path(setting["head_folder"]).rglob("*.png"))[0]
    saved_image = first.read_bytes()
    try:
        Image.fromarray(np.zeros((200, 260, 3), np.uint8)).save(first)  # the same file name, other pixels
        changed = run_explore(cfg, progress=False)
    finally:
        first.write_bytes(saved_image)
    assert changed.run.path != again.run.path
    # images held in tensors are known by their pixels: other pixels, another run; a torch Dataset of unknown make is
    # never reused
    pixels = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    cfg_arrays = _cfg(setting, None, size=32, n_images=16, random_floor=False, cam_images=0)
    runs = [
        run_explore(cfg_arrays, data=(p, [0, 1, 2, 3] * 4), progress=False).run.path
        for p in (pixels, pixels, 255 - pixels)
    ]
    assert runs[0] == runs[1] != runs[2]


def test_unlabelled_images_get_the_explorer_and_say_what_is_left_out(setting, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, f in enumerate(sorted(Path(setting["head_folder"]).rglob("*.png"))[:9]):
        (flat / f"{i}.png").write_bytes(f.read_bytes())
    r = run_explore(_cfg(setting, flat, size=64, n_images=9), progress=False)
    assert r.class_names == [] and r.probes == [] and r.geometry is None and r.purity == {}
    assert any("carry no labels" in n for n in r.notes) and len(r.coords["layer4.1"]) == 9 * 4
    assert write_explore_report(r, tmp_path / "r.html")


def test_the_cli_writes_the_report_and_bad_input_is_a_message(setting, tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("GEOVIZ_")}
    env.update(
        TORCH_HOME=str(setting["root"] / "torch"),
        GEOVIZ_RUNS=str(tmp_path / "runs"),
        GEOVIZ_PROGRESS="0",
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
    )  # any download would fail at once
    base = [
        str(GEOVIZ),
        "explore",
        "tv:resnet18",
        "--weights",
        "DEFAULT",
        "--profile",
        "smoke",
        "--n-images",
        "16",
        "--projection",
        "pca",
    ]
    out = subprocess.run(
        [*base, "--data", f"folder:{setting['head_folder']}", "--out", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == str(tmp_path / "r.html") and json.loads(lines[-1])["class_geometry"]["mode"] == "class vectors"
    data = ["--data", f"folder:{setting['head_folder']}"]
    bad_inputs = {
        "image folder": [*base, "--data", f"folder:{tmp_path / 'none'}"],
        "not found at": [*base, *data, "--model-b", "tv:resnet34", "--weights-b", "DEFAULT"],
        "has no weights 'IMAGENET1K_V7'": [str(GEOVIZ), "explore", "tv:resnet18", "--weights", "IMAGENET1K_V7", *data],
    }
    for message, cmd in bad_inputs.items():
        bad = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert bad.returncode != 0 and "Traceback" not in bad.stderr and message in bad.stderr, bad.stderr[-1500:]


def test_images_normalised_twice_are_refused_and_modules_called_twice_are_layers_per_call(setting):
    from torch.utils.data import TensorDataset

    normalised = TensorDataset(torch.randn(8, 3, 64, 64) * 1.5, torch.tensor([0, 1, 2, 3] * 2))
    with pytest.raises(
        ValueError, match=r"the images range from .* reads images in \[0, 1\] .*drop Normalize.*normalize="
    ):
        run_explore(_cfg(setting, None, size=64, n_images=8), data=normalised, progress=False)
    r = run_explore(
        _cfg(setting, setting["head_folder"], size=64, layers=("layer4.*",), random_floor=False, cam_images=0),
        progress=False,
    )
    assert "layer4.0.relu#1" in r.layers and {p["layer"] for p in r.probes} == set(r.layers)


def test_pixel_floor_is_chosen_on_the_training_images_alone():
    """The cross-validated scores that pick the pair come from the training images alone (one of them
    recomputed from scratch), the pick is their best, and the held-out images (whose class shows in
    another way) only score it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from geoviz.analysis.floors import pixel_floor

    y = np.repeat([0, 1], 30)
    train = torch.rand(60, 3, 32, 32) * 0.5
    train[y == 1, 0] += 0.4  # class 1 is redder
    test = torch.rand(60, 3, 32, 32) * 0.5 + 0.2
    test[y == 1, :, ::2, ::2] = 1.0  # class 1 has a checkerboard, the colour no longer tells
    res = pixel_floor(train, y, test, y, seed=3)
    assert max(res["cv"], key=res["cv"].get) == f"{res['features']} / {res['classifier']}"
    block = train.reshape(60, 3, 8, 4, 8, 4).mean((3, 5)).reshape(60, -1).double().numpy()  # area-downsampled to 8 × 8
    cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=3)
    expected = cross_val_score(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)), block, y, cv=cv
    ).mean()
    assert res["cv"]["pixels 8×8 / logistic regression"] == pytest.approx(expected, abs=1e-12)
    assert res["accuracy"] == pytest.approx(res["correct"].mean()) and len(res["correct"]) == 60


def test_inputs_that_cannot_work_fail_before_the_pass(setting):
    few = setting["root"] / "few"
    for k, c in enumerate(IMAGENET_NAMES):
        (few / c).mkdir(parents=True, exist_ok=True)
        for f in sorted((setting["head_folder"] / c).iterdir())[
            : 1 + (k == 0) * 5
        ]:  # one image in each class but the first (six)
            (few / c / f.name).write_bytes(f.read_bytes())
    with pytest.raises(
        ValueError, match=r"3 of 4 classes have fewer than 2 of the 9 images read \(n_images=24\): .*raise n_images"
    ):
        run_explore(_cfg(setting, few, size=64), progress=False)
    full = ExploreConfig.from_profile(
        "full", model="runs/mine/model.pt"
    )  # the user's network takes none of full's network settings
    assert (
        full.weights is None and full.model_b is None and full.weights_b is None and full.data == "folder:data/imagenet"
    )
    from geoviz.models import load_network

    with pytest.raises(ValueError, match="built untrained: weights= is for tv: and timm:"):
        load_network("resnet20", "DEFAULT")


def test_grad_cam_shows_the_most_confused_pair_only_when_a_pair_is_confused():
    from geoviz.analysis.angles import ClassGeometry

    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 2]] * 0.8 + 0.2 / 3  # image 1 (class 0) taken for class 1
    conf = np.zeros((3, 3))
    conf[0, 1] = conf[1, 0] = 0.25
    g = ClassGeometry("class vectors", ["a", "b", "c"], np.ones((3, 3)), conf, {}, None, 5 / 6, np.arange(6), y, probs)
    assert cam_rows(g, 6, 4)[0] == 1  # the confusion first
    none = ClassGeometry(
        "class vectors",
        ["a", "b", "c"],
        np.ones((3, 3)),
        np.zeros((3, 3)),
        {},
        None,
        1.0,
        np.arange(6),
        y,
        np.eye(3)[y],
    )
    assert cam_rows(none, 6, 4) == [0, 1, 3, 5]  # evenly spread: no pair (0, 0) read as "most confused"
