"""Image folders as torchvision reads them, arrays and Datasets: what a user brings."""

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from geoviz.datasets import as_dataset, get_dataset, image_folder, write_image_folder
from geoviz.preprocessing import IMAGENET_MEAN, IMAGENET_STD, InputSpec

COLOURS = {"ant": (220, 40, 40), "bee": (40, 200, 60), "cow": (40, 60, 220)}


def _image(rng, size, colour, mode="RGB"):
    w, h = size
    a = (rng.random((h, w, 3)) * 90 + np.asarray(colour) * 0.6).astype(np.uint8)
    im = Image.fromarray(a)
    return im.convert(mode) if mode != "RGB" else im


def write_folder(root, *, per_class=6, corrupt=True, seed=0):
    """Class folders with PNG and JPEG files of two sizes (and one grey, one RGBA), a hidden folder
    Jupyter would make, a stray text file and, optionally, a corrupt image."""
    rng = np.random.default_rng(seed)
    for c, colour in COLOURS.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = (48, 36) if i % 2 else (30, 52)
            mode = "L" if i == 4 else "RGBA" if i == 5 else "RGB"
            _image(rng, size, colour, mode).save(root / c / (f"{i}.png" if i % 2 or mode != "RGB" else f"{i}.jpg"))
    (root / ".ipynb_checkpoints").mkdir(exist_ok=True)
    _image(rng, (20, 20), (0, 0, 0)).save(root / ".ipynb_checkpoints" / "x.png")
    (root / "ant" / "notes.txt").write_text("not an image")
    if corrupt:
        (root / "bee" / "broken.png").write_bytes(b"\x89PNG but not really")
    return root


def test_a_corrupt_file_is_named_and_can_be_left_out(tmp_path):
    root = write_folder(tmp_path / "imgs")
    with pytest.raises(
        ValueError, match=r"1 of 19 image file\(s\) cannot be read: .*bee/broken\.png .*skip_unreadable=True"
    ):
        image_folder(root, size=32, progress=False)
    with pytest.warns(UserWarning, match=r"left out 1 unreadable image file\(s\): .*broken\.png"):
        ds = image_folder(root, size=32, skip_unreadable=True, progress=False)
    assert len(ds) == 18 and all(f.name != "broken.png" for f in ds.files)


def test_layout_labels_and_files_are_torchvisions(tmp_path):
    from torchvision.datasets import ImageFolder

    root = write_folder(tmp_path / "imgs", corrupt=False)
    ds = image_folder(root, size=32, progress=False)
    from torchvision.datasets.folder import IMG_EXTENSIONS

    visible = lambda p: p.lower().endswith(IMG_EXTENSIONS) and not os.path.basename(os.path.dirname(p)).startswith(".")  # noqa: E731
    ref = ImageFolder(str(root), is_valid_file=visible, allow_empty=True)
    ref_samples = [(p, t) for p, t in ref.samples]
    assert ds.classes == ["ant", "bee", "cow"] and [c for c in ref.classes if not c.startswith(".")] == ds.classes
    assert [(str(f), int(t)) for f, t in zip(ds.files, ds.labels)] == [
        (p, t - 1) for p, t in ref_samples
    ]  # ref counts the hidden folder as class 0
    assert ds.source_sizes == {(30, 52): 9, (48, 36): 9}
    assert ds.describe()["per_class"] == [6, 6, 6] and ds.images.shape == (18, 3, 32, 32)


