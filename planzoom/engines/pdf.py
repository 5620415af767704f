"""PDFium (pypdfium2): a PDF opened and its pages' sizes read
(:func:`inspect`), a page rendered to a raster in horizontal bands
(:func:`rasterize`), and the overview and thumbnail of a run of pages
(:func:`previews`). Every function here runs in a sandboxed worker process
(:mod:`planzoom.engines.sandbox`): PDFium is not thread-safe and the bytes
are untrusted.

A page is rendered at the size its :class:`~planzoom.v1.events_pb2.PageGeometry`
gives (worked out once, at ingest, by :func:`planzoom.pages.page_geometry`):
``ceil(points * dpi / 72)`` per side of the displayed page (after /Rotate,
whatever the MediaBox origin), as pypdfium2's ``PdfPage.render`` computes
it, so a band-wise render matches a whole-page render pixel for pixel.
"""

from __future__ import annotations

import os

from planzoom.dzi import level_size
from planzoom.engines.bands import PageUnrenderable, StripSizer, grey_plane, render_rows
from planzoom.engines.base import Limits, SourceInfo, TooManyPages
from planzoom.engines.raster import Raster, raster_writer
from planzoom.engines.variants import fit, overview_level, save
from planzoom.errors import FailedPrecondition, InvalidInput
from planzoom.pages import MAX_SIDE_PIXELS, page_geometry, raster_size
from planzoom.v1 import events_pb2, jobs_pb2

# Pages are cached per worker process: consecutive pages of one set reuse the
# parsed document.
_doc_cache: dict[str, object] = {}
_hint_cache: dict[str, dict[int, list[str]]] = {}


class PdfDamaged(InvalidInput):
    """PDFium cannot open the file or read a page of it."""

    reason = "PDF_DAMAGED"


class PdfEncrypted(FailedPrecondition):
    """The PDF needs a password to open."""

    reason = "PDF_ENCRYPTED"


def inspect(path: str, limits: Limits) -> SourceInfo:
    """Open ``path`` with PDFium and read every page's size in points.

    Raises PdfEncrypted for a password-protected file (an owner-password-only
    file opens and is accepted), TooManyPages for more than
    ``limits.max_pages`` pages (before any page is loaded), and PdfDamaged
    for one PDFium cannot open or read a page of.
    """
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        doc = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as e:
        if e.err_code == pdfium_c.FPDF_ERR_PASSWORD:
            raise PdfEncrypted(
                "the PDF is password-protected; save an unprotected copy and upload that"
            ) from None
        raise PdfDamaged(
            f"the file is not a readable PDF (PDFium: {e}); it may be truncated "
            "or corrupt: export or download it again"
        ) from None
    try:
        if len(doc) > limits.max_pages:
            raise TooManyPages(
                f"the PDF has {len(doc)} pages, more than the limit of {limits.max_pages}; "
                "split the set or ask the operator to raise PLANZOOM_MAX_PAGES")
        sizes = []
        for i in range(len(doc)):
            page = doc[i]
            w, h = page.get_size()
            page.close()
            if not (w > 0 and h > 0):
                raise PdfDamaged(f"page {i + 1} has an empty page box ({w} x {h} pt)")
            sizes.append((float(w), float(h)))
        if not sizes:
            raise PdfDamaged("the PDF has no pages")
        return SourceInfo(page_sizes=sizes)
    except pdfium.PdfiumError as e:
        raise PdfDamaged(f"PDFium could not read a page: {e}") from None
    finally:
        doc.close()


def close_documents() -> None:
    """Close the documents this process keeps open between pages."""
    for doc in _doc_cache.values():
        doc.close()
    _doc_cache.clear()
    _hint_cache.clear()


def _hints(path: str, page: int) -> list[str]:
    """Page ``page``'s bookmarks and label (:func:`~planzoom.engines.text.document_hints`),
    read once per document."""
    from planzoom.engines.text import document_hints

    if path not in _hint_cache:
        _hint_cache[path] = document_hints(_document(path))
    return _hint_cache[path].get(page - 1, [])


def _document(path: str):
    import pypdfium2 as pdfium

    doc = _doc_cache.get(path)
    if doc is None:
        close_documents()
        doc = _doc_cache[path] = pdfium.PdfDocument(path)
    return doc


def geometry(path: str, page: int, options: jobs_pb2.JobOptions,
             max_side: int = MAX_SIDE_PIXELS) -> events_pb2.PageGeometry:
    """Page ``page``'s geometry at ``options`` (DPI, pixel cap) as ingest
    works it out, for a tool that renders one page without a job (the bench,
    the tests). Raises PageUnrenderable."""
    import pypdfium2 as pdfium

    try:
        width_pt, height_pt = _document(path)[page - 1].get_size()
    except (pdfium.PdfiumError, IndexError) as e:
        raise PageUnrenderable(f"PDFium could not load page {page}: {e}") from None
    return page_geometry(page, width_pt, height_pt, options, max_side)


def _page(path: str, geometry: events_pb2.PageGeometry):
    """Page ``geometry.page`` of the PDF, checked against the size it had
    at ingest (the source is stored under its hash: a difference is a bug,
    never the file). Raises PageUnrenderable."""
    import pypdfium2 as pdfium

    try:
        page = _document(path)[geometry.page - 1]
    except (pdfium.PdfiumError, IndexError) as e:
        raise PageUnrenderable(f"PDFium could not load page {geometry.page}: {e}") from None
    size = raster_size(*page.get_size(), geometry.dpi)
    if size != (geometry.width_px, geometry.height_px):
        page.close()
        raise PageUnrenderable(f"page {geometry.page} renders {size[0]} x {size[1]} pixels at "
                               f"{geometry.dpi:g} DPI, not the {geometry.width_px} x "
                               f"{geometry.height_px} planned for it")
    return page


