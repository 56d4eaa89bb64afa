"""The 15 CIFAR-10-C corruptions (Hendrycks & Dietterich, ICLR 2019) as batched torch ops.

``corrupt(images, name, severity, seed=0)`` takes a batch ``(N, C, H, W)`` (float in [0, 1] or
uint8; any device) and returns the same shape, dtype and device, deterministic for a given seed.
Parameters per severity are the published CIFAR-10-C ones (``make_cifar_c.py``), transcribed into
``PARAMS``; the formulas follow the reference code, re-written as batched tensor ops. Where ours
differs, on purpose:

- ``motion_blur`` and the streaks of ``snow``: ImageMagick's ``MotionBlurImage`` transcribed: a
  one-sided Gaussian over ``2·radius + 1`` taps, tap i at the whole-pixel offset
  (⌈i·cos θ − ½⌉, ⌈i·sin θ − ½⌉), edges replicated, the result rounded to 8 bits as the PNG it
  comes back as (snow's layer too, before it is added);
- ``frost``: the reference blends crops of six photographs of frost (the first five drawn, resized
  by 0.2 for 32 px); they are read from ``data/frost/`` when there (``frost1.png`` … ``frost6.jpg``,
  as the reference names them), else synthesised (branching ice needles, a crystalline cell
  network, fine grain), the six layers as bright and as bluish as the photos (mean red 69–198);
- ``jpeg_compression`` uses ``torchvision.io.encode_jpeg`` / ``decode_jpeg`` (libjpeg, as PIL);
- ``pixelate`` is PIL's ``BOX`` resampling written as a separable matrix, each pass rounded to 8
  bits as PIL's (tested against PIL);
- the zoom factors are the reference's ``np.arange`` values, unrounded (at severity 5 one of them is
  1.2500000000000002, and its layer is resampled to 33 pixels, not 32);
- ``brightness`` adds to HSV's V in closed form: the RGB vector scaled by V'/V (tested against
  scikit-image's HSV round trip);
- inputs of any size: the reference's 32-pixel constants (glass blur's loop bounds, the elastic
  transform's sizes) scale with the image, and a one-channel image is treated as grey.

Groups as in ImageNet-C: noise, blur, weather, digital.
"""

from __future__ import annotations

import functools
import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from .._utils import choice

