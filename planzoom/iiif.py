"""IIIF Image API 3.0 requests: their syntax and pixel arithmetic, apart
from HTTP (https://iiif.io/api/image/3.0/, sections 4.1-4.5, and its
implementation notes, sections 3-4).

:func:`parse` reads the four path segments of an image request
(``{region}/{size}/{rotation}/{quality}.{format}``) into an
:class:`ImageRequest` without knowing the image; :func:`resolve` works it
out against an image of ``width x height`` pixels and the server's
:class:`Limits` into a :class:`Plan`: the region in full-resolution pixels
(clipped to the image) and the output size before rotation. Then
:func:`source` picks the DZI pyramid level to cut it from
(:mod:`planzoom.dzi`) and :func:`pieces` the tiles under it.

Rounding: a percentage region's ``x``, ``y``, ``w`` and ``h`` are each
rounded half up to pixels (the spec's ``pct:41.6,7.5,40,70`` on its
300 x 200 example image is ``125,15,120,140``); sizes that keep the
region's aspect ratio round the other side half up. Every error is an
:class:`~planzoom.errors.InvalidInput` (HTTP 400) whose reason says which
rule was broken (docs/reasons.md, ``IIIF_*``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from planzoom.dzi import DziInfo
from planzoom.errors import InvalidInput

QUALITIES = ("default", "color", "gray", "bitonal")
FORMATS = ("jpg", "png", "webp")

_INT = r"(0|[1-9][0-9]{0,8})"
_FLOAT = r"([0-9]{1,9}(?:\.[0-9]{1,9})?)"
_REGION_PX = re.compile(rf"{_INT},{_INT},{_INT},{_INT}")
_REGION_PCT = re.compile(rf"pct:{_FLOAT},{_FLOAT},{_FLOAT},{_FLOAT}")
_SIZE = re.compile(rf"(?P<up>\^)?(?:(?P<max>max)|pct:(?P<pct>{_FLOAT[1:-1]})|"
                   rf"(?P<bang>!)?(?P<w>{_INT[1:-1]})?,(?P<h>{_INT[1:-1]})?)")
_ROTATION = re.compile(rf"(!)?{_FLOAT}")


class IiifBadRequest(InvalidInput):
    """A parameter that is not Image API 3.0 syntax, or a value this
    service does not support (an arbitrary rotation, a format but jpg, png
    and webp)."""

    reason = "IIIF_BAD_REQUEST"


class IiifEmpty(InvalidInput):
    """A region or size of zero pixels, or a region wholly outside the image."""

    reason = "IIIF_EMPTY"


class IiifUpscale(InvalidInput):
    """A size larger than its region without the ``^`` that allows it."""

    reason = "IIIF_UPSCALE"


class IiifTooLarge(InvalidInput):
    """A size over ``maxWidth``, ``maxHeight`` or ``maxArea``."""

    reason = "IIIF_TOO_LARGE"


@dataclass(frozen=True)
class Limits:
    """The largest image this service makes (info.json's ``maxWidth``,
    ``maxHeight``, ``maxArea``), pixels."""

    max_width: int
    max_height: int
    max_area: int


@dataclass(frozen=True)
class ImageRequest:
    """An image request as written, before it meets an image.

    ``region``: ``("full",)``, ``("square",)``, ``("px", x, y, w, h)`` or
    ``("pct", x, y, w, h)`` (percent); ``size``: ``(kind, w, h, pct)`` with
    kind ``max``, ``w`` (``w,``), ``h`` (``,h``), ``wh``, ``confined``
    (``!w,h``) or ``pct``, and ``upscale`` for the ``^`` forms; rotation in
    degrees clockwise (0, 90, 180 or 270) after a mirror when ``mirror``."""

    region: tuple
    size: tuple
    upscale: bool
    mirror: bool
    rotation: int
    quality: str
    format: str


@dataclass(frozen=True)
class Plan:
    """An image request worked out for one image: the region ``x, y, w,
    h`` in full-resolution pixels (inside the image), the output
    ``width x height`` before rotation, and the rest as requested."""

    x: int
    y: int
    w: int
    h: int
    width: int
    height: int
    request: ImageRequest
    full: bool  # the region is the whole image

    @property
    def out_size(self) -> tuple[int, int]:
        """(width, height) of the image returned: after rotation."""
        if self.request.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height


def _half_up(value: float) -> int:
    return math.floor(value + 0.5)


def parse(region: str, size: str, rotation: str, quality_format: str) -> ImageRequest:
    """The four segments of ``…/{region}/{size}/{rotation}/{quality}.{format}``
    as an :class:`ImageRequest`. Raises IiifBadRequest (400) naming the
    segment and what it may be."""
    if region in ("full", "square"):
        parsed_region: tuple = (region,)
    elif m := _REGION_PX.fullmatch(region):
        parsed_region = ("px", *map(int, m.groups()))
    elif m := _REGION_PCT.fullmatch(region):
        parsed_region = ("pct", *map(float, m.groups()))
    else:
        raise IiifBadRequest(f"region {region!r} is not full, square, x,y,w,h or pct:x,y,w,h "
                             "(Image API 3.0, 4.1)", field="region")
    m = _SIZE.fullmatch(size)
    if not m or (m["w"] is None and m["h"] is None and not m["max"] and m["pct"] is None) \
            or (m["bang"] and (m["w"] is None or m["h"] is None)):
        raise IiifBadRequest(f"size {size!r} is not max, w,, ,h, pct:n, w,h or !w,h, each "
                             "with an optional ^ before it (Image API 3.0, 4.2)", field="size")
    upscale = bool(m["up"])
    if m["max"]:
        parsed_size: tuple = ("max", 0, 0, 0.0)
    elif m["pct"] is not None:
        parsed_size = ("pct", 0, 0, float(m["pct"]))
    else:
        w, h = int(m["w"] or 0), int(m["h"] or 0)
        if m["w"] is not None and m["h"] is not None:
            kind = "confined" if m["bang"] else "wh"
        else:
            kind = "w" if m["w"] is not None else "h"
        parsed_size = (kind, w, h, 0.0)
    m = _ROTATION.fullmatch(rotation)
    if not m or float(m[2]) > 360:
        raise IiifBadRequest(f"rotation {rotation!r} is not a number of degrees from 0 to 360, "
                             "with an optional ! before it (Image API 3.0, 4.3)",
                             field="rotation")
    degrees, mirror = float(m[2]), bool(m[1])
    if degrees % 90:
        raise IiifBadRequest(f"rotation {rotation!r}: only multiples of 90 degrees are "
                             "supported (info.json's extraFeatures: rotationBy90s)",
                             field="rotation")
    quality, dot, fmt = quality_format.rpartition(".")
    if not dot or quality not in QUALITIES:
        raise IiifBadRequest(f"{quality_format!r}: the quality is one of {', '.join(QUALITIES)} "
                             "followed by .format (Image API 3.0, 4.4)", field="quality")
    if fmt not in FORMATS:
        raise IiifBadRequest(f"format {fmt!r} is not supported; ask for one of "
                             f"{', '.join(FORMATS)} (Image API 3.0, 4.5)", field="format")
    return ImageRequest(parsed_region, parsed_size, upscale, mirror, int(degrees) % 360,
                        quality, fmt)


def _region(request: ImageRequest, width: int, height: int) -> tuple[int, int, int, int]:
    kind, *values = request.region
    if kind == "full":
        return 0, 0, width, height
    if kind == "square":
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    if kind == "pct":
        px, py, pw, ph = values
        x, y = _half_up(px * width / 100), _half_up(py * height / 100)
        w, h = _half_up(pw * width / 100), _half_up(ph * height / 100)
    else:
        x, y, w, h = values
    if w == 0 or h == 0:
        raise IiifEmpty("the region has no pixels (its width or height is 0)", field="region")
    if x >= width or y >= height:
        raise IiifEmpty(f"the region starts at {x},{y}, outside the image ({width} x {height} "
                        "pixels, info.json)", field="region")
    return x, y, min(w, width - x), min(h, height - y)


def _scaled(w: int, h: int, scale: float) -> tuple[int, int]:
    """(w, h) times ``scale``, rounded down (a hair of float error
    forgiven) and at least 1."""
    return max(1, math.floor(w * scale + 1e-9)), max(1, math.floor(h * scale + 1e-9))


def fit(w: int, h: int, limits: Limits, upscale: bool = False) -> tuple[int, int]:
    """The largest size of a ``w x h`` region's aspect ratio within
    ``limits`` (never larger than the region unless ``upscale``): what
    ``max`` (``^max``) is (implementation notes, section 4)."""
    scale = min(limits.max_width / w, limits.max_height / h,
                math.sqrt(limits.max_area / (w * h)))
    if not upscale:
        scale = min(scale, 1.0)
    if scale == 1.0:
        return w, h
    out_w, out_h = _scaled(w, h, scale)
    while out_w * out_h > limits.max_area and max(out_w, out_h) > 1:
        out_w, out_h = _scaled(w, h, scale := scale * 0.999)
    return min(out_w, limits.max_width), min(out_h, limits.max_height)


def _size(request: ImageRequest, rw: int, rh: int, limits: Limits) -> tuple[int, int]:
    kind, w, h, pct = request.size
    if kind == "max":
        return fit(rw, rh, limits, request.upscale)
    if kind == "w":
        out = w, _half_up(rh * w / rw)
    elif kind == "h":
        out = _half_up(rw * h / rh), h
    elif kind == "pct":
        out = _half_up(rw * pct / 100), _half_up(rh * pct / 100)
    elif kind == "wh":
        out = w, h
    else:  # confined (!w,h): as large as fits in w x h, the region (unless ^), the limits
        if w == 0 or h == 0:
            raise IiifEmpty("a size of 0 pixels", field="size")
        if not request.upscale and w > rw and h > rh:
            # The spec's words allow the region's own size here; its validator
            # (size_noup, level 1) wants 400 unless ^ asks for the upscale.
            raise IiifUpscale(f"the box !{w},{h} is larger than the region ({rw} x {rh} "
                              f"pixels) both ways; ask ^!{w},{h} to have it upscaled, or max",
                              field="size")
        if w / rw <= h / rh:
            out = w, min(h, max(1, _half_up(rh * w / rw)))
        else:
            out = min(w, max(1, _half_up(rw * h / rh))), h
        return fit(*out, limits)
    if out[0] < 1 or out[1] < 1:
        raise IiifEmpty(f"the size is {out[0]} x {out[1]} pixels; it must be at least 1 x 1",
                        field="size")
    return out


def resolve(request: ImageRequest, width: int, height: int, limits: Limits) -> Plan:
    """``request`` worked out for an image of ``width x height`` pixels.
    Raises IiifEmpty (a region of no pixels or outside the image, a size
    of 0), IiifUpscale (larger than the region without ``^``) or
    IiifTooLarge (over ``limits``), all 400."""
    x, y, w, h = _region(request, width, height)
    out_w, out_h = _size(request, w, h, limits)
    if not request.upscale and (out_w > w or out_h > h):
        raise IiifUpscale(f"the size {out_w} x {out_h} is larger than the region ({w} x {h} "
                          "pixels); ask for it with ^ before the size to have it upscaled",
                          field="size")
    for value, most, name in ((out_w, limits.max_width, "maxWidth"),
                              (out_h, limits.max_height, "maxHeight"),
                              (out_w * out_h, limits.max_area, "maxArea")):
        if value > most:
            raise IiifTooLarge(f"the size {out_w} x {out_h} is over {name} {most:,} "
                               "(info.json); ask for a smaller size, or max", field="size")
    return Plan(x, y, w, h, out_w, out_h, request, (x, y, w, h) == (0, 0, width, height))


def canonical(plan: Plan, limits: Limits) -> str:
    """The request's canonical form (Image API 3.0, 4.8):
    ``{region}/{size}/{rotation}/{quality}.{format}``."""
    req, out = plan.request, (plan.width, plan.height)
    region = "full" if plan.full else f"{plan.x},{plan.y},{plan.w},{plan.h}"
    larger = plan.width > plan.w or plan.height > plan.h
    if out == fit(plan.w, plan.h, limits):
        size = "max"
    elif larger and out == fit(plan.w, plan.h, limits, upscale=True):
        size = "^max"
    else:
        size = ("^" if larger else "") + f"{plan.width},{plan.height}"
    rotation = ("!" if req.mirror else "") + str(req.rotation)
    return f"{region}/{size}/{rotation}/{req.quality}.{req.format}"


@dataclass(frozen=True)
class Source:
    """Where a plan's pixels come from: pyramid ``level`` (each of its
    pixels ``scale`` full-resolution pixels wide) and the box ``x, y, w,
    h`` of it, in that level's pixels, to resize to the output."""

    level: int
    scale: int
    x: int
    y: int
    w: int
    h: int


