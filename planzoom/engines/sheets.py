"""Sheet identity from a page's words: number, title, discipline, scale,
and the references to other sheets, each with its box.

Pure functions over :class:`planzoom.engines.text.PageWords` (no I/O), in
two steps so that the costly one runs beside the render, page by page, and
the cheap one once per set:

- :func:`page_candidates` (per page, in the render's sandbox): the phrases
  a title block is made of, scored as a sheet number, a title, a scale,
  and the page's callouts, as a small JSON-able dict;
- :func:`identify_set` (per job, when it ends): picks each page's number
  and title with what the whole set shows — the same title-block cell on
  every sheet, values that differ from sheet to sheet where a number must
  (a project number printed on every sheet is not a sheet number), the
  numbering pattern, a drawing index that lists numbers and titles — and
  resolves callouts against the set's numbers.

How it is measured (``python -m bench.sheets``) and what it cannot do:
docs/sheets.md.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass

from planzoom.engines.text import (
    OCR_BELOW_GLYPHS,
    OCR_SURE_SCORE,
    PageWords,
    Word,
    ocr_words,
    read_words,
)

#: Confidence at or above which an answer is accepted without review.
ACCEPT_LEVEL = 0.8
#: Least score (with the set's evidence) of a sheet number read from the
#: text layer, and from OCR (whose misreadings of marks and dimensions
#: must not pass for a number on a sheet that has none).
MIN_SCORE, MIN_OCR_SCORE = 2.2, 3.0

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


def _frame(w: Word, width: int, height: int) -> tuple[float, float, float, float]:
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


def phrases(page: PageWords, gap: float = 0.9) -> list[Phrase]:
    """The page's words joined into phrases: same direction, overlapping
    across the line by half the smaller height, and apart along it by at
    most ``gap`` times the letters' height."""
    items = []
    for w in page.words:
        u0, u1, v0, v1 = _frame(w, page.width, page.height)
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
    r"^(?:SHEET|DWG|DRG|DRAWING|DRAW|PLAN|PLANO|PAGE|DOC(?:UMENT)?|ZEICHNUNGS?|TEGNING|RISBA"
    r"|PLANCHE|TAV(?:OLA)?|LAMINA|HOJA|BLATT|LISTA|ЛИСТ|ЧЕРТЕЖ|N[°O]?\.? ?DE ?PLAN|SHT)"
    r"\b[ .:#-]*(?:NO\b|NR\b|NUMBER|NUM\b|N[°O.]?\b|#|ST\b|NUMERO|NUMERO|NUM\.?|Nº|№)?[ .:#]*$"
    r"|^(?:N[°O]|NO\.?|№) ?(?:DE )?(?:PLAN|PLANO|DESSIN|TAV(?:OLA)?)\b[ .:]*$"
    r"|^(?:PLAN-?NR|BLATT-?NR|ZEICHNUNGS-?NR|TEGNINGSNR)\.?[ :]*$"
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
    r"|ПРОВЕР|ГИП|СТАДИЯ|COPYRIGHT)\b")

#: An issue date printed at the end of a title's line ("GLULAM CONNECTIONS
#: - 06/12/2019").
_TRAILING_DATE = re.compile(r"\s*[-–—,]\s*[\d/ .]{6,}$")

_MONTHS = re.compile(r"\b(?:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)[A-Z]*\.? \d|"
                     r"\b(?:MONDAY|TUESDAY|WEDNESDAY|THURSDAY|FRIDAY|SATURDAY|SUNDAY)\b|"
                     r"\d{1,4}[/.-]\d{1,2}[/.-]\d{2,4}")

#: Labels of the scale field.
SCALE_LABEL = re.compile(r"^(?:SCALE|SCALA|ESCALA|MASSSTAB|MASSTAB|MAßSTAB|ECHELLE|МАСШТАБ"
                         r"|MERILO|MALESTOKK)\b[ .:]*")