GROUPS = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog"),
    "digital": ("brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS = tuple(c for g in GROUPS.values() for c in g)
GROUP_OF = {c: g for g, cs in GROUPS.items() for c in cs}
SEVERITIES = (1, 2, 3, 4, 5)

# CIFAR-10-C (make_cifar_c.py), per severity 1..5
PARAMS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # disk radius, alias blur
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # sigma, max delta, iterations
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # radius, sigma
    # exactly the reference's np.arange values: rounding them changes which layers resample to 33 px
    "zoom_blur": tuple(tuple(np.arange(1, hi, 0.01).tolist()) for hi in (1.06, 1.11, 1.16, 1.21, 1.26)),
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # strength, wibble decay
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "elastic_transform": (
        (0, 0, 0.08),
        (0.05, 0.2, 0.07),
        (0.08, 0.06, 0.06),
        (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ),  # × image size
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
}


def _generator(seed: int, name: str, device) -> torch.Generator:
    """One stream per (seed, corruption), the same at every severity: the same noise, texture and
    angles grow stronger with the severity (common random numbers), as a reader comparing
    severities expects."""
    g = torch.Generator(device=device)
    g.manual_seed(zlib.crc32(f"{seed}/{name}".encode()) & 0x7FFFFFFF)
    return g


def _pixel_grid(h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) float coordinates of every pixel, each (h, w)."""
    return torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _pad_symmetric(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """scipy's "reflect" (half-sample symmetric: the edge pixel repeated), for pads up to the size."""
    x = torch.cat([x[..., :, :left].flip(-1), x, x[..., :, x.shape[-1] - right :].flip(-1)], -1)
    return torch.cat([x[..., :top, :].flip(-2), x, x[..., x.shape[-2] - bottom :, :].flip(-2)], -2)


def _conv_same(x: torch.Tensor, k: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
    """Each channel filtered by the 2-D kernel ``k`` (kh, kw), borders by ``mode`` (torch's:
    "reflect" = reflect-101, OpenCV's default; or "symmetric" = scipy's "reflect")."""
    n, c, h, w = x.shape
    kh, kw = k.shape
    ph, pw = kh // 2, kw // 2
    if mode in ("reflect", "symmetric") and (ph >= h or pw >= w):
        mode = "replicate"
    pads = (pw, kw - 1 - pw, ph, kh - 1 - ph)
    flat = x.reshape(n * c, 1, h, w)
    xp = _pad_symmetric(flat, *pads) if mode == "symmetric" else F.pad(flat, pads, mode=mode)
    return F.conv2d(xp, k.to(x)[None, None]).reshape(n, c, h, w)


def _gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    r = max(1, int(truncate * sigma + 0.5))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def _gaussian_blur(x: torch.Tensor, sigma: float, mode: str = "replicate", truncate: float = 4.0) -> torch.Tensor:
    """scipy/scikit-image's gaussian filter (``truncate`` sigmas; ``mode`` nearest = replicate)."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel1d(sigma, truncate)
    return _conv_same(_conv_same(x, k[None, :], mode), k[:, None], mode)


# ----------------------------------------------------------------------------- noise
def gaussian_noise(x, c, g):
    return x + c * torch.randn(x.shape, generator=g, device=x.device)


def shot_noise(x, c, g):
    return torch.poisson(x.clamp(0, 1) * c, generator=g) / c


def impulse_noise(x, c, g):
    """scikit-image's salt & pepper: a fraction c of the values set to 0 or 1, half each."""
    flip = torch.rand(x.shape, generator=g, device=x.device) < c
    salt = torch.rand(x.shape, generator=g, device=x.device) < 0.5
    return torch.where(flip, salt.to(x.dtype), x)


# ----------------------------------------------------------------------------- blur
def _disk(radius: float, alias_blur: float) -> torch.Tensor:
    """The reference's anti-aliased disk: a 17×17 (or larger) binary disk, normalised, then a 3×3
    (5×5 for radii > 8) Gaussian blur of sigma ``alias_blur`` (OpenCV's, borders reflected)."""
    half = 8 if radius <= 8 else int(math.ceil(radius))
    ks = 3 if radius <= 8 else 5
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    d = ((xx**2 + yy**2) <= radius**2).double()
    d /= d.sum()
    u = torch.arange(ks, dtype=torch.float64) - (ks - 1) / 2
    g1 = torch.exp(-(u**2) / (2 * alias_blur**2))
    g1 /= g1.sum()
    return _conv_same(d[None, None].float(), (g1[:, None] * g1[None, :]).float(), "reflect")[0, 0]


def defocus_blur(x, c, g):
    return _conv_same(x, _disk(*c), "reflect")


def glass_blur(x, c, g):
    """Blur, locally shuffle, blur again. The reference "swaps" pixel (h, w) with a random neighbour
    by a tuple assignment of NumPy views, which copies: (h, w) takes its neighbour's value and the
    neighbour keeps its own. Its scan runs from the bottom-right with offsets in {−1, 0} (NumPy's
    randint(−1, 1)), so every source is read before it is written: one gather does the whole scan
    exactly (tested against the reference loop)."""
    sigma, delta, iters = c
    if delta != 1:
        raise ValueError("glass_blur's one-gather form holds for a max delta of 1 (every CIFAR-10-C severity)")
    n, ch, h, w = x.shape
    x = (_gaussian_blur(x, sigma) * 255).clamp(0, 255).floor() / 255  # the reference's uint8 cast
    for _ in range(iters):
        x = glass_shuffle(x, torch.randint(-delta, delta, (n, 2, h, w), generator=g, device=x.device), delta)
    return _gaussian_blur(x, sigma)


def glass_shuffle(x: torch.Tensor, d: torch.Tensor, delta: int = 1) -> torch.Tensor:
    """One pass of the reference's scan with offsets ``d`` (n, 2 = (dx, dy), H, W): each position
    in (delta, H − delta] × (delta, W − delta] takes the value at its offset."""
    n, ch, h, w = x.shape
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys > delta) & (ys <= h - delta) & (xs > delta) & (xs <= w - delta)
    sy = torch.where(inside, ys + d[:, 1], ys).clamp(0, h - 1)
    sx = torch.where(inside, xs + d[:, 0], xs).clamp(0, w - 1)
    return x[
        torch.arange(n, device=x.device).view(n, 1, 1, 1),
        torch.arange(ch, device=x.device).view(1, ch, 1, 1),
        sy[:, None],
        sx[:, None],
    ]


def _to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Rounded to the nearest of 256 levels, halves up (PIL's and ImageMagick's ``+ 0.5`` and
    truncate, where torch.round goes to even; a box filter's mean of two levels is often a half):
    what an 8-bit PNG or PIL image stores. 1e-4 of a level absorbs float32's error at the half."""
    return (x * 255 + 0.5 + 1e-4).floor().clamp(0, 255) / 255


def _line_blur(x: torch.Tensor, radius: float, sigma: float, angle_deg: torch.Tensor) -> torch.Tensor:
    """ImageMagick's ``MotionBlurImage``: ``width = 2⌈radius⌉ + 1`` taps weighted exp(−i²/2σ²)
    (one-sided, normalised), tap i reading the pixel at the whole-pixel offset
    (⌈i·cos θ − ½⌉, ⌈i·sin θ − ½⌉) from each output pixel, outside the image the nearest edge pixel
    (its default virtual-pixel method); rounded to 8 bits."""
    n, ch, h, w = x.shape
    width = int(2 * math.ceil(radius) + 1)
    i = torch.arange(width, dtype=torch.float64)
    wts = torch.exp(-(i**2) / (2 * sigma**2))
    wts = (wts / wts.sum()).float()
    th = angle_deg.double().cpu() * math.pi / 180  # offsets in double, as ImageMagick computes them
    dx = torch.ceil(i[None] * torch.cos(th)[:, None] - 0.5).long().to(x.device)  # (n, width)
    dy = torch.ceil(i[None] * torch.sin(th)[:, None] - 0.5).long().to(x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    b = torch.arange(n, device=x.device).view(n, 1, 1)
    out = torch.zeros_like(x)
    for k in range(width):
        rows = (ys + dy[:, k].view(n, 1, 1)).clamp(0, h - 1).expand(n, h, w)
        cols = (xs + dx[:, k].view(n, 1, 1)).clamp(0, w - 1).expand(n, h, w)
        out += wts[k] * x[b, :, rows, cols].permute(0, 3, 1, 2)
    return _to_8bit(out)


def motion_blur(x, c, g):
    angle = torch.rand(x.shape[0], generator=g, device=x.device) * 90 - 45
    return _line_blur(x, c[0], c[1], angle)


def _clipped_zoom(x: torch.Tensor, z: float) -> torch.Tensor:
    """scipy.ndimage.zoom (order 1) of the centre crop, trimmed back to the image size (each side
    on its own, so non-square images work)."""
    h, w = x.shape[-2:]
    ch, cw = int(math.ceil(h / z)), int(math.ceil(w / z))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    sh, sw = int(round(ch * z)), int(round(cw * z))
    up = F.interpolate(crop, size=(sh, sw), mode="bilinear", align_corners=True)
    th, tw = (sh - h) // 2, (sw - w) // 2
    return up[..., th : th + h, tw : tw + w]


def zoom_blur(x, c, g):
    out = x.clone()
    for z in c:
        out += _clipped_zoom(x, z)
    return out / (len(c) + 1)


# ----------------------------------------------------------------------------- weather
def snow(x, c, g):
    loc, scale, zoom, thresh, radius, sigma, blend = c
    n, ch, h, w = x.shape
    layer = loc + scale * torch.randn((n, 1, h, w), generator=g, device=x.device)
    layer = _clipped_zoom(layer, zoom)
    layer = torch.where(layer < thresh, torch.zeros_like(layer), layer).clamp(0, 1)
    angle = torch.rand(n, generator=g, device=x.device) * 90 - 135
    return snow_blend(x, layer, angle, c)


def snow_blend(x: torch.Tensor, layer: torch.Tensor, angle: torch.Tensor, c) -> torch.Tensor:
    """The reference's snow from its thresholded layer (n, 1, H, W) and streak angles (n,): the
    layer to 8 bits by truncation (PIL's "L" image of ``astype(uint8)``), motion-blurred (and back
    at 8 bits, its PNG round trip), the image brightened towards its grey level, the layer added
    upright and turned half a turn."""
    loc, scale, zoom, thresh, radius, sigma, blend = c
    layer = (layer * 255).floor() / 255
    layer = _line_blur(layer, radius, sigma, angle)
    x = blend * x + (1 - blend) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-1, -2)


def frost_texture(n: int, h: int, w: int, g: torch.Generator, device, feature: int | None = None) -> torch.Tensor:
    """(n, 3, h, w) in [0, 1]: a synthetic frost layer (ours: the reference crops photographs).
    Needles: short bright strokes from random seed points, branching at ±60°; a crystalline cell
    network (edges of random Voronoi cells); fine grain; bluish white. ``feature``: the size the
    needles and cells are drawn for (the image size the layer is cropped to)."""
    feature = feature or min(h, w)
    ys, xs = _pixel_grid(h, w, device)
    pts = torch.stack([xs, ys], -1).view(1, -1, 1, 2)  # (1, P, 1, 2)
    k = int(h * w * (6 + 0.01 * feature**2) / feature**2)
    seeds = torch.rand((n, k, 2), generator=g, device=device) * torch.tensor([w, h], device=device, dtype=torch.float32)
    ang = torch.rand((n, k), generator=g, device=device) * 2 * math.pi
    length = (0.15 + 0.25 * torch.rand((n, k), generator=g, device=device)) * feature
    segs = []
    for turn in (0.0, math.pi / 3, -math.pi / 3):  # a needle and two side branches from its middle
        a = ang + turn
        start = seeds if turn == 0 else seeds + 0.5 * length[..., None] * torch.stack([ang.cos(), ang.sin()], -1)
        ln = length if turn == 0 else 0.5 * length
        segs.append((start, start + ln[..., None] * torch.stack([a.cos(), a.sin()], -1)))
    needles = torch.zeros((n, h * w), device=device)
    for a, b in segs:
        ab = (b - a)[:, None]  # (n, 1, k, 2)
        ap = pts - a[:, None]
        t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-6)).clamp(0, 1)
        d = (ap - t[..., None] * ab).norm(dim=-1).amin(-1)  # (n, P)
        needles = torch.maximum(needles, torch.exp(-(d**2) / 0.8))
    m = max(2, int(12 * h * w / feature**2))
    cells = torch.rand((n, m, 2), generator=g, device=device) * torch.tensor([w, h], device=device, dtype=torch.float32)
    dist = (pts[:, :, 0][:, :, None] - cells[:, None]).norm(dim=-1)  # (n, P, m)
    two = dist.topk(2, dim=-1, largest=False).values
    edges = torch.exp(-((two[..., 1] - two[..., 0]) ** 2) / 1.5)
    grain = torch.rand((n, h * w), generator=g, device=device)
    v = (0.35 + 0.45 * needles + 0.25 * edges + 0.15 * grain).clamp(0, 1).view(n, 1, h, w)
    v = _gaussian_blur(v, 0.5)
    tint = torch.tensor([0.85, 0.93, 1.0], device=device).view(1, 3, 1, 1)
    return (v * tint).clamp(0, 1)


