"""A page's words with their boxes: PDFium's text layer (pypdfium2's text
page), and Tesseract OCR for a region of a page that has none.

``words(path, geometry) -> PageWords`` reads every word of a PDF page's
text layer with its box in the pixels of the page's full-resolution level
(the pyramid's top, ``geometry.width_px x geometry.height_px``: the
coordinates a viewer and the DZI tiles use), its font size in points and
its direction. PDFium splits the text into characters and puts a space or
a line break between words and lines it sees as apart; a word here is a
run of characters between those (``\\S+``), its box the union of the
rectangles PDFium gives for the run.

Why not pdfplumber or PyMuPDF: the first groups characters in Python and
is 10-500x slower on dense sheets, the second is AGPL. Per word this costs
four PDFium calls, not four per character.

``ocr_words(page, …)`` runs Tesseract (Debian ``tesseract-ocr``, through
pytesseract) on the page's title-block regions and gives the same shape,
for pages whose letters are drawn as outlines or scanned. Tesseract over
RapidOCR, measured on the corpus's and the wider set's text-less title
blocks: RapidOCR found a few more numbers, but its wheels that ship their
models require the GUI build of OpenCV beside planzoom's headless one
(docs/sheets.md).
"""

from __future__ import annotations

import ctypes
import math
import re
from dataclasses import dataclass, field

#: The sidecar's format version (``page-N.words.json.gz``, docs/sheets.md).
WORDS_VERSION = 1

#: Words a page keeps at most: a sheet of map labels or a point cloud
#: exported as text could hold millions; the title block and notes never
#: need that many, and the sidecar stays bounded.
MAX_WORDS = 60_000

#: Characters of one word at most (a run of drawn dashes or a hatch of
#: text glyphs is not a word anyone searches for).
MAX_WORD_CHARS = 64

#: A word: a run of characters between spaces or fill-in lines ("No.____"
#: is two fields' worth of blank, not part of a word; one "_" is).
_WORD = re.compile(r"(?:[^\s_]|(?<!_)_(?!_))+")

#: Hyphens and minus signs as fonts encode them, to the one a person types
#: (a sheet number "100‐00" printed with U+2010 is searched as "100-00").
_DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-",
                         "\u2212": "-", "\u00ad": "-"})


@dataclass
class Word:
    """One word: ``text``; its box ``x, y, w, h`` in full-resolution pixels
    (top-left origin); ``size`` the height of its letters' line in points (across the
    text's direction); ``angle`` the
    direction its text runs, in degrees counter-clockwise on the displayed
    page, rounded to 0, 90, 180 or 270 (title blocks in a right strip are
    often set at 90)."""

    text: str
    x: int
    y: int
    w: int
    h: int
    size: float
    angle: int = 0
    #: Set along a curve (a seal's "PROFESSIONAL ENGINEER"): searchable,
    #: never a field of the title block. Not kept in the sidecar.
    curved: bool = False

    def row(self) -> list:
        """The sidecar's row: ``[text, x, y, w, h, size, angle]``."""
        return [self.text, self.x, self.y, self.w, self.h, round(self.size, 1), self.angle]

    @classmethod
    def from_row(cls, row: list) -> Word:
        return cls(row[0], int(row[1]), int(row[2]), int(row[3]), int(row[4]), float(row[5]),
                   int(row[6]) if len(row) > 6 else 0)


@dataclass
class PageWords:
    """A page's words: ``width``, ``height`` the full-resolution pixels
    their boxes are in; ``width_pt``, ``height_pt`` the displayed page in
    points (so that ``size`` can be compared with the sheet); ``source``
    ``text`` (the PDF's text layer), ``ocr`` or ``none``; ``glyphs`` the
    characters PDFium found, generated ones aside (0 on a page whose
    letters are outlines or pixels)."""

    width: int
    height: int
    width_pt: float
    height_pt: float
    words: list[Word] = field(default_factory=list)
    source: str = "text"
    glyphs: int = 0
    truncated: bool = False

    @property
    def px_per_pt(self) -> float:
        return self.width / self.width_pt if self.width_pt else 1.0

    def to_json(self) -> dict:
        """The sidecar's document (docs/sheets.md)."""
        return {"version": WORDS_VERSION, "width": self.width, "height": self.height,
                "width_pt": round(self.width_pt, 2), "height_pt": round(self.height_pt, 2),
                "source": self.source, "glyphs": self.glyphs, "truncated": self.truncated,
                "words": [w.row() for w in self.words]}

    @classmethod
    def from_json(cls, doc: dict) -> PageWords:
        return cls(int(doc["width"]), int(doc["height"]), float(doc["width_pt"]),
                   float(doc["height_pt"]), [Word.from_row(r) for r in doc.get("words", [])],
                   doc.get("source", "text"), int(doc.get("glyphs", 0)),
                   bool(doc.get("truncated", False)))


