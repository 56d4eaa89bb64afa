"""Your own images: a folder read as torchvision's ``ImageFolder`` reads it, NumPy arrays, any Dataset.

``image_folder(path, size=224)`` (or the data set name ``folder:<path>`` wherever a name is taken)
reads

- **one folder per class** (``<path>/<class>/**/*.jpg``; classes sorted by name, as ``ImageFolder``
  does; torchvision's loader, PIL converted to RGB, and its extensions), or
- **a flat folder of images** (unlabelled: every label is -1), or
- an **ImageNet-style folder** with ``train/``, ``val/`` (or ``validation/``) and ``test/`` beside
  each other, each one folder per class: ``split=`` picks one.

Every image is resized (shorter side to ``resize``) and centre-cropped to ``size`` px, exactly as
torchvision's ``ImageClassification`` presets do it, and given as a float tensor in [0, 1]:
``spec=`` takes those numbers from a network (``model.input_spec``, from its weights' own
transforms). Normalisation is the network's business (``geoviz.preprocessing``). Images of any
size and mode (grey, palette, RGBA) come out the same size and RGB; ``source_sizes`` counts the
sizes found.

Bad folders fail before anything is decoded, with what was found: no images (and what was there
instead), one class folder, an empty class folder, unreadable files by name
(``skip_unreadable=True`` leaves them out with a warning). Hidden folders (``.ipynb_checkpoints``,
which Jupyter makes) are not classes: the one way this differs from ``ImageFolder``.

A folder that fits ``max_bytes`` (1 GiB of uint8 pixels by default) is decoded once, in threads,
into memory (then batched on the device like the other tensor data sets); a bigger one is read
image by image.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .._io import atomic_write_json, read_json
from .._utils import format_bytes, progress_bar
from ..paths import resolve_in_root
from ..preprocessing import InputSpec
from ._batched import BatchSource
from .splits import balanced_holdout

__all__ = [
    "FolderImages",
    "image_folder",
    "folder_split",
    "parse_folder_spec",
    "as_dataset",
    "write_image_folder",
    "ImageArrays",
]

FOLDER_PREFIX = "folder:"
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}


def _extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return tuple(e.lower() for e in IMG_EXTENSIONS)


def _is_image(name: str) -> bool:
    return name.lower().endswith(_extensions())


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(folder: Path) -> list[Path]:
    """Every image file below ``folder`` (recursively, following links, as ImageFolder walks a class
    folder), hidden folders skipped, in sorted order."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if _is_image(f) and not f.startswith(".")]
    return out