# the photographs' mean red spans 69–198 of 255 (as measured in issue 28); each synthetic layer is
# scaled to one of six levels over that span so that crops differ in brightness as the photos' do.
# The reference draws only the first five, so the darkest and the brightest come first.
FROST_MEAN_RED = tuple(v / 255 for v in (69.0, 198.0, 120.6, 172.2, 94.8, 146.4))
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")


@functools.lru_cache(maxsize=4)
def _frost_bank(h: int, w: int, device: str) -> torch.Tensor:
    """Six frost layers, the reference's six photographs from ``data/frost/`` when all are there
    (``frost_photos``), else synthetic ones 5× the image size, made once per size and device with
    a fixed seed, the i-th scaled to mean red ``FROST_MEAN_RED[i]`` (its bluish tint kept)."""
    photos = frost_photos(h, w)
    if photos is not None:
        return [p.to(device) for p in photos]
    g = torch.Generator(device=device)
    g.manual_seed(20190)
    bank = []
    for red in FROST_MEAN_RED:
        layer = frost_texture(1, 5 * h, 5 * w, g, device, feature=min(h, w))
        bank.append((layer * red / layer[:, 0].mean()).clamp(0, 1)[0])
    return bank


def _cv2_linear_resize(img: torch.Tensor, factor: float) -> torch.Tensor:
    """``cv2.resize(img, None, fx=factor, fy=factor)`` (bilinear) of a (C, H, W) image:
    round(H·factor) × round(W·factor) pixels (cv2 rounds the size; ``F.interpolate`` would floor
    it), each read at source coordinate (d + ½)/factor − ½ clamped to the image (at 0.2: pixel
    5d + 2 exactly)."""

    def taps(n: int):
        m = int(round(n * factor))
        s = ((torch.arange(m, dtype=torch.float64) + 0.5) / factor - 0.5).clamp(0, n - 1)
        i0 = s.floor().long()
        return i0, (i0 + 1).clamp(max=n - 1), (s - i0).float()

    y0, y1, wy = taps(img.shape[1])
    x0, x1, wx = taps(img.shape[2])
    rows = img[:, y0] * (1 - wy)[:, None] + img[:, y1] * wy[:, None]
    return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx


