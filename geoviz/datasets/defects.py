"""Surface defects on leather (paper 2): a procedural stand-in, and MVTec AD / ImageFolder loaders.

``make_leather`` draws hides as a batch of torch ops: a base colour (tan to dark brown), a pebbled
grain (the cells of a Worley pattern, their creases darker), multi-scale noise, pores and a lighting
ramp. Each image may carry one defect, the classes as on hides and in MVTec AD's leather category:

- ``color``: a stain (a wobbly blob, darker and shifted in hue);
- ``cut``: a thin dark slit with a bend;
- ``fold``: a long ridge, one side lit and the other shaded;
- ``glue``: a smooth, glossy drop (the grain gone under it);
- ``poke``: a small dark hole with a raised rim;
- ``scratch``: a few short, light, parallel strokes;
- ``growth``: long wavy veins (growth marks);

and ``good`` has none. Size, position, orientation and contrast are drawn per image.

Every hide also carries a **decoy** of each defect class but its own (``_decoys``): the same
renderer with the shape that names the class broken (two half-size drops for a stain or glue; a
rimless hole beside a rim around unbroken grain for a poke; a zigzag of the cut's length; the fold's
ridge broken in two; the scratch's strokes at angles of their own; the growth veins crossing). So every
image holds one mark of each kind: orderless texture statistics (what ``analysis.floors`` measures)
see much the same marks whatever the label, and the class is in the one mark that has its defect's
shape. ``decoy_rate`` draws each decoy with that probability instead (0: none, the easy task).

Image ``i`` is a function of (seed, index) alone (``_counter_rng``), and every image comes with its
defect-free **twin** (the same hide without the defect), so the defect's pixels are where the two
differ. A twin lacks its defect's decoy too (the defect took its place), so a twin's marks name its
class: twins are for locating defects, not a label-free control.

Real data are read, never downloaded: MVTec AD's layout
``data/mvtec_anomaly_detection/leather/{train,test}/<class>/*.png`` (its ``train`` holds only
``good``) and any ``data/defects/<class>/*`` image folder (torchvision's ``ImageFolder``), resized
to ``size`` and split class-balanced (seeded) into train / val / test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._counter_rng import CounterRNG
from .._utils import choice
from ..paths import data_root, resolve_in_root
from ._raster import fill_coverage, pixel_centres, radial_polygon, signed_distance, stroke_coverage, transform
from .images import TensorImages
from .registry import register_dataset
from .shapes import SPLIT_OFFSET, _hsv_to_rgb
from .splits import balanced_holdout

DEFECT_CLASSES = ("good", "color", "cut", "fold", "glue", "poke", "scratch", "growth")
MVTEC_CLASSES = ("good", "color", "cut", "fold", "glue", "poke")
_BATCH = 256
DECOY_RATE = 1.0  # each defect's decoy is on a hide with this probability, unless the hide has that defect
_CELL_CHUNK = 32  # images per Worley chunk: (chunk, cells, pixels) floats stay ~50 MB at 64 px


def _noise(rng: CounterRNG, key: str, size: int) -> torch.Tensor:
    """(n, size, size) multi-scale value noise, unit-ish amplitude (octaves of halving weight)."""
    out = torch.zeros(rng.n, size, size)
    g, w = 4, 1.0
    while g <= size // 2:
        grid = rng.normal(f"{key}{g}", g * g).view(-1, 1, g, g)
        out += w * F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)[:, 0]
        g, w = g * 2, w * 0.6
    return out / 1.6


def _worley_creases(rng: CounterRNG, size: int, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pebbled grain: (crease, bump), both (n, size, size) in [0, 1]. Crease ≈ 1 on cell borders
    (F2 − F1 small), bump = the distance to the nearest cell centre, normalised."""
    pts = rng.uniform("cells", cells * 2).view(-1, cells, 2) * size
    pix = pixel_centres(size)  # (P, 2)
    crease, bump = [], []
    spacing = size / math.sqrt(cells)
    # the pattern tiles: cells near an edge see the points across it, so no border artefact
    shifts = torch.tensor([[dx, dy] for dx in (-size, 0, size) for dy in (-size, 0, size)], dtype=torch.float32)
    for s in range(0, rng.n, _CELL_CHUNK):
        p = pts[s : s + _CELL_CHUNK]
        p9 = (p[:, None] + shifts[None, :, None]).reshape(len(p), -1, 2)
        d = torch.cdist(pix[None].expand(len(p), -1, -1), p9)  # (b, P, 9·cells)
        two = d.topk(2, dim=-1, largest=False).values
        crease.append(torch.exp(-(two[..., 1] - two[..., 0]) / (0.12 * spacing)))
        bump.append((two[..., 0] / spacing).clamp(max=1))
    return torch.cat(crease).view(-1, size, size), torch.cat(bump).view(-1, size, size)


