"""Procedural shapes: bad input, determinism, balance, and labels checked independently.

Topological labels are verified on the rasterised images with scipy's connected components
(foreground 8-connected, background 4-connected: the standard digital-topology pair); quad classes
are verified from the recorded vertices with NumPy geometry.
"""

import numpy as np
import pytest
import torch
from scipy import ndimage

from geoviz.datasets import TASKS, ShapesDataset, get_dataset, make_shapes

EIGHT = np.ones((3, 3), int)


def n_holes(b):
    lab, n = ndimage.label(~b)
    border = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))) - {0}
    return n - len(border)


def n_parts(b):
    return ndimage.label(b, structure=EIGHT)[1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(task="circles", n=4), "unknown task 'circles'; allowed: 'quad'"),
        (dict(task="quad", n=0), "n must be"),
        (dict(task="quad", n=4, size=15), "size must be a whole number >= 16"),
        (dict(task="inside", n=4, size=24), ">= 32 pixels for task 'inside'"),
        (dict(task="hole", n=4, size=20), ">= 24 pixels for task 'hole'"),
        (dict(task="quad", n=4, variant="wobbly"), "unknown variant 'wobbly'; allowed: 'regular', 'irregular'"),
        (dict(task="quad", n=4, scale=(0.3, 0.7)), "scale must be"),
    ],
)
def test_bad_parameters_name_the_allowed_values(kwargs, match):
    task, n = kwargs.pop("task"), kwargs.pop("n")
    with pytest.raises(ValueError, match=match):
        make_shapes(task, n, **kwargs)


def test_shapes_dataset_bad_split_and_channels():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        ShapesDataset("quad", 4, split="dev")
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        ShapesDataset("quad", 4, channels=2)
    with pytest.raises(KeyError, match="closest: 'shapes10'"):
        get_dataset("shapes11")


@pytest.mark.parametrize("task", list(TASKS))
def test_images_depend_only_on_seed_and_index(task):
    a, la, _ = make_shapes(task, 12, seed=7, return_meta=False)
    b, lb, _ = make_shapes(task, 5, seed=7, start=4, return_meta=False)
    assert torch.equal(a[4:9], b) and torch.equal(la[4:9], lb)
    c, _, _ = make_shapes(task, 12, seed=8, return_meta=False)
    assert not torch.equal(a, c)
    channels = 3 if task == "shapes10" else 1
    size = 32 if task == "shapes10" else 64
    assert a.shape == (12, channels, size, size) and a.dtype == torch.float32
    assert 0.0 <= a.min() and a.max() <= 1.0


@pytest.mark.parametrize("task", list(TASKS))
def test_any_contiguous_range_is_class_balanced(task):
    k = len(TASKS[task])
    _, labels, meta = make_shapes(task, 7 * k, start=3, size=64 if task == "curve" else 32, return_meta=True)
    assert np.bincount(labels.numpy(), minlength=k).tolist() == [7] * k
    assert [m["class"] for m in meta] == [TASKS[task][int(l)] for l in labels]


def _same_distribution(values, labels):
    from scipy.stats import ks_2samp

    v, y = np.asarray(values), labels.numpy()
    assert ks_2samp(v[y == 0], v[y == 1]).pvalue > 0.01


@pytest.mark.parametrize("variant", ["regular", "irregular"])
@pytest.mark.parametrize("size", [24, 64])
def test_hole_labels_are_true(variant, size):
    images, labels, meta = make_shapes("hole", 400, size=size, seed=11, variant=variant)
    for img, y, m in zip(images, labels, meta):
        b = img[0].numpy() > 0.5
        assert n_holes(b) == int(y), m["class"]
    # the channel has one width distribution in both classes (a wider dent would be a cue)
    _same_distribution([np.linalg.norm(m["channel"][0] - m["channel"][3]) for m in meta], labels)
    # every shape has a cut and a channel; the channel's inner end reaches the cut only without a hole
    for m in meta:
        inner_end = m["channel"][[0, 3]].mean(0)  # the bar's start (its first and last corners)
        cut_centre = m["cut_centre"]
        assert (np.linalg.norm(inner_end - cut_centre) < 1.0) == (m["label"] == 0)


