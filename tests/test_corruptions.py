import corruption_refs as ref
import numpy as np
import pytest
import torch

from geoviz.analysis.robustness import robustness_report, robustness_reports, summarize_errors
from geoviz.datasets.corruptions import (
    CORRUPTIONS,
    GROUPS,
    PARAMS,
    SEVERITIES,
    CorruptedImages,
    corrupt,
    gallery,
    load_cifar10c,
)
from geoviz.datasets.images import TensorImages


def _images(n=12, size=32, seed=0):
    """Smooth shapes with texture and colour: what the blurs and the noise act on."""
    from geoviz.datasets import get_dataset

    ds = get_dataset("shapes10", "test", n=n, seed=seed)
    return torch.stack([ds[i][0] for i in range(n)])


def _psnr(a, b):
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean().clamp_min(1e-12)))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_dtype_range_and_determinism(name):
    x = _images(6)
    for s in (1, 5):
        y = corrupt(x, name, s, seed=3)
        assert y.shape == x.shape and y.dtype == x.dtype and y.min() >= 0 and y.max() <= 1
        assert torch.equal(y, corrupt(x, name, s, seed=3))
    u8 = (x * 255).round().to(torch.uint8)
    yu = corrupt(u8, name, 3)
    assert yu.dtype == torch.uint8 and yu.shape == u8.shape
    grey = corrupt(x[:, :1], name, 2)
    assert grey.shape == x[:, :1].shape


RANDOM = [
    c
    for c in CORRUPTIONS
    if c not in ("defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression")
]


@pytest.mark.parametrize("name", RANDOM)
def test_seeds_draw_other_corruptions(name):
    x = _images(4)
    assert not torch.equal(corrupt(x, name, 3, seed=0), corrupt(x, name, 3, seed=1))


# the published parameters grow stronger with the severity for these (motion blur: radius 6 and 8
# at sigma 2 give the same kernel, so severities 3 and 4 tie); not for glass blur (sigma 0.05,
# 0.25, 0.4, 0.25, 0.4) nor the elastic transform (its affine part shrinks from 0.08 to 0.03 of
# the size as the elastic part grows), whose PSNR is not ordered in CIFAR-10-C itself
MONOTONE = [c for c in CORRUPTIONS if c not in ("glass_blur", "elastic_transform", "frost")]


@pytest.mark.parametrize("name", MONOTONE)
def test_distortion_grows_with_severity(name):
    x = _images(16)
    p = [_psnr(corrupt(x, name, s, seed=0), x) for s in SEVERITIES]
    if name == "motion_blur":
        assert all(a >= b - 0.05 for a, b in zip(p, p[1:])) and p[0] > p[-1] + 3, p
    else:
        assert all(a > b for a, b in zip(p, p[1:])), p


def test_frost_replaces_more_of_the_image_with_severity():
    """frost = c₀·x + c₁·texture with c₁/c₀ rising 0.2 → 0.6: the image's share falls (its
    correlation with the clean image), though PSNR need not (texture and image partly cancel)."""
    x = _images(16)
    corr = [float(np.corrcoef(corrupt(x, "frost", s).flatten().numpy(), x.flatten().numpy())[0, 1]) for s in SEVERITIES]
    assert all(a > b for a, b in zip(corr, corr[1:])), corr
    ratios = [c1 / c0 for c0, c1 in PARAMS["frost"]]
    assert ratios == sorted(ratios)


