"""libvips, LibRaw (``rawpy``) and libheif (``pillow-heif``): still images
(photos, scans, RAW) as pages. What their headers say (:func:`inspect`,
:func:`image_pages`: read without decoding pixels), a page's pixels made
upright 8-bit sRGB or grey (:func:`decoded`) and written as a raster
(:func:`rasterize`), and its variants (:func:`variants`).

Every function runs in a sandboxed worker process (the bytes are
untrusted): ingest reads the pages, render decodes one. Each page's size in
pixels is known from the header, after orientation, before anything is
decoded, so a decompression bomb is refused without a decode.

HEIC/HEIF (HEVC) is decoded with libheif through ``pillow-heif`` (libvips'
wheel has no HEVC decoder), everything else with libvips.

A TIFF-structured file is a RAW or a TIFF image by its structure
(:func:`effective_kind`), decided here from the whole file, the same way at
inspection and at render: ingest's sniff saw its first bytes only, and a
RAW's sensor data may sit past them, or in a layout only LibRaw knows (a
Kodak KDC's first directory is a 96 x 64 thumbnail).

Normalisation, in order: orientation applied: EXIF orientation, and for
HEIF/AVIF the container's irot/imir transforms (libheif applies them; EXIF
orientation is used only for a file that has none, as an iPhone HEIC
without irot needs); alpha flattened on white; an embedded ICC profile
converted to sRGB (perceptual intent), CMYK without one through libvips'
default CMYK profile; 16-bit scaled to 8-bit; grey images stay one band.
Metadata (EXIF, GPS, XMP, maker notes) is dropped: only pixels leave.

An image page's variants come from one reduced decode of the source (libvips
``thumbnail``: JPEG and WebP shrink on load, a TIFF page or PNG is read once)
at the largest size any variant needs, normalised as the pyramid's raster;
every variant is cut from that one image, never by reading the source again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from planzoom.engines.base import ImageDamaged, Limits, SourceInfo, TooManyPages
from planzoom.engines.exif import image_facts
from planzoom.engines.heif import decoded_heif, heif_orientation, open_heif
from planzoom.engines.raster import Raster, raster_writer
from planzoom.engines.raw_or_tiff import effective_kind
from planzoom.engines.variants import fit, save, watermarked
from planzoom.errors import ResourceExhausted
from planzoom.media import Kind
from planzoom.v1 import events_pb2, jobs_pb2

#: A page whose header gives no usable resolution is taken as 72 DPI.
DEFAULT_DPI = 72.0
#: Resolutions outside this range (DPI) are treated as missing.
DPI_RANGE = (50.0, 20000.0)


class ImageTooLarge(ResourceExhausted):
    """More pixels than a page may have (a decompression bomb, or a
    mosaic too large for one page)."""

    reason = "IMAGE_TOO_LARGE"


@dataclass(frozen=True)
class ImagePage:
    """One page of an image file as it will be shown (after orientation)."""

    index: int  # the loader's page (TIFF directory), 0-based
    width_px: int
    height_px: int
    dpi: float  # from the header, or DEFAULT_DPI
    facts: dict  # ImageFacts fields (see image_facts)

    @property
    def width_pt(self) -> float:
        return self.width_px * 72 / self.dpi

    @property
    def height_pt(self) -> float:
        return self.height_px * 72 / self.dpi


def _dpi(image) -> float:
    dpi = image.xres * 25.4  # libvips keeps pixels per millimetre
    if not DPI_RANGE[0] <= dpi <= DPI_RANGE[1]:
        return DEFAULT_DPI
    # 2.835 px/mm is 72 DPI written in metric: snap what rounding moved
    return float(round(dpi)) if abs(dpi - round(dpi)) < 0.1 else round(dpi, 2)


def _orientation(image) -> int:
    return image.get("orientation") if image.get_typeof("orientation") else 1


def _check_pixels(width: int, height: int, limits: Limits, what: str) -> None:
    if width * height > limits.max_image_pixels:
        raise ImageTooLarge(f"{what} is {width:,} x {height:,} pixels, more than the "
                            f"{limits.max_image_pixels:,} a page may have; it was not decoded "
                            "(PLANZOOM_MAX_IMAGE_PIXELS)")
    if limits.max_image_side and max(width, height) > limits.max_image_side:
        # A strip of few pixels still costs the tile stage memory in
        # proportion to its long side (a pyramid level's rows).
        raise ImageTooLarge(f"{what} is {width:,} x {height:,} pixels: its longest side is "
                            f"over the {limits.max_image_side:,} pixels a page may have; it "
                            "was not decoded (PLANZOOM_MAX_PAGE_SIDE_PIXELS)")


def _is_overview(page, first) -> bool:
    """A TIFF directory that is a reduced copy of the first (a COG overview)."""
    return (page.width * 2 <= first.width + 1 and page.height * 2 <= first.height + 1
            and abs(page.width / page.height - first.width / first.height) < 0.02)


def image_pages(path: str, kind: Kind, limits: Limits) -> list[ImagePage]:
    """The pages of an image file of ``kind`` as sniffed (see
    :func:`effective_kind`); :func:`pages_of` tells what is refused."""
    return pages_of(path, effective_kind(path, kind, limits), limits)


def pages_of(path: str, kind: Kind, limits: Limits) -> list[ImagePage]:
    """The pages of an image file of ``kind`` (as :func:`effective_kind`
    decided it) from its headers: every page of a TIFF
    (overviews and directories libvips cannot read skipped), the first frame
    of a GIF, the primary image of a HEIF/AVIF, the developed image of a RAW.

    Raises ImageDamaged (unreadable, truncated JPEG), ImageTooLarge (a page
    over ``limits.max_image_pixels`` or ``max_image_side``) and
    ResourceExhausted TOO_MANY_PAGES (over ``max_pages`` pages, or a TIFF of
    over ``max_tiff_directories`` directories, refused before any is read)."""
    max_pages = limits.max_pages
    import pyvips

    if kind.is_raw:
        return [_raw_page(path, limits)]
    if kind.name == "heif":
        return [_heif_page(path, limits)]
    try:
        first = pyvips.Image.new_from_file(path, access="sequential")
    except pyvips.Error as e:
        raise ImageDamaged(f"the {kind.name.upper()} image cannot be read: "
                           f"{_vips_reason(e)}") from None
    if kind.name == "jpeg":
        _check_jpeg_end(path)
    pages = [(0, first)]
    if kind.name == "tiff" and first.get_typeof("n-pages"):
        count = first.get("n-pages")
        if count > limits.max_tiff_directories:
            raise TooManyPages(f"the TIFF has {count:,} directories, more than the "
                               f"{limits.max_tiff_directories:,} planzoom reads "
                               "(PLANZOOM_MAX_TIFF_DIRECTORIES); as a PDF it would be read "
                               "page by page")
        for index in range(1, count):
            try:
                page = pyvips.Image.new_from_file(path, page=index, access="sequential")
            except pyvips.Error:
                continue  # a mask or a directory of another kind
            if not _is_overview(page, first):
                pages.append((index, page))
            if len(pages) > max_pages:
                raise TooManyPages(
                    f"the TIFF has more than {max_pages} pages (PLANZOOM_MAX_PAGES)")
    out = []
    for n, (index, page) in enumerate(pages):
        width, height = page.width, page.height
        if _orientation(page) in (5, 6, 7, 8):
            width, height = height, width
        _check_pixels(width, height, limits, f"page {n + 1}" if len(pages) > 1 else
                      "the image")
        exif = page.get("exif-data") if page.get_typeof("exif-data") else None
        facts = image_facts(exif, page.width, page.height, _orientation(page))
        out.append(ImagePage(index=index, width_px=width, height_px=height, dpi=_dpi(page),
                             facts=facts))
    return out


def inspect(path: str, kind: Kind, limits: Limits) -> SourceInfo:
    """The pages of an image file from its headers (nothing is decoded; see
    :func:`pages_of` for what is refused), and its kind where its structure
    says otherwise than the sniff did (a RAW in a TIFF container)."""
    kind = effective_kind(path, kind, limits)
    pages = pages_of(path, kind, limits)
    return SourceInfo(kind=kind.name, page_sizes=[(p.width_pt, p.height_pt) for p in pages],
                      pixel_sizes=[(p.width_px, p.height_px) for p in pages],
                      dpis=[p.dpi for p in pages], indexes=[p.index for p in pages],
                      facts=[p.facts for p in pages])


def _planned(geometry: events_pb2.PageGeometry) -> ImagePage:
    """The page ``geometry`` (from ingest's reading of the headers) names."""
    return ImagePage(index=geometry.source_index, width_px=geometry.width_px,
                     height_px=geometry.height_px, dpi=geometry.dpi, facts={})


def rasterize(path: str, kind: Kind, geometry: events_pb2.PageGeometry, out_path: str,
              band_bytes: int) -> Raster:
    """Decode the page ``geometry`` names (:func:`decoded`: upright, 8-bit
    sRGB or grey) to ``out_path`` as a raw raster
    (:mod:`planzoom.engines.raster`) in bands of at most ``band_bytes``:
    one sample per pixel for a grey image, else RGB. Raises ImageDamaged,
    also when the decoded size is not the one its header gave at ingest."""
    image = decoded(path, kind, _planned(geometry))
    width, height, bands = image.width, image.height, image.bands
    band_rows = max(1, min(height, band_bytes // (width * bands)))
    with raster_writer(out_path) as z:
        for y0 in range(0, height, band_rows):
            rows = min(band_rows, height - y0)
            z.write(image.crop(0, y0, width, rows).write_to_memory())
    return Raster(width_px=width, height_px=height, bands=bands,
                  raster_bytes=os.path.getsize(out_path), digest=z.digest)


def variants(path: str, kind: Kind, geometry: events_pb2.PageGeometry,
             opts: jobs_pb2.VariantOptions, watermark: str, out_dir: str) -> list[dict]:
    """Write the variants ``opts`` asks for of the page ``geometry`` names
    into ``out_dir``: thumbnail, square icon (centre crop), WebP sizes and
    the display image watermarked with ``watermark``. Returns variant files
    (:mod:`planzoom.engines.variants`). Raises ImageDamaged as
    :func:`rasterize` does."""
    import pyvips

    sizes = [opts.thumbnail_px, opts.icon_px, opts.display_px, *opts.webp_px]
    largest = max(sizes, default=0)
    if not largest:
        return []
    kind = effective_kind(path, kind)
    if kind.is_raw or kind.name == "heif":
        base = fit(decoded(path, kind, _planned(geometry)), largest)  # no reduced decode
    else:
        source = f"{path}[page={geometry.source_index}]" if kind.name == "tiff" else path
        base = normalised(pyvips.Image.thumbnail(source, largest, height=largest, size="down"))
    base = base.copy_memory()
    made = []
    if opts.thumbnail_px:
        made.append(save(fit(base, opts.thumbnail_px), out_dir, "thumbnail", "jpg",
                         opts.thumbnail_quality or opts.jpeg_quality))
    if opts.icon_px:
        side = min(opts.icon_px, base.width, base.height)
        icon = base.thumbnail_image(side, height=side, crop="centre", size="down")
        made.append(save(icon, out_dir, "icon", "jpg", opts.icon_quality or opts.jpeg_quality))
    for px in opts.webp_px:
        made.append(save(fit(base, px), out_dir, f"webp-{px}", "webp", opts.webp_quality))
    if opts.display_px:
        display = watermarked(fit(base, opts.display_px), watermark,
                              opts.watermark_position, opts.watermark_opacity)
        made.append(save(display, out_dir, "display", "jpg",
                         opts.display_quality or opts.jpeg_quality))
    return made


def _check_jpeg_end(path: str) -> None:
    """The last start-of-scan marker (FFDA) of a JPEG must be followed by an
    end-of-image marker (FFD9); inside scan data an FF byte is always
    followed by 00 or a restart marker (ISO 10918-1, B.1.1.5), so an FFD9
    there is the real end. One that has none was cut short, and would
    decode to a grey band. Data after the end (phone makers' trailers) is
    allowed."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        scan = data.rfind(b"\xff\xda")
        if scan < 0 or data.find(b"\xff\xd9", scan) < 0:
            raise ImageDamaged("the JPEG is truncated (its image data has no end-of-image "
                               "marker); upload the whole file")


def _raw_page(path: str, limits: Limits) -> ImagePage:
    import rawpy

    try:
        with rawpy.imread(path) as raw:
            sizes = raw.sizes
    except (rawpy.LibRawError, OSError) as e:
        raise ImageDamaged(f"LibRaw cannot read this RAW file: {_raw_reason(e)}") from None
    width, height = sizes.iwidth, sizes.iheight
    if sizes.flip in (5, 6):
        width, height = height, width
    _check_pixels(width, height, limits, "the RAW image")
    return ImagePage(index=0, width_px=width, height_px=height, dpi=DEFAULT_DPI,
                     facts=image_facts(None, sizes.iwidth, sizes.iheight,
                                       {0: 1, 3: 3, 5: 8, 6: 6}.get(sizes.flip, 1)))


def _heif_page(path: str, limits: Limits) -> ImagePage:
    heif = open_heif(path)
    width, height = heif.size
    orientation = heif_orientation(path, heif)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    _check_pixels(width, height, limits, "the HEIF image")
    return ImagePage(index=0, width_px=width, height_px=height, dpi=DEFAULT_DPI,
                     facts=image_facts(heif.info.get("exif"), *heif.size, orientation))


def _raw_reason(error: Exception) -> str:
    text = error.args[0] if error.args else type(error).__name__
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


def _vips_reason(error) -> str:
    """The first line of libvips' own explanation, without file paths."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    detail = lines[-1].strip() if lines else "unknown error"
    return detail.split(": ", 1)[-1] if "/" in detail else detail


def decoded(path: str, kind: Kind, page: ImagePage):
    """The page's pixels as a pyvips image: upright, 8-bit, sRGB (3 bands)
    or grey (1 band), no alpha, ``page.width_px x page.height_px``. Pixels
    are computed as they are read (the caller crops it in strips). Raises
    ImageDamaged."""
    import pyvips

    kind = effective_kind(path, kind)
    if kind.is_raw:
        image = _developed_raw(path)
    elif kind.name == "heif":
        image = decoded_heif(path).autorot()
    else:
        extra = {"page": page.index} if kind.name == "tiff" else {}
        try:
            image = pyvips.Image.new_from_file(path, fail_on="error", **extra)
        except pyvips.Error as e:
            raise ImageDamaged(f"the image cannot be read: {_vips_reason(e)}") from None
        image = image.autorot()
    image = normalised(image)
    if (image.width, image.height) != (page.width_px, page.height_px):
        raise ImageDamaged(f"the decoded image is {image.width} x {image.height} pixels, not "
                           f"the {page.width_px} x {page.height_px} its header said")
    return image


def normalised(image):
    """An upright image made 8-bit sRGB (3 bands) or grey (1 band) on white:
    alpha flattened, an embedded ICC profile (or CMYK) converted to sRGB,
    16-bit scaled down."""
    import pyvips

    white = 65535 if image.format == "ushort" else 255
    if image.hasalpha():
        image = image.flatten(background=[white] * (image.bands - 1), max_alpha=white)
    if image.bands == 1:
        image = image.colourspace("b-w")
    elif image.get_typeof("icc-profile-data") or image.interpretation == "cmyk":
        try:
            image = image.icc_transform("srgb", embedded=True, intent="perceptual", depth=8,
                                        **({"input_profile": "cmyk"}
                                           if image.interpretation == "cmyk" else {}))
        except pyvips.Error:
            image = image.colourspace("srgb")  # a broken profile: keep the pixels
    else:
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    return image


def _developed_raw(path: str):
    """A RAW file developed by LibRaw: camera white balance, sRGB, 8 bits,
    its orientation applied."""
    import numpy as np
    import pyvips
    import rawpy

    try:
        with rawpy.imread(path) as raw:
            rgb = raw.postprocess(use_camera_wb=True, output_bps=8, no_auto_bright=False)
    except (rawpy.LibRawError, OSError) as e:
        raise ImageDamaged(f"LibRaw cannot develop this RAW file: {_raw_reason(e)}") from None
    rgb = np.ascontiguousarray(rgb)
    return pyvips.Image.new_from_memory(rgb.data, rgb.shape[1], rgb.shape[0], 3, "uchar")