def _hide(rng: CounterRNG, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, size, size) defect-free leather in [0, 1], and its base colour (n, 3)."""
    n = rng.n
    base = _hsv_to_rgb(
        rng.uniform("hue", None, 0.04, 0.11), rng.uniform("sat", None, 0.35, 0.75), rng.uniform("val", None, 0.35, 0.75)
    )
    cells = max(8, (size * size) // 60)  # pebbles of ~8 px at any size
    crease, bump = _worley_creases(rng, size, cells)
    depth = rng.uniform("crease_depth", None, 0.15, 0.35)[:, None, None]
    shade = (
        1
        - depth * crease
        + 0.06 * (0.5 - bump)
        + rng.uniform("noise_amp", None, 0.03, 0.07)[:, None, None] * _noise(rng, "grain", size)
    )
    # pores: a few small dark dots
    pores = rng.uniform("pores", 24).view(n, 12, 2) * size
    d = torch.cdist(pixel_centres(size)[None].expand(n, -1, -1), pores).amin(-1).view(n, size, size)
    shade = shade - 0.25 * torch.exp(-((d / (0.7 * size / 64)) ** 2))
    # lighting: a linear ramp in a random direction
    a = rng.uniform("light_angle", None, 0, 2 * math.pi)
    c = torch.arange(size, dtype=torch.float32) / size - 0.5
    ramp = torch.cos(a)[:, None, None] * c[None, None, :] + torch.sin(a)[:, None, None] * c[None, :, None]
    shade = shade * (1 + rng.uniform("light_amp", None, 0.0, 0.3)[:, None, None] * ramp)
    img = base[:, :, None, None] * shade[:, None]
    return img.clamp(0, 1), base


def _line(p0: torch.Tensor, p1: torch.Tensor, k: int = 8) -> torch.Tensor:
    """(b, k, 2) points along the segments p0 → p1."""
    t = torch.linspace(0, 1, k)[None, :, None]
    return p0[:, None] + t * (p1 - p0)[:, None]


def _polyline_distance(verts: torch.Tensor, size: int) -> torch.Tensor:
    return signed_distance(verts, pixel_centres(size), closed=False).view(-1, size, size)


def _point_distance(c: torch.Tensor, size: int) -> torch.Tensor:
    """(n, size, size): each pixel centre's distance to the image's point ``c`` (n, 2)."""
    return (pixel_centres(size)[None] - c[:, None]).norm(dim=-1).view(len(c), size, size)


def _ridge(z: torch.Tensor) -> torch.Tensor:
    """A fold's profile across its axis (z in half-widths): lit on one side, shaded on the other,
    nothing beyond |z| = 2.2."""
    return (z.abs() < 2.2).float() * 2.2 * z * torch.exp(-z * z)


def _centre(rng: CounterRNG, key: str, size: int, margin: float) -> torch.Tensor:
    return rng.uniform(key, 2, margin * size, (1 - margin) * size)


def _axes(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors along angle ``a`` (n,) and across it."""
    return torch.stack([torch.cos(a), torch.sin(a)], -1), torch.stack([-torch.sin(a), torch.cos(a)], -1)


