"""PDFium drawing a page into a numpy array in bands (:func:`render_rows`),
in strips sized by a probe of what the page costs (:class:`StripSizer`), and
the check that a band is grey (:func:`grey_plane`): what
:func:`planzoom.engines.pdf.rasterize` streams into a raster."""

from __future__ import annotations

import time

from planzoom.errors import InvalidInput


class PageUnrenderable(InvalidInput):
    """PDFium cannot render this page; retrying will not help."""

    reason = "PAGE_UNRENDERABLE"


#: Rows of a band looked at first, one in this many: on a colour page the
#: colour is nearly always found there at a fraction of the full check's cost.
GREY_SAMPLE_STEP = 16


def grey_plane(pixels):
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
    the strips' height. Raises PageUnrenderable if PDFium cannot
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
            raise PageUnrenderable(f"PDFium could not make a {width} x {n} pixel bitmap")
        try:
            pdfium_c.FPDF_RenderPageBitmap(bitmap, page, 0, -(y0 + top), width, height, 0, flags)
        finally:
            pdfium_c.FPDFBitmap_Destroy(bitmap)
    return time.perf_counter() - started
