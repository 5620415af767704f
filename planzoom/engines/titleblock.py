"""What a title block is made of: a page's words joined into phrases
(:func:`phrases`), and the vocabulary that reads them: the labels of a
sheet number, a title, a scale in the languages plan sets are drawn in,
what a sheet number looks like (:func:`number_shaped`, :func:`number_key`)
and the discipline a number or title names (:func:`discipline`).

Pure functions over :class:`planzoom.engines.text.PageWords`;
:mod:`planzoom.engines.sheets` scores a page's phrases with them,
:mod:`planzoom.engines.sheet_set` a whole set (docs/sheets.md).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass

from planzoom.engines.text import PageWords, Word

# -- words into phrases --------------------------------------------------------


@dataclass
class Phrase:
    """Words on one line, close together, in reading order: ``text``;
    ``box`` (x, y, w, h) in full-resolution pixels; ``size`` the letters'
    height in points; ``angle`` as :class:`Word`'s."""

    text: str
    box: tuple[int, int, int, int]
    size: float
    angle: int
    words: list[Word]

    @property
    def cx(self) -> float:
        return self.box[0] + self.box[2] / 2

    @property
    def cy(self) -> float:
        return self.box[1] + self.box[3] / 2


_PUNCT = re.compile(r"[-–—.,:;/&+*·•_~=()'\"]+")


def reading_frame(w: Word, width: int, height: int) -> tuple[float, float, float, float]:
    """A word's box in its own reading frame: (u0, u1) along the text,
    (v0, v1) across it, so that every direction groups the same way."""
    if w.angle == 90:  # reads upwards
        return height - (w.y + w.h), height - w.y, w.x, w.x + w.w
    if w.angle == 270:  # reads downwards
        return w.y, w.y + w.h, width - (w.x + w.w), width - w.x
    if w.angle == 180:
        return width - (w.x + w.w), width - w.x, height - (w.y + w.h), height - w.y
    return w.x, w.x + w.w, w.y, w.y + w.h


#: Buckets across a page in :func:`phrases`' index of lines.
BUCKETS = 512