def frost_photos(h: int, w: int, root=None) -> list[torch.Tensor] | None:
    """The reference's frost photographs (``FROST_FILES`` in ``<data>/frost/``), each (3, H', W')
    in [0, 1], resized as ``make_cifar_c.py`` does for 32 px (``cv2.resize`` by 0.2, bilinear at
    half-pixel centres, no antialiasing), by 0.2 · size / 32 for other sizes; None when any is missing."""
    from PIL import Image

    from ..paths import data_root, resolve_in_root

    folder = (resolve_in_root(root) if root is not None else data_root()) / "frost"
    paths = [folder / f for f in FROST_FILES]
    if not all(p.is_file() for p in paths):
        return None
    out = []
    for p in paths:
        img = torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        factor = 0.2 * min(h, w) / 32
        small = _cv2_linear_resize(img, factor)
        if min(small.shape[1:]) <= max(h, w):
            raise ValueError(f"{p} is too small to crop {h}×{w} pixels from after resizing by {factor:.3g}")
        out.append(small)
    return out


def frost(x, c, g):
    n, ch, h, w = x.shape
    bank = _frost_bank(h, w, str(x.device))
    if len({tuple(b.shape) for b in bank}) == 1:
        return _frost_from_bank(x, c, g, torch.stack(bank))
    tex = torch.stack([_random_crop(bank, h, w, g, x.device) for _ in range(n)])  # photos of different sizes
    if ch == 1:
        tex = _gray(tex)
    return c[0] * x + c[1] * tex