def _direction(rng: CounterRNG, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _axes(rng.uniform(key, None, 0, math.pi))


def _blob(rng: CounterRNG, key: str, size: int, lo: float, hi: float) -> torch.Tensor:
    """(n, size, size) soft coverage of a wobbly blob of radius lo–hi × size."""
    radii = 1 + 0.25 * torch.tanh(rng.normal(f"{key}.r", 16))
    verts = transform(
        radial_polygon(radii),
        rng.uniform(f"{key}.a", None, 0, 2 * math.pi),
        rng.uniform(f"{key}.s", None, lo, hi) * size,
        _centre(rng, f"{key}.c", size, 0.15),
    )
    sdf = signed_distance(verts, pixel_centres(size)).view(-1, size, size)
    return fill_coverage(sdf / 1.5)  # a 1.5 px soft edge


def _blobs(rng: CounterRNG, key: str, size: int, lo: float, hi: float, split: bool) -> torch.Tensor:
    """One blob (``_blob``), or with ``split`` two of half the area each."""
    if not split:
        return _blob(rng, key, size, lo, hi)
    lo, hi = lo / math.sqrt(2), hi / math.sqrt(2)
    return torch.maximum(_blob(rng, f"{key}.a", size, lo, hi), _blob(rng, f"{key}.b", size, lo, hi))


def _stain(rng: CounterRNG, img, base, strength, decoy: bool):
    """A wobbly blob, darker and shifted in hue; its decoy is two drops of half the area."""
    m = _blobs(rng, "stain", img.shape[-1], 0.07, 0.18, decoy)
    tint = _hsv_to_rgb(
        rng.uniform("stain.h", None, 0.0, 0.15),
        rng.uniform("stain.s", None, 0.5, 0.9),
        rng.uniform("stain.v", None, 0.15, 0.4),
    )
    a = (0.55 * strength * m)[:, None]
    grain = (img / base[:, :, None, None].clamp_min(1e-3)).clamp(0.5, 1.5)
    return img * (1 - a) + a * tint[:, :, None, None] * grain, m


def _glue(rng: CounterRNG, img, base, strength, decoy: bool):
    """A smooth, glossy drop (the grain filled in); its decoy is two drops of half the area."""
    m = _blobs(rng, "glue", img.shape[-1], 0.06, 0.15, decoy)
    gloss = 1.15 + 0.25 * strength[:, None]
    smooth = F.avg_pool2d(img, 5, 1, 2, count_include_pad=False)
    return img * (1 - m[:, None]) + m[:, None] * (smooth * gloss).clamp(0, 1), m


def _poke(rng: CounterRNG, img, base, strength, decoy: bool):
    """A small dark hole with a raised rim; its decoy is a rimless hole and, elsewhere, a rim
    around unbroken grain."""
    size = img.shape[-1]
    r = rng.uniform("poke.r", None, 1.3, 2.6)[:, None, None] * size / 64
    d = _point_distance(_centre(rng, "poke.c", size, 0.15), size)
    hole = fill_coverage(d - r)
    if decoy:
        d = _point_distance(_centre(rng, "poke.c2", size, 0.15), size)
    rim = (fill_coverage(d - r - 1) - fill_coverage(d - r)).clamp(0, 1)
    out = img * (1 - hole[:, None] * (0.85 * strength[:, None])) * (1 + 0.35 * strength[:, None] * rim[:, None])
    return out, torch.maximum(hole, rim)


def _cut(rng: CounterRNG, img, base, strength, decoy: bool):
    """A thin dark slit, nearly straight (one bend of at most a quarter of its half-length); its
    decoy has the same length in three pieces that turn by 60–120 degrees (a zigzag hair)."""
    size = img.shape[-1]
    u, v = _direction(rng, "cut.dir")
    c = _centre(rng, "cut.c", size, 0.2)
    half = rng.uniform("cut.len", None, 0.15, 0.3)[:, None] * size
    if decoy:
        # turns of alternate sign: a zigzag (two of one sign would close a triangle)
        turn = rng.uniform("cut.turn", 2, math.pi / 3, 2 * math.pi / 3) * torch.tensor([1.0, -1.0])
        turn = turn * rng.sign("cut.turn_sign")[:, None]
        a = torch.atan2(u[:, 1], u[:, 0])[:, None] + torch.cat([torch.zeros(len(u), 1), turn.cumsum(1)], 1)
        steps = (2 * half / 3)[:, :, None] * torch.stack([torch.cos(a), torch.sin(a)], -1)  # (n, 3, 2)
        pts = torch.cat([torch.zeros(len(u), 1, 2), steps.cumsum(1)], 1)
        verts = c[:, None] + pts - pts.mean(1, keepdim=True)
    else:
        bend = rng.uniform("cut.bend", None, -0.25, 0.25)[:, None] * half
        verts = torch.cat([_line(c - u * half, c + v * bend), _line(c + v * bend, c + u * half)], 1)
    m = stroke_coverage(_polyline_distance(verts, size), rng.uniform("cut.w", None, 0.9, 1.7) * size / 64)
    return img * (1 - 0.8 * strength[:, None] * m[:, None]), m


def _fold(rng: CounterRNG, img, base, strength, decoy: bool):
    """A long straight ridge, tapered, one side lit and the other shaded; its decoy breaks the same
    ridge into two collinear pieces half as long, 0.12–0.2 × the image apart."""
    n, _, size, _ = img.shape
    u, v = _direction(rng, "fold.dir")
    c = _centre(rng, "fold.c", size, 0.2)
    half = rng.uniform("fold.len", None, 0.3, 0.5)[:, None, None] * size
    w = rng.uniform("fold.w", None, 2.5, 4.5)[:, None, None] * size / 64
    rel = (pixel_centres(size)[None] - c[:, None]).view(n, size, size, 2)
    along = (rel * u[:, None, None]).sum(-1)
    across = (rel * v[:, None, None]).sum(-1)
    if decoy:  # two collinear pieces, each half as long, a gap between them
        gap = rng.uniform("fold.gap", None, 0.12, 0.2)[:, None, None] * size
        half = half / 2
        along = along.abs() - half - gap / 2
    taper = (1 - (along.abs() / half) ** 4).clamp(0, 1)
    z = across / w
    m = taper * (z.abs() < 2.2).float()
    return img * (1 + 0.45 * strength[:, None] * (taper * _ridge(z))[:, None]), m


def _scratch(rng: CounterRNG, img, base, strength, decoy: bool):
    """Three short light strokes, parallel and a few pixels apart; its decoy scatters the same
    strokes, each at its own angle, over a quarter of the image around the same centre."""
    n, _, size, _ = img.shape
    u, v = _direction(rng, "scratch.dir")
    c = _centre(rng, "scratch.c", size, 0.2)
    half = rng.uniform("scratch.len", None, 0.07, 0.14)[:, None] * size
    gap = rng.uniform("scratch.gap", None, 2.6, 3.6)[:, None] * size / 64
    m = torch.zeros(n, size, size)
    for j in range(3):
        if decoy:
            uj, _ = _direction(rng, f"scratch.dir{j}")
            o = c + rng.uniform(f"scratch.p{j}", 2, -0.12, 0.12) * size
        else:
            uj, o = u, c + v * gap * (j - 1) + u * rng.uniform(f"scratch.o{j}", None, -0.3, 0.3)[:, None] * half
        d = _polyline_distance(_line(o - uj * half, o + uj * half, 2), size)
        m = torch.maximum(m, stroke_coverage(d, 0.9 * size / 64))
    return img + (1 - img) * 0.55 * strength[:, None] * m[:, None], m


def _growth(rng: CounterRNG, img, base, strength, decoy: bool):
    """Two long wavy veins side by side (growth marks); its decoy turns the second vein 30–90
    degrees off the first (they cross, unpaired)."""
    n, _, size, _ = img.shape
    u, v = _direction(rng, "growth.dir")
    c = _centre(rng, "growth.c", size, 0.2)
    m = torch.zeros(n, size, size)
    for j in range(2):
        t = torch.linspace(-0.45, 0.45, 24)[None, :, None] * size
        amp = rng.uniform(f"growth.amp{j}", None, 1.0, 3.0)[:, None, None] * size / 64
        freq = rng.uniform(f"growth.f{j}", None, 1.5, 3.0)[:, None, None]
        ph = rng.uniform(f"growth.ph{j}", None, 0, 2 * math.pi)[:, None, None]
        off = (j - 0.5) * rng.uniform("growth.gap", None, 4.0, 9.0)[:, None, None] * size / 64
        uj, vj = u, v
        if decoy and j == 1:  # the second vein 30–90 degrees off the first: they cross, never pair
            turn = rng.uniform("growth.turn", None, math.pi / 6, math.pi / 2) * rng.sign("growth.turn_sign")
            uj, vj = _axes(torch.atan2(u[:, 1], u[:, 0]) + turn)
        verts = c[:, None] + uj[:, None] * t + vj[:, None] * (amp * torch.sin(2 * math.pi * freq * t / size + ph) + off)
        m = torch.maximum(m, stroke_coverage(_polyline_distance(verts, size), 1.4 * size / 64))
    return img * (1 - 0.3 * strength[:, None] * m[:, None]), m


_RENDER = {
    "color": _stain,
    "cut": _cut,
    "fold": _fold,
    "glue": _glue,
    "poke": _poke,
    "scratch": _scratch,
    "growth": _growth,
}


def _defect(cls: str, rng: CounterRNG, img: torch.Tensor, base: torch.Tensor, decoy: bool = False):
    """The image with one ``cls`` defect drawn on it (or its decoy: the same marks, brightness and
    width, with the shape that names the class broken), and its coverage (n, H, W)."""
    if cls not in _RENDER:
        raise ValueError(f"unknown defect {cls!r}")
    strength = rng.uniform(f"{cls}.contrast", None, 0.6, 1.0)[:, None, None]
    return _RENDER[cls](rng, img, base, strength, decoy)


def _decoys(rng: CounterRNG, img: torch.Tensor, base: torch.Tensor, rate: float, labels: list[str]) -> torch.Tensor:
    """Each defect's decoy, drawn with probability ``rate`` on every hide but those of its own
    class (there the defect takes its place). A decoy is its defect's renderer with the shape
    broken, so orderless texture statistics see much the same marks whatever the label; what tells
    them apart is the defect's shape (and what the statistics still catch: see the README)."""
    for cls in _RENDER:
        sub = rng.child(f"decoy/{cls}")
        out, _ = _defect(cls, sub, img, base, decoy=True)
        mine = torch.tensor([lab == cls for lab in labels])  # a defect takes its decoy's place
        on = (sub.bernoulli("on", rate) & ~mine)[:, None, None, None]
        img = torch.where(on, out.clamp(0, 1), img)
    return img


def make_leather(
    n: int,
    *,
    size: int = 64,
    seed: int = 0,
    start: int = 0,
    classes=DEFECT_CLASSES,
    decoy_rate: float = DECOY_RATE,
    return_twins: bool = False,
):
    """``n`` hides: images (n, 3, size, size) float32 in [0, 1] and labels (image ``k``'s class is
    ``(start + k) % len(classes)``); with ``return_twins`` also the defect-free twins and the
    defects' coverage masks (n, size, size). ``decoy_rate`` below 1 leaves some decoys out, and
    then which marks a hide carries says something about its class (a defect's kind of mark is
    always there): 1 keeps texture statistics blind to the label, 0 is the task without decoys."""
    if not 0 <= decoy_rate <= 1:
        raise ValueError(f"decoy_rate is a probability in [0, 1], got {decoy_rate}")
    if size < 32:
        raise ValueError(f"size must be >= 32 px (defects of a pixel or two need room), got {size}")
    bad = [c for c in classes if c not in DEFECT_CLASSES]
    if bad or not classes:
        raise ValueError(f"unknown defect classes {bad}; allowed: {DEFECT_CLASSES}")
    idx = np.arange(start, start + n, dtype=np.int64)
    labels = torch.from_numpy(idx % len(classes))
    images, twins, masks = [], [], []
    for s in range(0, n, _BATCH):
        rng = CounterRNG(seed, idx[s : s + _BATCH], namespace="leather")
        hide, base = _hide(rng, size)
        lab = labels[s : s + _BATCH]
        hide = _decoys(rng, hide, base, decoy_rate, [classes[k] for k in lab])
        img, m = hide.clone(), torch.zeros(rng.n, size, size)
        for k, cls in enumerate(classes):
            rows = (lab == k).nonzero()[:, 0]
            if cls == "good" or not len(rows):
                continue
            sub = CounterRNG(seed, idx[s : s + _BATCH][rows.numpy()], namespace="leather/defect")
            img[rows], m[rows] = _defect(cls, sub, hide[rows], base[rows])
        images.append(img.clamp(0, 1))
        twins.append(hide)
        masks.append(m)
    images = torch.cat(images)
    if return_twins:
        return images, labels, torch.cat(twins), torch.cat(masks)
    return images, labels


class LeatherDefects(TensorImages):
    """Procedural leather hides (``make_leather``) as uint8, split by disjoint index ranges."""

    def __init__(
        self,
        n: int = 800,
        *,
        size: int = 64,
        seed: int = 0,
        split: str = "train",
        augment: bool = False,
        decoy_rate: float = DECOY_RATE,
    ):
        choice("split", split, tuple(SPLIT_OFFSET))
        x, y = make_leather(n, size=size, seed=seed, start=SPLIT_OFFSET[split], decoy_rate=decoy_rate)
        super().__init__(
            (x * 255).round().to(torch.uint8), y, DEFECT_CLASSES, augment=augment, name=f"leather[{split}]"
        )


@register_dataset("leather")
def leather(
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    *,
    size: int = 64,
    augment: bool = False,
    decoy_rate: float = DECOY_RATE,
) -> LeatherDefects:
    n = n or {"train": 1600, "val": 400, "test": 800}[split]
    return LeatherDefects(n, size=size, seed=seed, split=split, augment=augment, decoy_rate=decoy_rate)


# ----------------------------------------------------------------------------- real data


def _read_images(files: list[Path], size: int) -> torch.Tensor:
    """uint8 (N, 3, size, size): each file read as RGB (PIL, as torchvision's ImageFolder reads
    it), resized with antialiasing."""
    from PIL import Image

    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for i, f in enumerate(files):
        with Image.open(f) as im:
            x = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32)).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i] = x[0].round().clamp(0, 255).to(torch.uint8)
    return out


