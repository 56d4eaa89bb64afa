"""Per-image NumPy/SciPy/PIL versions of the CIFAR-10-C formulas (make_cifar_c.py), written from
the reference code's formulas independently of geoviz: golden values for tests/test_corruptions.py
and the baseline of benchmarks/corruptions.py. Images are (H, W, 3) float64 in [0, 1]. OpenCV,
scikit-image and ImageMagick are not installed here: their calls are replaced by SciPy / PIL /
colorsys equivalents (named at each function)."""

from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image
from scipy import ndimage


def gaussian_noise(x, c, rng):
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1)


def shot_noise(x, c, rng):
    return np.clip(rng.poisson(x * c) / c, 0, 1)


def impulse_noise(x, c, rng):
    out = x.copy()
    flip = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    out[flip & salt], out[flip & ~salt] = 1.0, 0.0
    return out


def disk(radius, alias_blur):
    """The reference's disk; cv2.GaussianBlur(3×3, sigma) as a separable 3-tap kernel, borders
    reflected (OpenCV's default, scipy's "mirror")."""
    L = np.arange(-8, 8 + 1)
    X, Y = np.meshgrid(L, L)
    d = np.array((X**2 + Y**2) <= radius**2, dtype=np.float64)
    d /= d.sum()
    u = np.array([-1.0, 0.0, 1.0])
    g = np.exp(-(u**2) / (2 * alias_blur**2))
    g /= g.sum()
    return ndimage.correlate(d, np.outer(g, g), mode="mirror")


def defocus_blur(x, c, rng=None):
    k = disk(*c)
    return np.clip(np.stack([ndimage.correlate(x[..., ch], k, mode="mirror") for ch in range(3)], -1), 0, 1)


# make_cifar_c.py's own tables for the corruptions compared pixel by pixel, typed in again here (not
# read from geoviz's PARAMS): a transcription error there shows as a mismatch
REF_PARAMS = {
    "zoom_blur": [
        np.arange(1, 1.06, 0.01),
        np.arange(1, 1.11, 0.01),
        np.arange(1, 1.16, 0.01),
        np.arange(1, 1.21, 0.01),
        np.arange(1, 1.26, 0.01),
    ],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "snow": [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "jpeg_compression": [80, 65, 58, 50, 40],
}


def imagemagick_motion_blur(img_u8, radius, sigma, angle):
    """ImageMagick's MotionBlurImage on an 8-bit (H, W) or (H, W, C) image: width 2·ceil(radius)+1
    taps (GetOptimalKernelWidth1D), weights exp(−i²/2σ²) normalised, tap i read at the integer
    offset x + ceil(i·cos(angle) − 0.5), y + ceil(i·sin(angle) − 0.5) (its point.y / point.x over
    hypot), the edge pixel outside the image (virtual pixels: edge), rounded back to 8 bits."""
    a = img_u8.astype(np.float64)
    h, w = a.shape[:2]
    width = int(2 * np.ceil(radius) + 1)
    k = np.exp(-(np.arange(width) ** 2) / (2.0 * sigma * sigma))
    k /= k.sum()
    t = np.deg2rad(angle)
    px, py = width * np.sin(t), width * np.cos(t)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros_like(a)
    for i in range(width):
        ox = int(np.ceil(i * py / np.hypot(px, py) - 0.5))
        oy = int(np.ceil(i * px / np.hypot(px, py) - 0.5))
        out += k[i] * a[np.clip(yy + oy, 0, h - 1), np.clip(xx + ox, 0, w - 1)]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def motion_blur_u8(img_u8, severity, angle):
    """make_cifar_c.py's motion_blur for one 8-bit RGB image, given the angle it would draw."""
    radius, sigma = REF_PARAMS["motion_blur"][severity - 1]
    return np.uint8(np.clip(imagemagick_motion_blur(img_u8, radius, sigma, angle), 0, 255))


def snow_u8(img_u8, severity, layer, angle):
    """make_cifar_c.py's snow for one 8-bit RGB image from the snow layer after its zoom and
    threshold (float (H, W)) and the angle it would draw."""
    c = REF_PARAMS["snow"][severity - 1]
    x = np.array(img_u8, dtype=np.float32) / 255.0
    layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8)  # PIL's "L" image
    layer = imagemagick_motion_blur(layer, c[4], c[5], angle) / 255.0  # its PNG, decoded
    layer = layer[..., None]
    grey = (x @ np.float32([0.299, 0.587, 0.114]))[..., None]  # cv2's RGB2GRAY weights
    x = c[6] * x + (1 - c[6]) * np.maximum(x, grey * 1.5 + 0.5)
    return np.uint8(np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255)


def clipped_zoom(img, z):
    h = img.shape[0]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    img = ndimage.zoom(img[top : top + ch, top : top + ch], (z, z) + (1,) * (img.ndim - 2), order=1)
    trim = (img.shape[0] - h) // 2
    return img[trim : trim + h, trim : trim + h]


def zoom_blur(x, c, rng=None):
    out = np.zeros_like(x)
    for z in c:
        out += clipped_zoom(x, z)
    return np.clip((x + out) / (len(c) + 1), 0, 1)