#: Bookmarks read at most per document (an outline can be long; pypdfium2
#: stops at a loop).
MAX_OUTLINE_ITEMS = 5000
#: Longest bookmark or page label kept, characters.
MAX_HINT_CHARS = 200


def document_hints(doc) -> dict[int, list[str]]:
    """What a PDF says of its own pages (pypdfium2 ``PdfDocument``): by
    0-based page index, the titles of the bookmarks that open the page and
    its page label ("A101 - FLOOR PLAN", "[1] LS-11435"), as printed. CAD
    and Revit exports name each sheet so; a book names its chapters."""
    hints: dict[int, list[str]] = {}
    for n, item in enumerate(doc.get_toc(max_depth=4)):
        if n >= MAX_OUTLINE_ITEMS:
            break
        dest = item.get_dest()
        index = dest.get_index() if dest is not None else None
        title = (item.get_title() or "").replace("\x00", "").strip()
        if index is not None and title:
            hints.setdefault(index, []).append(title[:MAX_HINT_CHARS])
    for index in range(len(doc)):
        label = (doc.get_page_label(index) or "").replace("\x00", "").strip()
        if label:
            hints.setdefault(index, []).append(label[:MAX_HINT_CHARS])
    return hints


def _page_to_pixels(page, width: int, height: int):
    """The affine map (a, b, c, d, e, f: x' = a x + c y + e, y' = b x + d y
    + f) from the page's user space (points) to its full-resolution pixels,
    as PDFium draws it (its /Rotate and crop box applied)."""
    import pypdfium2.raw as pdfium_c

    dx, dy = ctypes.c_int(), ctypes.c_int()
    pts = []
    for px, py in ((0.0, 0.0), (1000.0, 0.0), (0.0, 1000.0)):
        pdfium_c.FPDF_PageToDevice(page, 0, 0, width, height, 0, px, py,
                                   ctypes.byref(dx), ctypes.byref(dy))
        pts.append((dx.value, dy.value))
    (x0, y0), (x1, y1), (x2, y2) = pts
    return ((x1 - x0) / 1000.0, (y1 - y0) / 1000.0, (x2 - x0) / 1000.0, (y2 - y0) / 1000.0,
            float(x0), float(y0))


def _text(textpage, count: int) -> str | None:
    """The text page's characters as one string of ``count`` UTF-16 units,
    one per character (None when PDFium's text differs in length from its
    character list, which then has to be read character by character)."""
    import pypdfium2.raw as pdfium_c

    buffer = (ctypes.c_ushort * (count + 1))()
    written = pdfium_c.FPDFText_GetText(textpage, 0, count, buffer)
    if written - 1 != count:
        return None
    return bytes(memoryview(buffer)[:count].cast("B")).decode("utf-16-le", "replace") \
        if count else ""


def read_words(page, width: int, height: int) -> PageWords:
    """The words of an open pypdfium2 page drawn at ``width x height``
    pixels (:class:`PageWords`)."""
    import pypdfium2.raw as pdfium_c

    width_pt, height_pt = page.get_size()
    out = PageWords(width, height, width_pt, height_pt)
    textpage = page.get_textpage()
    try:
        count = pdfium_c.FPDFText_CountChars(textpage)
        if count <= 0:
            out.source = "none"
            return out
        text = _text(textpage, count)
        if text is None:
            text = "".join(chr(pdfium_c.FPDFText_GetUnicode(textpage, i) or 32)
                           for i in range(count))
        a, b, c, d, e, f = _page_to_pixels(page, width, height)
        scale = max(1e-9, (a * a + b * b) ** 0.5)  # pixels per point
        left, top = ctypes.c_double(), ctypes.c_double()
        right, bottom = ctypes.c_double(), ctypes.c_double()
        glyphs = 0
        runs = []
        for m in _WORD.finditer(text):
            start, n = m.start(), m.end() - m.start()
            glyphs += n
            if n > MAX_WORD_CHARS:
                continue
            if n >= GLUED_MIN and _GLUED.search(m.group()):
                runs.extend(_split_glued(textpage, text, start, n))
            else:
                runs.append((start, n))
        for start, n in runs:
            if len(out.words) >= MAX_WORDS:
                out.truncated = True
                continue
            rects = pdfium_c.FPDFText_CountRects(textpage, start, n)
            xs: list[float] = []
            ys: list[float] = []
            for r in range(max(rects, 0)):
                if pdfium_c.FPDFText_GetRect(textpage, r, ctypes.byref(left), ctypes.byref(top),
                                             ctypes.byref(right), ctypes.byref(bottom)):
                    for px, py in ((left.value, top.value), (right.value, bottom.value)):
                        xs.append(a * px + c * py + e)
                        ys.append(b * px + d * py + f)
            if not xs:
                continue
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
            if x1 < 0 or y1 < 0 or x0 > width or y0 > height:
                continue  # off the sheet (outside the crop box)
            first = pdfium_c.FPDFText_GetCharAngle(textpage, start)
            angle = _display_angle(first, a, b, c, d)
            turn = abs(pdfium_c.FPDFText_GetCharAngle(textpage, start + n - 1) - first) \
                if n >= 3 else 0.0
            curved = CURVED_RADIANS < turn < 2 * math.pi - CURVED_RADIANS
            # The box's height across the line, in points: PDFium's font
            # size is before the text matrix (CAD output often sets 1 and
            # scales the matrix), the box is what is printed.
            across = (x1 - x0) if angle in (90, 270) else (y1 - y0)
            out.words.append(Word(text[start:start + n].translate(_DASHES),
                                  max(0, int(x0)), max(0, int(y0)),
                                  max(1, round(x1 - max(0, x0))), max(1, round(y1 - max(0, y0))),
                                  across / scale, angle, curved))
        out.glyphs = glyphs
        if not glyphs:
            out.source = "none"
        return out
    finally:
        textpage.close()


