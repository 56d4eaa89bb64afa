import numpy as np
import pytest
import torch
from scipy import ndimage

from geoviz.datasets import get_dataset
from geoviz.datasets.defects import DEFECT_CLASSES, make_leather


@pytest.fixture(scope="module")
def hides():
    x, y, twins, masks = make_leather(64, size=64, seed=3, return_twins=True)
    return (x * 255).round().to(torch.uint8), y, (twins * 255).round().to(torch.uint8), masks


def test_images_are_deterministic_per_seed_and_index():
    a, ya = make_leather(16, seed=1)
    b, yb = make_leather(8, seed=1, start=8)
    assert torch.equal(a[8:], b) and torch.equal(ya[8:], yb)
    c, _ = make_leather(16, seed=2)
    assert (a - c).abs().mean() > 0.02
    assert a.shape == (16, 3, 64, 64) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert ya.tolist() == [i % len(DEFECT_CLASSES) for i in range(16)]


def test_labels_agree_with_the_pixels_that_differ_from_the_defect_free_twin(hides):
    x, y, twins, masks = hides
    diff = (x.int() - twins.int()).abs().amax(1) > 0  # (n, H, W): where the defect changed the hide
    for i in range(len(y)):
        cls = DEFECT_CLASSES[int(y[i])]
        region = diff[i].numpy()
        if cls == "good":
            assert not region.any(), f"image {i}: a good hide differs from its twin"
            continue
        area = region.sum()
        assert area >= 8, f"image {i} ({cls}): only {area} pixels differ"
        # every changed pixel lies in the declared defect (grown by a pixel for the anti-aliasing)
        grown = ndimage.binary_dilation(masks[i].numpy() > 0, iterations=1)
        assert not (region & ~grown).any(), f"image {i} ({cls}) changed pixels outside its defect"
        # and the declared defect did change the hide: a few pixels may not (a poke's hole over a
        # look-alike's dark spot is already black, a light stroke on white saturates)
        core = masks[i].numpy() > 0.5
        assert (core & ~region).sum() <= max(3, 0.05 * core.sum()), f"image {i} ({cls}): much of its mask is unchanged"
        n_parts = ndimage.label(ndimage.binary_closing(region))[1]
        if cls in ("poke", "color", "glue"):
            assert n_parts == 1 and area < 64 * 64 / 6, f"image {i} ({cls}): {n_parts} parts, {area} px"
        if cls == "poke":
            assert area <= 60
        if cls == "scratch":
            assert ndimage.label(region)[1] >= 2  # parallel strokes, apart
        if cls == "fold":
            assert area >= 150


def test_defect_sizes_rank_as_drawn(hides):
    x, y, twins, _ = hides
    diff = ((x.int() - twins.int()).abs().amax(1) > 0).sum((1, 2)).numpy()
    med = {c: np.median(diff[(y == k).numpy()]) for k, c in enumerate(DEFECT_CLASSES)}
    assert med["poke"] < med["cut"] < med["growth"] < med["fold"] and med["poke"] < med["color"]


def test_registered_split_is_disjoint_and_uint8():
    tr, te = get_dataset("leather", "train", n=16), get_dataset("leather", "test", n=16)
    assert tr.images.dtype == torch.uint8 and tr.classes == list(DEFECT_CLASSES)
    assert not any(torch.equal(a, b) for a in tr.images for b in te.images)
    with pytest.raises(ValueError, match="size must be >= 32"):
        make_leather(2, size=16)
    with pytest.raises(ValueError, match="unknown defect classes"):
        make_leather(2, classes=("good", "dent"))
    with pytest.raises(ValueError, match="decoy_rate is a probability"):
        make_leather(2, decoy_rate=1.5)
    bare = get_dataset("leather", "train", n=16, decoy_rate=0.0)
    assert torch.equal(bare.images, (make_leather(16, decoy_rate=0.0, start=0)[0] * 255).round().to(torch.uint8))


def _png(path, rgb, size=(20, 16)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), rgb, np.uint8)).save(path)


