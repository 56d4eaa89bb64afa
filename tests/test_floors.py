"""The panel floor: every study's yardstick (analysis.floors.panel_floor)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from geoviz.analysis.floors import IMAGE_FEATURES, image_statistics, panel_floor, shortcut_floor, texture_statistics


def _textures(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Two classes with the same grey-level histogram (ranks mapped onto one fixed set of values)
    and the same gradient energy, differing only in where the correlation sits: white noise plus
    copies of itself shifted by 2 pixels, or by 4. The 29 image statistics (histograms,
    percentiles, gradient at one pixel) cannot tell them apart; co-occurrence at 2 and 4 can."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    values = np.sort(rng.random(32 * 32))
    out = np.empty((n, 1, 32, 32))
    for i in range(n):
        z = rng.normal(size=(32, 32))
        d = 4 if y[i] else 2
        z = z + np.roll(z, d, 0) + np.roll(z, d, 1)
        out[i, 0].flat[np.argsort(z, axis=None)] = values
    return torch.from_numpy(out).float(), y


def test_the_panel_beats_a_single_model_on_statistics_that_miss_the_texture():
    x, y = _textures(240, 0)
    xt, yt = _textures(120, 1)
    old = shortcut_floor(image_statistics(x), y, image_statistics(xt), yt)  # the floor before: 29 statistics
    floor = panel_floor(x, y, {"test": (xt, yt)})
    assert old < 0.75 and floor.accuracy["test"] > 0.95, (old, floor.accuracy)
    assert floor.features == "texture statistics"
    # the table holds every member, and the chosen one is the best of it
    assert len(floor.cv) == len(IMAGE_FEATURES) * 4 and floor.cv[floor.member] == max(floor.cv.values())
    assert floor.correct["test"].mean() == floor.accuracy["test"]


def test_the_member_is_chosen_on_training_images_alone():
    x, y = _textures(120, 2)
    xt, yt = _textures(60, 3)
    a = panel_floor(x, y, {"test": (xt, yt)}, seed=4)
    b = panel_floor(x, y, {"test": (xt, 1 - yt), "same": (xt, yt)}, seed=4)  # test labels cannot move the choice
    assert a.member == b.member and a.cv == b.cv
    assert b.accuracy["test"] == pytest.approx(1 - a.accuracy["test"]) and b.accuracy["same"] == a.accuracy["test"]
    with pytest.raises(ValueError, match="two classes"):
        panel_floor(x[:3], np.array([0, 0, 1]), {"test": (xt, yt)})


def test_texture_statistics_match_scikit_image_and_scipy_per_image():
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((3, 3, 24, 24))).float()
    got = texture_statistics(x)
    assert got.shape == (3, 131) and np.isfinite(got).all()
    for i in range(3):
        grey = x[i].mean(0).double().numpy()
        g8 = np.round(grey * 255).astype(np.uint8)
        lbp = local_binary_pattern(g8, 8, 2, "uniform")  # radius 2: columns 10..19
        np.testing.assert_allclose(got[i, 10:20], np.bincount(lbp.astype(int).ravel(), minlength=10) / lbp.size)
        glcm = graycomatrix(g8 // 8, [1, 2, 4], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=32, normed=True)
        np.testing.assert_allclose(got[i, 30:33], graycoprops(glcm, "contrast").mean(1))  # GLCM contrast, mean
        log = ndimage.gaussian_laplace(grey, 2)  # σ = 2: the second LoG block, after 66 + 18 + 4 columns
        np.testing.assert_allclose(got[i, 88], np.abs(log).mean(), rtol=1e-6)
        np.testing.assert_allclose(got[i, -24:-16], np.histogram(x[i, 0].numpy(), 8, (0, 1))[0] / 576, atol=1e-7)


def test_texture_statistics_of_an_image_do_not_depend_on_the_other_images_in_the_batch():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((5, 3, 20, 20))).float()
    whole = texture_statistics(x)
    one_by_one = np.concatenate([texture_statistics(x[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(whole, one_by_one, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(texture_statistics(x.flip(0)), whole[::-1], rtol=1e-10, atol=1e-12)
    grey = x[2].mean(0).double().numpy()
    sob = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))  # the gradient block: columns 66..83
    np.testing.assert_allclose(whole[2, 66:82], np.histogram(sob, 16, (0, 4 * np.sqrt(2)))[0] / 400)
    np.testing.assert_allclose(whole[2, 82:84], [sob.mean(), sob.std()], rtol=1e-6)


def test_max_train_fits_on_a_stratified_subset():
    x, y = _textures(120, 4)
    xt, yt = _textures(40, 5)
    f = panel_floor(x, y, {"test": (xt, yt)}, max_train=50, seed=1)
    assert f.n_train == 50 and panel_floor(x, y, {"test": (xt, yt)}).n_train == 120


def test_a_feature_set_may_name_its_classifiers_and_full_pixels_see_what_pooling_averages_away():
    """A checkerboard's phase (bright on even or on odd pixels) averages out in every 2×2 block, so
    16×16 pixels cannot see it; every pixel at full resolution can, with a linear model. Full pixels
    are scored by logistic regression only (their ``classifiers``), transfer's floor before the panel."""
    from geoviz.analysis.floors import full_pixels

    def phase(n, seed):
        rng = np.random.default_rng(seed)
        y = np.arange(n) % 2
        checker = (np.add.outer(np.arange(32), np.arange(32)) % 2 == y[:, None, None]).astype(float)
        x = 0.5 * rng.random((n, 32, 32)) + 0.25 * checker
        return torch.from_numpy(np.repeat(x[:, None], 3, 1)).float(), y

    (x, y), (xt, yt) = phase(90, 0), phase(60, 1)
    panel = {"pixels 16×16": IMAGE_FEATURES["pixels 16×16"], "pixels (full resolution)": full_pixels}
    floor = panel_floor(x, y, {"test": (xt, yt)}, panel=panel)
    assert floor.member == "pixels (full resolution) / logistic regression" and floor.accuracy["test"] > 0.95
    assert [m for m in floor.cv if m.startswith("pixels (full")] == ["pixels (full resolution) / logistic regression"]
    assert max(v for m, v in floor.cv.items() if m.startswith("pixels 16")) < 0.75
    # smoke runs leave the tree ensembles out: the table says which members were tried
    fast = panel_floor(x, y, {"test": (xt, yt)}, panel=panel, trees=False)
    assert sorted(fast.cv) == ["pixels (full resolution) / logistic regression"] + [
        f"pixels 16×16 / {c}" for c in ("5 nearest neighbours", "logistic regression")
    ]
