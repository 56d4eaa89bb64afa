"""Procedural geometric-shape data sets: the embedded default data of geoviz (no download).

Tasks (``TASKS`` maps each to its class names):

- ``quad``: square, rectangle, trapezoid, parallelogram — the local invariants of Zheng et al.
  (2021). Random scale, position, rotation, stroke width, filled or outline.
- ``hole``: a filled shape with no hole / with one hole. Every shape has the same inner cut and a
  channel from outside: it opens the cut (no hole) or stops short of it as a dent of equal area.
- ``connectivity``: one connected part / two separate parts, at the same spread, joined by a bar
  that is whole or broken by a gap.
- ``inside``: a dot inside a closed contour / inside one whose outline has a gap (outside).
- ``curve``: two interleaved rails along a random route, with two dots on the same / on different rails (>= 64 px).
- ``shapes10``: 32×32 RGB, ten shape classes (tilted up to ±25°) with colour, stripe texture,
  background gradient, clutter and noise, with near-confusable pairs (square/rectangle, circle/ellipse,
  pentagon/hexagon, trapezoid/parallelogram): a stand-in for CIFAR-10 that needs no download.

``variant="irregular"`` draws the same classes from irregular outlines — hand-drawn wobbly edges
for ``quad`` (corners, hence the class geometry, are kept), smooth random non-convex blobs for the
global tasks, rails that wobble along their length for ``curve`` — so that training on ``regular`` and testing on
``irregular`` measures transfer. The global tasks are drawn so that simple statistics of the
drawing (area, perimeter, extent, moments; ``analysis.floors``) carry as little of the label as
we could make them (each generator says how).

Labels are true by construction (margins of at least ~2 px keep holes open, gaps open and dots
clear of contours after rasterisation; the tests check every label with connected components).
Images depend only on (task, variant, seed, index), never on batch size or order; class labels
cycle with the index, so any contiguous index range is class-balanced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .._counter_rng import CounterRNG
from .._utils import choice
from ._batched import BatchSource
from ._raster import (
    fill_coverage,
    pixel_centres,
    polygon_sdf_image,
    radial_polygon,
    signed_distance,
    stroke_coverage,
    transform,
)

TASKS: dict[str, tuple[str, ...]] = {
    "quad": ("square", "rectangle", "trapezoid", "parallelogram"),
    "hole": ("no_hole", "hole"),
    "connectivity": ("connected", "disconnected"),
    "inside": ("inside", "outside"),
    "curve": ("same", "different"),
    "shapes10": (
        "square",
        "rectangle",
        "circle",
        "ellipse",
        "triangle",
        "pentagon",
        "hexagon",
        "trapezoid",
        "parallelogram",
        "star",
    ),
}
VARIANTS = ("regular", "irregular")
DEFAULT_SIZE = {"shapes10": 32}
MIN_SIZE = 16
# A hole or a dot needs ~2 px of clearance on every side to survive rasterisation; below these
# sizes there is no room for that, so the labels could not be guaranteed.
TASK_MIN_SIZE = {"hole": 24, "inside": 32, "curve": 64}  # curve: room for a route of rails through 3 × 3 cells
SPLIT_OFFSET = {"train": 0, "val": 1 << 40, "test": 2 << 40}
_BATCH = 1024
SHAPES10_MAX_TILT = 25.0  # degrees either way
_CIRCLE_SIDES = 32
_REGULAR_SIDES = torch.tensor([3, 4, 5, 6, _CIRCLE_SIDES])


# ----------------------------------------------------------------------------- local shapes
def _regular(sides: torch.Tensor, vmax: int = _CIRCLE_SIDES) -> torch.Tensor:
    """Regular polygons (circumradius 1) with per-sample side counts, padded to vmax vertices."""
    return radial_polygon(torch.ones(len(sides), vmax), phase=-math.pi / 2, n_valid=sides)


def _blob(rng: CounterRNG, key: str, n: int, amp: float, vertices: int = 32) -> torch.Tensor:
    """Smooth random star-shaped outlines (harmonics 2–4), max radius 1; ``amp`` sets how concave."""
    h = torch.arange(2, 5, dtype=torch.float32)
    a = rng.uniform(key + ".a", 3, 0.3, 1.0) * amp / h
    ph = rng.uniform(key + ".ph", 3, 0.0, 2 * math.pi)
    theta = 2 * math.pi * torch.arange(vertices, dtype=torch.float32) / vertices
    r = 1.0 + (a[:, :, None] * torch.cos(h[None, :, None] * theta[None, None, :] + ph[:, :, None])).sum(1)
    r = r.clamp_min(0.25)
    r = r / r.max(dim=1, keepdim=True).values
    return radial_polygon(r)


def _quad(cls: torch.Tensor, rng: CounterRNG, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Local vertices (n, 4, 2) of square / rectangle / trapezoid / parallelogram, max radius 1.

    ``rows`` selects which images of ``rng``'s batch ``cls`` belongs to (default: all).
    """
    n = len(cls)
    sel = slice(None) if rows is None else rows
    h = rng.uniform("quad.h", None, 0.9, 1.4)[sel]
    aspect = rng.uniform("quad.aspect", None, 1.5, 2.3)[sel]
    top = rng.uniform("quad.top", None, 0.3, 0.65)[sel]
    shift = rng.uniform("quad.shift", None, -0.3, 0.3)[sel]
    skew = (rng.uniform("quad.skew", None, 0.4, 0.8) * rng.sign("quad.skew_sign"))[sel] * h
    w = rng.uniform("quad.w", None, 0.75, 1.0)[sel]
    one = torch.ones(n)
    # columns: x0..x3, y0..y3 for the vertices bottom-left, bottom-right, top-right, top-left
    sq = torch.stack([-one, one, one, -one, one, one, -one, -one], 1)
    rect = torch.stack([-one, one, one, -one, 1 / aspect, 1 / aspect, -1 / aspect, -1 / aspect], 1)
    trap = torch.stack([-one, one, shift + top, shift - top, h / 2, h / 2, -h / 2, -h / 2], 1)
    par = torch.stack([-w - skew / 2, w - skew / 2, w + skew / 2, -w + skew / 2, h / 2, h / 2, -h / 2, -h / 2], 1)
    table = torch.stack([sq, rect, trap, par], 0)[cls, torch.arange(n)]
    v = torch.stack([table[:, :4], table[:, 4:]], dim=-1)
    v = v - v.mean(dim=1, keepdim=True)
    return v / v.norm(dim=-1).max(dim=1, keepdim=True).values[..., None]