def test_mvtec_layout_is_read_and_split_class_balanced(tmp_path):
    root = tmp_path / "mvtec_anomaly_detection" / "leather"
    for k in range(5):
        _png(root / "train" / "good" / f"{k:03d}.png", (200, 150, 100))
    for cls, rgb in (("good", (200, 150, 100)), ("cut", (20, 20, 20)), ("poke", (250, 250, 250))):
        for k in range(5):
            _png(root / "test" / cls / f"{k:03d}.png", rgb)
    (root / "test" / "cut" / "notes.txt").write_text("not an image")
    parts = {s: get_dataset("mvtec_leather", s, size=32, root=tmp_path) for s in ("train", "val", "test")}
    assert parts["train"].classes == ["good", "cut", "poke"]
    # MVTec's imbalance (10 good here, 5 of each defect): every class split 60/20/20 by itself
    want = {"train": [6, 3, 3], "val": [2, 1, 1], "test": [2, 1, 1]}
    for s, d in parts.items():
        assert d.images.shape[1:] == (3, 32, 32) and d.images.dtype == torch.uint8
        assert np.bincount(d.labels.numpy(), minlength=3).tolist() == want[s], s
    assert sum(len(d) for d in parts.values()) == 20
    cut = parts["train"].images[parts["train"].labels == 1]
    assert (cut.float().mean((1, 2, 3)) < 25).all()  # the cut folder's dark images carry the cut label
    with pytest.raises(FileNotFoundError, match="mvtec_anomaly_detection.*never downloads"):
        get_dataset("mvtec_leather", "train", root=tmp_path / "nowhere")


def test_image_folder_layout_is_read(tmp_path):
    for cls, rgb in (("stain", (90, 40, 30)), ("clean", (180, 140, 90))):
        for k in range(5):
            _png(tmp_path / "defects" / cls / f"{k}.png", rgb)
    d = get_dataset("defect_folder", "train", size=40, root=tmp_path)
    assert d.classes == ["clean", "stain"] and d.images.shape[1:] == (3, 40, 40)
    clean = d.images[d.labels == 0].float().mean((0, 2, 3))
    assert clean.tolist() == pytest.approx([180, 140, 90], abs=1)
    with pytest.raises(FileNotFoundError, match="defects/<class>"):
        get_dataset("defect_folder", "train", root=tmp_path / "empty")


def test_image_statistics_match_numpy():
    from geoviz.analysis.floors import IMAGE_STATISTICS, image_statistics

    x, _ = make_leather(4, size=32 + 8, seed=5)
    got = image_statistics(x)
    a = x.numpy().astype(np.float64)
    grey = a.mean(1)
    assert got.shape == (4, len(IMAGE_STATISTICS))
    np.testing.assert_allclose(got[:, :3], a.mean((2, 3)), rtol=1e-5)
    np.testing.assert_allclose(got[:, 3:6], a.std((2, 3), ddof=1), rtol=1e-4)
    np.testing.assert_allclose(
        got[:, 6:11], np.quantile(grey.reshape(4, -1), [0.01, 0.05, 0.5, 0.95, 0.99], axis=1).T, rtol=1e-5
    )
    g = np.hypot(grey[:, :-1, 1:] - grey[:, :-1, :-1], grey[:, 1:, :-1] - grey[:, :-1, :-1])
    np.testing.assert_allclose(got[:, 11], g.mean((1, 2)), rtol=1e-4)
    np.testing.assert_allclose(got[:, 12], np.quantile(g.reshape(4, -1), 0.99, axis=1), rtol=1e-4)
    h = np.stack([np.histogram(gr, bins=16, range=(gr.min(), gr.max()))[0] for gr in grey]) / grey[0].size
    np.testing.assert_allclose(got[:, -16:], h, atol=1.5 / grey[0].size)  # bin edges: float rounding may move a pixel


def test_decoys_hide_the_defects_texture_but_not_their_shape():
    """Orderless texture statistics name the class without decoys, and fall toward chance (1/8)
    with them; the decoys are the defect renderers with the shape broken, so the defect-free
    twin of a good hide carries seven marks and that of a defect six (its own kind is the defect)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from geoviz.analysis.floors import texture_statistics

    def floor(rate):
        tr = make_leather(400, size=32, seed=0, decoy_rate=rate)
        te = make_leather(200, size=32, seed=0, start=10_000, decoy_rate=rate)
        f = [texture_statistics((x * 255).round().to(torch.uint8)) for x, _ in (tr, te)]
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(f[0], tr[1].numpy())
        return clf.score(f[1], te[1].numpy())

    assert floor(0.0) > 0.6 and floor(1.0) < 0.3
    # a defect takes its own decoy's place: against the same hides all labelled good (every decoy
    # on), a class-k twin lacks something (decoy k), a good twin nothing
    _, y, twins, _ = make_leather(16, size=32, seed=4, return_twins=True)
    all_good, _ = make_leather(16, size=32, seed=4, classes=("good",))
    bare, _ = make_leather(16, size=32, seed=4, classes=("good",), decoy_rate=0.0)
    missing = (all_good - twins).abs().amax(1) > 2 / 255
    for i, k in enumerate(y.tolist()):
        assert missing[i].any() == (k != 0), f"image {i} ({DEFECT_CLASSES[k]})"
        assert (all_good[i] - bare[i]).abs().amax() > 0.1  # every hide carries decoys
