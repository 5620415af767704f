"""Page geometry: a page's size in points (1/72 in) to its raster in pixels
at a DPI, under the per-page caps, and what a job's pages will cost.

Ingest works out each page's :class:`~planzoom.v1.events_pb2.PageGeometry`
once (:func:`page_geometry`, :func:`image_geometry`); the job record keeps it
and every page job carries it, so no later stage computes it again.

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
from planzoom.v1 import events_pb2, jobs_pb2

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


def page_geometry(page: int, width_pt: float, height_pt: float, options: jobs_pb2.JobOptions,
                  max_side: int = MAX_SIDE_PIXELS) -> events_pb2.PageGeometry:
    """The geometry of PDF page ``page`` (1-based) of ``width_pt x
    height_pt`` points rendered at the job's ``options.dpi``, lowered to fit
    ``options.max_page_pixels`` and ``max_side`` (:func:`effective_dpi`)."""
    dpi = effective_dpi(width_pt, height_pt, options.dpi, options.max_page_pixels, max_side)
    width_px, height_px = raster_size(width_pt, height_pt, dpi)
    return events_pb2.PageGeometry(page=page, width_pt=width_pt, height_pt=height_pt, dpi=dpi,
                                   width_px=width_px, height_px=height_px)


def image_geometry(page: int, width_px: int, height_px: int, dpi: float,
                   source_index: int = 0) -> events_pb2.PageGeometry:
    """The geometry of an image page (or a video's frame): at its own pixel
    size; its paper size follows from its resolution (``dpi``)."""
    return events_pb2.PageGeometry(page=page, width_pt=width_px * 72 / dpi,
                                   height_pt=height_px * 72 / dpi, dpi=dpi, width_px=width_px,
                                   height_px=height_px, source_index=source_index)


def geometry_of(record: jobs_pb2.PageRecord) -> events_pb2.PageGeometry:
    """The geometry a job record keeps for one of its pages."""
    return events_pb2.PageGeometry(page=record.page, width_pt=record.width_pt,
                                   height_pt=record.height_pt, dpi=record.dpi,
                                   width_px=record.width_px, height_px=record.height_px,
                                   source_index=record.source_index)


def set_geometry(record: jobs_pb2.PageRecord, geometry: events_pb2.PageGeometry) -> None:
    """Keep ``geometry`` in a page's record (the inverse of :func:`geometry_of`)."""
    record.width_pt, record.height_pt, record.dpi = (geometry.width_pt, geometry.height_pt,
                                                     geometry.dpi)
    record.width_px, record.height_px = geometry.width_px, geometry.height_px
    record.source_index = geometry.source_index


def level_dpi(dpi: float, full_width_px: int, level_width_px: int) -> float:
    """The DPI of a pyramid level ``level_width_px`` wide whose full level,
    ``full_width_px`` wide, is at ``dpi``: how many of its pixels make an
    inch of paper (a PDF page's overview, a bundle cut at a lower level)."""
    return dpi * level_width_px / full_width_px if full_width_px else 0.0


def job_work(geometries: Iterable[events_pb2.PageGeometry], tile_size: int,
             overlap: int) -> Work:
    """The :class:`Work` of pages of these geometries with DZI tiles of
    ``tile_size`` pixels."""
    return raster_work(((g.width_px, g.height_px) for g in geometries), tile_size, overlap)


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