def _random_crop(bank, h: int, w: int, g, device) -> torch.Tensor:
    """The reference's draw for one image: one of the first five layers, then a crop origin."""
    b = bank[int(torch.randint(0, 5, (1,), generator=g, device=device))]
    oy = int(torch.randint(0, b.shape[1] - h, (1,), generator=g, device=device))
    ox = int(torch.randint(0, b.shape[2] - w, (1,), generator=g, device=device))
    return b[:, oy : oy + h, ox : ox + w]


def _frost_from_bank(x, c, g, bank: torch.Tensor) -> torch.Tensor:
    n, ch, h, w = x.shape
    H, W = bank.shape[-2:]
    idx = torch.randint(0, 5, (n,), generator=g, device=x.device)  # the reference picks among its first five
    oy = torch.randint(0, H - h, (n,), generator=g, device=x.device)
    ox = torch.randint(0, W - w, (n,), generator=g, device=x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]
    tex = bank[idx[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if ch == 1:
        tex = _gray(tex)
    return c[0] * x + c[1] * tex


def plasma_fractal(n: int, mapsize: int, wibbledecay: float, g: torch.Generator, device) -> torch.Tensor:
    """(n, mapsize, mapsize) diamond-square height maps in [0, 1], as the reference's (float32:
    the maps are normalised at the end, and the first level's 10⁴ scale is well inside its range)."""
    m = torch.zeros((n, mapsize, mapsize), device=device, dtype=torch.float32)
    step, wibble = mapsize, 100.0

    def wibbled(a):  # a / 4 + wibble · U(−wibble, wibble), in two passes
        return torch.empty_like(a).uniform_(-wibble * wibble, wibble * wibble, generator=g).add_(a, alpha=0.25)

    while step >= 2:
        corner = m[:, 0:mapsize:step, 0:mapsize:step]
        sq = corner + corner.roll(-1, 1)
        sq = sq + sq.roll(-1, 2)
        m[:, step // 2 : mapsize : step, step // 2 : mapsize : step] = wibbled(sq)
        dr = m[:, step // 2 : mapsize : step, step // 2 : mapsize : step]
        ul = m[:, 0:mapsize:step, 0:mapsize:step]
        lt = dr + dr.roll(1, 1) + ul + ul.roll(-1, 2)
        m[:, 0:mapsize:step, step // 2 : mapsize : step] = wibbled(lt)
        tt = dr + dr.roll(1, 2) + ul + ul.roll(-1, 1)
        m[:, step // 2 : mapsize : step, 0:mapsize:step] = wibbled(tt)
        step //= 2
        wibble /= wibbledecay
    m -= m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True)


def fog(x, c, g):
    n, ch, h, w = x.shape
    size = 1 << int(math.ceil(math.log2(max(h, w))))  # CIFAR-10-C: plasma_fractal(mapsize=32) at 32 px
    chunk = max(1, (1 << 20) // (size * size))  # bounded memory (2²⁰ values at a time), and cache-sized
    layer = torch.cat(
        [plasma_fractal(min(chunk, n - i), size, c[1], g, x.device)[:, None, :h, :w] for i in range(0, n, chunk)]
    )
    mx = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + c[0] * layer) * mx / (mx + c[0])


# ----------------------------------------------------------------------------- digital
def brightness(x, c, g):
    """HSV's V + c, clipped, back to RGB: the same hue and saturation, so RGB scales by V'/V."""
    v = x.amax(dim=1, keepdim=True)
    v2 = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * v2 / v.clamp_min(1e-12), v2.expand_as(x))


def contrast(x, c, g):
    m = x.mean(dim=(2, 3), keepdim=True)
    return (x - m) * c + m


def _affine_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """(n, 2, 3) affine maps sending 3 ``src`` points to ``dst`` (OpenCV's getAffineTransform)."""
    ones = torch.ones(*src.shape[:2], 1, dtype=src.dtype, device=src.device)
    a = torch.cat([src, ones], -1)  # (n, 3, 3)
    return torch.linalg.solve(a, dst).transpose(1, 2)


def elastic_transform(x, c, g):
    """The reference: a random affine (three points near the centre moved by up to c₂·size), then
    a smooth random displacement field (Gaussian-filtered uniform noise, σ = c₁·size, scaled by
    c₀·size), both sampled bilinearly with reflected borders."""
    n, ch, h, w = x.shape
    size = float(h)
    alpha, sigma, affine = (v * size for v in c)
    centre = torch.tensor([w // 2, h // 2], dtype=torch.float32, device=x.device)
    sq = min(h, w) // 3
    p1 = torch.stack([centre + sq, torch.stack([centre[0] + sq, centre[1] - sq]), centre - sq])[None].expand(n, 3, 2)
    p2 = p1 + (torch.rand((n, 3, 2), generator=g, device=x.device) * 2 - 1) * affine
    # warpAffine samples the source at M⁻¹·(output pixel): the map from p2 back to p1
    inv = _affine_from_points(p2, p1)
    ys, xs = _pixel_grid(h, w, x.device)
    hom = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, -1, 3)
    src = (hom @ inv.transpose(1, 2)).view(n, h, w, 2)

    def sample(img, sx, sy, centres):
        # reflection about the border pixels' centres (reflect-101: warpAffine) or about the
        # image's edges (half-sample symmetric: scipy's map_coordinates mode "reflect")
        if centres:
            grid = torch.stack([sx / max(w - 1, 1) * 2 - 1, sy / max(h - 1, 1) * 2 - 1], -1)
        else:
            grid = torch.stack([(sx + 0.5) / w * 2 - 1, (sy + 0.5) / h * 2 - 1], -1)
        return F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection", align_corners=centres)

    x = sample(x, src[..., 0], src[..., 1], True)
    if alpha > 0:
        noise = torch.rand((n, 2, h, w), generator=g, device=x.device) * 2 - 1
        d = _gaussian_blur(noise, sigma, mode="symmetric", truncate=3.0) * alpha
        x = sample(x, xs[None] + d[:, 0], ys[None] + d[:, 1], False)
    return x


def _box_matrix(n_in: int, n_out: int, device) -> torch.Tensor:
    """PIL's BOX resampling as an (n_out, n_in) matrix: output i averages the input pixels whose
    centres fall in its window (i·s, (i+1)·s], s = n_in / n_out (at least one pixel wide)."""
    s = n_in / n_out
    support = max(s, 1.0) * 0.5
    centre = (torch.arange(n_out, dtype=torch.float64) + 0.5) * s
    lo = torch.clamp((centre - support + 0.5).floor(), min=0)
    hi = torch.clamp((centre + support + 0.5).floor(), max=n_in)
    j = torch.arange(n_in, dtype=torch.float64)
    ss = 1.0 / max(s, 1.0)
    arg = (j[None] - centre[:, None] + 0.5) * ss
    wts = ((arg > -0.5) & (arg <= 0.5)).double() * ((j[None] >= lo[:, None]) & (j[None] < hi[:, None])).double()
    wts = wts / wts.sum(1, keepdim=True).clamp_min(1e-12)
    return wts.float().to(device)


def _box_resize_8bit(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """PIL's 8-bit BOX resize: the horizontal pass, stored at 8 bits, then the vertical pass, again."""
    x = _to_8bit(x @ _box_matrix(x.shape[-1], w, x.device).T)
    return _to_8bit(_box_matrix(x.shape[-2], h, x.device) @ x)


def pixelate(x, c, g):
    """Down and up again with PIL's BOX filter, each of its passes stored at 8 bits (rounded) as PIL's is."""
    h, w = x.shape[-2:]
    return _box_resize_8bit(_box_resize_8bit(x, int(h * c), int(w * c)), h, w)


def jpeg_compression(x, c, g):
    import warnings

    from torchvision.io import decode_jpeg, encode_jpeg

    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    with (
        warnings.catch_warnings()
    ):  # torchvision 0.29 points to torchcodec for future releases; the codec is libjpeg either way
        warnings.simplefilter("ignore", DeprecationWarning)
        dec = decode_jpeg(encode_jpeg(list(u8), quality=int(c)))
    return torch.stack(list(dec)).to(x.device, torch.float32) / 255


_OPS = {name: globals()[name] for name in CORRUPTIONS}


def corrupt(images: torch.Tensor, name: str, severity: int, *, seed: int = 0) -> torch.Tensor:
    """``images`` (N, C, H, W), float in [0, 1] or uint8, corrupted by ``name`` at ``severity``
    (1–5); the same shape, dtype and device; deterministic for (seed, name), with the same random
    draws at every severity."""
    choice("corruption", name, CORRUPTIONS)
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with 1 or 3 channels, got shape {tuple(images.shape)}")
    is_u8 = images.dtype == torch.uint8
    if not is_u8 and not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    x = images.float() / 255 if is_u8 else images.float()
    g = _generator(seed, name, x.device)
    out = _OPS[name](x.clone(), PARAMS[name][severity - 1], g).clamp(0, 1)
    if is_u8:  # the reference's np.uint8(x * 255): truncation (an 8-bit level k/255 in float32 stays k)
        return (out * 255 + 1e-4).floor().to(torch.uint8)
    return out.to(images.dtype)


class CorruptedImages(torch.utils.data.Dataset):
    """``base`` (an image data set of (image in [0, 1], target) pairs) corrupted on the fly, in
    blocks of ``batch`` images for speed; image i is always corrupted alike for one (seed, batch),
    so compare models at the same ``batch`` (``robustness_report`` keeps the default)."""

    def __init__(self, base, name: str, severity: int, *, seed: int = 0, batch: int = 256):
        choice("corruption", name, CORRUPTIONS)
        self.base, self.name, self.severity, self.seed, self.batch = base, name, severity, seed, batch
        self.classes = getattr(base, "classes", None)
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self):
        return len(self.base)

    def _block(self, b: int) -> torch.Tensor:
        if b not in self._cache:
            lo, hi = b * self.batch, min(len(self.base), (b + 1) * self.batch)
            x = torch.stack([self.base[i][0] for i in range(lo, hi)])
            self._cache = {b: corrupt(x, self.name, self.severity, seed=self.seed * 1_000_003 + b)}
        return self._cache[b]

    def __getitem__(self, i):
        return self._block(i // self.batch)[i % self.batch], self.base[i][1]


def gallery(
    image: torch.Tensor, *, corruptions=CORRUPTIONS, severities=SEVERITIES, seed: int = 0
) -> tuple[list[torch.Tensor], list[str]]:
    """Every corruption × severity of one image (C, H, W) in [0, 1]: (images, captions) row by row,
    each row the clean image then severities 1..5."""
    images, captions = [], []
    for name in corruptions:
        images.append(image)
        captions.append(f"{name}: clean")
        for s in severities:
            images.append(corrupt(image[None], name, s, seed=seed)[0])
            captions.append(f"{name} {s}")
    return images, captions


def load_cifar10c(corruption: str, severity: int, root=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 3, 32, 32), labels) of one corruption and severity from CIFAR-10-C as it
    is distributed: ``<root>/CIFAR-10-C/<corruption>.npy`` (5 severities × N images stacked, HWC
    uint8) and ``labels.npy``."""
    from ..paths import data_root, resolve_in_root

    choice("corruption", corruption, CORRUPTIONS)
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    folder = (resolve_in_root(root) if root is not None else data_root()) / "CIFAR-10-C"
    path, lab = folder / f"{corruption}.npy", folder / "labels.npy"
    if not path.is_file() or not lab.is_file():
        raise FileNotFoundError(
            f"CIFAR-10-C not found in {folder} (missing "
            f"{path.name if not path.is_file() else 'labels.npy'}). geoviz never downloads data: unpack "
            "CIFAR-10-C.tar from https://zenodo.org/record/2535967 into data/ (see data/README.md)"
        )
    arr = np.load(path, mmap_mode="r")
    labels = np.load(lab)
    if arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) % 5 or len(labels) != len(arr):
        raise ValueError(
            f"{path} should hold 5 severities × N images (5N, 32, 32, 3) uint8 with labels.npy of length 5N; "
            f"got {arr.shape} and {labels.shape}"
        )
    n = len(arr) // 5
    sl = slice((severity - 1) * n, severity * n)
    images = torch.from_numpy(np.ascontiguousarray(arr[sl].transpose(0, 3, 1, 2)))
    return images, torch.from_numpy(labels[sl].astype(np.int64))
