"""A page to a raw raster, in horizontal bands: a PDF page with PDFium
(:func:`render_page`), an image page decoded by libvips or LibRaw
(:func:`render_image`). Both run in a worker process: PDFium is not
thread-safe and the bytes are untrusted.

Pixel size follows pypdfium2's ``PdfPage.render``: ``ceil(points * dpi / 72)``
per side of the displayed page (after /Rotate, whatever the MediaBox origin),
so a band-wise render matches a whole-page render pixel for pixel.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from planzoom.errors import InvalidInput
from planzoom.images import decoded, image_pages
from planzoom.media import KINDS
from planzoom.pages import MAX_SIDE_PIXELS, effective_dpi, raster_size
from planzoom.procpool import sandbox_result

# Pages are cached per worker process: consecutive pages of one set reuse the
# parsed document.
_doc_cache: dict[str, object] = {}


class RenderFailed(InvalidInput):
    """PDFium cannot render this page; retrying will not help."""

    reason = "PAGE_UNRENDERABLE"


@sandbox_result
@dataclass(frozen=True)
class RenderResult:
    width_pt: float
    height_pt: float
    dpi: float  # DPI used, after the pixel cap
    width_px: int
    height_px: int
    bands: int  # samples per pixel: 1 = grey (no colour on the page), 3 = RGB
    raster_bytes: int  # compressed bytes written


def close_documents() -> None:
    """Close the documents this process keeps open between pages."""
    for doc in _doc_cache.values():
        doc.close()
    _doc_cache.clear()


def _document(path: str):
    import pypdfium2 as pdfium

    doc = _doc_cache.get(path)
    if doc is None:
        close_documents()
        doc = _doc_cache[path] = pdfium.PdfDocument(path)
    return doc


def render_page(pdf_path: str, page_number: int, dpi: float, max_pixels: int,
                out_path: str, band_bytes: int, max_side: int = MAX_SIDE_PIXELS) -> RenderResult:
    """Render page ``page_number`` (1-based) of ``pdf_path`` to ``out_path``
    as one zstd frame of rows (RASTER_ENCODING_RAW_ZSTD): one grey sample per
    pixel if no pixel of the page has colour, else RGB.

    Memory: one band of at most ``band_bytes`` bytes (at least one row) plus
    the compressor's window, whatever the page size. PDFium fills the band
    in strips (:class:`StripSizer`).
    Raises RenderFailed if PDFium cannot open the file, load the page, or
    allocate a band.
    """
    import numpy as np
    import pypdfium2 as pdfium
    import zstandard

    try:
        doc = _document(pdf_path)
        page = doc[page_number - 1]
    except (pdfium.PdfiumError, IndexError) as e:
        raise RenderFailed(f"PDFium could not load page {page_number}: {e}") from None
    try:
        width_pt, height_pt = page.get_size()
        used_dpi = effective_dpi(width_pt, height_pt, dpi, max_pixels, max_side)
        width, height = raster_size(width_pt, height_pt, used_dpi)
        bands = 3
        row_bytes = width * bands
        band_rows = max(1, min(height, band_bytes // row_bytes))
        try:
            band = np.empty((band_rows, width, bands), np.uint8)
        except MemoryError:
            raise RenderFailed(
                f"could not allocate a {width} x {band_rows} pixel band") from None
        # Line art with no colour travels as one grey band. Bands are written
        # grey for as long as every pixel has R = G = B; at the first band
        # with colour, the grey rows so far are expanded into the RGB
        # raster (exactly: they had R = G = B) and the rest is written RGB.
        grey_path = out_path + ".grey"
        sizer = StripSizer(width)
        with open(grey_path, "wb") as gf, \
                zstandard.ZstdCompressor(level=1).stream_writer(gf, closefd=False) as gz:
            for y0 in range(0, height, band_rows):
                pixels = band[: min(band_rows, height - y0)]
                render_rows(page, pixels, y0, height, sizer)
                red = _grey_plane(pixels)
                if red is None:
                    break
                gz.write(red.data)
            gz.flush(zstandard.FLUSH_FRAME)
        if red is not None:
            os.replace(grey_path, out_path)
            bands = 1
        else:
            with open(out_path, "wb") as f, \
                    zstandard.ZstdCompressor(level=1).stream_writer(f, closefd=False) as z:
                with open(grey_path, "rb") as gf:
                    reader = zstandard.ZstdDecompressor().stream_reader(gf)
                    while chunk := reader.read(band_rows * width):
                        plane = np.frombuffer(chunk, np.uint8)
                        z.write(np.repeat(plane, 3).data)
                os.unlink(grey_path)
                z.write(memoryview(pixels).cast("B"))  # the first band with colour
                for y in range(y0 + len(pixels), height, band_rows):
                    pixels = band[: min(band_rows, height - y)]
                    render_rows(page, pixels, y, height, sizer)
                    z.write(memoryview(pixels).cast("B"))
                z.flush(zstandard.FLUSH_FRAME)
        written = os.path.getsize(out_path)
        return RenderResult(
            width_pt=float(width_pt), height_pt=float(height_pt), dpi=used_dpi,
            width_px=width, height_px=height, bands=bands, raster_bytes=written,
        )
    finally:
        page.close()


#: Rows of a band looked at first, one in this many: on a colour page the
#: colour is nearly always found there at a fraction of the full check's cost.
GREY_SAMPLE_STEP = 16


def _grey_plane(pixels):
    """The red plane of a (rows, width, 3) RGB array as a contiguous
    (rows, width) array if every pixel has R = G = B, else None."""
    import cv2

    cv2.setNumThreads(1)  # a worker process is one core's worth of work
    if not _same(*cv2.split(pixels[::GREY_SAMPLE_STEP])):
        return None
    red, green, blue = cv2.split(pixels)
    return red if _same(red, green, blue) else None


def _same(red, green, blue) -> bool:
    """True if three planes hold the same samples."""
    import cv2

    return not (cv2.norm(red, green, cv2.NORM_INF) or cv2.norm(red, blue, cv2.NORM_INF))


class StripSizer:
    """How PDFium renders one page: in strips of :attr:`PROBE` pixels, or of
    :attr:`SMALL` pixels.

    PDFium builds a clip mask the size of its bitmap for every object whose
    clip path it does not take for a rectangle (on sheets printed through
    macOS Quartz, every object), so its cost grows with objects x bitmap
    area: a whole-page bitmap made such sheets 10-40x slower, and small
    strips cure it. Images cost the other way, a fixed amount per image
    per call: for them bigger strips are faster. So, from the top of the
    page, rows are rendered both ways, timed, a big strip's worth at a time,
    until a probe sees enough to tell (blank rows take a few milliseconds
    either way and decide nothing): the page then keeps small strips if
    they were clearly faster, big ones otherwise, and big ones after
    :attr:`MAX_PROBES` probes that could not tell (docs/performance.md has
    the figures). A band too small to probe is rendered in one call unless
    small strips were chosen."""

    #: Pixels per small strip, and per probe and big strip.
    SMALL, PROBE = 256 * 1024, 2 * 1024 * 1024
    #: Small strips are kept when they took less than this share of the
    #: time a big one took on the same rows.
    MARGIN = 0.8
    #: A probe whose big strip took less than this (seconds) saw too little
    #: to decide on.
    INFORMATIVE_SECONDS = 0.005
    #: After this many probes that decided nothing the page is cheap to
    #: render either way: big strips, no more probes.
    MAX_PROBES = 8

    def __init__(self, width: int):
        self.small_rows = max(1, self.SMALL // width)
        self.probe_rows = max(1, self.PROBE // width)
        self.decided = False
        self.small = False
        self.probes = 0

    def probed(self, small_seconds: float, big_seconds: float) -> None:
        self.probes += 1
        if big_seconds >= self.INFORMATIVE_SECONDS:
            self.decided = True
            self.small = small_seconds < self.MARGIN * big_seconds
        elif self.probes >= self.MAX_PROBES:
            self.decided = True

    @property
    def rows(self) -> int:
        """Rows per call."""
        return self.small_rows if self.small else self.probe_rows


def render_rows(page, pixels, y0: int, height: int, sizer: StripSizer | None = None) -> None:
    """Render rows ``y0`` .. ``y0 + len(pixels)`` of the full-page raster of
    ``page`` (a pypdfium2 page; the raster is ``height`` rows of
    ``pixels.shape[1]`` pixels) into ``pixels``, a C-contiguous (rows, width,
    3) uint8 RGB array, annotations drawn. PDFium gets full-width bitmaps
    over parts of the array and the page offset upwards (PDFium clips to
    the bitmap), so nothing is copied; ``sizer`` (one per page) decides
    the strips' height. Raises RenderFailed if PDFium cannot
    make a bitmap."""
    rows, width = pixels.shape[0], pixels.shape[1]
    if pixels.shape[2] != 3 or not pixels.flags.c_contiguous:
        raise ValueError("pixels must be a C-contiguous (rows, width, 3) array")
    sizer = sizer or StripSizer(width)
    pixels.fill(255)
    if rows < 2 * sizer.probe_rows:  # too few rows to probe: one call, unless decided
        strip = sizer.small_rows if sizer.small else rows
        _render_strips(page, pixels, 0, rows, strip, y0, height)
        return
    s0 = 0
    while s0 < rows:
        if sizer.decided:
            _render_strips(page, pixels, s0, rows - s0, sizer.rows, y0, height)
            return
        # Rows rendered both ways, the big strip last (its pixels stay). A
        # probe over blank rows costs a few milliseconds and decides nothing;
        # the next rows are probed, until one decides for the page.
        n = min(sizer.probe_rows, rows - s0)
        small = _render_strips(page, pixels, s0, n, sizer.small_rows, y0, height)
        pixels[s0 : s0 + n].fill(255)
        big = _render_strips(page, pixels, s0, n, n, y0, height)
        sizer.probed(small, big)
        s0 += n


def _render_strips(page, pixels, s0: int, rows: int, strip: int, y0: int, height: int
                   ) -> float:
    """Rows ``s0`` .. ``s0 + rows`` of ``pixels`` (rows ``y0 + s0`` .. of the
    page's raster) in PDFium calls of ``strip`` rows; returns the seconds."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    width = pixels.shape[1]
    flags = pdfium_c.FPDF_ANNOT | pdfium_c.FPDF_REVERSE_BYTE_ORDER
    started = time.perf_counter()
    for top in range(s0, s0 + rows, strip):
        n = min(strip, s0 + rows - top)
        first = ctypes.c_void_p(pixels.ctypes.data + top * width * 3)
        bitmap = pdfium_c.FPDFBitmap_CreateEx(width, n, pdfium_c.FPDFBitmap_BGR, first, width * 3)
        if not bitmap:
            raise RenderFailed(f"PDFium could not make a {width} x {n} pixel bitmap")
        try:
            pdfium_c.FPDF_RenderPageBitmap(bitmap, page, 0, -(y0 + top), width, height, 0, flags)
        finally:
            pdfium_c.FPDFBitmap_Destroy(bitmap)
    return time.perf_counter() - started


def render_image(path: str, kind_name: str, index: int, max_pages: int, max_pixels: int,
                 out_path: str, band_bytes: int) -> RenderResult:
    """Decode directory ``index`` of an image file (see
    :func:`planzoom.images.decoded`: upright, 8-bit sRGB or grey) to
    ``out_path`` as one zstd frame of rows, like :func:`render_page`: one
    sample per pixel for a grey image, else RGB. The page is at the image's
    own size; its DPI is the image's resolution. Raises ImageDamaged and
    ImageTooLarge (the header is read again and checked as at ingest)."""
    import zstandard

    kind = KINDS[kind_name]
    page = next((p for p in image_pages(path, kind, max_pages, max_pixels) if p.index == index),
                None)
    if page is None:
        raise RenderFailed(f"the image has no directory {index}")
    image = decoded(path, kind, page)
    width, height, bands = image.width, image.height, image.bands
    band_rows = max(1, min(height, band_bytes // (width * bands)))
    with open(out_path, "wb") as f, \
            zstandard.ZstdCompressor(level=1).stream_writer(f, closefd=False) as z:
        for y0 in range(0, height, band_rows):
            rows = min(band_rows, height - y0)
            z.write(image.crop(0, y0, width, rows).write_to_memory())
        z.flush(zstandard.FLUSH_FRAME)
    return RenderResult(width_pt=page.width_pt, height_pt=page.height_pt, dpi=page.dpi,
                        width_px=width, height_px=height, bands=bands,
                        raster_bytes=os.path.getsize(out_path))
