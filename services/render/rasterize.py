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
    the compressor's window, whatever the page size.
    Raises RenderFailed if PDFium cannot open the file, load the page, or
    allocate a band bitmap.
    """
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c
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
        band_rows = max(1, min(height, band_bytes // (width * bands)))
        try:
            bitmap = pdfium.PdfBitmap.new_native(
                width, band_rows, pdfium_c.FPDFBitmap_BGR, rev_byteorder=True
            )
        except pdfium.PdfiumError as e:
            raise RenderFailed(
                f"PDFium could not allocate a {width} x {band_rows} pixel band: {e}"
            ) from None
        flags = pdfium_c.FPDF_ANNOT | pdfium_c.FPDF_REVERSE_BYTE_ORDER
        stride, row_bytes = bitmap.stride, width * bands
        view = memoryview(bitmap.buffer).cast("B")
        # Line art with no colour travels as one grey band: a grey copy is
        # written beside the RGB one for as long as every pixel has R = G = B.
        grey_path = out_path + ".grey"
        compressor = zstandard.ZstdCompressor(level=1)
        with open(out_path, "wb") as f, compressor.stream_writer(f, closefd=False) as z, \
                open(grey_path, "wb") as gf, \
                zstandard.ZstdCompressor(level=1).stream_writer(gf, closefd=False) as gz:
            grey = True
            for y0 in range(0, height, band_rows):
                rows = min(band_rows, height - y0)
                bitmap.fill_rect((255, 255, 255, 255), 0, 0, width, band_rows)
                # Offsetting the page by -y0 renders exactly rows y0..y0+rows
                # of the full-page raster; PDFium clips to the bitmap.
                pdfium_c.FPDF_RenderPageBitmap(bitmap, page, 0, -y0, width, height, 0, flags)
                if stride == row_bytes:
                    band = view[: rows * stride].tobytes()
                else:
                    band = b"".join(view[r * stride : r * stride + row_bytes].tobytes()
                                    for r in range(rows))
                z.write(band)
                if grey:
                    red = band[0::3]
                    grey = red == band[1::3] == band[2::3]
                    if grey:
                        gz.write(red)
            z.flush(zstandard.FLUSH_FRAME)
            gz.flush(zstandard.FLUSH_FRAME)
        if grey:
            os.replace(grey_path, out_path)
            bands = 1
        else:
            os.unlink(grey_path)
        written = os.path.getsize(out_path)
        bitmap.close()
        return RenderResult(
            width_pt=float(width_pt), height_pt=float(height_pt), dpi=used_dpi,
            width_px=width, height_px=height, bands=bands, raster_bytes=written,
        )
    finally:
        page.close()


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