def test_noise_matches_its_closed_form_statistics():
    x = torch.full((8, 3, 32, 32), 0.5)
    for s, c in enumerate(PARAMS["gaussian_noise"], 1):
        d = corrupt(x, "gaussian_noise", s) - x
        assert abs(float(d.mean())) < 0.003 and abs(float(d.std()) - c) < 0.03 * c
    for s, c in enumerate(PARAMS["shot_noise"], 1):
        y = corrupt(x, "shot_noise", s).double()
        k = y * c  # Poisson(0.5 c): mean = variance = 0.5 c
        assert (
            np.allclose(k, k.round(), atol=1e-3 * c)
            and abs(float(k.mean()) - 0.5 * c) < 0.02 * c
            and abs(float(k.var()) / (0.5 * c) - 1) < 0.1
        )
    for s, c in enumerate(PARAMS["impulse_noise"], 1):
        y = corrupt(x, "impulse_noise", s)
        zero, one = float((y == 0).float().mean()), float((y == 1).float().mean())
        assert (
            abs(zero - c / 2) < 0.15 * c
            and abs(one - c / 2) < 0.15 * c
            and float((y == 0.5).float().mean()) == pytest.approx(1 - zero - one)
        )


@pytest.mark.parametrize(
    "name, atol",
    [("contrast", 1e-6), ("brightness", 1e-5), ("defocus_blur", 1e-5), ("zoom_blur", 1e-5), ("pixelate", 1e-6)],
)
def test_deterministic_corruptions_match_the_reference_formulas(name, atol):
    x = _images(3)
    if name == "pixelate":  # PIL works on 8-bit images
        x = (x * 255).round() / 255
    for s in (1, 3, 5):
        got = corrupt(x, name, s).permute(0, 2, 3, 1).double().numpy()
        for i in range(len(x)):
            want = ref.REFERENCES[name](x[i].permute(1, 2, 0).double().numpy(), PARAMS[name][s - 1])
            if name == "pixelate":  # PIL rounds each pass to 8 bits
                assert np.abs(got[i] - want).max() <= 1.5 / 255, (name, s)
            else:
                np.testing.assert_allclose(got[i], want, atol=atol, err_msg=f"{name} {s}")


def test_glass_shuffle_is_the_reference_scan_with_the_same_offsets():
    from geoviz.datasets.corruptions import glass_shuffle

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    d = rng.integers(-1, 1, (3, 2, 32, 32))
    got = (
        glass_shuffle(torch.from_numpy(x).permute(0, 3, 1, 2).float(), torch.from_numpy(d)).permute(0, 2, 3, 1).numpy()
    )
    for i in range(3):
        want = ref.glass_shuffle(x[i], d[i].transpose(1, 2, 0))
        assert np.array_equal(got[i], want)
        assert not np.array_equal(want, x[i])


def test_jpeg_matches_pil_at_the_same_quality():
    x = (_images(4) * 255).round() / 255
    for s, q in enumerate(PARAMS["jpeg_compression"], 1):
        got = corrupt(x, "jpeg_compression", s).permute(0, 2, 3, 1).numpy()
        want = np.stack([ref.jpeg_compression(x[i].permute(1, 2, 0).double().numpy(), q) for i in range(len(x))])
        assert np.abs(got - want).mean() < 1.0 / 255, s


def test_random_corruptions_match_the_reference_in_distribution():
    """Same formulas, other random numbers: the PSNR of ours and of the per-image reference agree."""
    x = _images(8)
    rng = np.random.default_rng(0)
    for name in ("gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "fog", "elastic_transform"):
        for s in (1, 4):
            y = corrupt(x, name, s)
            ours = np.mean([_psnr(y[i], x[i]) for i in range(len(x))])  # per image, as the reference's
            theirs = np.mean(
                [
                    _psnr(
                        torch.from_numpy(
                            ref.REFERENCES[name](x[i].permute(1, 2, 0).double().numpy(), PARAMS[name][s - 1], rng)
                        ).float(),
                        x[i].permute(1, 2, 0),
                    )
                    for i in range(len(x))
                ]
            )
            assert abs(ours - theirs) < (1.5 if name in ("fog", "elastic_transform") else 0.6), (name, s, ours, theirs)


def test_fog_layer_has_the_reference_fractal_statistics():
    """make_cifar_c.py's fog: plasma_fractal(mapsize=32); its spread against the reference's maps."""
    from geoviz.datasets.corruptions import plasma_fractal

    rng = np.random.default_rng(0)
    ours = plasma_fractal(200, 32, 2.0, torch.Generator().manual_seed(0), "cpu").numpy()
    theirs = np.stack([ref.plasma_fractal(32, 2.0, rng) for _ in range(200)])
    assert abs(ours.std(axis=(1, 2)).mean() / theirs.std(axis=(1, 2)).mean() - 1) < 0.1
    assert ours.min() == 0 and ours.max() == 1


def test_non_square_images_keep_their_shape():
    x = torch.rand(2, 3, 24, 40)
    for name in CORRUPTIONS:
        assert corrupt(x, name, 3).shape == x.shape, name


def test_bad_input_is_refused_with_the_allowed_values():
    x = _images(2)
    with pytest.raises(ValueError, match="unknown corruption 'gausian_noise'"):
        corrupt(x, "gausian_noise", 1)
    for s in (0, 6, 2.5):
        with pytest.raises(ValueError, match="severity must be one of"):
            corrupt(x, "contrast", s)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) with 1 or 3 channels"):
        corrupt(x[0], "contrast", 1)
    with pytest.raises(ValueError, match="uint8 or float"):
        corrupt(x.long(), "contrast", 1)