SCALE_VALUE = re.compile(
    r"(?:\b1 ?: ?\d{1,5}\b|\d+(?:/\d+)?\" ?= ?\d+'(?: ?-? ?\d+\")?|AS (?:NOTED|INDICATED|SHOWN)"
    r"|\bN\.?T\.?S\.?\b|NOT TO SCALE|\bM ?1 ?: ?\d+)", re.I)

#: A sheet number's shape: an optional discipline designator, digits, and
#: separated groups (A-201, A2-200, 100-00, 02.7, A001.01, S101, E1.3a,
#: L02-R02D01-FOS-00-XX-DWG-AR-00001).
NUMBER_SHAPE = re.compile(
    r"^(?:[A-Z]{1,4}[-. ]?)?\d{1,5}[A-Z]?"
    r"(?:[-. /_]{1,3}[A-Z]{1,3}|[-. /_]{0,3}[A-Z]{0,5}\d[A-Z0-9]{0,5}){0,8}$")

_DATE = re.compile(r"^\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}$|^\d{1,2}:\d{2}(:\d{2})?$")
_DATE_IN = re.compile(r"\d{1,2}/\d{1,2}/\d{2,4}|\d{4}[/.-]\d{1,2}[/.-]\d{1,2}"
                      r"|\d{1,2}\.\d{1,2}\.\d{4}")
_PHONE = re.compile(r"\d{3}[-. )]\d{3}[-. ]\d{4}")
_COUNTER = re.compile(r"^\d{1,4} ?(?:OF|DI|DE|VON|/|AV|ИЗ|OD) ?\d{1,4}$")
_YEAR = re.compile(r"^(?:19|20)\d{2}$")

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


def _number_shaped(text: str) -> bool:
    t = fold(text).strip(" .:;,()[]-")
    if not t or len(t) > 48 or not any(ch.isdigit() for ch in t):
        return False
    if _DATE.match(t) or _DATE_IN.search(t) or _COUNTER.match(t) or _YEAR.match(t) \
            or SCALE_VALUE.search(t):
        return False
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


# -- per page ------------------------------------------------------------------

#: Share of the page, from its right or bottom edge, where a title block is
#: looked for first.
EDGE = 0.38


def _zone_score(p: Phrase, width: int, height: int) -> float:
    """How title-block-like the place is: 1 at the bottom-right corner,
    toward 0 away from the right and bottom edges."""
    fx = p.cx / max(1, width)
    fy = p.cy / max(1, height)
    right = max(0.0, (fx - (1 - EDGE)) / EDGE)
    bottom = max(0.0, (fy - (1 - EDGE)) / EDGE)
    return max(right * (0.5 + 0.5 * fy), bottom * (0.5 + 0.5 * fx), right * bottom)


def _near(label: Phrase, p: Phrase, reach: float) -> float:
    """How well ``p`` sits as the value of field ``label``: after it on its
    line, or under it (within ``reach`` times the label's height), in the
    same direction. 0 when not at all."""
    if label is p or label.angle != p.angle:
        return 0.0
    h = max(label.box[2] if label.angle in (90, 270) else label.box[3], 1)
    lx, ly, lw, lh = label.box
    px, py, pw, ph = p.box
    if label.angle == 0:
        along, across = px - (lx + lw), (py + ph / 2) - (ly + lh / 2)
        below, offset = py - (ly + lh), px - lx
    elif label.angle == 90:
        along, across = (ly) - (py + ph), (px + pw / 2) - (lx + lw / 2)
        below, offset = px - (lx + lw), (ly + lh) - (py + ph)
    elif label.angle == 270:
        along, across = py - (ly + lh), (px + pw / 2) - (lx + lw / 2)
        below, offset = lx - (px + pw), py - ly
    else:
        along, across = lx - (px + pw), (py + ph / 2) - (ly + lh / 2)
        below, offset = ly - (py + ph), (lx + lw) - (px + pw)
    if -h <= along <= reach * 2 * h and abs(across) <= max(h, ph if label.angle in (0, 180)
                                                           else pw) * 0.8:
        return 1.0 - max(0.0, along) / (reach * 2 * h + 1)
    if -h <= below <= reach * h and -reach * 2 * h <= offset <= reach * 3 * h:
        return 0.8 - 0.5 * below / (reach * h + 1)
    # Above it: templates that print the label at the foot of its cell.
    above = -below - (ph if label.angle in (0, 180) else pw) - h
    if -h <= above <= reach * h and abs(offset) <= reach * 3 * h:
        return 0.5 - 0.3 * above / (reach * h + 1)
    return 0.0