def resolve_folder(path: str | os.PathLike) -> Path:
    """``path`` as given when absolute or present from the current directory, else inside the project
    root (so ``folder:data/mine`` means the same folder from ``notebooks/``)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        found = p.resolve()
    else:
        found = resolve_in_root(p)
    if found.is_dir():
        return found
    if found.exists():
        raise NotADirectoryError(
            f"{found} is not a folder: give the folder that holds the images (or their class folders)"
        )
    inside = resolve_in_root(p)
    raise FileNotFoundError(
        f"image folder {str(path)!r} not found (looked in {Path.cwd() / p} and {inside}): give the path "
        "of a folder with one subfolder of images per class, or of a folder of images"
    )


def _split_folder(root: Path, split: str | None) -> tuple[Path, str | None]:
    """An ImageNet-style folder (train/ val/ test/ side by side): the folder of ``split`` (None: the
    held-out one, val, else test); any other folder is returned as it is."""
    present = {s: root / name for s, names in SPLIT_FOLDERS.items() for name in names if (root / name).is_dir()}
    dirs = _visible_dirs(root)
    if not present or {d.name for d in dirs} - {n for names in SPLIT_FOLDERS.values() for n in names}:
        return root, None  # class folders (a class may be called "test"): no split layout
    if split is None:
        split = "val" if "val" in present else "test" if "test" in present else None
        if split is None:
            raise ValueError(
                f"{root} holds only a training split ({', '.join(d.name for d in dirs)}): pass split='train' to read it"
            )
    if split not in present:
        raise ValueError(
            f"{root} has the split folders {sorted(p.name for p in present.values())} but no {split!r} one; "
            f"pass split= one of {sorted(present)}"
        )
    return present[split], split


def _scan(root: Path, labels: bool | str) -> tuple[list[Path], list[int], list[str], list[Path]]:
    """(files, labels, classes, ignored top-level images) of a class-per-folder or flat folder."""
    exts = ", ".join(_extensions())
    subdirs = _visible_dirs(root)
    top = sorted(p for p in root.iterdir() if p.is_file() and _is_image(p.name) and not p.name.startswith("."))
    per_class = {d.name: _images_under(d) for d in subdirs}
    with_images = {c: fs for c, fs in per_class.items() if fs}
    if labels is False or (labels == "auto" and not with_images):
        files = top if labels == "auto" else top + [f for fs in per_class.values() for f in fs]
        if not files:
            other = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))[:8]
            raise ValueError(
                f"{root} holds no images (extensions {exts}); found {other or 'nothing'}: put the images there, "
                "or one subfolder of images per class"
            )
        return files, [-1] * len(files), [], []
    empty = [c for c, fs in per_class.items() if not fs]
    if empty:
        raise ValueError(
            f"class folder(s) {empty} of {root} hold no images (extensions {exts}); "
            f"the others hold {sum(map(len, with_images.values()))}: remove the empty ones or add images"
        )
    if len(with_images) < 2:
        ((name, fs),) = with_images.items()
        raise ValueError(
            f"{root} holds one class folder ({name!r}, {len(fs)} images): labelled analyses need at least two "
            "class folders. Add one per class, or read the images unlabelled (labels=False)"
        )
    classes = sorted(with_images)
    files = [f for c in classes for f in with_images[c]]
    targets = [k for k, c in enumerate(classes) for _ in with_images[c]]
    return files, targets, classes, top


def _header_sizes(files: list[Path]) -> tuple[list, list[tuple[Path, str]]]:
    """Each file's (width, height) from its header, and the files PIL cannot read."""
    from PIL import Image, UnidentifiedImageError

    sizes, bad = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.append(im.size)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            sizes.append(None)
            bad.append((f, type(err).__name__ + ": " + str(err).splitlines()[0][:120]))
    return sizes, bad