def test_groups_and_gallery():
    assert sorted(GROUPS) == ["blur", "digital", "noise", "weather"] and len(CORRUPTIONS) == 15
    imgs, caps = gallery(_images(1)[0], corruptions=("fog", "pixelate"))
    assert len(imgs) == 12 and caps[0] == "fog: clean" and caps[5] == "fog 5" and imgs[7].shape == (3, 32, 32)


def test_cifar10c_files_are_read_in_their_distributed_layout(tmp_path):
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    rng = np.random.default_rng(0)
    n = 7
    arr = rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8)
    labels = np.tile(np.arange(n) % 10, 5)
    np.save(folder / "fog.npy", arr)
    np.save(folder / "labels.npy", labels)
    x, y = load_cifar10c("fog", 3, root=tmp_path)
    assert (
        x.shape == (n, 3, 32, 32)
        and x.dtype == torch.uint8
        and torch.equal(x[2], torch.from_numpy(arr[2 * n + 2]).permute(2, 0, 1))
    )
    assert y.tolist() == (np.arange(n) % 10).tolist()
    with pytest.raises(FileNotFoundError, match="CIFAR-10-C not found .*missing snow.npy.*never downloads"):
        load_cifar10c("snow", 1, root=tmp_path)
    np.save(folder / "contrast.npy", arr[:6])
    with pytest.raises(ValueError, match="5 severities"):
        load_cifar10c("contrast", 1, root=tmp_path)


def test_mce_and_relative_mce_on_a_hand_made_table():
    errors = {"fog": {1: 0.2, 2: 0.3}, "contrast": {1: 0.4, 2: 0.6}, "shot_noise": {1: 0.25, 2: 0.35}}
    reference = {
        "errors": {"fog": {1: 0.4, 2: 0.6}, "contrast": {1: 0.5, 2: 0.5}, "shot_noise": {1: 0.3, 2: 0.5}},
        "clean": 0.2,
    }
    got = summarize_errors(errors, 0.1, reference)
    # by hand: CE = (0.5/1.0, 1.0/1.0, 0.6/0.8); relative = (0.3/0.6, 0.8/0.6, 0.4/0.4)
    assert got["ce"] == pytest.approx({"fog": 0.5, "contrast": 1.0, "shot_noise": 0.75})
    assert got["mce"] == pytest.approx((0.5 + 1.0 + 0.75) / 3)
    assert got["relative_ce"] == pytest.approx({"fog": 0.5, "contrast": 0.8 / 0.6, "shot_noise": 1.0})
    assert got["relative_mce"] == pytest.approx((0.5 + 0.8 / 0.6 + 1.0) / 3)
    assert got["group_ce"] == pytest.approx({"noise": 0.75, "weather": 0.5, "digital": 1.0})
    assert got["mean_error"]["fog"] == pytest.approx(0.25)


