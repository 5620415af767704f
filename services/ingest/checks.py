"""Checks on uploaded bytes: magic bytes here, PDF structure in a PDFium
worker process (:func:`inspect_pdf`)."""

from __future__ import annotations

from dataclasses import dataclass

from planzoom.errors import FailedPrecondition, InvalidInput, ResourceExhausted
from planzoom.procpool import sandbox_result

#: The PDF header may start anywhere in the first 1024 bytes (ISO 32000-1,
#: annex H.3, implementation note 13), as Acrobat and PDFium accept.
PDF_MAGIC = b"%PDF-"
HEADER_WINDOW = 1024

_KNOWN_MAGICS = (
    (b"MZ", "a Windows executable"),
    (b"\x7fELF", "a Linux executable (ELF)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"GIF8", "a GIF image"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office document"),
)


def describe_magic(head: bytes) -> str | None:
    """Return None if ``head`` (the first bytes of a file) holds a PDF
    header, else a description of what the file looks like."""
    if PDF_MAGIC in head[:HEADER_WINDOW]:
        return None
    for magic, what in _KNOWN_MAGICS:
        if head.startswith(magic):
            return what
    return f"a file that starts with bytes {head[:8].hex(' ')}"


class NotAPdf(InvalidInput):
    """The bytes are not a PDF; the message says what they look like."""

    reason = "NOT_A_PDF"

    def __init__(self, what: str):
        super().__init__(f"the file is not a PDF: it looks like {what}; upload a PDF plan set")


class PdfDamaged(InvalidInput):
    """PDFium cannot open the file or read a page of it."""

    reason = "PDF_DAMAGED"


class PdfEncrypted(FailedPrecondition):
    """The PDF needs a password to open."""

    reason = "PDF_ENCRYPTED"


@sandbox_result
@dataclass(frozen=True)
class PdfInfo:
    page_sizes: list[tuple[float, float]]  # displayed (after /Rotate), points


class TooManyPages(ResourceExhausted):
    reason = "TOO_MANY_PAGES"


def inspect_pdf(path: str, max_pages: int) -> PdfInfo:
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
        return PdfInfo(page_sizes=sizes)
    except pdfium.PdfiumError as e:
        raise PdfDamaged(f"PDFium could not read a page: {e}") from None
    finally:
        doc.close()
