"""Batched polygon rasterisation by signed distance.

Every shape is a polygon (circles and ellipses are many-sided ones) stored as a padded batch
``verts (B, V, 2)`` in pixel coordinates ``(x, y)``, where pixel ``(row i, col j)`` has its centre at
``(j + 0.5, i + 0.5)``. Polygons with fewer than V vertices repeat their last vertex, which adds
only zero-length edges. Inside/outside uses the even–odd rule, so non-convex outlines work, and
the distance is the exact distance to the nearest edge, so a stroke ``|sdf| <= w/2`` has the same
width everywhere. Work is chunked over the batch so memory stays bounded.
"""

from __future__ import annotations

import math

import torch

_CHUNK_ELEMENTS = 1 << 23  # elements of one (B, P, V) intermediate


def pixel_centres(size: int) -> torch.Tensor:
    """(size*size, 2) pixel centres (x, y), row-major."""
    c = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


def _sdf_chunk(verts: torch.Tensor, points: torch.Tensor, closed: bool) -> torch.Tensor:
    a = verts[:, None, :, :]  # (b,1,V,2)
    e = verts.roll(-1, dims=1) - verts  # edge vectors (b,V,2)
    ex, ey = e[..., 0][:, None], e[..., 1][:, None]
    inv_ee = 1.0 / (e * e).sum(-1).clamp_min(1e-12)[:, None]
    wx = points[..., 0][..., None] - a[..., 0]  # (b,P,V)
    wy = points[..., 1][..., None] - a[..., 1]
    t = ((wx * ex + wy * ey) * inv_ee).clamp_(0.0, 1.0)
    d2 = (wx - t * ex).square_() + (wy - t * ey).square_()
    if not closed:  # an open polyline has no closing edge
        return d2[..., :-1].amin(dim=-1).sqrt_()
    dist = d2.amin(dim=-1).sqrt_()
    # even-odd rule: the edge straddles the point's row and meets it to the right of the point
    slope = ex / torch.where(ey == 0, torch.ones_like(ey), ey)
    crosses = ((wy < 0) != (wy < ey)) & (wx < wy * slope)
    inside = (crosses.sum(dim=-1) % 2) == 1
    return torch.where(inside, -dist, dist)


def _vertex_counts(verts: torch.Tensor) -> torch.Tensor:
    """Number of leading vertices before the padding (repeats of the last vertex)."""
    differs = (verts != verts[:, -1:]).any(dim=-1)  # (B, V)
    V = verts.shape[1]
    last = torch.where(differs, torch.arange(V), torch.full_like(differs, -1, dtype=torch.long)).amax(dim=1)
    return last + 2  # the differing prefix, then the final vertex itself


def signed_distance(verts: torch.Tensor, points: torch.Tensor, closed: bool = True) -> torch.Tensor:
    """Signed distance (negative inside) from ``points (B, P, 2)`` or ``(P, 2)`` to each polygon.

    With ``closed=False`` the vertices are an open polyline and the (unsigned) distance is returned.
    Polygons are processed in groups of similar vertex count with the padding trimmed off.
    """
    B, V = verts.shape[:2]
    shared = points.dim() == 2
    P = points.shape[-2]
    out = torch.empty(B, P)
    counts = _vertex_counts(verts).clamp(max=V) if closed else torch.full((B,), V)
    bucket = torch.clamp(2 ** torch.ceil(torch.log2(counts.float())), max=V).long()
    for width in bucket.unique().tolist():
        rows = (bucket == width).nonzero()[:, 0]
        step = max(1, _CHUNK_ELEMENTS // max(1, P * width))
        for s in range(0, len(rows), step):
            r = rows[s : s + step]
            v = verts[r, :width]
            if width < V:  # close the trimmed polygon on its own last vertex
                v = torch.cat([v, verts[r, -1:]], dim=1)
            p = points.expand(len(r), P, 2) if shared else points[r]
            out[r] = _sdf_chunk(v, p, closed)
    return out


def polygon_sdf_image(verts: torch.Tensor, size: int, closed: bool = True) -> torch.Tensor:
    """(B, size, size) signed distance field of each polygon on the pixel grid."""
    return signed_distance(verts, pixel_centres(size), closed).view(-1, size, size)


def fill_coverage(sdf: torch.Tensor) -> torch.Tensor:
    """Anti-aliased area coverage of the region ``sdf < 0`` (a one-pixel linear ramp)."""
    return (0.5 - sdf).clamp(0.0, 1.0)


def stroke_coverage(sdf: torch.Tensor, width: torch.Tensor | float) -> torch.Tensor:
    """Coverage of a stroke of ``width`` pixels centred on the boundary ``sdf == 0``."""
    if torch.is_tensor(width):
        width = width.view(-1, *([1] * (sdf.dim() - 1)))
    return (0.5 - (sdf.abs() - width / 2)).clamp(0.0, 1.0)


def transform(local: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Rotate (radians), scale and translate a batch of local-frame polygons (B, V, 2)."""
    c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    x, y = local[..., 0], local[..., 1]
    xr, yr = c * x - s * y, s * x + c * y
    out = torch.stack([xr, yr], dim=-1) * scale[:, None, None]
    return out + centre[:, None, :]


def radial_polygon(
    radii: torch.Tensor, phase: torch.Tensor | float = 0.0, n_valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Local-frame polygon with vertex k at angle ``phase + 2πk/n`` and radius ``radii[:, k]``.

    ``n_valid`` (B,) lets each polygon use only its first n vertices (the rest repeat the last).
    """
    B, V = radii.shape
    k = torch.arange(V, dtype=torch.float32)[None, :].expand(B, V)
    n = torch.full((B,), float(V)) if n_valid is None else n_valid.float()
    k = torch.minimum(k, (n - 1)[:, None])
    theta = torch.as_tensor(phase, dtype=torch.float32).reshape(-1, 1) + 2 * math.pi * k / n[:, None]
    r = torch.gather(radii, 1, k.long())
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=-1)