class FolderImages(Dataset):
    """Images read from files: item i is (image float (3, size, size) in [0, 1], label or -1).

    Attributes: ``files``, ``labels`` (int64 tensor), ``classes`` (empty when unlabelled), ``spec``
    (the InputSpec applied), ``root``, ``source_sizes`` (Counter of the files' (width, height)),
    ``images`` (uint8 tensor (N, 3, size, size) when decoded into memory, else None).
    """

    def __init__(
        self,
        files,
        labels,
        classes,
        spec: InputSpec,
        *,
        root: Path | None = None,
        source_sizes=None,
        images: torch.Tensor | None = None,
        name: str | None = None,
    ):
        self.files = [Path(f) for f in files]
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.classes, self.spec, self.root = list(classes), spec, root
        self.source_sizes = source_sizes if source_sizes is not None else Counter()
        self.images = images
        self.name = name or f"folder:{root}"

    @property
    def labelled(self) -> bool:
        return bool(self.classes)

    @property
    def targets(self):
        return self.labels.tolist()

    def __len__(self):
        return len(self.files)

    def read(self, i: int) -> torch.Tensor:
        """Image i as uint8 (3, size, size): decoded, resized and centre-cropped."""
        return self.images[i] if self.images is not None else _decode(self.files[i], self.spec)

    def __getitem__(self, i):
        return self.read(i).float() / 255.0, int(self.labels[i])

    def batch_source(self) -> BatchSource | None:
        return None if self.images is None else BatchSource(self.images, self.labels)

    def subset(self, indices) -> FolderImages:
        idx = [int(i) for i in indices]
        images = None if self.images is None else self.images[torch.as_tensor(idx, dtype=torch.long)]
        return FolderImages(
            [self.files[i] for i in idx],
            self.labels[idx].tolist(),
            self.classes,
            self.spec,
            root=self.root,
            source_sizes=self.source_sizes,
            images=images,
            name=self.name,
        )

    def decode(self, max_bytes: int, progress: bool = True) -> FolderImages:
        """Decode every image into memory (in threads) when their pixels fit ``max_bytes``; otherwise
        they stay on disk, read one by one. Returns self."""
        need = len(self) * 3 * self.spec.size**2
        if need <= max_bytes:
            self.images = _decode_all(self.files, self.spec, progress)
        elif progress:
            print(
                f"{self.root}: {len(self)} images would take {format_bytes(need)} "
                f"decoded (over max_bytes={format_bytes(max_bytes)}): read one by one"
            )
        return self

    def describe(self) -> dict:
        """What was read: counts per class, the sizes found, the crop applied."""
        counts = np.bincount(self.labels.numpy(), minlength=len(self.classes)) if self.labelled else []
        sizes = self.source_sizes.most_common()
        return {
            "root": str(self.root),
            "n_images": len(self),
            "classes": self.classes,
            "per_class": [int(c) for c in counts],
            "source_sizes": [[list(s), n] for s, n in sizes[:10]],
            "n_source_sizes": len(sizes),
            "spec": self.spec.to_dict(),
            "in_memory": self.images is not None,
        }

    def __repr__(self):
        kind = f"{len(self.classes)} classes" if self.labelled else "unlabelled"
        return f"FolderImages({self.root}, n={len(self)}, {kind}, {self.spec.size} px)"


def _decode(path: Path, spec: InputSpec) -> torch.Tensor:
    """torchvision's ImageClassification geometry on one file: PIL RGB → resize the shorter side
    (antialiased) → centre crop → uint8 tensor."""
    import torchvision.transforms.functional as TF
    from torchvision.datasets.folder import default_loader
    from torchvision.transforms import InterpolationMode

    try:
        img = default_loader(str(path))
    except Exception as err:  # noqa: BLE001  (any decoder error: name the file)
        raise OSError(f"cannot read image {path}: {err}; remove it, or pass skip_unreadable=True") from None
    img = TF.resize(img, [spec.resize_to], interpolation=InterpolationMode(spec.interpolation), antialias=True)
    img = TF.center_crop(img, [spec.size])
    return TF.pil_to_tensor(img)


def _decode_all(files: list[Path], spec: InputSpec, progress: bool) -> torch.Tensor:
    out = torch.empty(len(files), 3, spec.size, spec.size, dtype=torch.uint8)
    with ThreadPoolExecutor(
        max_workers=max(1, min(8, os.cpu_count() or 1))
    ) as pool:  # PIL decodes and resizes without the GIL
        for i, img in enumerate(
            progress_bar(
                pool.map(lambda f: _decode(f, spec), files),
                total=len(files),
                desc="decode images",
                unit="img",
                enabled=progress,
                leave=False,
            )
        ):
            out[i] = img
    return out


def _as_spec(size, resize, interpolation, spec) -> InputSpec:
    if spec is not None:
        if isinstance(spec, dict):
            spec = InputSpec.from_dict(spec)
        if size is not None and size != spec.size:
            raise ValueError(f"size={size} contradicts the spec's size {spec.size}: pass one of them")
        return spec
    return InputSpec(size or 224, resize, interpolation or "bilinear")


