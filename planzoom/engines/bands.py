"""PDFium drawing a page into a numpy array in bands (:func:`render_rows`),
in strips sized by what the page holds (:class:`StripSizer`), and
the check that a band is grey (:func:`grey_plane`): what
:func:`planzoom.engines.pdf.rasterize` streams into a raster."""

from __future__ import annotations

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
    """How many rows PDFium renders of a page per call: strips of
    :attr:`SMALL` pixels for a page drawn through many clip masks
    (:func:`clip_masks` finds at least :attr:`MASKS`), else of :attr:`BIG`
    pixels.

    PDFium builds a clip mask the size of its bitmap for every object whose
    clip path it does not take for a rectangle (on sheets printed through
    macOS Quartz, every object carries a page-sized one), so its cost grows
    with objects x bitmap area: a whole-page bitmap made such sheets 10-40x
    slower, and small strips cure it. Images cost the other way, a fixed
    amount per image per call: for them bigger strips are faster.

    The choice is read from the page's objects, never timed: PDFium's
    pixels depend on where strips cut a page (an image resampled across a
    cut), and a page rendered twice must give the same pixels, or an
    unchanged sheet would look revised (docs/performance.md has the
    figures)."""

    #: Pixels per small strip, and per big strip.
    SMALL, BIG = 256 * 1024, 2 * 1024 * 1024
    #: Clip masks a page needs for small strips to pay.
    MASKS = 32

    def __init__(self, width: int, small: bool = False):
        self.small_rows = max(1, self.SMALL // width)
        self.big_rows = max(1, self.BIG // width)
        self.small = small

    @classmethod
    def for_page(cls, page, width: int) -> StripSizer:
        """The strips for ``page`` (a pypdfium2 page) rendered ``width``
        pixels wide."""
        return cls(width, small=clip_masks(page) >= cls.MASKS)

    @property
    def rows(self) -> int:
        """Rows per call."""
        return self.small_rows if self.small else self.big_rows


#: Objects of a page :func:`clip_masks` looks at, at most.
CLIP_SAMPLE = 500
#: Points of a clip path read, at most: a rectangle has 4 or 5.
_CLIP_POINTS = 8


def clip_masks(page) -> int:
    """About how many of ``page``'s objects PDFium draws through a clip mask
    as large as the page: objects whose clip path has a path that is not an
    axis-aligned rectangle (PDFium's ``CFX_Path::GetRect`` fails, so it
    rasterises a mask the size of its bitmap) spanning at least a quarter
    of the page's area. At most :data:`CLIP_SAMPLE` top-level objects,
    evenly spaced, are looked at (a few milliseconds on any page) and the
    count is scaled to all of them."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    count = pdfium_c.FPDFPage_CountObjects(page)
    if count <= 0:
        return 0
    area = pdfium_c.FPDF_GetPageWidthF(page) * pdfium_c.FPDF_GetPageHeightF(page)
    step = max(1, count // CLIP_SAMPLE)
    x, y = ctypes.c_float(), ctypes.c_float()
    seen = found = 0
    for i in range(0, count, step):
        seen += 1
        clip = pdfium_c.FPDFPageObj_GetClipPath(pdfium_c.FPDFPage_GetObject(page, i))
        if not clip:
            continue
        for path in range(pdfium_c.FPDFClipPath_CountPaths(clip)):
            segments = pdfium_c.FPDFClipPath_CountPathSegments(clip, path)
            points = []
            for s in range(min(segments, _CLIP_POINTS)):
                segment = pdfium_c.FPDFClipPath_GetPathSegment(clip, path, s)
                pdfium_c.FPDFPathSegment_GetPoint(segment, x, y)
                points.append((x.value, y.value))
            if not points or (segments <= 5 and _rectangle(points)):
                continue  # PDFium clips to a rectangle's box: no mask
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            if (max(xs) - min(xs)) * (max(ys) - min(ys)) >= area / 4:
                found += 1
                break
    return found * count // seen


def _rectangle(points) -> bool:
    """True if 4 or 5 points lie on the corners of one axis-aligned
    rectangle (exactly: Quartz's page-sized clip starts 0.02 pt off)."""
    return 4 <= len(points) <= 5 and len({p[0] for p in points}) <= 2 \
        and len({p[1] for p in points}) <= 2


def render_rows(page, pixels, y0: int, height: int, sizer: StripSizer | None = None) -> None:
    """Render rows ``y0`` .. ``y0 + len(pixels)`` of the full-page raster of
    ``page`` (a pypdfium2 page; the raster is ``height`` rows of
    ``pixels.shape[1]`` pixels) into ``pixels``, a C-contiguous (rows, width,
    3) uint8 RGB array, annotations drawn. PDFium gets full-width bitmaps
    over parts of the array and the page offset upwards (PDFium clips to
    the bitmap), so nothing is copied; ``sizer`` (one per page,
    :meth:`StripSizer.for_page` by default) decides the strips' height.
    Raises PageUnrenderable if PDFium cannot make a bitmap."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    rows, width = pixels.shape[0], pixels.shape[1]
    if pixels.shape[2] != 3 or not pixels.flags.c_contiguous:
        raise ValueError("pixels must be a C-contiguous (rows, width, 3) array")
    sizer = sizer or StripSizer.for_page(page, width)
    pixels.fill(255)
    flags = pdfium_c.FPDF_ANNOT | pdfium_c.FPDF_REVERSE_BYTE_ORDER
    # A band under two big strips is one call: no cut through its images.
    strip = sizer.rows if sizer.small or rows >= 2 * sizer.big_rows else rows
    for top in range(0, rows, strip):
        n = min(strip, rows - top)
        first = ctypes.c_void_p(pixels.ctypes.data + top * width * 3)
        bitmap = pdfium_c.FPDFBitmap_CreateEx(width, n, pdfium_c.FPDFBitmap_BGR, first, width * 3)
        if not bitmap:
            raise PageUnrenderable(f"PDFium could not make a {width} x {n} pixel bitmap")
        try:
            pdfium_c.FPDF_RenderPageBitmap(bitmap, page, 0, -(y0 + top), width, height, 0, flags)
        finally:
            pdfium_c.FPDFBitmap_Destroy(bitmap)