def _wobble(local: torch.Tensor, rng: CounterRNG, sub: int = 8, amp: float = 0.16) -> torch.Tensor:
    """Hand-drawn edges: each edge becomes ``sub`` segments bent perpendicular, corners kept fixed.
    ``amp`` is relative to the circumradius: 0.16 bends an edge by up to ~1–3 px at 32 px, enough
    to see (0.06 moved edges by half a pixel at most)."""
    n, V, _ = local.shape
    a, b = local, local.roll(-1, dims=1)
    t = torch.arange(sub, dtype=torch.float32) / sub
    pts = a[:, :, None] + t[None, None, :, None] * (b - a)[:, :, None]
    edge = b - a
    normal = torch.stack([-edge[..., 1], edge[..., 0]], -1) / edge.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    c = rng.uniform("wobble.c", 2 * V, -1.0, 1.0).view(n, V, 2)
    prof = c[..., :1] * torch.sin(math.pi * t) + 0.5 * c[..., 1:] * torch.sin(2 * math.pi * t)
    pts = pts + amp * prof[..., None] * normal[:, :, None]
    return pts.reshape(n, V * sub, 2)


def _inradius(verts: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Distance from each centre (inside its polygon) to the polygon's boundary."""
    return -signed_distance(verts, centre[:, None, :])[:, 0]


def _place(rng: CounterRNG, key: str, radius: torch.Tensor, size: int, margin: float) -> torch.Tensor:
    lo = (radius + margin).clamp(max=size / 2)
    u = rng.uniform(key, 2)
    return lo[:, None] + u * (size - 2 * lo)[:, None]


def _scale_range(scale, default):
    lo, hi = default if scale is None else scale
    if not (0 < lo <= hi <= 0.5):
        raise ValueError(
            f"scale must be (lo, hi) with 0 < lo <= hi <= 0.5 (fractions of the image size), got {scale!r}"
        )
    return lo, hi


# ----------------------------------------------------------------------------- tasks
@dataclass
class _Batch:
    images: torch.Tensor  # (n, C, S, S) in [0, 1]
    meta: dict  # name -> per-image tensor or list, turned into one dict per image at the end


def _px(size: int) -> float:
    return size / 64.0


def _gen_quad(rng, labels, size, variant, scale):
    local = _quad(labels, rng)
    if variant == "irregular":
        local = _wobble(local, rng)
    lo, hi = _scale_range(scale, (0.22, 0.42))
    R = rng.uniform("R", None, lo, hi) * size
    stroke = (rng.uniform("stroke", None, 1.5, 3.5) * _px(size)).clamp_min(1.2)
    angle = rng.uniform("angle", None, 0.0, 2 * math.pi)
    centre = _place(rng, "centre", R + stroke, size, 1.0)
    verts = transform(local, angle, R, centre)
    filled = rng.bernoulli("filled", 0.5)
    sdf = polygon_sdf_image(verts, size)
    img = torch.where(filled[:, None, None], fill_coverage(sdf), stroke_coverage(sdf, stroke))
    return _Batch(
        img[:, None], dict(vertices=[verts], centre=centre, scale=R, angle=angle, filled=filled, stroke=stroke)
    )


def _outline(rng, key, n, variant, amp, sides_choices=_REGULAR_SIDES):
    if variant == "irregular":
        return _blob(rng, key, n, amp)
    sides = sides_choices[rng.integers(key + ".sides", len(sides_choices))]
    return _regular(sides)


def _gen_hole(rng, labels, size, variant, scale):
    """Every shape gets the same two cuts: an inner cut and a straight channel from outside towards
    it. With no hole the channel reaches the cut (it opens to the outside: a "C"); with a hole the
    channel stops ``margin`` short of it (a dent) and is widened to remove the same area. Area,
    perimeter, extent and moments then carry (almost) no label: only whether the cut is enclosed."""
    n = len(labels)
    px = _px(size)
    margin = max(2.5, 3.0 * px)
    lo, hi = _scale_range(scale, (0.28, 0.42))
    R = rng.uniform("R", None, lo, hi) * size
    angle = rng.uniform("angle", None, 0.0, 2 * math.pi)
    centre = _place(rng, "centre", R, size, 1.0)
    outer_local = _outline(rng, "outer", n, variant, 0.25, _REGULAR_SIDES[1:])  # no triangles: room for a hole
    outer = transform(outer_local, angle, R, centre)
    r_in = _inradius(outer, centre)

    inner_local = _outline(rng, "inner", n, variant, 0.3)
    inner_rin = _inradius(inner_local, torch.zeros(n, 2))  # inscribed radius at circumradius 1
    phi = rng.uniform("offset.phi", None, 0.0, 2 * math.pi)
    direction = torch.stack([torch.cos(phi), torch.sin(phi)], -1)
    off = rng.uniform("offset.r", None, 0.0, 0.2) * r_in
    room = (r_in - off - margin).clamp_min(0.8)
    rho = rng.uniform("hole.r", None, 0.55, 0.95) * room  # circumradius of the cut
    cut_centre = centre + direction * off[:, None]
    cut = transform(inner_local, rng.uniform("inner.angle", None, 0, 2 * math.pi), rho, cut_centre)
    # Round the cut's corners: shrink it towards its centre, then dilate by the same ~1.5 px. A
    # region that is open by a disc of radius >= 1 px rasterises without one-pixel pockets at tips.
    round_r = max(1.0, 1.5 * px)
    cut_rin = inner_rin * rho
    shrink = (1 - round_r / cut_rin.clamp_min(round_r + 0.5))[:, None, None]
    core = cut_centre[:, None, :] + (cut - cut_centre[:, None, :]) * shrink

    # the channel: from the cut's centre (no hole) or from margin past the cut's circumradius
    # (hole) straight out, past the outline's circumradius
    has_hole = labels == 1
    psi = rng.uniform("channel.psi", None, 0.0, 2 * math.pi)
    u = torch.stack([torch.cos(psi), torch.sin(psi)], -1)
    width = rng.uniform("channel.w", None, 2.2, 3.0) * max(1.0, px)
    reach = ((centre - cut_centre) * u).sum(-1) + R + 2.0  # past the outline along u
    start = torch.where(has_hole, rho + margin, torch.zeros(n))
    # one width distribution for both classes (a wider dent would be a one-pixel cue of its own)
    channel = _bar(cut_centre + u * start[:, None], cut_centre + u * reach[:, None], width)
    cov = fill_coverage(polygon_sdf_image(outer, size))
    cut_cov = fill_coverage(polygon_sdf_image(core, size) - round_r)
    chan_cov = fill_coverage(polygon_sdf_image(channel, size))
    # and, in both classes alike, up to three more dents from outside that stop short of the cut:
    # the open channel removes a little more area than a dent, and these random dents drown that
    for j in range(3):
        psi_j = rng.uniform(f"dent{j}.psi", None, 0.0, 2 * math.pi)
        u_j = torch.stack([torch.cos(psi_j), torch.sin(psi_j)], -1)
        far = ((centre - cut_centre) * u_j).sum(-1) + R + 2.0
        stop = (
            rho + margin + rng.uniform(f"dent{j}.stop", None, 0.0, 1.0) * (far - rho - margin - 2.0).clamp_min(0) * 0.6
        )
        w_j = rng.uniform(f"dent{j}.w", None, 2.2, 3.0) * max(1.0, px)
        dent = _bar(cut_centre + u_j * stop[:, None], cut_centre + u_j * far[:, None], w_j)
        chan_cov = torch.maximum(
            chan_cov,
            fill_coverage(polygon_sdf_image(dent, size)) * rng.bernoulli(f"dent{j}", 0.5).float()[:, None, None],
        )
    img = torch.minimum(cov, 1 - torch.maximum(cut_cov, chan_cov))
    return _Batch(
        img[:, None],
        dict(
            vertices=[outer],
            cut=[cut[i] for i in range(n)],
            cut_centre=cut_centre,
            channel=[channel[i] for i in range(n)],
            centre=centre,
            scale=R,
            angle=angle,
            filled=torch.ones(n, dtype=torch.bool),
        ),
    )


def _bar(a: torch.Tensor, b: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Rectangle polygons (n, 4, 2) of the given width along segments a→b."""
    d = b - a
    nrm = torch.stack([-d[:, 1], d[:, 0]], -1) / d.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    h = nrm * (width / 2)[:, None]
    return torch.stack([a + h, b + h, b - h, a - h], 1)


def _gen_connectivity(rng, labels, size, variant, scale):
    """Two parts the same distance apart in both classes, always joined by a bar; for two parts the
    bar is broken by a gap; random dead-end spurs on the parts in both classes. Spread, area, perimeter and moments
    then carry (almost) no label: only whether the bar is whole."""
    n = len(labels)
    px = _px(size)
    gap_min = max(2.5, 3.0 * px)
    lo, hi = _scale_range(scale, (0.1, 0.17))
    R1 = rng.uniform("R1", None, lo, hi) * size
    R2 = rng.uniform("R2", None, lo, hi) * size
    l1 = _outline(rng, "part1", n, variant, 0.3)
    l2 = _outline(rng, "part2", n, variant, 0.3)
    connected = labels == 0
    # the free stretch between the parts' circumcircles holds the break with room either side
    # a wide range of spreads: the break then changes the visible bar by a small part of its length
    free = gap_min + 1.0 + rng.uniform("gap", None, 0.0, 1.0) * max(0.0, 0.4 * size - gap_min - 1.0)
    D = R1 + R2 + free
    phi = rng.uniform("phi", None, 0.0, 2 * math.pi)
    u = torch.stack([torch.cos(phi), torch.sin(phi)], -1)
    # centres relative to the midpoint, then a midpoint that keeps both parts inside the image
    c1r, c2r = -u * (D / 2)[:, None], u * (D / 2)[:, None]
    lo_xy = torch.minimum(c1r - R1[:, None], c2r - R2[:, None]) - 1.0
    hi_xy = torch.maximum(c1r + R1[:, None], c2r + R2[:, None]) + 1.0
    span_lo, span_hi = -lo_xy, size - hi_xy
    mid = span_lo + rng.uniform("mid", 2) * (span_hi - span_lo).clamp_min(0)
    c1, c2 = mid + c1r, mid + c2r
    a1 = rng.uniform("angle1", None, 0, 2 * math.pi)
    a2 = rng.uniform("angle2", None, 0, 2 * math.pi)
    p1, p2 = transform(l1, a1, R1, c1), transform(l2, a2, R2, c2)
    width = rng.uniform("bar.w", None, 2.2, 4.0) * max(1.0, px)
    # the break: gap_min long, somewhere in the free stretch (R1 .. D - R2 from c1)
    b0 = R1 + 0.5 + rng.uniform("break", None, 0.0, 1.0) * (free - gap_min - 1.0)
    bar_a = _bar(c1, c1 + u * torch.where(connected, D, b0)[:, None], width)
    # one width for both pieces and both classes (a wider broken bar would be a cue of its own)
    bar_b = _bar(c1 + u * (b0 + gap_min)[:, None], c2, width)
    cov = torch.maximum(fill_coverage(polygon_sdf_image(p1, size)), fill_coverage(polygon_sdf_image(p2, size)))
    bar_cov = torch.maximum(
        fill_coverage(polygon_sdf_image(bar_a, size)),
        fill_coverage(polygon_sdf_image(bar_b, size)) * (~connected).float()[:, None, None],
    )
    # in both classes alike, up to three spurs: dead-end bars from a part, pointing away from the
    # other one. A break adds two bar ends (perimeter) and removes a little area; random spurs
    # drown that, and bar ends alone stop telling the class
    for j in range(3):
        on_second = rng.bernoulli(f"spur{j}.part", 0.5)
        base = torch.where(on_second[:, None], c2, c1)
        away = torch.where(on_second[:, None], u, -u)  # from the part, away from the other one
        turn = rng.uniform(f"spur{j}.turn", None, -1.0, 1.0)
        ang = torch.atan2(away[:, 1], away[:, 0]) + turn
        v = torch.stack([torch.cos(ang), torch.sin(ang)], -1)
        reach = torch.where(on_second, R2, R1) + rng.uniform(f"spur{j}.len", None, 1.5, 6.0) * max(1.0, px)
        spur = _bar(base, base + v * reach[:, None], rng.uniform(f"spur{j}.w", None, 2.2, 4.0) * max(1.0, px))
        bar_cov = torch.maximum(
            bar_cov,
            fill_coverage(polygon_sdf_image(spur, size)) * rng.bernoulli(f"spur{j}", 0.5).float()[:, None, None],
        )
    img = torch.maximum(cov, bar_cov)
    bars = [bar_a[i][None] if connected[i] else torch.stack([bar_a[i], bar_b[i]]) for i in range(n)]  # (pieces, 4, 2)
    return _Batch(
        img[:, None],
        dict(
            vertices=[p1, p2],
            bar=bars,
            centre=torch.stack([c1, c2], 1),
            scale=torch.stack([R1, R2], 1),
            angle=torch.stack([a1, a2], 1),
            filled=torch.ones(n, dtype=torch.bool),
        ),
    )


def _enclosed(background: torch.Tensor) -> torch.Tensor:
    """(n, S, S) bool: background pixels not 4-connected to the image border (flood fill from it)."""
    reach = torch.zeros_like(background)
    reach[:, 0], reach[:, -1], reach[:, :, 0], reach[:, :, -1] = (
        background[:, 0],
        background[:, -1],
        background[:, :, 0],
        background[:, :, -1],
    )
    while True:
        grown = reach.clone()
        grown[:, 1:] |= reach[:, :-1]
        grown[:, :-1] |= reach[:, 1:]
        grown[:, :, 1:] |= reach[:, :, :-1]
        grown[:, :, :-1] |= reach[:, :, 1:]
        grown &= background
        if torch.equal(grown, reach):
            return background & ~reach
        reach = grown


def _gen_inside(rng, labels, size, variant, scale):
    """A dot inside a closed contour, or inside a contour whose outline has a gap (so the dot is
    outside: its region reaches the border). Every image holds one closed and one open contour,
    apart and anywhere, and the dot sits in one of them (the larger enough to hold it; the other is
    any size) at a depth drawn from one range for both classes: the dot's position, its nearness to an outline and the
    drawing's area, extent and
    moments then carry (almost) no label — only whether *its* contour is closed. Where two
    contours do not fit (small images), the dot's contour is drawn alone. The label is checked on
    the drawing by a flood fill from the border."""
    n = len(labels)
    px = _px(size)
    lo, hi = _scale_range(scale, (0.12, 0.17))
    # strokes of >= 2 px and >= 2 px of clearance: the topology holds whatever grey level one reads
    stroke = (rng.uniform("stroke", None, 1.5, 2.5) * px).clamp_min(2.0)
    rd = (rng.uniform("dot.r", None, 1.5, 2.2) * px).clamp_min(1.2)
    clear = stroke / 2 + rd + max(2.0, 2.0 * px)
    gap = max(2.5, 3.0 * px)
    locals_, radii, rooms = [], [], []
    for j in range(2):
        local = _outline(rng, f"contour{j}", n, variant, 0.3, _REGULAR_SIDES[1:])  # no triangles: room for a dot
        room = _inradius(local, torch.zeros(n, 2))  # inscribed radius at circumradius 1
        R = rng.uniform(f"R{j}", None, lo, hi) * size
        if j == 0:  # the dot's contour, grown where too small to hold it with clearance
            R = torch.maximum(R, (clear + 1) / room).clamp(max=0.4 * size)
        else:  # the other one: any size that still reads as a contour
            R = R.clamp_min(2 * gap)
        locals_.append(local), radii.append(R), rooms.append(room)
    # both centres at once: the first of 64 candidate pairs whose contours stay apart
    K = 64
    lo0, lo1 = (radii[0] + stroke + 1.0)[:, None, None], (radii[1] + stroke + 1.0)[:, None, None]
    cand0 = lo0 + rng.uniform("centre0", 2 * K).view(n, K, 2) * (size - 2 * lo0).clamp_min(0)
    cand1 = lo1 + rng.uniform("centre1", 2 * K).view(n, K, 2) * (size - 2 * lo1).clamp_min(0)
    apart = (cand0 - cand1).norm(dim=-1) >= (radii[0] + radii[1] + stroke + gap)[:, None]
    two = apart.any(dim=1)
    k = apart.float().argmax(dim=1)
    centres = [cand0[torch.arange(n), k], cand1[torch.arange(n), k]]
    angles = [rng.uniform(f"angle{j}", None, 0, 2 * math.pi) for j in range(2)]
    polys = [transform(locals_[j], angles[j], radii[j], centres[j]) for j in range(2)]
    # the first contour holds the dot; the open one (a gap: a bar from its centre outwards) is the
    # other one (inside) or this one (outside)
    inside = labels == 0
    first_open = ~inside
    psi = rng.uniform("gap.psi", None, 0.0, 2 * math.pi)
    u = torch.stack([torch.cos(psi), torch.sin(psi)], -1)
    oc = torch.where(first_open[:, None], centres[0], centres[1])
    oR = torch.where(first_open, radii[0], radii[1])
    cut = _bar(oc, oc + u * (oR + stroke + 1.0)[:, None], torch.full((n,), gap))
    cut_cov = fill_coverage(polygon_sdf_image(cut, size))
    drawn = [torch.ones(n, dtype=torch.bool), two]
    opened = [first_open, ~first_open & two]  # alone and inside: no open contour is drawn
    strokes = [
        stroke_coverage(polygon_sdf_image(polys[j], size), stroke)
        * drawn[j].float()[:, None, None]
        * (1 - opened[j].float()[:, None, None] * cut_cov)
        for j in range(2)
    ]
    outline = torch.maximum(strokes[0], strokes[1])
    # the dot: in its contour's interior, clear of the outline, at a depth from one range for both
    # classes; a random pixel among equals
    depth = -polygon_sdf_image(polys[0], size)
    room_px = rooms[0] * radii[0]
    target = clear + rng.uniform("dot.d", None, 0.0, 1.0) * (room_px - clear).clamp_min(0.0)
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    ok = (depth >= clear[:, None, None]) & (_enclosed(outline < 0.5) == inside[:, None, None])
    jitter = rng.uniform("dot.pick", size * size).view(n, size, size) * 0.5
    miss = torch.where(ok, (depth - target[:, None, None]).abs() + jitter, torch.full_like(depth, float("inf"))).view(
        n, -1
    )
    best = miss.argmin(dim=1)
    found = torch.isfinite(miss[torch.arange(n), best])
    if not bool(found.all()):
        raise RuntimeError(
            f"inside/outside: no room for a dot in {int((~found).sum())} "
            f"images at size {size}; use a larger size or scale"
        )
    dot = torch.stack([grid[best % size], grid[best // size]], -1)
    dot_poly = transform(_regular(torch.full((n,), 16), 16), torch.zeros(n), rd, dot)
    cov = torch.maximum(outline, fill_coverage(polygon_sdf_image(dot_poly, size)))
    polys[1] = torch.where(two[:, None, None], polys[1], torch.full_like(polys[1], float("nan")))  # not drawn
    return _Batch(
        cov[:, None],
        dict(
            vertices=polys,
            dot=dot,
            dot_radius=rd,
            centre=torch.stack(centres, 1),
            scale=torch.stack(radii, 1),
            angle=torch.stack(angles, 1),
            stroke=stroke,
            gap=[cut[i] if opened[0][i] or opened[1][i] else None for i in range(n)],
            filled=torch.zeros(n, dtype=torch.bool),
        ),
    )


_WALK_GRID = 3  # cells per side of the grid the rails' route is walked on
_WALK_MIN = 6  # cells a route covers at least


def _grid_walk(u: np.ndarray) -> list[tuple[int, int]]:
    """A self-avoiding walk of at least ``_WALK_MIN`` cells on the ``_WALK_GRID``² grid, every
    choice read from the uniforms ``u`` in turn: a random start, then a random free neighbour until
    none is left; a walk that ends short starts over (a snake through every cell if ``u`` runs out)."""
    g, k = _WALK_GRID, 0
    while k + 2 * g * g < len(u):
        cell = (int(u[k] * g), int(u[k + 1] * g))
        k += 2
        path = [cell]
        while True:
            free = [(cell[0] + dr, cell[1] + dc) for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))]
            free = [c for c in free if 0 <= c[0] < g and 0 <= c[1] < g and c not in path]
            if not free:
                break
            cell = free[min(int(u[k] * len(free)), len(free) - 1)]
            k += 1
            path.append(cell)
        if len(path) >= _WALK_MIN:
            return path
    return [(r, c if r % 2 == 0 else g - 1 - c) for r in range(g) for c in range(g)]


def _resample(line: np.ndarray, v: int) -> np.ndarray:
    """``v`` points evenly spaced by arc length along a polyline (L, 2)."""
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, arc[-1], v)
    return np.stack([np.interp(t, arc, line[:, 0]), np.interp(t, arc, line[:, 1])], 1)


def _rails(path: list[tuple[int, int]], cell: float, gap: float, v: int) -> np.ndarray:
    """(2, v, 2): the two rails of a route, offset ±gap/2 from its centre line (cell centres, the
    grid centred on 0), mitred at the turns so that they stay ``gap`` apart."""
    g = _WALK_GRID
    centre = np.array([[(c - (g - 1) / 2) * cell, (r - (g - 1) / 2) * cell] for r, c in path])
    d = np.diff(centre, axis=0)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    normal = np.stack([-d[:, 1], d[:, 0]], 1)  # (L−1, 2), one per segment
    n1 = np.concatenate([normal[:1], normal])  # at each vertex: the normals of its two segments
    n2 = np.concatenate([normal, normal[-1:]])
    mitre = (n1 + n2) / (1 + (n1 * n2).sum(1, keepdims=True))
    return np.stack([_resample(centre + side * gap / 2 * mitre, v) for side in (-1, 1)])


def _gen_curve(rng, labels, size, variant, scale):
    """Two interleaved rails and two dots on them, on the same rail or one on each. The rails run
    side by side along a random route — a self-avoiding walk through the cells of a 3 × 3 grid,
    turning at right angles — so whether the dots share a rail shows only by following the rails
    from one dot to the other; nearby, both look alike (two parallel strokes, and a rail has no
    direction to say which side its partner is on). Which rail a dot sits on does not follow from
    where it is (the route, not the position, decides it), and the dots' distance is drawn from the
    range points of both rails cover, so the spacing carries no label either.
        ``scale``: half the figure's extent (fraction of the size; the figure scaled as a whole:
        strokes, dots and gaps too);
        ``irregular``: each rail wobbles along its length (waves of 6–10 px, ±1 px at 64 px)."""
    n = len(labels)
    default = (0.34, 0.42)
    lo, hi = _scale_range(scale, default)
    px = _px(size) * (lo + hi) / sum(default)
    stroke = (rng.uniform("stroke", None, 1.5, 2.2) * px).clamp_min(1.0)
    rd = (rng.uniform("dot.r", None, 2.0, 2.6) * px).clamp_min(1.5)  # wider than the stroke: a visible dot
    wob = 1.0 * px
    # rails' centre lines at least `half` apart, within a pair and across neighbouring cells: a dot on
    # one rail stays clear of every other rail, wobbles included, by 2.2 px at least (anti-aliased
    # edges and a diagonal pixel would join them under 8-connectivity in small, wobbly figures)
    half = rd + stroke / 2 + torch.clamp(2.0 * px * torch.ones_like(rd), min=2.2) + 2 * wob
    R = rng.uniform("radius", None, lo, hi) * size  # half the figure's extent
    gap = half * rng.uniform("gap", None, 1.0, 1.3)
    cell = torch.maximum(R - gap / 2, gap + half)  # neighbouring cells' rails `cell − gap` apart
    margin = cell + gap / 2 + rd + wob + 1.0
    centre = torch.stack([margin + rng.uniform(k, None) * (size - 2 * margin).clamp_min(0) for k in ("cx", "cy")], -1)
    V = 192
    walk = rng.uniform("walk", 96).numpy()
    pts = torch.from_numpy(
        np.stack([_rails(_grid_walk(walk[i]), float(cell[i]), float(gap[i]), V) for i in range(n)])
    ).float()  # (n, 2, V, 2) about the figure's centre
    if variant == "irregular":  # each rail wobbles across its length: a wave of random wavelength and phase
        for a in range(2):
            line = pts[:, a]
            tangent = torch.gradient(line, dim=1)[0]
            tangent = tangent / tangent.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            normal = torch.stack([-tangent[..., 1], tangent[..., 0]], -1)
            arc = torch.cat([torch.zeros(n, 1), line.diff(dim=1).norm(dim=-1).cumsum(1)], 1)
            lam = rng.uniform(f"wave{a}", None, 6.0, 10.0) * px
            phase = rng.uniform(f"wave{a}.ph", None, 0, 2 * math.pi)
            wave = wob * torch.sin(2 * math.pi * arc / lam[:, None] + phase[:, None])
            pts[:, a] = line + wave[..., None] * normal
    pts = pts + centre[:, None, None]
    arms = [pts[:, 0], pts[:, 1]]
    # the dots: the first on rail `first` away from the ends, the second on rail `second` where its
    # distance from the first is nearest a target drawn from the range both rails cover
    first = rng.integers("first", 2)
    second = torch.where(labels == 0, first, 1 - first)
    rows = torch.arange(n)
    end = V // 16  # keep the dots off the rails' last few pixels
    idx = torch.arange(V)
    valid = ((idx >= end) & (idx <= V - 1 - end))[None].expand(n, V)
    K = 8
    i1 = end + (rng.uniform("d1", K) * (V - 1 - 2 * end)).long()  # (n, K)
    d1 = pts[rows[:, None], first[:, None], i1]  # (n, K, 2)
    dist = (pts[:, None] - d1[:, :, None, None]).norm(dim=-1)  # (n, K, 2, V)
    inf = torch.tensor(float("inf"))
    near = torch.where(valid[:, None, None], dist, inf).amin(dim=3).amax(dim=2)
    reach = torch.where(valid[:, None, None], dist, -inf).amax(dim=3).amin(dim=2)
    lo_d = torch.maximum(near, torch.maximum(R / 3, 1.5 * half)[:, None])  # not neighbours across one gap
    k = (reach > lo_d).float().argmax(dim=1)  # the first with a range (0 if none: rare)
    i1, d1, dist, lo_d, reach = i1[rows, k], d1[rows, k], dist[rows, k, second], lo_d[rows, k], reach[rows, k]
    target = lo_d + rng.uniform("dist", None) * (reach - lo_d).clamp_min(0)
    cost = (dist - target[:, None]).abs() + rng.uniform("d2.pick", V).view(n, V) * 0.5 * px
    cost = torch.where(valid, cost, inf)
    i2 = cost.argmin(dim=1)
    d2 = pts[rows, second][rows, i2]
    cov = torch.maximum(
        stroke_coverage(polygon_sdf_image(arms[0], size, closed=False), stroke),
        stroke_coverage(polygon_sdf_image(arms[1], size, closed=False), stroke),
    )
    dots = torch.stack([d1, d2], 1)
    for j in range(2):
        disc = transform(_regular(torch.full((n,), 16), 16), torch.zeros(n), rd, dots[:, j])
        cov = torch.maximum(cov, fill_coverage(polygon_sdf_image(disc, size)))
    return _Batch(
        cov[:, None],
        dict(
            vertices=arms,
            dots=dots,
            dot_curves=torch.stack([first, second], 1),
            centre=centre,
            stroke=stroke,
            scale=R / size,
            filled=torch.zeros(n, dtype=torch.bool),
        ),
    )


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV → RGB, all in [0, 1]; returns (n, 3)."""
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], -1)
    return v[:, None] - (v * s)[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def _shapes10_local(cls, rng):
    n = len(cls)
    sides = torch.tensor([4, 4, 32, 32, 3, 5, 6, 4, 4, 10])[cls]
    base = _regular(sides)  # squares / circles / triangles / pentagons / hexagons
    box = (cls == 0) | (cls == 1)
    base[box] = base[box] @ _rot45()  # axis-aligned, so that stretching gives a rectangle
    # rectangle and ellipse: stretched squares and circles, near-confusable with their partners
    stretch = torch.ones(n, 2)
    ar = rng.uniform("aspect", None, 1.3, 1.8)
    long = (cls == 1) | (cls == 3)
    stretch[long, 1] = 1 / ar[long]
    out = base * stretch[:, None, :]
    # trapezoid and parallelogram reuse the quad generator
    q = (cls == 7) | (cls == 8)
    if q.any():
        quad = _quad(torch.where(cls[q] == 7, 2, 3), rng, rows=q.nonzero()[:, 0])
        out[q] = torch.cat([quad, quad[:, -1:].expand(-1, out.shape[1] - 4, 2)], 1)
    star = cls == 9
    if star.any():
        ratio = rng.uniform("star.ratio", None, 0.38, 0.55)[star]  # inner/outer radius
        r = torch.ones(int(star.sum()), 10)
        r[:, 1::2] = ratio[:, None]
        s = radial_polygon(r, phase=-math.pi / 2)
        out[star] = torch.cat([s, s[:, -1:].expand(-1, out.shape[1] - 10, 2)], 1)
    return out / out.norm(dim=-1).max(dim=1, keepdim=True).values[..., None]


def _rot45():
    c = math.sqrt(0.5)
    return torch.tensor([[c, -c], [c, c]])


def _gen_shapes10(rng, labels, size, variant, scale):
    n = len(labels)
    local = _shapes10_local(labels, rng)
    if variant == "irregular":
        local = _wobble(local, rng, sub=3, amp=0.05)
    lo, hi = _scale_range(scale, (0.25, 0.42))
    R = rng.uniform("R", None, lo, hi) * size
    # mostly upright, like photographed objects: with free rotation a small CNN needs ~4x the
    # training to leave chance level, unlike CIFAR-10, which this data set stands in for
    angle = rng.uniform("angle", None, -1.0, 1.0) * math.radians(SHAPES10_MAX_TILT)
    centre = _place(rng, "centre", R, size, 0.5)
    verts = transform(local, angle, R, centre)
    filled = rng.bernoulli("filled", 0.75)
    stroke = (rng.uniform("stroke", None, 1.5, 2.5) * size / 32).clamp_min(1.2)
    sdf = polygon_sdf_image(verts, size)
    cov = torch.where(filled[:, None, None], fill_coverage(sdf), stroke_coverage(sdf, stroke))

    # background: a colour with a gradient, clutter strokes, noise
    bg_v = rng.uniform("bg.v", None, 0.25, 0.9)
    bg = _hsv_to_rgb(rng.uniform("bg.h", None), rng.uniform("bg.s", None, 0.1, 0.6), bg_v)
    xy = pixel_centres(size) / size - 0.5
    g = rng.uniform("bg.grad", 2, -0.3, 0.3)
    grad = (g @ xy.T).view(n, 1, size, size)
    img = (bg[:, :, None, None] + grad).clamp(0, 1).expand(n, 3, size, size).clone()
    n_seg = 5
    seg = rng.uniform("clutter.xy", 4 * n_seg).view(n * n_seg, 2, 2) * size
    seg_d = signed_distance(seg, pixel_centres(size), closed=False).view(n, n_seg, size, size)
    seg_on = rng.bernoulli("clutter.on", 0.6, n_seg)[:, :, None, None].float()
    seg_cov = (0.5 - (seg_d - 0.45)).clamp(0, 1) * seg_on
    seg_col = _hsv_to_rgb(*(rng.uniform(f"clutter.{c}", n_seg).view(-1) for c in "hsv")).view(n, n_seg, 3)
    for j in range(n_seg):
        a = seg_cov[:, j : j + 1] * 0.7
        img = img * (1 - a) + seg_col[:, j, :, None, None] * a

    # foreground: a colour far from the background's brightness, optionally striped
    fg_v = torch.where(
        bg_v > 0.55, bg_v - rng.uniform("fg.dv", None, 0.35, 0.55), bg_v + rng.uniform("fg.dv", None, 0.35, 0.55)
    ).clamp(0.05, 1.0)
    fg = _hsv_to_rgb(rng.uniform("fg.h", None), rng.uniform("fg.s", None, 0.3, 1.0), fg_v)
    phi = rng.uniform("tex.phi", None, 0, 2 * math.pi)
    freq = rng.uniform("tex.f", None, 0.15, 0.35) * size
    proj = xy[:, 0][None] * torch.cos(phi)[:, None] + xy[:, 1][None] * torch.sin(phi)[:, None]
    stripes = 0.8 + 0.2 * torch.sin(2 * math.pi * freq[:, None] * proj)
    tex = torch.where(rng.bernoulli("tex.on", 0.5)[:, None], stripes, torch.ones_like(stripes)).view(n, 1, size, size)
    a = cov[:, None]
    img = img * (1 - a) + (fg[:, :, None, None] * tex).clamp(0, 1) * a
    img = (img + 0.03 * rng.normal("noise", 3 * size * size).view(n, 3, size, size)).clamp(0, 1)
    return _Batch(img, dict(vertices=[verts], centre=centre, scale=R, angle=angle, filled=filled, stroke=stroke))


_GENERATORS = {
    "quad": _gen_quad,
    "hole": _gen_hole,
    "connectivity": _gen_connectivity,
    "inside": _gen_inside,
    "curve": _gen_curve,
    "shapes10": _gen_shapes10,
}


# ----------------------------------------------------------------------------- public API
def _check(task: str, n: int, size: int, variant: str) -> None:
    choice("task", task, tuple(TASKS))
    choice("variant", variant, VARIANTS)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a whole number >= 1, got {n!r}")
    least = TASK_MIN_SIZE.get(task, MIN_SIZE)
    if not isinstance(size, (int, np.integer)) or size < least:
        why = f" for task {task!r} (a hole or dot needs room to stay clear of the outline)" if least > MIN_SIZE else ""
        raise ValueError(f"size must be a whole number >= {least} pixels{why}, got {size!r}")


def _meta_rows(meta: dict, labels: torch.Tensor, classes: tuple[str, ...]) -> list[dict]:
    cols = {}
    for k, v in meta.items():
        if k == "vertices":
            cols[k] = [p.numpy() for p in v]
        elif torch.is_tensor(v):
            cols[k] = v.numpy()
        else:
            cols[k] = v
    rows = []
    for i in range(len(labels)):
        row = {"label": int(labels[i]), "class": classes[int(labels[i])]}
        for k, v in cols.items():
            if k == "vertices":
                row[k] = [p[i] for p in v]
            elif k == "angle":
                row["angle"] = np.degrees(v[i])
            elif isinstance(v, list):
                row[k] = None if v[i] is None else v[i].numpy()
            else:
                x = v[i]
                row[k] = x.item() if np.ndim(x) == 0 else x
        rows.append(row)
    return rows


def make_shapes(
    task: str,
    n: int,
    *,
    size: int | None = None,
    seed: int = 0,
    variant: str = "regular",
    start: int = 0,
    scale: tuple[float, float] | None = None,
    return_meta: bool = True,
    indices=None,
) -> tuple[torch.Tensor, torch.Tensor, list[dict] | None]:
    """Generate ``n`` images of a shape task.

    Returns ``images`` (n, C, size, size) float32 in [0, 1] (C = 3 for ``shapes10``, else 1),
    ``labels`` (n,) int64, and ``meta``: one dict per image with its class, the vertices of every
    polygon drawn (pixel coordinates, x then y), the centre, scale (circumradius in pixels), angle
    (degrees) and the task's own parameters (dot, cut, bar, ...).

    ``size`` defaults to 32 for ``shapes10`` and 64 otherwise. Image ``i`` is a function of
    (task, variant, seed, start + i) alone; ``indices`` (overriding ``start`` and ``n``) draws
    exactly those images — image ``k`` has class ``k % len(TASKS[task])``. ``scale`` overrides the
    circumradius range as fractions of the image size (used for size-transfer test sets).
    """
    size = DEFAULT_SIZE.get(task, 64) if size is None else size
    if indices is not None:
        all_idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(all_idx)
    else:
        all_idx = None
    _check(task, n, size, variant)
    if all_idx is None:
        all_idx = np.arange(start, start + n, dtype=np.int64)
    elif (all_idx < 0).any():
        raise ValueError("image indices must be >= 0")
    classes = TASKS[task]
    images, labels, meta = [], [], []
    for s in range(0, n, _BATCH):
        idx = all_idx[s : s + _BATCH]
        lab = torch.from_numpy(idx % len(classes))
        rng = CounterRNG(seed, idx, namespace=f"{task}/{variant}")
        batch = _GENERATORS[task](rng, lab, size, variant, scale)
        images.append(batch.images.float())
        labels.append(lab)
        if return_meta:
            meta.extend(_meta_rows(batch.meta, lab, classes))
    return torch.cat(images), torch.cat(labels), (meta if return_meta else None)


class ShapesDataset(Dataset):
    """A procedural shape task as a torch Dataset of ``(image, label)``.

    Images are generated once (stored as uint8) and returned as float32 in [0, 1].
    ``split`` ("train", "val", "test") selects a disjoint index range, so splits never share an
    image. ``channels=3`` repeats grey images for RGB networks.
    """

    CHUNK = 4096  # images generated at a time

    def __init__(
        self,
        task: str = "shapes10",
        n: int = 1000,
        *,
        size: int | None = None,
        seed: int = 0,
        variant: str = "regular",
        split: str = "train",
        channels: int | None = None,
        scale: tuple[float, float] | None = None,
        transform=None,
    ):
        choice("split", split, tuple(SPLIT_OFFSET))
        if channels is not None and channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a whole number >= 1, got {n!r}")
        images, labels = [], []
        # in chunks: an image depends on its index only, and the float32 rasters of a whole large
        # set at once (plus the generator's temporaries) would peak at ~25× the uint8 result
        for s0 in range(0, n, self.CHUNK):
            x, y, _ = make_shapes(
                task,
                min(self.CHUNK, n - s0),
                size=size,
                seed=seed,
                variant=variant,
                start=SPLIT_OFFSET[split] + s0,
                scale=scale,
                return_meta=False,
            )
            if channels == 3 and x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            elif channels == 1 and x.shape[1] == 3:
                x = x.mean(dim=1, keepdim=True)
            images.append((x * 255).round().to(torch.uint8))
            labels.append(y)
        self.images = torch.cat(images).contiguous()
        self.labels = torch.cat(labels)
        self.task, self.variant, self.split, self.seed = task, variant, split, seed
        self.classes = list(TASKS[task])
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i].float() / 255.0
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def batch_source(self) -> BatchSource | None:
        """Batched reading, unless a per-item ``transform`` has to see each image."""
        return BatchSource(self.images, self.labels) if self.transform is None else None

    @property
    def deterministic(self) -> bool:
        """Whether item i is always the same tensor (lets a frozen teacher's outputs be cached)."""
        return self.transform is None

    def __repr__(self) -> str:
        c, s = self.images.shape[1], self.images.shape[-1]
        return (
            f"ShapesDataset(task={self.task!r}, variant={self.variant!r}, "
            f"split={self.split!r}, n={len(self)}, image={c}x{s}x{s})"
        )