def _three_way(labels: np.ndarray, split: str, seed: int, fractions=(0.6, 0.2, 0.2)) -> np.ndarray:
    """Indices of ``split`` in a seeded train / val / test partition made class by class (the same
    shares of every class: MVTec has 277 good images against 17–19 of each defect)."""
    rng = np.random.default_rng(seed)
    out = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = max(1, int(round(fractions[2] * len(idx)))) if len(idx) >= 3 else 0
        n_val = max(1, int(round(fractions[1] * len(idx)))) if len(idx) >= 3 else 0
        out["test"].append(idx[:n_test])
        out["val"].append(idx[n_test : n_test + n_val])
        out["train"].append(idx[n_test + n_val :])
    return np.sort(np.concatenate(out[split]))


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def load_mvtec_leather(root=None, size: int = 128) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Every image of MVTec AD's leather category, resized to ``size``, with labels over the classes
    found (``good`` first). MVTec's train and test folders are pooled (its train folder holds only
    good hides, so its own split cannot train a classifier) and split again class by class."""
    folder = (resolve_in_root(root) if root is not None else data_root()) / "mvtec_anomaly_detection" / "leather"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"MVTec AD leather not found in {folder}. geoviz never downloads data: unpack MVTec AD's leather "
            "category there, as leather/train/good/*.png and leather/test/<class>/*.png (see data/README.md)"
        )
    found = sorted({p.name for part in ("train", "test") for p in (folder / part).glob("*") if p.is_dir()})
    classes = tuple(["good"] * ("good" in found) + [c for c in found if c != "good"])
    files, labels = [], []
    for part in ("train", "test"):
        for k, c in enumerate(classes):
            fs = sorted(p for p in (folder / part / c).glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
            files += fs
            labels += [k] * len(fs)
    if len(set(labels)) < 2:
        raise ValueError(
            f"{folder} holds images of {len(set(labels))} class(es): "
            "a defect classifier needs the test/<defect>/ folders too"
        )
    return _read_images(files, size), torch.tensor(labels), classes


def load_defect_folder(root=None, size: int = 128) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Any ``<root>/defects/<class>/*`` image folder, read with torchvision's ``ImageFolder``
    (classes sorted by name), resized to ``size``."""
    from torchvision.datasets import ImageFolder

    folder = (resolve_in_root(root) if root is not None else data_root()) / "defects"
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no defect images in {folder}. geoviz never downloads data: put one folder per class there, "
            "defects/<class>/*.png (see data/README.md)"
        )
    ds = ImageFolder(str(folder))
    files = [Path(p) for p, _ in ds.samples]
    return _read_images(files, size), torch.tensor([t for _, t in ds.samples]), tuple(ds.classes)