@dataclass
class Candidate:
    text: str
    box: tuple[int, int, int, int]
    score: float
    size: float
    slot: tuple[int, int]  # the place on the sheet, in 2 % steps, for set-wide agreement

    def to_json(self) -> dict:
        return {"text": self.text, "box": list(self.box), "score": round(self.score, 3),
                "size": round(self.size, 2), "slot": list(self.slot)}

    @classmethod
    def from_json(cls, d: dict) -> Candidate:
        return cls(d["text"], tuple(d["box"]), float(d["score"]), float(d["size"]),
                   tuple(d["slot"]))


def _slot(p: Phrase, width: int, height: int) -> tuple[int, int]:
    return (int(p.cx / max(1, width) * 50), int(p.cy / max(1, height) * 50))


def _splits(p: Phrase) -> list[tuple[str, tuple[int, int, int, int], list[Word]]]:
    """The phrase and its sub-runs of words that could be a number on
    their own ("SHEET NO. A-201" → "A-201"), with their boxes."""
    out = [(p.text, p.box, p.words)]
    n = len(p.words)
    if n > 1 and any(c.isdigit() for c in p.text):
        for i in range(n):
            for j in range(i + 1, min(n, i + 4) + 1):
                if (i, j) == (0, n):
                    continue
                ws = p.words[i:j]
                x0 = min(w.x for w in ws)
                y0 = min(w.y for w in ws)
                x1 = max(w.x + w.w for w in ws)
                y1 = max(w.y + w.h for w in ws)
                out.append((" ".join(w.text for w in ws), (x0, y0, x1 - x0, y1 - y0), ws))
    return out


#: Candidates kept per page and field (the set-wide step picks among them).
KEEP = 8


