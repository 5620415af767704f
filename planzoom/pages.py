"""Page geometry: a page's size in points (1/72 in) to its raster in pixels
at a DPI, under the per-page caps, and what a job's pages will cost.

A page of ``w x h`` points at ``dpi`` is ``ceil(w*s) x ceil(h*s)`` pixels
with ``s = dpi / 72`` (as pypdfium2's ``PdfPage.render`` computes it). When that is
more pixels than the page may have, or a side longer than the longest a page
may have, the page is rendered at the highest DPI that fits both caps (to
1/100 DPI) and its record says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from planzoom.dzi import DziInfo

#: Longest side of a page raster, pixels. It bounds one row of the raster
#: (what a render band and a pyramid block hold at least): 2^16 px of RGB is
#: 192 KiB per row.
MAX_SIDE_PIXELS = 65536


def raster_size(width_pt: float, height_pt: float, dpi: float) -> tuple[int, int]:
    """(width, height) in pixels of a ``width_pt x height_pt`` page at
    ``dpi``, computed as pypdfium2's ``PdfPage.render`` does (``scale = dpi
    / 72`` first), so that a band-wise render and a whole-page one agree to
    the pixel even where the product is a hair above a whole number."""
    scale = dpi / 72
    return math.ceil(width_pt * scale), math.ceil(height_pt * scale)


def effective_dpi(width_pt: float, height_pt: float, dpi: float, max_pixels: int,
                  max_side: int = MAX_SIDE_PIXELS) -> float:
    """``dpi``, lowered if needed so that the raster has at most
    ``max_pixels`` pixels and no side over ``max_side`` pixels; rounded down
    to 1/100 DPI so it prints and round-trips exactly."""

    def fits(d: float) -> bool:
        w, h = raster_size(width_pt, height_pt, d)
        return w * h <= max_pixels and max(w, h) <= max_side

    if fits(dpi):
        return dpi
    by_area = 72 * math.sqrt(max_pixels / (width_pt * height_pt))
    by_side = 72 * max_side / max(width_pt, height_pt)
    d = math.floor(min(dpi, by_area, by_side) * 100) / 100
    while d > 0.01 and not fits(d):
        d = round(d - 0.01, 2)
    return d


@dataclass(frozen=True)
class Work:
    """What rendering and tiling a set of pages costs: raster pixels and
    DZI tiles (every level), in total and for the largest page."""

    pixels: int
    tiles: int
    largest_page_pixels: int


def plan_work(page_sizes: Iterable[tuple[float, float]], dpi: float, max_page_pixels: int,
              tile_size: int, overlap: int, max_side: int = MAX_SIDE_PIXELS) -> Work:
    """The :class:`Work` of pages of these sizes (points) at ``dpi`` under
    the caps, with DZI tiles of ``tile_size`` pixels."""
    return raster_work((raster_size(w_pt, h_pt, effective_dpi(w_pt, h_pt, dpi, max_page_pixels,
                                                               max_side))
                        for w_pt, h_pt in page_sizes), tile_size, overlap)


def raster_work(sizes: Iterable[tuple[int, int]], tile_size: int, overlap: int) -> Work:
    """The :class:`Work` of rasters of these sizes (pixels), with DZI tiles
    of ``tile_size`` pixels."""
    pixels = tiles = largest = 0
    for w, h in sizes:
        pixels += w * h
        largest = max(largest, w * h)
        tiles += DziInfo(width=w, height=h, tile_size=tile_size, overlap=overlap,
                         format="jpg").tile_count()
    return Work(pixels=pixels, tiles=tiles, largest_page_pixels=largest)