def image_folder(
    path,
    size: int | None = None,
    *,
    resize: int | None = None,
    interpolation: str | None = None,
    spec=None,
    split: str | None = None,
    labels: bool | str = "auto",
    n: int | None = None,
    seed: int = 0,
    skip_unreadable: bool = False,
    max_bytes: int = 1024**3,
    progress: bool = True,
) -> FolderImages:
    """The images of ``path`` (see the module docstring) as ``FolderImages``.

    ``size`` (default 224) and ``resize`` (the shorter side before the centre crop; default
    ``size``), or ``spec`` (an ``InputSpec`` or its dict, e.g. ``model.input_spec``) say the pixel
    grid. ``labels``: "auto" (class folders when there are, else unlabelled), False (unlabelled,
    every image below ``path``). ``split`` picks a folder of an ImageNet-style layout (default: its
    held-out one). ``n`` keeps a class-balanced, seeded subset (only its files are opened).
    Decoded into memory when the pixels fit ``max_bytes``."""
    spec = _as_spec(size, resize, interpolation, spec)
    root, found = _split_folder(resolve_folder(path), split)
    if split is not None and found is None:
        raise ValueError(
            f"{root} has no split folders (train/, val/, test/), so split={split!r} would read all of it: leave split "
            f"out for every image, or use get_dataset('folder:{path}', {split!r}) for a fixed 60/20/20 partition"
        )
    files, targets, classes, ignored = _scan(root, labels)
    if ignored:
        warnings.warn(
            f"{len(ignored)} image(s) directly in {root} (e.g. "
            f"{ignored[0].name}) are outside any class folder and left out",
            stacklevel=2,
        )
    if n is not None and n < len(files):
        keep = _subset(np.asarray(targets), n, seed, bool(classes))
        files, targets = [files[i] for i in keep], [targets[i] for i in keep]
    sizes, bad = _header_sizes(files)
    if bad:
        listed = "; ".join(f"{f} ({why})" for f, why in bad[:5]) + (
            f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        )
        if not skip_unreadable:
            raise ValueError(
                f"{len(bad)} of {len(files)} image file(s) cannot be read: {listed}. Remove them, or pass "
                "skip_unreadable=True to leave them out"
            )
        warnings.warn(f"left out {len(bad)} unreadable image file(s): {listed}", stacklevel=2)
        keep = [i for i, s in enumerate(sizes) if s is not None]
        files, targets, sizes = [files[i] for i in keep], [targets[i] for i in keep], [sizes[i] for i in keep]
        if classes and len(set(targets)) < 2:
            raise ValueError(
                f"after leaving out the unreadable files, {root} holds images of {len(set(targets))} class(es): need 2"
            )
    return FolderImages(files, targets, classes, spec, root=root, source_sizes=Counter(sizes)).decode(
        max_bytes, progress
    )


def _subset(labels: np.ndarray, n: int, seed: int, labelled: bool) -> np.ndarray:
    """n indices: class-balanced and seeded for labelled images, seeded for unlabelled ones."""
    if labelled:
        return balanced_holdout(labels, n, seed=seed)[1]
    return np.sort(np.random.default_rng(seed).permutation(len(labels))[:n])


def folder_split(ds: FolderImages, split: str, seed: int = 1234, fractions=(0.6, 0.2, 0.2)) -> np.ndarray:
    """Indices of ``split`` in a fixed, class-by-class train / val / test partition of a folder without
    split folders (unlabelled: one partition of all images)."""
    labels = ds.labels.numpy()
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(fractions[2] * len(idx))) if len(idx) >= 3 else 0
        n_val = int(round(fractions[1] * len(idx))) if len(idx) >= 3 else 0
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return np.sort(np.concatenate(parts[split]))


def parse_folder_spec(name: str) -> str | None:
    """The path of a ``folder:<path>`` data set name, None for any other name."""
    if isinstance(name, str) and name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX) :]
        if not path:
            raise ValueError("folder: needs a path, e.g. folder:data/my_images")
        return path
    return None


