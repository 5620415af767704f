"""Checks on an upload's structure in a sandboxed worker process: a PDF's
pages with PDFium (:func:`inspect_pdf`), an image's pages from its headers
(:func:`inspect_image`). Its kind was recognised by its bytes before
(:func:`planzoom.media.sniff`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from planzoom.errors import FailedPrecondition, InvalidInput, ResourceExhausted
from planzoom.images import image_pages
from planzoom.media import KINDS
from planzoom.procpool import sandbox_result
from planzoom.video import probe


class PdfDamaged(InvalidInput):
    """PDFium cannot open the file or read a page of it."""

    reason = "PDF_DAMAGED"


class PdfEncrypted(FailedPrecondition):
    """The PDF needs a password to open."""

    reason = "PDF_ENCRYPTED"


@sandbox_result
@dataclass(frozen=True)
class SourceInfo:
    """The pages of an upload: displayed size in points; for an image also
    its pixels, DPI and directory in the file (empty lists for a PDF)."""

    page_sizes: list[tuple[float, float]]  # displayed (after /Rotate), points
    pixel_sizes: list[tuple[int, int]] = ()
    dpis: list[float] = ()
    indexes: list[int] = ()
    facts: list[dict] = ()  # ImageFacts fields, GPS included
    video: dict | None = None  # VideoInfo fields (planzoom.video)


class TooManyPages(ResourceExhausted):
    reason = "TOO_MANY_PAGES"


def inspect_pdf(path: str, max_pages: int) -> SourceInfo:
    """Open ``path`` with PDFium and read every page's size in points.

    Runs in a worker process. Raises PdfEncrypted for a password-protected
    file (an owner-password-only file opens and is accepted), TooManyPages
    for more than ``max_pages`` pages (before any page is loaded), and
    PdfDamaged for one PDFium cannot open or read a page of.
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
        if len(doc) > max_pages:
            raise TooManyPages(
                f"the PDF has {len(doc)} pages, more than the limit of {max_pages}; split "
                "the set or ask the operator to raise PLANZOOM_MAX_PAGES")
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


def inspect_image(path: str, kind_name: str, max_pages: int, max_pixels: int) -> SourceInfo:
    """The pages of an image file from its headers (nothing is decoded; see
    :func:`planzoom.images.image_pages` for what is refused). Runs in a
    worker process."""
    pages = image_pages(path, KINDS[kind_name], max_pages, max_pixels)
    return SourceInfo(page_sizes=[(p.width_pt, p.height_pt) for p in pages],
                      pixel_sizes=[(p.width_px, p.height_px) for p in pages],
                      dpis=[p.dpi for p in pages], indexes=[p.index for p in pages],
                      facts=[p.facts for p in pages])


def inspect_video(path: str, max_seconds: float, max_pixels: int) -> SourceInfo:
    """A video's one "page" (its upright frame size) and what it holds (see
    :func:`planzoom.video.probe` for what is refused). Runs in a worker
    process."""
    info = probe(path, max_seconds, max_pixels)
    return SourceInfo(page_sizes=[(float(info.width), float(info.height))],
                      pixel_sizes=[(info.width, info.height)], dpis=[72.0], indexes=[0],
                      facts=[{}], video=dataclasses.asdict(info))
