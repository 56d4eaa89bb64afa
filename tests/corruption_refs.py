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
