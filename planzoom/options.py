"""A job's options: defaults filled in from the settings, ranges checked."""

from __future__ import annotations

from planzoom.config import Settings
from planzoom.errors import InvalidInput
from planzoom.v1 import jobs_pb2

DPI_RANGE = (10.0, 1200.0)
#: Variants are previews: larger images are what the pyramid is for.
VARIANT_MAX_PX = 4096
WATERMARK_POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "centre")
TILE_SIZE_RANGE = (64, 4096)
OVERLAP_RANGE = (0, 16)


def resolve_options(opts: jobs_pb2.JobOptions, s: Settings) -> jobs_pb2.JobOptions:
    """The options a job runs with: each unset field from the settings'
    defaults, ``max_page_pixels`` never above the service's cap. Raises
    InvalidInput (a BadRequest on ``options.<field>``) for a value out of
    range: DPI 10..1200, tile size 64..4096 px, overlap 0..16 px, JPEG
    quality 1..100, a layout FILES or ARCHIVE; variants as
    :func:`resolve_variants`."""
    out = jobs_pb2.JobOptions(
        dpi=opts.dpi or s.default_dpi,
        tile_size=opts.tile_size or s.default_tile_size,
        overlap=opts.overlap if opts.HasField("overlap") else s.default_overlap,
        jpeg_quality=opts.jpeg_quality or s.default_jpeg_quality,
        max_page_pixels=min(opts.max_page_pixels or s.max_page_pixels, s.max_page_pixels),
        variants=resolve_variants(opts.variants), keep_gps=opts.keep_gps,
        layout=opts.layout or jobs_pb2.PyramidLayout.Value(
            f"PYRAMID_LAYOUT_{s.default_layout.upper()}"),
    )
    if out.layout not in (jobs_pb2.PYRAMID_LAYOUT_FILES, jobs_pb2.PYRAMID_LAYOUT_ARCHIVE):
        raise InvalidInput(f"layout {opts.layout} is not a PyramidLayout: use FILES or ARCHIVE",
                           field="options.layout")
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


def resolve_variants(v: jobs_pb2.VariantOptions) -> jobs_pb2.VariantOptions:
    """Variant options with defaults filled in: thumbnail 300 px, icon 128
    px, a PDF page's overview 1024 px, WebP 400/800/1920 px, display image
    1920 px watermarked at the bottom right with opacity 0.35, JPEG quality
    85 (each JPEG variant may set its own), WebP quality 80.
    Raises InvalidInput (``options.variants.<field>``) for a size over
    VARIANT_MAX_PX, more than five WebP sizes, an unknown watermark position,
    an opacity outside 0..1, a quality outside 1..100 or a watermark text
    over 200 characters."""
    def size(name: str, default: int) -> int:
        value = getattr(v, name) if v.HasField(name) else default
        if value > VARIANT_MAX_PX:
            raise InvalidInput(f"variants.{name} {value} is over {VARIANT_MAX_PX} pixels; "
                               "the pyramid serves larger views", field=f"options.variants.{name}")
        return value

    webp = list(v.webp_px) if v.webp_px else [400, 800, 1920]
    if len(webp) > 5 or any(p > VARIANT_MAX_PX for p in webp):
        raise InvalidInput(f"variants.webp_px takes up to five sizes of at most {VARIANT_MAX_PX} "
                           "pixels", field="options.variants.webp_px")
    out = jobs_pb2.VariantOptions(
        thumbnail_px=size("thumbnail_px", 300), icon_px=size("icon_px", 128),
        webp_px=sorted({p for p in webp if p}), display_px=size("display_px", 1920),
        overview_px=size("overview_px", 1024),
        watermark_text=v.watermark_text, watermark_position=v.watermark_position or
        WATERMARK_POSITIONS[0],
        watermark_opacity=v.watermark_opacity if v.HasField("watermark_opacity") else 0.35,
        jpeg_quality=v.jpeg_quality or 85, webp_quality=v.webp_quality or 80)
    for name in ("thumbnail_quality", "icon_quality", "display_quality"):
        setattr(out, name, getattr(v, name) or out.jpeg_quality)
    if out.watermark_position not in WATERMARK_POSITIONS:
        raise InvalidInput(f"variants.watermark_position must be one of {WATERMARK_POSITIONS}",
                           field="options.variants.watermark_position")
    if not 0 <= out.watermark_opacity <= 1:
        raise InvalidInput("variants.watermark_opacity must be 0 to 1",
                           field="options.variants.watermark_opacity")
    if len(out.watermark_text) > 200:
        raise InvalidInput("variants.watermark_text is over 200 characters",
                           field="options.variants.watermark_text")
    for name in ("jpeg_quality", "webp_quality", "thumbnail_quality", "icon_quality",
                 "display_quality"):
        if not 1 <= getattr(out, name) <= 100:
            raise InvalidInput(f"variants.{name} must be 1 to 100",
                               field=f"options.variants.{name}")
    return out