def test_pixels_are_torchvisions_preset_transform(tmp_path):
    """Every image equals torchvision's ImageClassification preset (resize the shorter side,
    centre crop, to tensor) applied to torchvision's loader, once normalised as the network will."""
    from torchvision.datasets.folder import default_loader
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification

    root = write_folder(tmp_path / "imgs", corrupt=False)
    spec = InputSpec(24, 28, "bilinear", IMAGENET_MEAN, IMAGENET_STD)
    preset = ImageClassification(
        crop_size=24, resize_size=28, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation=InterpolationMode.BILINEAR
    )
    for ds in (
        image_folder(root, spec=spec, progress=False),
        image_folder(root, spec=spec, max_bytes=0, progress=False),
    ):
        mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
        for i in range(len(ds)):
            ref = preset(default_loader(str(ds.files[i])))
            assert torch.allclose((ds[i][0] - mean) / std, ref, atol=1e-6), ds.files[i]
    assert ds.images is None and ds.batch_source() is None  # max_bytes=0: read one by one
    # an image already at the size passes through untouched
    exact = tmp_path / "exact" / "x"
    exact.mkdir(parents=True)
    a = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(a).save(exact / "a.png")
    Image.fromarray(a[::-1]).save(exact / "b.png")
    flat = image_folder(tmp_path / "exact", size=16, labels=False, progress=False)
    assert torch.equal(flat.images[0], torch.from_numpy(a).permute(2, 0, 1))


def test_a_flat_folder_is_unlabelled_and_bad_folders_say_what_was_found(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        _image(rng, (20, 20), (100, 100, 100)).save(flat / f"{i}.png")
    ds = image_folder(flat, size=16, progress=False)
    assert ds.classes == [] and ds.labels.tolist() == [-1, -1, -1] and not ds.labelled
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=r"holds no images \(extensions .*\.jpg.*\); found \['readme.md', 'sub'\]"):
        image_folder(empty, progress=False)
    one = tmp_path / "one"
    (one / "cats").mkdir(parents=True)
    _image(rng, (20, 20), (1, 2, 3)).save(one / "cats" / "a.png")
    with pytest.raises(ValueError, match=r"one class folder \('cats', 1 images\).*labels=False"):
        image_folder(one, progress=False)
    assert image_folder(one, size=8, labels=False, progress=False).labels.tolist() == [-1]
    (one / "dogs").mkdir()
    with pytest.raises(ValueError, match=r"class folder\(s\) \['dogs'\] of .* hold no images"):
        image_folder(one, progress=False)
    with pytest.raises(
        FileNotFoundError, match=r"image folder 'nowhere' not found \(looked in .*nowhere and .*nowhere\)"
    ):
        image_folder("nowhere", progress=False)
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        image_folder(flat / "0.png", progress=False)


def test_folder_names_split_as_data_sets_do(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=10, corrupt=False)
    parts = {s: get_dataset(f"folder:{root}", s, size=16, progress=False) for s in ("train", "val", "test")}
    files = {s: {str(f) for f in ds.files} for s, ds in parts.items()}
    assert (
        sum(map(len, files.values())) == 30
        and not (files["train"] & files["test"])
        and not (files["val"] & files["test"])
    )
    assert [len(parts[s]) for s in ("train", "val", "test")] == [18, 6, 6]  # 60 / 20 / 20 of every class
    assert get_dataset(f"folder:{root}", "test", n=3, size=16, progress=False).labels.tolist() == [0, 1, 2]
    # an ImageNet-style folder: its own split folders
    split = tmp_path / "inet"
    write_folder(split / "train", per_class=2, corrupt=False)
    write_folder(split / "val", per_class=3, corrupt=False, seed=1)
    assert len(get_dataset(f"folder:{split}", "val", size=16, progress=False)) == 9
    with pytest.raises(ValueError, match=r"split folders \['train', 'val'\] but no 'test' one"):
        get_dataset(
            f"folder:{split}", "test", size=16
        )  # never val in its place: model selection would see the test images
    assert (
        len(image_folder(split, size=16, progress=False)) == 9
        and len(image_folder(split, size=16, split="train", progress=False)) == 6
    )
    with pytest.raises(ValueError, match=r"has no split folders .* split='test' would read all of it"):
        image_folder(root, size=16, split="test", progress=False)
    with pytest.raises(TypeError, match=r"takes no argument\(s\) \['colour'\]"):
        get_dataset(f"folder:{root}", "train", colour=True)
    with pytest.raises(KeyError, match="or folder:<path>"):
        get_dataset("shapes11", "train")