@pytest.mark.parametrize("variant", ["regular", "irregular"])
@pytest.mark.parametrize("size", [16, 64])
def test_connectivity_labels_are_true(variant, size):
    images, labels, meta = make_shapes("connectivity", 400, size=size, seed=5, variant=variant)
    for img, y in zip(images, labels):
        assert n_parts(img[0].numpy() > 0.5) == (1 if y == 0 else 2)
    # both classes: a bar of one width distribution (a wider broken bar would be a cue)
    _same_distribution([np.linalg.norm(m["bar"][0][0] - m["bar"][0][3]) for m in meta], labels)


@pytest.mark.parametrize("variant", ["regular", "irregular"])
@pytest.mark.parametrize("size", [32, 64])
def test_inside_labels_are_true(variant, size):
    images, labels, meta = make_shapes("inside", 400, size=size, seed=2, variant=variant)
    depth = {0: [], 1: []}
    for img, y, m in zip(images, labels, meta):
        for level in (0.3, 0.7):  # the topology holds whatever grey level one reads
            bl = img[0].numpy() > level
            comp_l, _ = ndimage.label(bl, structure=EIGHT)
            dx, dy = (int(v) for v in m["dot"])
            bg_l, _ = ndimage.label(~(bl & (comp_l != comp_l[dy, dx])))
            edge = set(np.unique(np.concatenate([bg_l[0], bg_l[-1], bg_l[:, 0], bg_l[:, -1]])))
            assert (comp_l == comp_l[dy, dx]).sum() < 30 and (bg_l[dy, dx] not in edge) == (int(y) == 0), level
        b = img[0].numpy() > 0.5
        comp, n = ndimage.label(b, structure=EIGHT)
        dx, dy = (int(v) for v in m["dot"])
        dot = comp[dy, dx]
        assert dot > 0 and (comp == dot).sum() < 30 and n in (2, 3)  # the dot apart from one or two contours
        bg, _ = ndimage.label(~(b & (comp != dot)))  # erase the dot, then: is its spot enclosed?
        border = set(np.unique(np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]])))
        assert (bg[dy, dx] not in border) == (int(y) == 0)
        # distance to the first (the dot's) contour, by brute force over its edges
        v = m["vertices"][0].astype(np.float64)
        a, e = v, np.roll(v, -1, 0) - v
        t = np.clip(((m["dot"] - a) * e).sum(1) / np.maximum((e * e).sum(1), 1e-12), 0, 1)  # padded: zero-length edges
        depth[int(y)].append(np.linalg.norm(a + t[:, None] * e - m["dot"], axis=1).min())
    # outside dots sit as deep in their (open) contour as inside dots in theirs
    assert abs(np.mean(depth[0]) - np.mean(depth[1])) < 0.1 * np.mean(depth[0])


def _angles(v):
    e = np.roll(v, -1, 0) - v
    a = []
    for i in range(4):
        u, w = -e[i - 1], e[i]
        a.append(np.degrees(np.arccos(np.dot(u, w) / np.linalg.norm(u) / np.linalg.norm(w))))
    return np.array(a), np.linalg.norm(e, axis=1), e


def _parallel(e1, e2):
    return abs(e1[0] * e2[1] - e1[1] * e2[0]) / (np.linalg.norm(e1) * np.linalg.norm(e2)) < 1e-4


def test_quad_classes_have_their_defining_geometry():
    _, labels, meta = make_shapes("quad", 200, seed=4)
    for m in meta:
        v = m["vertices"][0].astype(np.float64)
        assert v.shape == (4, 2)
        ang, side, e = _angles(v)
        pairs = [_parallel(e[0], e[2]), _parallel(e[1], e[3])]
        right = np.allclose(ang, 90, atol=0.05)
        if m["class"] == "square":
            assert right and np.allclose(side, side[0], rtol=1e-4)
        elif m["class"] == "rectangle":
            assert right and side.max() / side.min() > 1.4
        elif m["class"] == "trapezoid":
            assert sum(pairs) == 1
        else:
            assert all(pairs) and not right