def _box(dzi: DziInfo, plan: Plan, k: int) -> Source:
    level = dzi.levels - 1 - k
    s, (lw, lh) = 2**k, dzi.level_size(level)
    x0 = min(lw - 1, _half_up(plan.x / s))
    y0 = min(lh - 1, _half_up(plan.y / s))
    x1 = lw if plan.x + plan.w >= dzi.width else min(lw, _half_up((plan.x + plan.w) / s))
    y1 = lh if plan.y + plan.h >= dzi.height else min(lh, _half_up((plan.y + plan.h) / s))
    return Source(level, s, x0, y0, max(1, x1 - x0), max(1, y1 - y0))


def source(dzi: DziInfo, plan: Plan, budget: int) -> Source:
    """The smallest level whose pixels under the region are at least the
    output's in both directions, unless that box is over ``budget``
    pixels (a size of an aspect ratio far from the region's), then the
    first smaller level whose box is not."""
    k = 0
    while k < dzi.levels - 1:
        box = _box(dzi, plan, k + 1)
        if box.w < plan.width or box.h < plan.height:
            break
        k += 1
    box = _box(dzi, plan, k)
    while box.w * box.h > budget and k < dzi.levels - 1:
        k += 1
        box = _box(dzi, plan, k)
    return box


def pieces(dzi: DziInfo, src: Source) -> list[tuple[int, int, tuple[int, int, int, int],
                                                    tuple[int, int]]]:
    """The tiles under ``src``: ``(col, row, (sx, sy, w, h), (dx, dy))``:
    the part of tile (col, row) at ``src.level`` to take, in the tile's own
    pixels (its overlap cropped: each level pixel comes from the one tile
    whose core holds it), and where it goes in the box."""
    ts, (lw, lh) = dzi.tile_size, dzi.level_size(src.level)
    out = []
    for row in range(src.y // ts, (src.y + src.h - 1) // ts + 1):
        for col in range(src.x // ts, (src.x + src.w - 1) // ts + 1):
            tx, ty, _, _ = dzi.tile_box(src.level, col, row)
            x0, y0 = max(src.x, col * ts), max(src.y, row * ts)
            x1 = min(src.x + src.w, (col + 1) * ts, lw)
            y1 = min(src.y + src.h, (row + 1) * ts, lh)
            out.append((col, row, (x0 - tx, y0 - ty, x1 - x0, y1 - y0), (x0 - src.x, y0 - src.y)))
    return out


def stored_tile(dzi: DziInfo, plan: Plan, src: Source) -> tuple[int, int] | None:
    """(col, row) of the stored tile that is exactly the answer to
    ``plan`` (the region maps onto the tile's pixels, overlap included, at
    its own size), or None."""
    if (plan.width, plan.height) != (src.w, src.h):
        return None
    s = src.scale
    if (plan.x, plan.y) != (src.x * s, src.y * s) or \
            plan.x + plan.w != min(dzi.width, (src.x + src.w) * s) or \
            plan.y + plan.h != min(dzi.height, (src.y + src.h) * s):
        return None
    col = (src.x + (dzi.overlap if src.x else 0)) // dzi.tile_size
    row = (src.y + (dzi.overlap if src.y else 0)) // dzi.tile_size
    if dzi.tile_box(src.level, col, row) != (src.x, src.y, src.w, src.h):
        return None
    return col, row