def page_candidates(page: PageWords) -> dict:
    """A page's candidates for its sheet number, title and scale, and its
    callouts, as a dict (stored in the page's word sidecar; read back by
    :func:`identify_set`): ``{"numbers": [...], "titles": [...], "scale":
    …, "callouts": [...], "glyphs": n, "words": n}``. Each candidate has its
    text, box (full-resolution pixels), score, letter height (points) and
    slot (its place on the sheet in 2 % steps)."""
    width, height = page.width, page.height
    ph = phrases(page)
    if not ph:
        return {"numbers": [], "titles": [], "scale": None, "callouts": [],
                "glyphs": page.glyphs, "words": 0}
    zone = {id(p): _zone_score(p, width, height) for p in ph}
    block = [p for p in ph if zone[id(p)] > 0]
    sizes = sorted(p.size for p in (block or ph))
    median = sizes[len(sizes) // 2] or 1.0
    labels = [p for p in ph if NUMBER_LABEL.match(fold(p.text).strip())]
    # A phrase that starts with a label ("SHEET NO. A-201", "DWG NO: 12")
    inline = [p for p in ph if p not in labels and NUMBER_LABEL.match(
        fold(" ".join(w.text for w in p.words[:2])).strip())]
    title_labels = [p for p in ph if TITLE_LABEL.match(fold(p.text).strip())]
    label_words = {id(w) for lab in labels + title_labels for w in lab.words}

    # Values of other fields ("PROJECT: N96", "JOB NO. 1601"): a number that
    # holds one is the project's, or the project's joined to the sheet's.
    taken = set()
    for p in ph:
        words = [fold(w.text).strip(" :.#") for w in p.words]
        for i, w in enumerate(words[:-1]):
            if OTHER_LABEL.match(w) and any(ch.isdigit() for ch in words[i + 1]):
                taken.add(number_key(words[i + 1]))
    numbers: list[Candidate] = []
    for p in ph + _stacked_numbers(ph):
        for text, box, ws in _splits(p):
            if any(id(w) in label_words for w in ws):
                continue
            if not _number_shaped(text):
                continue
            size = sorted(w.size for w in ws)[len(ws) // 2]
            score = 1.5 * _zone_score(p, width, height)
            score += max(-1.0, min(2.0, 1.4 * _log2(size / median)))
            near = max([_near(lab, p, 3.0) for lab in labels] or [0.0])
            if p in inline and ws is not p.words and ws[0] is not p.words[0]:
                near = max(near, 1.0)
                if ws[-1] is p.words[-1]:
                    score += 0.3  # the whole value after the label
            score += 3.0 * near
            t = fold(text)
            if any(number_key(w.text) in taken for w in ws):
                score -= 1.5
            if re.match(r"^[A-Z]{1,2}[-. ]?\d", t):
                score += 0.6
            if re.fullmatch(r"\d{1,2}", t):
                score -= 0.6
            if len(ws) < len(p.words):
                score -= 0.4 if near == 0 else 0.2  # part of a longer line
            if re.search(r"[A-Z]{3,}", t) and not re.search(r"[A-Z]{1,4}\d|\d[A-Z]", t) \
                    and len(ws) > 1:
                score -= 1.0
            numbers.append(Candidate(text, box, score, size, _slot(p, width, height)))
    numbers.sort(key=lambda c: -c.score)
    numbers = _dedupe(numbers)[:KEEP]

    others = [p for p in ph if OTHER_LABEL.match(fold(p.text).strip())]
    titles: list[dict] = []
    for p in _blocks(ph, width, height):
        # An issue date printed after the title is not part of it, and no
        # reason to doubt it.
        t = fold(_TRAILING_DATE.sub("", p.text))
        if len(re.findall(r"[A-ZА-Я]", t)) < 3 or NUMBER_LABEL.match(t) or TITLE_LABEL.match(t):
            continue
        if SCALE_LABEL.match(t) or _number_shaped(p.text) or OTHER_LABEL.match(t) \
                or t.rstrip().endswith(":"):
            continue
        score = 1.2 * _zone_score(p, width, height) + max(-1.0, min(1.5, 1.2 * _log2(
            p.size / median)))
        near = max([_near(lab, p, 3.0) for lab in title_labels] or [0.0])
        score += 2.5 * near
        score -= 2.0 * max([_near(lab, p, 2.0) for lab in others] or [0.0])
        if "@" in p.text or "WWW" in t or re.search(r"\+?\d[\d ()-]{7,}", t) \
                or _MONTHS.search(t):
            score -= 2.0
        text = _TRAILING_DATE.sub("", p.text).strip()
        c = Candidate(text, p.box, score, p.size, _slot(p, width, height)).to_json()
        c["lines"] = _lines(p)
        titles.append(c)
    titles.sort(key=lambda c: -c["score"])
    titles = _dedupe_dicts(titles)[:2 * KEEP]

    scale = None
    for lab in (p for p in ph if SCALE_LABEL.match(fold(p.text))):
        rest = SCALE_LABEL.sub("", fold(lab.text)).strip(" :")
        if SCALE_VALUE.search(rest):
            scale = Candidate(lab.text[len(lab.text) - len(rest):].strip(), lab.box, 1.0,
                              lab.size, _slot(lab, width, height))
            break
        values = sorted((p for p in ph if _near(lab, p, 4.0) > 0 and SCALE_VALUE.search(p.text)),
                        key=lambda p: -_near(lab, p, 4.0))
        if values:
            scale = Candidate(values[0].text, values[0].box, 1.0, values[0].size,
                              _slot(values[0], width, height))
            break
    return {"numbers": [c.to_json() for c in numbers], "titles": titles,
            "scale": scale.to_json() if scale else None, "callouts": callouts(ph),
            "glyphs": page.glyphs, "words": len(page.words), "source": page.source}


def _stacked_numbers(ph: list[Phrase]) -> list[Phrase]:
    """Numbers printed on two lines of one cell ("SC20" over "-TN01"): a
    line that ends with a dash, or whose next line starts with one, joined
    to the line under it."""
    out = []
    singles = [p for p in ph if p.angle == 0 and len(p.words) == 1
               and any(c.isdigit() for c in p.text)]
    for p in singles:
        for q in singles:
            if q is p or not (p.text.endswith("-") or q.text.startswith("-")):
                continue
            h = p.box[3]
            gap = q.box[1] - (p.box[1] + h)
            if -0.2 * h <= gap <= 1.4 * h and abs(q.box[3] - h) <= 0.3 * h and \
                    abs((q.box[0] + q.box[2] / 2) - (p.box[0] + p.box[2] / 2)) <= 0.6 * max(
                        p.box[2], q.box[2]):
                x0, y0 = min(p.box[0], q.box[0]), p.box[1]
                x1 = max(p.box[0] + p.box[2], q.box[0] + q.box[2])
                y1 = q.box[1] + q.box[3]
                w = Word(p.text.rstrip("-") + "-" + q.text.lstrip("-"), x0, y0, x1 - x0,
                         y1 - y0, p.size, 0)
                out.append(Phrase(w.text, (x0, y0, x1 - x0, y1 - y0), p.size, 0, [w]))
    return out


def _log2(x: float) -> float:
    import math

    return math.log2(x) if x > 0 else -4.0


def _dedupe(cands: list[Candidate]) -> list[Candidate]:
    seen: set[tuple[str, tuple[int, int, int, int]]] = set()
    out = []
    for c in cands:
        key = (c.text, c.box)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _dedupe_dicts(cands: list[dict]) -> list[dict]:
    seen: set[tuple] = set()
    out = []
    for c in cands:
        key = (c["text"], tuple(c["box"]))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _lines(p: Phrase) -> list[str]:
    """The folded text of each line a title candidate is made of."""
    return [fold(x) for x in getattr(p, "lines", None) or [p.text]]


def _pframe(p: Phrase, width: int, height: int) -> tuple[float, float, float, float]:
    """A phrase's box in its reading frame (see :func:`_frame`)."""
    x, y, w, h = p.box
    return _frame(Word("", x, y, w, h, p.size, p.angle), width, height)


#: Lines of one title at most.
TITLE_LINES = 4


def _blocks(ph: list[Phrase], width: int, height: int) -> list[Phrase]:
    """Phrases, and runs of lines stacked in one cell joined (same
    direction and letter size, left-aligned or centred, at most a line
    apart), for titles set on two to four lines."""
    out = list(ph)
    frames = {id(p): _pframe(p, width, height) for p in ph}
    ordered = sorted(ph, key=lambda p: (p.angle, frames[id(p)][2]))
    for i, p in enumerate(ordered):
        run = [p]
        for q in ordered[i + 1:]:
            if q.angle != p.angle:
                break
            lu0, lu1, lv0, lv1 = frames[id(run[-1])]
            u0, u1, v0, v1 = frames[id(q)]
            lh = lv1 - lv0
            if v0 - lv1 > 1.0 * lh:
                break
            if v0 < lv1 - 0.3 * lh or abs((v1 - v0) - lh) > 0.25 * lh:
                continue
            left = abs(u0 - lu0) <= 0.8 * lh
            centred = abs((u0 + u1) / 2 - (lu0 + lu1) / 2) <= 0.8 * lh
            if left or centred:
                run.append(q)
                x0 = min(r.box[0] for r in run)
                y0 = min(r.box[1] for r in run)
                x1 = max(r.box[0] + r.box[2] for r in run)
                y1 = max(r.box[1] + r.box[3] for r in run)
                block = Phrase(" ".join(r.text for r in run), (x0, y0, x1 - x0, y1 - y0),
                               p.size, p.angle, [w for r in run for w in r.words])
                block.lines = [r.text for r in run]
                out.append(block)
                if len(run) == TITLE_LINES:
                    break
    return out


# -- callouts ------------------------------------------------------------------

_REF_WORDS = re.compile(
    r"\b(?:SEE|REF\.?|REFER TO|ON|SHEET|SHT\.?|DWG\.?|VEDI|VEDERE|SIEHE|VOIR|VER)\s+"
    r"(?:SHEET\s+|SHT\.?\s+|DWG\.?\s+|DRAWING\s+|TAV\.?\s+)?"
    r"([A-Z]{1,3}[-. ]?\d{1,4}(?:[.-]\d{1,3})?[A-Z]?)\b")
_SLASH_REF = re.compile(r"^(\d{1,3}|[A-Z]\d?)\s*/\s*([A-Z]{1,3}[-.]?\d{1,4}(?:[.-]\d{1,3})?)$")


def callouts(ph: list[Phrase]) -> list[dict]:
    """References to other sheets on a page, unresolved: ``{"text",
    "number", "box"}`` where ``number`` is the sheet it names as printed.
    Three shapes: words ("SEE A-201", "REF. S-101", "DETAIL 5 ON SHEET
    A-502"), a slash ("3/A-501"), and a bubble (a detail number with a
    sheet number under it, a line apart, centred)."""
    out = []
    for p in ph:
        t = fold(p.text)
        for m in _REF_WORDS.finditer(t):
            out.append({"text": p.text, "number": m.group(1), "box": list(p.box)})
        for w in p.words:
            m = _SLASH_REF.match(fold(w.text))
            if m:
                out.append({"text": w.text, "number": m.group(2),
                            "box": [w.x, w.y, w.w, w.h]})
    words = [w for p in ph for w in p.words if w.angle == 0]
    # A sheet number under a detail number or a section letter: any
    # number-shaped word but a bare one- to three-digit number (dimensions
    # stack those); :func:`identify_set` keeps only those the set has.
    shaped = [w for w in words if _number_shaped(w.text)
              and not re.fullmatch(r"\d{1,3}", fold(w.text))]
    detail = [w for w in words if re.fullmatch(r"\d{1,2}|[A-Z]\d?", fold(w.text))]
    for s in shaped:
        cx = s.x + s.w / 2
        for d in detail:
            dcx = d.x + d.w / 2
            gap = s.y - (d.y + d.h)
            if abs(dcx - cx) <= 0.35 * max(s.w, d.w) and -0.2 * s.h <= gap <= 2.0 * s.h \
                    and abs(d.h - s.h) <= 0.6 * max(d.h, s.h):
                x0, y0 = min(d.x, s.x), d.y
                x1, y1 = max(d.x + d.w, s.x + s.w), s.y + s.h
                out.append({"text": f"{d.text}/{s.text}", "number": s.text,
                            "box": [x0, y0, x1 - x0, y1 - y0]})
                break
    return out


# -- the whole set ---------------------------------------------------------------

@dataclass
class Sheet:
    """One page's sheet identity (docs/sheets.md)."""

    page: int
    number: str | None = None
    title: str | None = None
    discipline: str | None = None
    scale: str | None = None
    confidence: float = 0.0
    needs_review: bool = True
    source: str = "none"
    box: list[int] | None = None
    title_box: list[int] | None = None
    scale_box: list[int] | None = None
    references: list[dict] | None = None

    def to_json(self) -> dict:
        return {"page": self.page, "number": self.number, "title": self.title,
                "discipline": self.discipline, "scale": self.scale,
                "confidence": round(self.confidence, 3), "needs_review": self.needs_review,
                "source": self.source, "box": self.box, "title_box": self.title_box,
                "scale_box": self.scale_box, "references": self.references or []}


def identify_set(pages: dict[int, dict | None], source: str = "text") -> list[Sheet]:
    """Each page's sheet identity from its candidates (:func:`page_candidates`;
    None for a page with no words read, e.g. an image), with what the set
    shows as a whole. Pages sorted by number; the result has one
    :class:`Sheet` per key of ``pages``."""
    numbered = {n: c for n, c in pages.items() if c and c.get("numbers")}
    count = len(numbered)
    # How many pages show each value: a value on most pages of a set (a
    # project number) is not what tells its sheets apart.
    places: dict[str, list[tuple[int, tuple[int, int]]]] = defaultdict(list)
    for n, c in numbered.items():
        for x in c["numbers"]:
            places[number_key(x["text"])].append((n, tuple(x["slot"])))
    seen = _Seen(places)
    # The slot that wins on most pages: the template's number cell.
    slots = Counter()
    for c in numbered.values():
        best = _pick(c["numbers"], seen, count, None)
        if best:
            slots[tuple(best["slot"])] += 1
    cell = None
    if count >= 3 and slots:
        slot, hits = slots.most_common(1)[0]
        if hits >= max(2, 0.5 * count):
            cell = slot
    # Lines of title candidates printed on most sheets: the project's name,
    # the firm's, a field's fixed text; not what names a sheet.
    titled = [c for c in pages.values() if c and c.get("titles")]
    line_pages = Counter()
    for c in titled:
        for line in {ln for t in c["titles"] for ln in t.get("lines", [fold(t["text"])])}:
            line_pages[line] += 1
    common = {ln for ln, k in line_pages.items()
              if len(titled) >= 2 and k >= max(2, 0.6 * len(titled))}
    out = []
    chosen: dict[int, dict] = {}
    for n in sorted(pages):
        c = pages[n]
        sheet = Sheet(page=n)
        if not c:
            out.append(sheet)
            continue
        best = _pick(c.get("numbers", []), seen, count, cell)
        ocr = c.get("source") == "ocr"
        if best and best["adj"] >= (MIN_OCR_SCORE if ocr else MIN_SCORE):
            chosen[n] = best
            sheet.number = _clean_number(best["text"])
            sheet.box = best["box"]
            sheet.source = c.get("source") or source
            sheet.confidence = _confidence(best, c["numbers"], seen, count, cell)
            if sheet.source == "ocr":
                # What OCR read is never accepted unseen: a person confirms it.
                sheet.confidence = min(sheet.confidence, ACCEPT_LEVEL - 0.05)
        title = _pick_title(c.get("titles", []), best, common)
        if title:
            sheet.title = title["text"]
            sheet.title_box = title["box"]
            if sheet.source == "none":
                sheet.source = c.get("source") or source
        if c.get("scale"):
            sheet.scale = c["scale"]["text"]
            sheet.scale_box = c["scale"]["box"]
        out.append(sheet)
    index = {number_key(s.number): s.page for s in out if s.number}
    for s in out:
        s.discipline = discipline(s.number, s.title)
        s.needs_review = s.confidence < ACCEPT_LEVEL
        c = pages[s.page]
        refs = []
        for ref in (c or {}).get("callouts", []):
            target = index.get(number_key(ref["number"]))
            if target is not None and target != s.page:
                refs.append({"number": _clean_number(ref["number"]), "page": target,
                             "box": ref["box"], "text": ref["text"]})
        s.references = refs
    return out


def _clean_number(text: str) -> str:
    """A number as a person types it: "02 . 6" → "02.6", "HT14- XBD- A2-03"
    → "HT14-XBD-A2-03"."""
    text = re.sub(r"\s*([-./_])\s*", r"\1", text.strip(" .:;,()[]-"))
    return re.sub(r"\s+", " ", text)


class _Seen:
    """On how many pages a value sits at (about) the same place: a project
    number is printed in one cell of every sheet; a "2" in a dimension on
    one sheet and in the number cell of another is not the same thing."""

    def __init__(self, places: dict[str, list[tuple[int, tuple[int, int]]]]):
        self.places = places

    def pages(self, x: dict) -> int:
        sx, sy = x["slot"]
        return len({n for n, (px, py) in self.places.get(number_key(x["text"]), [])
                    if abs(px - sx) <= 1 and abs(py - sy) <= 1})


def _pick(numbers: list[dict], seen: _Seen, count: int, cell) -> dict | None:
    best = None
    for x in numbers:
        adj = x["score"]
        repeats = seen.pages(x)
        if count >= 3 and repeats >= max(2, 0.6 * count):
            adj -= 3.0  # the same on most sheets: the project's, not the sheet's
        elif count >= 2 and repeats == count:
            adj -= 2.0
        if cell is not None:
            dx, dy = abs(x["slot"][0] - cell[0]), abs(x["slot"][1] - cell[1])
            adj += 1.5 if dx <= 1 and dy <= 1 else -0.5
        if best is None or adj > best["adj"]:
            best = {**x, "adj": adj}
    return best


def _confidence(best: dict, numbers: list[dict], seen: _Seen, count: int, cell) -> float:
    """From the winner's score and its lead over the next value: a number
    read in a labelled field, in the set's number cell, far ahead of any
    other, is near 1."""
    others = [_pick([x], seen, count, cell) for x in numbers
              if number_key(x["text"]) != number_key(best["text"])]
    second = max((o["adj"] for o in others if o), default=0.0)
    lead = best["adj"] - second
    conf = 0.25 + 0.12 * min(best["adj"], 5.0) + 0.1 * min(lead, 3.0)
    return max(0.0, min(1.0, conf))


def _pick_title(titles: list[dict], number: dict | None, common: set[str]) -> dict | None:
    """The best title candidate: its own score, near the number, and none
    of its lines printed on most of the set's sheets."""
    best = None
    for t in titles:
        adj = t["score"]
        lines = t.get("lines") or [fold(t["text"])]
        if number and number_key(number.get("text", "")) and \
                number_key(number["text"]) in number_key(t["text"]):
            continue  # the number's own line
        shared = sum(ln in common for ln in lines)
        if shared == len(lines):
            continue
        adj -= 1.5 * shared
        if number:
            # Near the number: titles sit beside or above it in the block.
            nx, ny, nw, nh = number["box"]
            tx, ty, tw, th = t["box"]
            dist = (abs((tx + tw / 2) - (nx + nw / 2)) + abs((ty + th / 2) - (ny + nh / 2)))
            adj += 3.0 * max(0.0, 1.0 - dist / (12 * max(nh, nw, 1)))
        if best is None or adj > best["adj"]:
            best = {**t, "adj": adj}
    return best if best and best["adj"] > 0.8 else None


# -- a page, beside its render ----------------------------------------------------

def page_text(page, width: int, height: int, ocr: bool = True) -> PageWords:
    """An open page's words: its text layer (:func:`read_words`), and where
    it has (almost) none, what OCR reads in its title block
    (:func:`ocr_words`, upright, then turned when nothing upright looks
    like a sheet number; ``source`` "ocr")."""
    found = read_words(page, width, height)
    if ocr and found.glyphs < OCR_BELOW_GLYPHS:
        read = ocr_words(page, width, height)
        numbers = page_candidates(read)["numbers"] if read.words else []
        if read.words and (not numbers or numbers[0]["score"] < OCR_SURE_SCORE):
            # Words, but nothing like a number: the sheet may be plotted
            # turned. (No words at all: there is nothing to read turned.)
            turned = ocr_words(page, width, height, (90, 270))
            read.words.extend(turned.words)
            read.glyphs += turned.glyphs
        if read.words:
            found.words.extend(read.words)
            found.glyphs += read.glyphs
            found.source = "ocr"
    return found


def write_page_text(page, width: int, height: int, out_base: str) -> int:
    """Read an open page's words (:func:`page_text`) and write, beside a
    raster at ``out_base``: ``<out_base>.words.json.gz``, the page's word
    sidecar (docs/sheets.md), and ``<out_base>.sheet.json``, its sheet
    candidates (:func:`page_candidates`). Returns the words written."""
    import gzip
    import json

    found = page_text(page, width, height)
    with gzip.open(out_base + ".words.json.gz", "wt", encoding="utf-8", compresslevel=6) as f:
        json.dump(found.to_json(), f, ensure_ascii=False, separators=(",", ":"))
    with open(out_base + ".sheet.json", "w", encoding="utf-8") as f:
        json.dump(page_candidates(found), f, ensure_ascii=False, separators=(",", ":"))
    return len(found.words)