#: A word whose last letter turns from its first by more than this (10°)
#: is set along a curve.
CURVED_RADIANS = 0.175

#: Words this long that mix digits with a date's or a time's separators,
#: or with letters, are checked for two fields PDFium ran together
#: ("A1012/05/2017": a sheet number in large letters against a date in
#: small ones, with no space; "01freecadfloorplans.com": a sheet number
#: against a line of text set upright beside it).
GLUED_MIN = 7
_GLUED = re.compile(r"\d.*[/:]|[/:].*\d|\d[^\W\d_]|[^\W\d_]\d")


def _split_glued(textpage, text: str, start: int, n: int) -> list[tuple[int, int]]:
    """Split a run of characters where the letters' height changes by more
    than half, a gap opens wider than 0.6 of their height, or the next one
    is off the line (further than that across it): (start, length) of each
    part."""
    import pypdfium2.raw as pdfium_c

    left, right = ctypes.c_double(), ctypes.c_double()
    bottom, top = ctypes.c_double(), ctypes.c_double()
    boxes = []
    for i in range(start, start + n):
        pdfium_c.FPDFText_GetCharBox(textpage, i, ctypes.byref(left), ctypes.byref(right),
                                     ctypes.byref(bottom), ctypes.byref(top))
        boxes.append((left.value, right.value, bottom.value, top.value))
    # Each letter's own direction: a run can turn (a number, then a line
    # set upright), and a turn is a cut.
    along_x = [abs(math.cos(t)) >= abs(math.sin(t)) for t in (
        pdfium_c.FPDFText_GetCharAngle(textpage, i) for i in range(start, start + n))]
    cuts = [start]
    for i in range(1, n):
        a, b = boxes[i - 1], boxes[i]
        if along_x[i] != along_x[i - 1]:
            cuts.append(start + i)
            continue
        if along_x[i]:
            ha, hb = a[3] - a[2], b[3] - b[2]
            gap = max(b[0] - a[1], a[0] - b[1], b[2] - a[3], a[2] - b[3])
        else:
            ha, hb = a[1] - a[0], b[1] - b[0]
            gap = max(b[2] - a[3], a[2] - b[3], b[0] - a[1], a[0] - b[1])
        both = text[start + i - 1].isalnum() and text[start + i].isalnum()
        h = max(ha, hb, 1e-6)
        if (both and min(ha, hb) > 0 and h / min(ha, hb) > 1.6) or gap > 0.6 * h:
            cuts.append(start + i)
    cuts.append(start + n)
    return [(a, b - a) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def _display_angle(char_angle: float, a: float, b: float, c: float, d: float) -> int:
    """A character's direction on the displayed page, to the nearest
    quarter turn counter-clockwise: its direction in user space (PDFium's
    angle, radians clockwise there: the text matrix (0, 1, -1, 0) reads
    3π/2) taken through the page-to-pixel map (whose y grows down)."""
    if char_angle < 0:
        char_angle = 0.0
    ux, uy = math.cos(char_angle), -math.sin(char_angle)
    dx, dy = a * ux + c * uy, b * ux + d * uy
    return int(round(math.degrees(math.atan2(-dy, dx)) / 90.0)) % 4 * 90


#: A page with fewer characters in its text layer than this is read by OCR
#: in its title-block regions (scanned, or letters drawn as outlines).
OCR_BELOW_GLYPHS = 20
#: Resolution the title-block regions are drawn at for OCR (Tesseract reads
#: 8-12 pt print best at 200-300 DPI).
OCR_DPI = 200.0
#: Words Tesseract is less sure of than this (0-100) are left out.
OCR_MIN_CONFIDENCE = 40.0
#: Where title blocks are (fractions of the displayed page: x0, y0, x1, y1):
#: the right strip and the bottom strip (where a sheet plotted turned has it).
OCR_REGIONS = ((0.80, 0.0, 1.0, 1.0), (0.0, 0.80, 0.80, 1.0))
#: Most pixels of one region drawn for OCR (a huge sheet's strip is drawn
#: at a lower resolution rather than at any size).
OCR_MAX_PIXELS = 8_000_000
#: A region with less ink than this (share of dark pixels) holds no text
#: to read: Tesseract is not run on it (a blank strip costs it seconds).
OCR_MIN_INK = 0.001
#: A number candidate scoring less than this after OCR of the upright
#: regions sends them to OCR turned (planzoom.engines.sheets' scores).
OCR_SURE_SCORE = 3.0
#: Seconds Tesseract may spend on one region.
OCR_SECONDS = 60


def ocr_available() -> bool:
    """True if Tesseract can be run here (Debian's tesseract-ocr)."""
    import shutil

    return shutil.which("tesseract") is not None


def ocr_words(page, width: int, height: int, turns: tuple[int, ...] = (0,)) -> PageWords:
    """The words Tesseract reads in the page's title-block regions
    (:data:`OCR_REGIONS`), drawn by PDFium at about :data:`OCR_DPI` and
    read turned by each of ``turns`` (degrees clockwise: 90 reads text set
    bottom to top, as a sheet plotted turned has it), with their boxes in
    the pixels of the page at ``width x height``; ``source`` "ocr" (or
    "none" when Tesseract is not installed)."""
    width_pt, height_pt = page.get_size()
    out = PageWords(width, height, width_pt, height_pt, source="ocr")
    if not ocr_available():
        out.source = "none"
        return out
    import os
    import shutil

    import pytesseract

    # Tesseract's OpenMP threads spin while they wait: on a busy worker they
    # fight each other and the render for the cores, and one thread reads a
    # strip several times faster. An operator's own setting stands.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    # By its full path: a sandboxed worker may not look into every directory
    # on PATH, and exec would stop at the first it may not.
    pytesseract.pytesseract.tesseract_cmd = shutil.which("tesseract")
    for fx0, fy0, fx1, fy1 in OCR_REGIONS:
        area_pt = (fx1 - fx0) * width_pt * (fy1 - fy0) * height_pt
        dpi = min(OCR_DPI, 72.0 * (OCR_MAX_PIXELS / max(area_pt, 1.0)) ** 0.5)
        scale = dpi / 72.0
        # PDFium crops in points from each edge of the displayed page.
        bitmap = page.render(scale=scale, grayscale=True, crop=(
            fx0 * width_pt, (1 - fy1) * height_pt, (1 - fx1) * width_pt, fy0 * height_pt))
        image = bitmap.to_pil()
        iw, ih = image.size
        import numpy as np

        if (np.asarray(image) < 128).mean() < OCR_MIN_INK:
            continue
        to_px = width / (width_pt * scale)  # OCR pixels → full-resolution pixels
        left, top = fx0 * width, fy0 * height
        for turn in turns:
            # PIL turns counter-clockwise: a clockwise turn t is rotate(360 - t).
            turned = image.rotate(-turn % 360, expand=True) if turn else image
            try:
                data = pytesseract.image_to_data(turned, config="--psm 11",
                                                 output_type=pytesseract.Output.DICT,
                                                 timeout=OCR_SECONDS)
            except (RuntimeError, pytesseract.TesseractError):
                continue  # a region Tesseract gave up on: the others still count
            for i, text in enumerate(data["text"]):
                text = text.strip()
                if not text or float(data["conf"][i]) < OCR_MIN_CONFIDENCE:
                    continue
                u, v = data["left"][i], data["top"][i]
                bw, bh = data["width"][i], data["height"][i]
                # Back from the turned image to the region's own pixels.
                if turn == 90:      # turned clockwise: (x, y) went to (ih - y, x)
                    x, y, w, h, angle = v, ih - u - bw, bh, bw, 90
                elif turn == 270:   # turned counter-clockwise: (x, y) went to (y, iw - x)
                    x, y, w, h, angle = iw - v - bh, u, bh, bw, 270
                else:
                    x, y, w, h, angle = u, v, bw, bh, 0
                x, y = left + x * to_px, top + y * to_px
                w, h = w * to_px, h * to_px
                if any(o.x <= x + w / 2 <= o.x + o.w and o.y <= y + h / 2 <= o.y + o.h
                       for o in out.words[-300:]):
                    continue  # read already (overlapping regions, another turn)
                across = w if angle in (90, 270) else h
                out.words.append(Word(text.translate(_DASHES), int(x), int(y), max(1, round(w)),
                                      max(1, round(h)), across / (width / width_pt), angle))
    out.glyphs = sum(len(w.text) for w in out.words)
    return out