def test_irregular_variant_draws_other_outlines():
    reg, _, mr = make_shapes("quad", 8, seed=1)
    irr, _, mi = make_shapes("quad", 8, seed=1, variant="irregular")
    assert mr[0]["vertices"][0].shape[0] == 4 and mi[0]["vertices"][0].shape[0] > 4  # wobbly edges
    assert not torch.equal(reg, irr)
    # irregular contours of the global tasks are non-convex blobs
    _, _, meta = make_shapes("inside", 20, seed=1, variant="irregular")
    from scipy.spatial import ConvexHull

    concave = [len(ConvexHull(m["vertices"][0]).vertices) < len(m["vertices"][0]) for m in meta]
    assert sum(concave) >= 15


def test_shapes10_classes_and_splits():
    ds = ShapesDataset("shapes10", 40, split="train")
    test = ShapesDataset("shapes10", 40, split="test")
    assert ds.classes[:4] == ["square", "rectangle", "circle", "ellipse"] and len(ds.classes) == 10
    x, y = ds[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 3
    assert not torch.equal(ds.images, test.images)  # disjoint index ranges
    grey = ShapesDataset("quad", 8, channels=3, size=32)
    assert grey[0][0].shape == (3, 32, 32) and torch.equal(grey[0][0][0], grey[0][0][2])


def _inside_polygon(px, py, v):
    """Even-odd ray casting in plain NumPy (an independent implementation)."""
    inside = np.zeros(px.shape, bool)
    for (x1, y1), (x2, y2) in zip(v, np.roll(v, -1, 0)):
        cond = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= cond & (px < xc)
    return inside


def test_meta_records_the_drawn_polygons():
    images, _, meta = make_shapes("quad", 30, seed=9)
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    for img, m in zip(images, meta):
        if not m["filled"]:
            continue
        truth = _inside_polygon(xx, yy, m["vertices"][0].astype(np.float64))
        drawn = img[0].numpy() > 0.5
        assert (truth == drawn).mean() > 0.995
        assert np.allclose(m["vertices"][0].mean(0), m["centre"], atol=1e-3)


@pytest.mark.parametrize(
    "variant, scale", [("regular", None), ("irregular", None), ("irregular", (0.24, 0.28)), ("regular", (0.24, 0.28))]
)
def test_curve_labels_are_true(variant, scale):
    """Same rail ⇔ both dots in one connected component of the drawing (two rails, never touching,
    not even by an anti-aliased fringe: any ink counts), at the training and the transfer sizes."""
    images, labels, meta = make_shapes("curve", 200, size=64, seed=6, variant=variant, scale=scale)
    for img, y, m in zip(images, labels, meta):
        comp, n = ndimage.label(img[0].numpy() > 0, structure=EIGHT)
        (x1, y1), (x2, y2) = m["dots"]
        c1, c2 = comp[int(y1), int(x1)], comp[int(y2), int(x2)]
        assert n == 2 and c1 > 0 and c2 > 0 and (c1 == c2) == (int(y) == 0)
        assert np.hypot(x2 - x1, y2 - y1) >= m["scale"] * 64 / 3 - 0.5  # far apart: a third of the outer radius or more


def test_a_data_set_generated_in_chunks_is_the_one_generated_at_once(monkeypatch):
    from geoviz.datasets.shapes import ShapesDataset

    whole = ShapesDataset("shapes10", 23, seed=2, split="val", channels=1)
    monkeypatch.setattr(ShapesDataset, "CHUNK", 5)
    chunked = ShapesDataset("shapes10", 23, seed=2, split="val", channels=1)
    assert (
        torch.equal(whole.images, chunked.images)
        and torch.equal(whole.labels, chunked.labels)
        and whole.images.shape[1] == 1
    )
    with pytest.raises(ValueError, match="n must be a whole number"):
        ShapesDataset("shapes10", 0)