def folder_dataset(path: str, split: str = "train", n: int | None = None, seed: int = 0, **kwargs) -> FolderImages:
    """``get_dataset("folder:<path>", split)``: the split's folder of an ImageNet-style layout, else a
    fixed 60 / 20 / 20 partition of every class; ``n`` keeps a class-balanced, seeded subset."""
    root = resolve_folder(path)
    split_root, found = _split_folder(root, split)
    if found is not None:
        ds = image_folder(split_root, n=n, seed=seed, **kwargs)  # the split's own folder, read as a plain one
    else:
        whole = image_folder(
            root, **{**kwargs, "max_bytes": 0, "progress": False}
        )  # scan and check only; decode the split's part
        ds = whole.subset(folder_split(whole, split))
        if len(ds) == 0:
            raise ValueError(
                f"{root} has too few images per class for a {split!r} split (60/20/20 per class needs >= 3 per class)"
            )
        ds.decode(kwargs.get("max_bytes", 1024**3), kwargs.get("progress", True))
    if n is not None and n < len(ds):
        ds = ds.subset(_subset(ds.labels.numpy(), n, seed, ds.labelled))
    ds.name = f"folder:{path}[{split}]"
    return ds


folder_dataset.accepts = [
    "size",
    "resize",
    "interpolation",
    "spec",
    "labels",
    "skip_unreadable",
    "max_bytes",
    "progress",
]