def contrast(x, c, rng=None):
    m = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - m) * c + m, 0, 1)


def brightness(x, c, rng=None):
    """The reference's HSV round trip (scikit-image there), here with the standard library's colorsys."""
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            h, s, v = colorsys.rgb_to_hsv(*x[i, j])
            out[i, j] = colorsys.hsv_to_rgb(h, s, min(1.0, max(0.0, v + c)))
    return np.clip(out, 0, 1)


def pixelate(x, c, rng=None):
    h, w = x.shape[:2]
    im = Image.fromarray((x * 255).round().astype(np.uint8))
    im = im.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
    return np.asarray(im, dtype=np.float64) / 255


def jpeg_compression(x, c, rng=None):
    buf = io.BytesIO()
    Image.fromarray((x * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=int(c))
    return np.asarray(Image.open(buf), dtype=np.float64) / 255


def glass_blur(x, c, rng, offsets=None):
    """scikit-image's gaussian is scipy's gaussian_filter (mode "nearest", truncate 4). ``offsets``
    (iterations, H, W, 2) replaces the random (dx, dy) draws, to compare with the same numbers."""
    sigma, delta, iters = c
    h, w = x.shape[:2]
    blur = lambda a: np.stack([ndimage.gaussian_filter(a[..., ch], sigma, mode="nearest") for ch in range(3)], -1)  # noqa: E731
    x = np.uint8(np.clip(blur(x), 0, 1) * 255)
    for it in range(iters):
        for hh in range(h - delta, delta, -1):
            for ww in range(w - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=(2,)) if offsets is None else offsets[it, hh, ww]
                h2, w2 = hh + dy, ww + dx
                # the reference's statement, kept as it is: a tuple of NumPy views (it copies, it does not swap)
                x[hh, ww], x[h2, w2] = x[h2, w2], x[hh, ww]
    return np.clip(blur(x / 255.0), 0, 1)


def glass_shuffle(x_u8, offsets, delta=1):
    """The reference's scan alone on an (H, W, 3) uint8 image with given offsets (H, W, 2)."""
    x = x_u8.copy()
    h, w = x.shape[:2]
    for hh in range(h - delta, delta, -1):
        for ww in range(w - delta, delta, -1):
            dx, dy = offsets[hh, ww]
            h2, w2 = hh + dy, ww + dx
            x[hh, ww], x[h2, w2] = x[h2, w2], x[hh, ww]
    return x


def plasma_fractal(mapsize, wibbledecay, rng):
    m = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled(a):
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        corner = m[0:mapsize:step, 0:mapsize:step]
        sq = corner + np.roll(corner, -1, 0)
        sq += np.roll(sq, -1, 1)
        m[step // 2 : mapsize : step, step // 2 : mapsize : step] = wibbled(sq)
        dr = m[step // 2 : mapsize : step, step // 2 : mapsize : step]
        ul = m[0:mapsize:step, 0:mapsize:step]
        m[0:mapsize:step, step // 2 : mapsize : step] = wibbled(dr + np.roll(dr, 1, 0) + ul + np.roll(ul, -1, 1))
        m[step // 2 : mapsize : step, 0:mapsize:step] = wibbled(dr + np.roll(dr, 1, 1) + ul + np.roll(ul, -1, 0))
        step //= 2
        wibble /= wibbledecay
    m -= m.min()
    return m / m.max()


def fog(x, c, rng):
    mx = x.max()
    h, w = x.shape[:2]
    x = x + c[0] * plasma_fractal(32, c[1], rng)[:h, :w][..., None]  # make_cifar_c.py: mapsize=32
    return np.clip(x * mx / (mx + c[0]), 0, 1)


def elastic_transform(x, c, rng):
    """The reference's random affine (cv2.warpAffine, BORDER_REFLECT_101: scipy's "mirror") and
    displacement field (scikit-image's gaussian and map_coordinates with mode "reflect")."""
    h, w = x.shape[:2]
    alpha, sigma, aff = (v * h for v in c)
    centre = np.float64([w // 2, h // 2])
    sq = min(h, w) // 3
    p1 = np.array([centre + sq, [centre[0] + sq, centre[1] - sq], centre - sq])
    p2 = p1 + rng.uniform(-aff, aff, size=p1.shape)
    A = np.c_[p2, np.ones(3)]
    inv = np.linalg.solve(A, p1).T  # (x, y) of the output → (x, y) in the source
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
    sy = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    x = np.stack([ndimage.map_coordinates(x[..., ch], [sy, sx], order=1, mode="mirror") for ch in range(3)], -1)
    if alpha > 0:
        dx = ndimage.gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
        dy = ndimage.gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
        x = np.stack(
            [ndimage.map_coordinates(x[..., ch], [yy + dy, xx + dx], order=1, mode="reflect") for ch in range(3)], -1
        )
    return np.clip(x, 0, 1)


REFERENCES = {
    f.__name__: f
    for f in (
        gaussian_noise,
        shot_noise,
        impulse_noise,
        defocus_blur,
        glass_blur,
        zoom_blur,
        fog,
        brightness,
        contrast,
        elastic_transform,
        pixelate,
        jpeg_compression,
    )
}