def test_arrays_and_datasets_are_accepted_as_they_are(tmp_path):
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (5, 12, 10, 3), dtype=np.uint8)
    ds = as_dataset(hwc)
    assert (
        ds[2][0].shape == (3, 12, 10)
        and torch.allclose(ds[2][0], torch.from_numpy(hwc[2]).permute(2, 0, 1) / 255.0)
        and ds[2][1] == -1
    )
    chw = torch.rand(4, 3, 8, 8)
    ds = as_dataset((chw, [0, 1, 0, 1]), classes=["a", "b"])
    assert ds.classes == ["a", "b"] and ds.labels.tolist() == [0, 1, 0, 1]
    assert torch.allclose(ds[1][0], (chw[1] * 255).round() / 255)
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
        as_dataset(np.full((2, 3, 4, 4), 2.0, np.float32))
    td = TensorDataset(torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 2]))
    assert as_dataset(td) is td
    assert len(as_dataset(td, n=2)) == 2 and len(as_dataset(hwc, n=3)) == 3  # n keeps a subset of any data
    labelled = as_dataset((torch.rand(12, 3, 8, 8), [0, 1, 2] * 4), classes=["a", "b", "c"], n=6)
    assert labelled.classes == ["a", "b", "c"] and sorted(labelled.labels.tolist()) == [
        0,
        0,
        1,
        1,
        2,
        2,
    ]  # still labelled
    from geoviz.datasets import get_dataset as _get

    sub = as_dataset(_get("shapes10", "test", n=40), n=20)
    assert len(sub) == 20 and sub.classes == _get("shapes10", "test", n=40).classes
    with pytest.raises(TypeError, match="ToTensor"):
        as_dataset(TensorDataset(torch.rand(3, 8), torch.zeros(3)))
    with pytest.raises(TypeError, match="cannot read images from a dict"):
        as_dataset({"x": 1})
    assert len(as_dataset("shapes10", n=7)) == 7


def test_written_folders_read_back_pixel_for_pixel_and_are_reused(tmp_path):
    data = get_dataset("shapes10", "test", n=12)
    root = write_image_folder(data, tmp_path / "shapes", progress=False)
    back = image_folder(root, size=32, progress=False)
    assert back.classes == sorted({data.classes[int(y)] for y in data.labels})
    order = {str(f): i for i, f in enumerate(back.files)}
    for i in range(len(data)):
        f = root / data.classes[int(data[i][1])] / f"{i:05d}.png"
        assert torch.equal(back.images[order[str(f)]], (data[i][0] * 255).round().to(torch.uint8))
    stamp = (root / "folder.json").stat().st_mtime_ns
    write_image_folder(data, tmp_path / "shapes", progress=False)
    assert (root / "folder.json").stat().st_mtime_ns == stamp  # the same images: kept
    write_image_folder(get_dataset("shapes10", "test", n=12, seed=5), tmp_path / "shapes", progress=False)
    assert (root / "folder.json").stat().st_mtime_ns != stamp  # other images: written again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image_folder(root, size=32, progress=False)  # folder.json is no image and no stray image is warned about


def test_compare_takes_a_folder_by_name(tmp_path):
    from geoviz.atlas import compare
    from geoviz.models import build_model, load_network

    root = write_folder(tmp_path / "imgs", per_class=6, corrupt=False)
    a = load_network(build_model("resnet8", 3), size=32)  # any module, told its input size
    atlas = compare(
        a,
        build_model("resnet14", 3),
        f"folder:{root}",
        n_images=12,
        knn_images=12,
        knn_points=60,
        embedding=None,
        progress=False,
    )
    assert atlas.n_images == 12 and atlas.cka.shape == (3, 6) and atlas.classes == ["ant", "bee", "cow"]
    assert compare(a, a, "shapes10", n_images=16, pairs=None, embedding=None, progress=False).n_images == 16