def _real(loader, name: str, split: str, n: int | None, seed: int, size: int, root, augment: bool) -> TensorImages:
    images, labels, classes = loader(root, size)
    idx = _three_way(labels.numpy(), split, seed=1234)  # the partition is fixed; ``seed`` picks an n-subset
    images, labels = images[idx], labels[idx]
    if n is not None and n < len(labels):
        keep = balanced_holdout(labels.numpy(), n, seed=seed)[1]
        images, labels = images[keep], labels[keep]
    return TensorImages(images, labels, classes, augment=augment and split == "train", name=f"{name}[{split}]")


@register_dataset("mvtec_leather")
def mvtec_leather(
    split: str = "train", n: int | None = None, seed: int = 0, *, size: int = 128, root=None, augment: bool = False
) -> TensorImages:
    return _real(load_mvtec_leather, "mvtec_leather", split, n, seed, size, root, augment)


@register_dataset("defect_folder")
def defect_folder(
    split: str = "train", n: int | None = None, seed: int = 0, *, size: int = 128, root=None, augment: bool = False
) -> TensorImages:
    return _real(load_defect_folder, "defects", split, n, seed, size, root, augment)


__all__ = [
    "DEFECT_CLASSES",
    "MVTEC_CLASSES",
    "make_leather",
    "LeatherDefects",
    "load_mvtec_leather",
    "load_defect_folder",
]