# ----------------------------------------------------------------------------- anything else as a data set
class ImageArrays(Dataset):
    """Images given as an array (N, H, W, C) or (N, C, H, W), uint8 or float in [0, 1], with optional
    integer labels (-1: none) and class names."""

    def __init__(self, images, labels=None, classes=None):
        x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
        if x.dim() == 3:
            x = x[:, None]
        if x.dim() != 4:
            raise ValueError(f"images must be an array (N, H, W, C) or (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3, 4):
            x = x.permute(0, 3, 1, 2)  # channels last, as PIL / NumPy images come
        if x.shape[1] == 4:
            x = x[:, :3]  # alpha dropped, as the RGB conversion of a file does
        if x.dtype == torch.uint8:
            self.images = x.contiguous()
        elif x.is_floating_point():
            lo, hi = float(x.min()), float(x.max())
            if lo < -1e-6 or hi > 1 + 1e-6:
                raise ValueError(
                    f"float images must lie in [0, 1] (got {lo:.3g} to {hi:.3g}): scale them, or pass uint8"
                )
            self.images = (x.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
        else:
            raise TypeError(f"images must be uint8 or float, got {x.dtype}")
        n = len(self.images)
        y = (
            torch.full((n,), -1, dtype=torch.long)
            if labels is None
            else torch.as_tensor(np.asarray(labels)).long().reshape(-1)
        )
        if len(y) != n:
            raise ValueError(f"{n} images but {len(y)} labels")
        self.labels = y
        k = int(y.max()) + 1 if n and int(y.max()) >= 0 else 0
        self.classes = list(classes) if classes is not None else [str(c) for c in range(k)]
        if len(self.classes) < k:
            raise ValueError(f"labels go up to {k - 1} but only {len(self.classes)} class names were given")

    @property
    def targets(self):
        return self.labels.tolist()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].float() / 255.0, int(self.labels[i])

    def batch_source(self) -> BatchSource:
        return BatchSource(self.images, self.labels)


def as_dataset(
    data,
    *,
    labels=None,
    classes=None,
    split: str = "test",
    n: int | None = None,
    seed: int = 0,
    spec=None,
    progress: bool = True,
    **kwargs,
) -> Dataset:
    """Anything that holds images as a Dataset of (image, label):

    - a name: ``folder:<path>`` (the whole folder on the pixel grid ``spec`` says, a network's
      ``input_spec``: 224 px when None; ``image_folder``'s keywords in ``kwargs``) or a registered
      data set (its ``split``, ``n`` images; ``spec`` does not apply);
    - a ``torch.utils.data.Dataset`` yielding (image, label) (or images): as it is;
    - an array or tensor of images, or a tuple (images, labels): ``ImageArrays``.
    """
    from .registry import get_dataset

    if isinstance(data, str):
        path = parse_folder_spec(data)
        if path is not None:
            size = {} if spec is not None or "size" in kwargs else {"size": 224}
            return image_folder(path, n=n, seed=seed, spec=spec, progress=progress, **size, **kwargs)
        return get_dataset(data, split, n=n, seed=seed, **kwargs)
    if isinstance(data, Dataset):
        if len(data) == 0:
            raise ValueError("the data set is empty")
        first = data[0]
        x = first[0] if isinstance(first, (tuple, list)) else first
        if not torch.is_tensor(x) or x.dim() != 3:
            raise TypeError(
                "the data set must yield (image, label) with a (C, H, W) tensor image, "
                f"got {type(x).__name__}{tuple(x.shape) if torch.is_tensor(x) else ''}: "
                "add a transform that makes tensors (torchvision's ToTensor)"
            )
        return _first(data, n, seed)
    if isinstance(data, tuple) and len(data) == 2:
        return _first(ImageArrays(data[0], data[1], classes), n, seed)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return _first(ImageArrays(data, labels, classes), n, seed)
    raise TypeError(
        f"cannot read images from a {type(data).__name__}: pass 'folder:<path>', a data set name, a Dataset, "
        "or an array of images (N, H, W, C)"
    )


class LabelledSubset(Subset):
    """A ``Subset`` that keeps its data set's ``classes`` (and its labels), so a subsample of
    labelled images is still labelled; it reads items as ``Subset`` does (and is batched like it)."""

    @property
    def classes(self):
        return list(getattr(self.dataset, "classes", []) or [])


def _first(data: Dataset, n: int | None, seed: int) -> Dataset:
    """``n`` images of a data set (class-balanced and seeded when it has labels), all when n is None."""
    from .splits import labels_of

    if n is None or n >= len(data):
        return data
    y = labels_of(data).numpy()
    keep = _subset(y, n, seed, bool((y >= 0).all())).tolist()
    if isinstance(data, ImageArrays):
        return ImageArrays(data.images[keep], data.labels[keep], data.classes)
    return LabelledSubset(data, keep)


# ----------------------------------------------------------------------------- writing a folder
def write_image_folder(data: Dataset, root, *, classes=None, progress: bool = True) -> Path:
    """Write every image of ``data`` as ``<root>/<class>/<index>.png`` (a folder ``image_folder``
    reads back pixel for pixel). A finished folder is kept when it holds exactly these images (a
    digest of their pixels and labels), rewritten otherwise; written to ``<root>.partial`` and renamed."""
    import shutil

    from PIL import Image

    root = resolve_in_root(root)
    classes = list(classes if classes is not None else getattr(data, "classes", None) or [])
    images, labels = [], []
    for i in range(len(data)):
        x, y = data[i][0], int(data[i][1])
        images.append((x.clamp(0, 1) * 255).round().to(torch.uint8) if x.is_floating_point() else x.to(torch.uint8))
        labels.append(y)
    h = hashlib.sha1()
    for x, y in zip(images, labels):
        h.update(x.contiguous().numpy().tobytes())
        h.update(str(y).encode())
    manifest = {"n_images": len(images), "classes": classes, "digest": h.hexdigest()}
    if (root / "folder.json").is_file() and read_json(root / "folder.json") == json.loads(json.dumps(manifest)):
        return root
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    for i, (x, y) in enumerate(
        progress_bar(list(zip(images, labels)), desc="write images", unit="img", enabled=progress, leave=False)
    ):
        sub = work / (classes[y] if y >= 0 and classes else "")
        sub.mkdir(parents=True, exist_ok=True)
        arr = x.permute(1, 2, 0).numpy()
        Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(sub / f"{i:05d}.png")
    atomic_write_json(work / "folder.json", manifest)
    shutil.rmtree(root, ignore_errors=True)
    os.replace(work, root)
    return root