def test_robustness_report_runs_a_model_over_the_table():
    x = (_images(20) * 255).round().to(torch.uint8)
    ds = TensorImages(x, torch.arange(20) % 10, [str(i) for i in range(10)])

    class Mean(torch.nn.Module):  # predicts from the mean brightness: contrast leaves it, brightness moves it
        def forward(self, z):
            return torch.stack([-(z.mean((1, 2, 3)) * 10 - k).abs() for k in range(10)], 1)

    rep = robustness_report(Mean(), ds, ("contrast", "brightness"), (1, 5), progress=False, device="cpu")
    assert set(rep["errors"]) == {"contrast", "brightness"} and set(rep["errors"]["contrast"]) == {1, 5}
    cd = CorruptedImages(ds, "brightness", 5)
    want = float((Mean()(torch.stack([cd[i][0] for i in range(20)])).argmax(1) != torch.arange(20) % 10).float().mean())
    assert rep["errors"]["brightness"][5] == pytest.approx(want)

    class Zero(torch.nn.Module):  # a reference that always says class 0
        def forward(self, z):
            return torch.nn.functional.one_hot(torch.zeros(len(z), dtype=torch.long), 10).float()

    ref_rep = robustness_report(Zero(), ds, ("contrast", "brightness"), (1, 5), progress=False, device="cpu")
    rep2 = robustness_report(
        Mean(), ds, ("contrast", "brightness"), (1, 5), reference=ref_rep, progress=False, device="cpu"
    )
    want = np.mean(
        [sum(rep["errors"][c].values()) / sum(ref_rep["errors"][c].values()) for c in ("contrast", "brightness")]
    )
    assert ref_rep["clean"] == pytest.approx(0.9) and rep2["mce"] == pytest.approx(want)


def test_models_scored_together_see_the_same_images_as_alone_and_match_numpy_for_regression():
    torch.manual_seed(0)
    x = torch.rand(300, 3, 8, 8)  # two blocks of CorruptedImages (256 + 44)
    y = x.mean((1, 2, 3)) * 10 + 0.3 * torch.randn(300)
    ds = torch.utils.data.TensorDataset(x, y)

    class Scaled(torch.nn.Module):  # a fixed regressor: k × the mean brightness
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, z):
            return (z.mean((1, 2, 3)) * self.k)[:, None]

    table, sev = ("gaussian_noise", "contrast", "fog"), (1, 4)
    reps = robustness_reports(
        {"a": Scaled(10.0), "b": Scaled(8.0)},
        ds,
        table,
        sev,
        task="regression",
        reference="a",
        seed=3,
        progress=False,
        device="cpu",
    )
    yn = y.numpy().astype(np.float64)
    err = {}
    for k, f in (("a", 10.0), ("b", 8.0)):
        err[k] = {
            c: {
                s: np.abs(
                    np.array([CorruptedImages(ds, c, s, seed=3)[i][0].numpy().mean() for i in range(300)]) * f - yn
                ).mean()
                for s in sev
            }
            for c in table
        }
        clean = np.abs(x.numpy().mean((1, 2, 3)) * f - yn).mean()
        assert reps[k]["clean"] == pytest.approx(clean, rel=1e-5)
        for c in table:
            assert reps[k]["errors"][c] == pytest.approx(err[k][c], rel=1e-5)
        alone = robustness_report(Scaled(f), ds, table, sev, task="regression", seed=3, progress=False, device="cpu")
        assert alone["errors"] == reps[k]["errors"]  # the same images, the same arithmetic
    ce_b = np.mean([sum(err["b"][c].values()) / sum(err["a"][c].values()) for c in table])
    assert reps["b"]["mce"] == pytest.approx(ce_b, rel=1e-5) and reps["a"]["mce"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="reference 'c' is not one of the models"):
        robustness_reports({"a": Scaled(1.0)}, ds, table, sev, task="regression", reference="c", progress=False)