def phrases(page: PageWords, gap: float = 1.0) -> list[Phrase]:
    """The page's words joined into phrases: same direction, overlapping
    across the line by half the smaller height, and apart along it by at
    most ``gap`` times the letters' height."""
    items = []
    for w in page.words:
        u0, u1, v0, v1 = reading_frame(w, page.width, page.height)
        items.append((w.angle, (v0 + v1) / 2, u0, u1, v0, v1, w))
    lines: list[list[tuple]] = []
    # Lines by direction and by where they are across (a page's height in
    # BUCKETS buckets), so that a word is compared with the lines near it only.
    bucket = max(1.0, max(page.width, page.height) / BUCKETS)
    buckets: dict[tuple[int, int], list[list[tuple]]] = defaultdict(list)
    for it in sorted(items, key=lambda t: (t[0], t[2])):
        angle, vc, u0, u1, v0, v1, w = it
        h = max(1.0, v1 - v0)
        best = None
        mark = _PUNCT.fullmatch(w.text) is not None
        near = {id(line): line for b in range(int((vc - 2 * h) // bucket),
                                              int((vc + 2 * h) // bucket) + 1)
                for line in buckets.get((angle, b), ())}
        for line in sorted(near.values(), key=lambda line: line[0][2]):
            la, lvc, lu0, lu1, lv0, lv1, lw = line[-1]
            lh = max(1.0, lv1 - lv0)
            hh = h
            if mark or _PUNCT.fullmatch(lw.text):
                # A dash or a dot is short: it belongs to the line its box
                # sits inside.
                if not (min(v1, lv1) - max(v0, lv0) > 0 and abs(lvc - vc) <= 0.6 * max(h, lh)):
                    continue
                hh = lh = max(h, lh)
            elif abs(lvc - vc) > 0.5 * min(h, lh) or abs(h - lh) > 0.6 * max(h, lh):
                continue
            if u0 - lu1 > gap * max(hh, lh) or u0 < lu0:
                continue
            best = line
            break
        if best is None:
            best = [it]
            lines.append(best)
        else:
            best.append(it)
        key = (angle, int(vc // bucket))
        if best not in buckets[key]:
            buckets[key].append(best)
    out = []
    for line in lines:
        ws = [t[6] for t in line]
        x0 = min(w.x for w in ws)
        y0 = min(w.y for w in ws)
        x1 = max(w.x + w.w for w in ws)
        y1 = max(w.y + w.h for w in ws)
        sizes = sorted(w.size for w in ws)
        out.append(Phrase(" ".join(w.text for w in ws), (x0, y0, x1 - x0, y1 - y0),
                          sizes[len(sizes) // 2], ws[0].angle, ws))
    return out


# -- what a title block says ---------------------------------------------------

@functools.lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """Upper case without accents, for matching labels and numbers."""
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).upper()


#: Field labels of a sheet number in the languages of the sets planzoom
#: reads (folded: upper case, no accents).
NUMBER_LABEL = re.compile(
    r"^(?:SHEET|DWG|DRG|DRAWING|DRAW|PLAN|PLANO|PAGE|DOC(?:UMENT)?|DOKUMENT|ZEICHNUNGS?"
    r"|TEGNING|RITNING|RISBA|PLANCHE|TAV(?:OLA)?|LAMINA|HOJA|BLATT|LISTA|ЛИСТ|ЧЕРТЕЖ"
    r"|N[°O]?\.? ?DE ?PLAN|SHT|PRANCHA|DESENHO)"
    r"\b[ .:#-]*(?:NO\b|NR\b|NUMBER|NUMMER|NUM\b|N[°O.]?\b|N[°º®]|#|ST\b|NUMERO|NUM\.?|Nº|№)?"
    r"[ .:#]*$"
    r"|^(?:DOKUMENT|RITNINGS|TEGNINGS|ZEICHNUNGS)-?(?:NUMMER|NR)\.?[ :]*$"
    r"|^(?:N[°O]|NO\.?|№) ?(?:DE )?(?:PLAN|PLANO|DESSIN|TAV(?:OLA)?)\b[ .:]*$"
    r"|^(?:(?:PLAN|BLATT|ZEICHNUNGS)-?(?:NR|NUMMER)|TEGNINGSNR)\.?[ :]*$"
    r"|^RISBA ?ST\.?[ :]*$|^TAV\.?(?: N\.?)?[ :]*$|^(?:PLAN )?REF(?:ERENCE)?\.? ?NO\.?[ :]*$",
)

#: Labels of a sheet's title field.
TITLE_LABEL = re.compile(
    r"^(?:(?:SHEET|DRAWING|DWG|DRG) ?(?:TITLE|NAME)|TITLE|DRAWING|TITOLO|OGGETTO|CONTENUTO"
    r"|TITULO|CONTENIDO|DENOMINACION|BEZEICHNUNG|PLANINHALT|INHALT|TITRE|DESIGNATION"
    r"|НАИМЕНОВАНИЕ|VSEBINA|NAZIV(?: RISBE)?|TEGNINGSTITEL|DESCRIPTION)\b[ .:]*$"
)

#: Labels of the other fields of a title block, whose values are not a
#: sheet's title (folded).
OTHER_LABEL = re.compile(
    r"^(?:DRAWN|DESIGNED|CHECKED|APPROVED|REVIEWED|CLIENT|OWNER|PROJECT|PROJ|JOB|DATE|ISSUE"
    r"|REV|REVISION|ARCHITECT|ENGINEER|CONSULTANT|ADDRESS|LOCATION|SITE ADDRESS|STAND|ERF|PHASE"
    r"|STATUS|PURPOSE|SUITABILITY|FILE|PLOT|PRINTED|COMMITTENTE|PROGETTISTA|DISEGNATORE"
    r"|CLIENTE|PROGETTO|DATA|STUDENTE|DOCENTE|CORSO|PROMOTOR|AUTOR|FECHA|PROYECTO|BAUHERR"
    r"|DATUM|PROJEKT|MAITRE|INVESTITOR|INVESTOR|PROJEKTANT|ЗАКАЗЧИК|ДАТА|РАЗРАБ"
    r"|ПРОВЕР|ГИП|СТАДИЯ|COPYRIGHT|VERS(?:ION|IONE)?|FORMAT|FORMATO|(?:BLATT)?GROSSE"
    r"|(?:PAPER|SHEET|PLOT) SIZE|GEZEICHNET|GEPRUFT|BEARBEITER|AUFTRAGGEBER|PLANVERFASSER"
    r"|SAGS?NR|SAG|BYGHERRE|TEGNET|KONTROLLERET|GODKENDT|DATO|UPPDRAG(?:SNR)?|BESTALLARE"
    r"|RITAD|GRANSKAD|KONSTR|HANDLAGGARE|ANDRING|PROPRIETARIO|RESPONSAVEL|DESENHISTA|OBRA"
    r"|ENDERECO|LOCAL|MATERIAL|MATERIALE|WERKSTOFF|MATERIAU)\b")

#: An issue date printed at the end of a title's line ("GLULAM CONNECTIONS
#: - 06/12/2019").
TRAILING_DATE = re.compile(r"\s*[-–—,]\s*[\d/ .]{6,}$")

MONTHS = re.compile(r"\b(?:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)[A-Z]*\.? \d|"
                     r"\b(?:MONDAY|TUESDAY|WEDNESDAY|THURSDAY|FRIDAY|SATURDAY|SUNDAY)\b|"
                     r"\d{1,4}[/.-]\d{1,2}[/.-]\d{2,4}")

#: Labels of the paper size's field, and the sizes it holds ("A0", "ARCH D").
FORMAT_LABEL = re.compile(r"^(?:FORMAT|FORMATO|(?:BLATT)?GROSSE|(?:PAPER|SHEET|PLOT) SIZE)\b")
PAPER_SIZE = re.compile(r"^(?:[AB][0-4]|(?:ANSI|ARCH) ?[A-E])$")

#: Labels of the scale field.
SCALE_LABEL = re.compile(r"^(?:SCALE|SCALA|ESCALA|MASSSTAB|MASSTAB|MAßSTAB|ECHELLE|МАСШТАБ"
                         r"|MERILO|MALESTOKK)\b[ .:]*")

SCALE_VALUE = re.compile(
    r"(?:\b1 ?: ?\d{1,5}\b|\d+(?:/\d+)?\" ?= ?\d+'(?: ?-? ?\d+\")?|AS (?:NOTED|INDICATED|SHOWN)"
    r"|\bN\.?T\.?S\.?\b|NOT TO SCALE|\bM ?1 ?: ?\d+)", re.I)

#: A sheet number's shape: optional letter groups (a discipline
#: designator, a project's code), digits, and separated groups (A-201,
#: A2-200, 100-00, 02.7, A001.01, S101, E1.3a, A-B5-1-00T, K33:01,
#: TEMPLE/28-1/24/SD-001, F014-PMEP-00-00-DR-E-01,
#: L02-R02D01-FOS-00-XX-DWG-AR-00001).
NUMBER_SHAPE = re.compile(
    r"^(?:[A-Z]{1,4}[-. :]|[A-Z]{1,8}/){0,3}(?:[A-Z]{1,4}[-. :]?)?\d{1,5}[A-Z]?"
    r"(?:[-. /_:]{1,3}[A-Z]{1,4}|[-. /_:]{0,3}[A-Z]{0,5}\d[A-Z0-9]{0,5}){0,8}$")

_DATE = re.compile(r"^\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}$|^\d{1,2}:\d{2}(:\d{2})?$")
_DATE_IN = re.compile(r"\d{1,2}/\d{1,2}/\d{2,4}|\d{4}[/.-]\d{1,2}[/.-]\d{1,2}"
                      r"|\d{1,2}\.\d{1,2}\.\d{4}")
_PHONE = re.compile(r"\d{3}[-. )]\d{3}[-. ]\d{4}")
_COUNTER = re.compile(r"^\d{1,4} ?(?:OF|DI|DE|VON|/|AV|ИЗ|OD) ?\d{1,4}$")
_YEAR = re.compile(r"^(?:19|20)\d{2}$")
_PHONE_LABEL = re.compile(r"^(?:TEL|TELEFON|PHONE|FAX|MOB|MOBILE|CELL)\b\.?:? ?\+?\d")
#: A number of letters alone, which only its field's label makes one.
_LETTER_CODE = re.compile(r"^[A-Z]{1,4}[-.][A-Z]{1,4}$")

#: US National CAD Standard discipline designators (UDS, sheet
#: identification), most specific first.
DISCIPLINES = {
    "FP": "fire protection", "FA": "fire alarm", "G": "general", "H": "hazardous materials",
    "V": "survey / mapping", "B": "geotechnical", "W": "civil works", "C": "civil",
    "L": "landscape", "S": "structural", "A": "architectural", "I": "interiors",
    "Q": "equipment", "F": "fire protection", "P": "plumbing", "D": "process",
    "M": "mechanical", "E": "electrical", "T": "telecommunications", "R": "resource",
    "X": "other disciplines", "Z": "contractor / shop drawings", "O": "operations",
}

#: Words of a title that say a discipline, in the languages planzoom reads
#: (folded), when the number has no designator.
TITLE_DISCIPLINES = [
    (re.compile(r"ELECTRIC|ELETTRIC|ELECTRIQUE|ELEKTR|ЭЛЕКТР|LIGHTING|POWER"), "electrical"),
    (re.compile(r"PLUMB|SANITAR|IDRAUL|SEWER|DRAIN|FONTANER"), "plumbing"),
    (re.compile(r"MECHANICAL|HVAC|VENTIL|HEATING|MECCANIC|KLIMA"), "mechanical"),
    (re.compile(r"STRUCT|STRUTTUR|ESTRUCTUR|FRAMING|FOUNDATION|FONDAZ|CIMENTAC|TRAGWERK"
                r"|КОНСТРУКЦ|STEEL|ARMATUR"), "structural"),
    (re.compile(r"LANDSCAP|PLANTING|PAESAGG|PAISAJ"), "landscape"),
    (re.compile(r"SURVEY|PLAT\b|TOPOGRAPH|RILIEVO"), "survey / mapping"),
    (re.compile(r"CIVIL|GRADING|ROADWAY|PAVING|STORM ?WATER|UTILIT"), "civil"),
    (re.compile(r"INTERIOR|ARREDO|FURNITURE|MOBILI"), "interiors"),
    (re.compile(r"PLAN|ELEVATION|SECTION|PIANTA|PROSPETT|SEZION|PLANTA|ALZADO|CORTE|GRUNDRISS"
                r"|ANSICHT|SCHNITT|FACADE|FASAD|TLORIS|PREREZ|COUPE|DETAIL|DETTAGL|ABACO"
                r"|SCHEDULE|DOOR|WINDOW|ROOF"), "architectural"),
]


def number_key(number: str) -> str:
    """The form two spellings of one sheet number share: A-501, A501,
    A.501 and "A 501" are all ``A501``."""
    return re.sub(r"[^0-9A-Z]", "", fold(number))


def number_shaped(text: str, labelled: bool = False) -> bool:
    """True if ``text`` looks like a sheet number. ``labelled``: it is the
    value of a sheet number's field, so a short date's shape ("5.1.00") is
    a number; a date with its year in full never is."""
    t = fold(text).strip(" .:;,()[]-")
    if _PHONE_LABEL.match(t):
        return False
    # "25 /02 /2015" is a date however it is spaced.
    if _DATE_IN.search(re.sub(r"\s*([/.-])\s*", r"\1", t)) and not (
            labelled and re.search(r"[A-Z]", t)):
        return False
    if labelled and _LETTER_CODE.match(t):
        return True  # "COV-S" under "DRAWING NO:"
    if not t or len(t) > 48 or not any(ch.isdigit() for ch in t):
        return False
    if (_DATE.match(t) and not labelled) or _COUNTER.match(t) or _YEAR.match(t) \
            or SCALE_VALUE.search(t):
        return False
    if _DATE_IN.search(t) and not (labelled and re.search(r"[A-Z]", t)):
        return False  # a date, unless its field holds a code ("CCC/25/01/25/MD/SD-001")
    if re.fullmatch(r"\d{6,}", t) or _PHONE.search(t):  # a phone, a job or a file number
        return False
    parts = t.split()
    if len(parts) > 1 and (any(p.isalpha() and len(p) > 1 for p in parts[1:])
                           or (parts[0].isalpha() and len(parts[0]) > 1)):
        return False  # words with a number among them ("TO 54TH AVE", "SR 167")
    return bool(NUMBER_SHAPE.match(t))


def discipline(number: str | None, title: str | None) -> str | None:
    """The discipline a sheet belongs to: from its number's designator as
    the US National CAD Standard defines it (A-201 → architectural, FP-1 →
    fire protection; ISO 19650's role code AR/ST/… the same way), else from
    its title's words; None when neither says."""
    if number:
        folded = fold(number)
        parts = [p for p in re.split(r"[^0-9A-Z]+", folded) if p]
        if len(parts) >= 5:  # ISO 19650: …-<type>-<role><number>, the role near the end
            for p in reversed(parts):
                if p.isalpha() and 1 <= len(p) <= 2 and p[0] in DISCIPLINES:
                    return DISCIPLINES[p[0]]
        head = re.match(r"^([A-Z]{1,2})[-. ]?\d", folded)
        if head:
            letters = head.group(1)
            for key in (letters, letters[0]):
                if key in DISCIPLINES:
                    return DISCIPLINES[key]
    if title:
        t = fold(title)
        for pattern, name in TITLE_DISCIPLINES:
            if pattern.search(t):
                return name
    return None


#: A bookmark or page label that names a sheet: "A101 - FLOOR PLAN",
#: "Sheets: L02-…-AR-00001 - Cover Sheet", "[1] LS-11435", "A2-03".
_HINT_PREFIX = re.compile(r"^(?:\[\d+\]\s*|(?:sheets?|tavole|fogli|planos|pl[aä]ne)\s*:\s*)",
                          re.IGNORECASE)
_HINT = re.compile(r"^(?P<number>\S{1,48})\s+[-\u2013\u2014:]\s+(?P<title>\S.*)$")


def parse_hint(text: str) -> dict | None:
    """``{"number", "title"}`` of a bookmark or page label that names a
    sheet (a number, or a number, a dash and a title), else None."""
    t = _HINT_PREFIX.sub("", text.strip()).strip()
    m = _HINT.match(t)
    if m and number_shaped(m["number"]):
        return {"number": m["number"], "title": m["title"].strip()}
    if number_shaped(t) and " " not in t and not (t.isdigit() and len(t) <= 3):
        return {"number": t, "title": ""}  # not a page counter ("1", "12")
    return None
