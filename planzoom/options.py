"""A job's options: defaults filled in from the settings, ranges checked."""

from __future__ import annotations

from planzoom.config import Settings
from planzoom.errors import InvalidInput
from planzoom.v1 import jobs_pb2

DPI_RANGE = (10.0, 1200.0)
TILE_SIZE_RANGE = (64, 4096)
OVERLAP_RANGE = (0, 16)


def resolve_options(opts: jobs_pb2.JobOptions, s: Settings) -> jobs_pb2.JobOptions:
    """The options a job runs with: each unset field from the settings'
    defaults, ``max_page_pixels`` never above the service's cap. Raises
    InvalidInput (a BadRequest on ``options.<field>``) for a value out of
    range: DPI 10..1200, tile size 64..4096 px, overlap 0..16 px, JPEG
    quality 1..100."""
    out = jobs_pb2.JobOptions(
        dpi=opts.dpi or s.default_dpi,
        tile_size=opts.tile_size or s.default_tile_size,
        overlap=opts.overlap if opts.HasField("overlap") else s.default_overlap,
        jpeg_quality=opts.jpeg_quality or s.default_jpeg_quality,
        max_page_pixels=min(opts.max_page_pixels or s.max_page_pixels, s.max_page_pixels),
    )
    if not DPI_RANGE[0] <= out.dpi <= DPI_RANGE[1]:
        raise InvalidInput(f"dpi {opts.dpi:g} is out of range: use {DPI_RANGE[0]:g} to "
                           f"{DPI_RANGE[1]:g}", field="options.dpi")
    if not TILE_SIZE_RANGE[0] <= out.tile_size <= TILE_SIZE_RANGE[1]:
        raise InvalidInput(f"tile_size {out.tile_size} is out of range: use "
                           f"{TILE_SIZE_RANGE[0]} to {TILE_SIZE_RANGE[1]} pixels",
                           field="options.tile_size")
    if not OVERLAP_RANGE[0] <= out.overlap <= OVERLAP_RANGE[1]:
        raise InvalidInput(f"overlap {out.overlap} is out of range: use {OVERLAP_RANGE[0]} to "
                           f"{OVERLAP_RANGE[1]} pixels", field="options.overlap")
    if not 1 <= out.jpeg_quality <= 100:
        raise InvalidInput(f"jpeg_quality {out.jpeg_quality} is out of range: use 1 to 100",
                           field="options.jpeg_quality")
    return out