def rasterize(path: str, geometry: events_pb2.PageGeometry, out_path: str,
              band_bytes: int, text: bool = False) -> Raster:
    """Render the page ``geometry`` describes to ``out_path`` as a raw raster
    (:mod:`planzoom.engines.raster`) of ``geometry.width_px x height_px``:
    one grey sample per pixel if no pixel of the page has colour, else RGB.

    Memory: one band of at most ``band_bytes`` bytes (at least one row) plus
    the compressor's window, whatever the page size. PDFium fills the band
    in strips (:class:`StripSizer`). Raises PageUnrenderable if PDFium
    cannot open the file, load the page, or allocate a band.

    With ``text``, the page's words are read from the page already loaded
    and written beside the raster (:func:`planzoom.engines.sidecar.write_page_text`:
    ``<out_path>.words.json.gz``, ``<out_path>.sheet.json``).
    """
    import numpy as np
    import zstandard

    page = _page(path, geometry)
    try:
        width, height = geometry.width_px, geometry.height_px
        bands = 3
        row_bytes = width * bands
        band_rows = max(1, min(height, band_bytes // row_bytes))
        try:
            band = np.empty((band_rows, width, bands), np.uint8)
        except MemoryError:
            raise PageUnrenderable(
                f"could not allocate a {width} x {band_rows} pixel band") from None
        # Line art with no colour travels as one grey band. Bands are written
        # grey for as long as every pixel has R = G = B; at the first band
        # with colour, the grey rows so far are expanded into the RGB
        # raster (exactly: they had R = G = B) and the rest is written RGB.
        grey_path = out_path + ".grey"
        sizer = StripSizer.for_page(page, width)
        with raster_writer(grey_path) as gz:
            for y0 in range(0, height, band_rows):
                pixels = band[: min(band_rows, height - y0)]
                render_rows(page, pixels, y0, height, sizer)
                red = grey_plane(pixels)
                if red is None:
                    break
                gz.write(red.data)
        digest = gz.digest
        if red is not None:
            os.replace(grey_path, out_path)
            bands = 1
        else:
            with raster_writer(out_path) as z:
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
            digest = z.digest
        words = -1
        if text:
            from planzoom.engines.sidecar import write_page_text

            words = write_page_text(page, width, height, out_path,
                                    _hints(path, geometry.page))
        return Raster(width_px=width, height_px=height, bands=bands,
                      raster_bytes=os.path.getsize(out_path), words=words, digest=digest)
    finally:
        page.close()


def previews(path: str, pages: list[events_pb2.PageGeometry], options: jobs_pb2.JobOptions,
             out_dir: str) -> list[dict]:
    """The overview and the thumbnail of each of ``pages`` of a PDF, drawn
    by PDFium, written into ``out_dir``.

    The overview is level :func:`~planzoom.engines.variants.overview_level`
    (``variants.overview_px``) of the pyramid the page will have (its
    geometry's full size), drawn at exactly that level's size and saved at
    the tiles' JPEG quality; the thumbnail (``variants.thumbnail_px``,
    longest side) is cut from it, or drawn on its own if it is the larger.
    Returns one dict per page: ``{page, variants: [variant files
    (planzoom.engines.variants), the overview with its level]}``, or
    ``{page, error}`` for a page PDFium cannot draw (its page job will
    report why)."""
    opts, made = options.variants, []
    for geometry in pages:
        try:
            page = _page(path, geometry)
        except PageUnrenderable as e:
            made.append({"page": geometry.page, "error": e.message})
            continue
        prefix = f"{geometry.page}."
        try:
            variants = []
            base = None  # the largest image drawn so far
            if opts.overview_px:
                full = geometry.width_px, geometry.height_px
                level = overview_level(*full, opts.overview_px)
                base = draw(page, *level_size(*full, level))
                variants.append({**save(base, out_dir, "overview", "jpg",
                                        options.jpeg_quality, prefix), "level": level})
            if opts.thumbnail_px:
                if base is None or max(base.width, base.height) < opts.thumbnail_px:
                    scale = opts.thumbnail_px / max(geometry.width_pt, geometry.height_pt)
                    base = draw(page, max(1, round(geometry.width_pt * scale)),
                                max(1, round(geometry.height_pt * scale)))
                variants.append(save(fit(base, opts.thumbnail_px), out_dir, "thumbnail",
                                     "jpg", opts.thumbnail_quality, prefix))
        except Exception as e:  # noqa: BLE001 - the page job will meet it and say why
            made.append({"page": geometry.page, "error": f"{type(e).__name__}"})
            continue
        finally:
            page.close()
        made.append({"page": geometry.page, "variants": variants})
    return made


def draw(page, width: int, height: int):
    """``page`` (pypdfium2) drawn by PDFium at ``width x height`` pixels, as
    a libvips RGB image over a numpy array (which it keeps alive: images
    made from it must not outlive it)."""
    import numpy as np
    import pyvips

    pixels = np.empty((height, width, 3), np.uint8)
    render_rows(page, pixels, 0, height)
    return pyvips.Image.new_from_memory(pixels.data, width, height, 3, "uchar")
