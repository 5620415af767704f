"""Sheet identity from a page's words: number, title, discipline, scale,
and the references to other sheets, each with its box.

Pure functions over :class:`planzoom.engines.text.PageWords` (no I/O; the
phrases and labels they read are :mod:`planzoom.engines.titleblock`'s), in
two steps so that the costly one runs beside the render, page by page, and
the cheap one once per set:

- :func:`page_candidates` (per page, in the render's sandbox): the phrases
  a title block is made of, scored as a sheet number, a title, a scale,
  and the page's callouts, as a small JSON-able dict;
- :func:`planzoom.engines.sheet_set.identify_set` (per job, when it ends): picks each page's number
  and title with what the whole set shows — the same title-block cell on
  every sheet, values that differ from sheet to sheet where a number must
  (a project number printed on every sheet is not a sheet number), the
  numbering pattern, the PDF's bookmarks naming the sheets — and resolves
  callouts against the set's numbers.

:mod:`planzoom.engines.sidecar` reads a page's words and candidates beside
its render and writes them next to its raster.

How it is measured (``python -m bench.sheets``) and what it cannot do:
docs/sheets.md.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, replace

from planzoom.engines.callouts import VIEW_TITLE, callouts, views
from planzoom.engines.text import PageWords, Word
from planzoom.engines.title_fields import date_of, title_fields
from planzoom.engines.titleblock import (
    FORMAT_LABEL,
    MONTHS,
    NUMBER_LABEL,
    OTHER_LABEL,
    PAPER_SIZE,
    SCALE_LABEL,
    TITLE_LABEL,
    TRAILING_DATE,
    Phrase,
    fold,
    number_key,
    number_shaped,
    parse_hint,
    phrases,
    reading_frame,
)

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


#: A label's last word that says "number" (folded).
_SAYS_NUMBER = re.compile(r"(?:NR|NO|NUMBER|NUMMER|NUM|N°|Nº|№|#)\.?[ :]*$")

#: A word that makes the sheet number after it another sheet's (folded).
REFERENCE_WORD = re.compile(r"^(?:SEE(?: ALSO)?|REF\.?|REFER TO|CONT(?:INUED|\.)? ON|VEDI|VEDERE"
                            r"|SIEHE|VOIR|VER)[ .:]*$")


def _after(first: Phrase, p: Phrase) -> bool:
    """True if ``p`` follows ``first`` on its line, within twice the height
    of ``first``."""
    if first is p or first.angle != p.angle:
        return False
    along, across, _, _, h, p_across = _offsets(first, p)
    return -h <= along <= 2 * h and abs(across) <= max(h, p_across)


def _offsets(label: Phrase, p: Phrase) -> tuple[float, float, float, float, float, float]:
    """Where ``p`` lies from ``label``, in their reading direction: (gap
    along the line after it, offset across it, gap below it, offset along
    it from its start, the label's letter height, ``p``'s height)."""
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
    return along, across, below, offset, h, ph if label.angle in (0, 180) else pw


def _near(label: Phrase, p: Phrase, reach: float, by_value: bool = False,
          cell: bool = False) -> float:
    """How well ``p`` sits as the value of field ``label``: after it on its
    line, or under it (within ``reach`` times the label's height), in the
    same direction. 0 when not at all. ``by_value``: within reach of the
    larger of the label's and ``p``'s heights (a 2 pt "PLAN REF NO" over
    its 5 pt number, a 13 pt number after its 8 pt "Dwg. No."). ``cell``:
    under it as far to the right as a value centred in a wide cell sits,
    judged by the value's letter height (a title, or a client's name,
    under a label at the cell's left)."""
    if label is p or label.angle != p.angle:
        return 0.0
    along, across, below, offset, h, p_across = _offsets(label, p)
    v = max(h, p_across) if by_value else h
    if -h <= along <= reach * 2 * v and abs(across) <= max(h, p_across) * 0.8:
        return 1.0 - max(0.0, along) / (reach * 2 * v + 1)
    first = p.words[0]
    o = reach * 3 * (max(h, first.h if p.angle in (0, 180) else first.w) if cell else h)
    if -h <= below <= reach * v and -reach * 2 * h <= offset <= o:
        return 0.8 - 0.5 * below / (reach * v + 1)
    # Above it: templates that print the label at the foot of its cell.
    above = -below - p_across - h
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


#: A street address ("1810 SOUTH PARK STREET", "3232 AALSETH LANE"): the
#: project's place, never a sheet's title.
_ADDRESS = re.compile(r"^\d{1,6}[A-Z]? (?:[A-Z.'-]+ ){1,4}(?:STREET|ST|AVENUE|AVE|ROAD|RD|LANE|LN"
                      r"|DRIVE|DR|BOULEVARD|BLVD|WAY|COURT|CT|PLACE|PL|HIGHWAY|HWY|PARKWAY|PKWY"
                      r"|STRASSE|STR|VIA|CALLE|RUE)\b\.?")

#: A sheet counter's line ("SHEET 7 OF 13", "BLATT 2 VON 5"), folded.
_COUNTER_LINE = re.compile(r"^(?:SHEET|PAGE|BLATT|FOGLIO|HOJA|PLANCHE|PRANCHA|BLAD|SIDE|LISTA)"
                           r"\b[ .:]*\d{1,4} ?(?:OF|DI|DE|VON|AV|/|AF|OD) ?\d{1,4}$")

#: A postal code and its town ("2860 SØBORG", "10779 BERLIN", "D-76275
#: ETTLINGEN"), folded.
_POSTAL = re.compile(r"^(?:[A-Z]{1,2}-)?\d{4,5} [^\W\d_]{3,}")


def _grid_letters(t: str) -> bool:
    """True for a sheet border's zone letters read as one line ("A B C D
    E F G H", "- FEDCBAGH"): four or more letters, each once, that are a run
    of the alphabet (two missing at most)."""
    letters = [c for c in t if c.isalpha()]
    if len(letters) < 4 or any(not c.isascii() for c in letters) \
            or len(set(letters)) != len(letters) or re.search(r"\d", t):
        return False
    return ord(max(letters)) - ord(min(letters)) + 1 <= len(letters) + 2


_FILE_NAME = re.compile(r"\.(?:DWG|DXF|DGN|RVT|PLN|PLA|SKP|PDF|IFC)\b")

#: Candidates kept per page and field (the set-wide step picks among them).
KEEP = 8


def page_candidates(page: PageWords, hints: list[str] | tuple = ()) -> dict:
    """A page's candidates for its sheet number, title, scale, revision
    mark and issue date, its callouts and view titles, as a dict (stored in
    the page's word sidecar; read back by
    :func:`planzoom.engines.sheet_set.identify_set`): ``{"numbers": [...],
    "titles": [...], "scale": …, "revision": …, "issued": …, "callouts":
    [...], "views": [...], "index": [...], "glyphs": n, "words": n}``
    (``index``: the rows of a drawing index printed on it, :func:`index_rows`)
    (:mod:`planzoom.engines.title_fields` reads the last three). Each candidate has its
    text, box (full-resolution pixels), score, letter height (points) and
    slot (its place on the sheet in 2 % steps). ``hints``: what the PDF's
    bookmarks and page label say of the page, kept as ``{"number",
    "title"}`` where they name a sheet (:func:`~planzoom.engines.titleblock.parse_hint`)."""
    width, height = page.width, page.height
    named = _dedupe([h for h in map(parse_hint, hints) if h],
                    lambda h: (h["number"], h["title"]))
    if any(w.curved for w in page.words):  # a seal's ring of words names no field
        page = replace(page, words=[w for w in page.words if not w.curved])
    ph = phrases(page)
    if not ph:
        return {"numbers": [], "titles": [], "scale": None, "revision": None, "issued": None,
                "callouts": [], "views": [],
                "glyphs": page.glyphs, "words": 0, "hints": named, "index": []}
    zone = {id(p): _zone_score(p, width, height) for p in ph}
    block = [p for p in ph if zone[id(p)] > 0]
    sizes = sorted(p.size for p in (block or ph))
    median = sizes[len(sizes) // 2] or 1.0
    labels = [p for p in ph if NUMBER_LABEL.match(fold(p.text).strip())]
    # "SEE SHEET TS03" (a match line, a note) names another sheet: its
    # "SHEET" is no label, and what follows is no number of this sheet's.
    refs = [p for p in ph if REFERENCE_WORD.match(fold(p.text).strip())]
    referring = refs + [lab for lab in labels if any(_after(r, lab) for r in refs)]
    labels = [lab for lab in labels if lab not in referring]
    # A phrase that starts with a label ("SHEET NO. A-201", "DWG NO: 12",
    # "Plan-Nr.: 6075_A_GR_EG_901"); a one-word label must say "number"
    # ("SHEET 1 OF 12" is a counter).
    inline = [p for p in ph if p not in labels and len(p.words) > 1 and (
        NUMBER_LABEL.match(fold(" ".join(w.text for w in p.words[:2])).strip())
        or (NUMBER_LABEL.match(first := fold(p.words[0].text).strip())
            and _SAYS_NUMBER.search(first)))]
    title_labels = [p for p in ph if TITLE_LABEL.match(fold(p.text).strip())]
    label_words = {id(w) for lab in labels + title_labels for w in lab.words}

    # Values of other fields ("PROJECT: N96", "JOB NO. 1601"): a number that
    # holds one is the project's, or the project's joined to the sheet's.
    taken = set()
    others = [p for p in ph if OTHER_LABEL.match(fold(p.text).strip())
              and not NUMBER_LABEL.match(fold(p.text).strip())]
    for p in ph:
        words = [fold(w.text).strip(" :.#") for w in p.words]
        for i, w in enumerate(words[:-1]):
            if OTHER_LABEL.match(w) and any(ch.isdigit() for ch in words[i + 1]):
                taken.add(number_key(words[i + 1]))
    formats = [p for p in others if FORMAT_LABEL.match(fold(p.text).strip())]
    numbers: list[Candidate] = []
    glued = _glued_values(ph)
    for p in ph + _stacked_numbers(ph) + glued:
        labelled = 1.0 if p in glued else max(
            [_near(lab, p, 3.0, True) for lab in labels] or [0.0])
        for text, box, ws in _splits(p):
            if any(id(w) in label_words for w in ws):
                continue
            # A part of a line is judged where it stands ("TX17886.00 - S2.01"
            # under "PROJECT NO." and "DRAWING NO.": each under its own).
            part = p if ws is p.words else Phrase(text, box, p.size, p.angle, ws)
            near = labelled if part is p else max(
                [labelled] + [_near(lab, part, 3.0, True) for lab in labels])
            if p in inline and ws is not p.words and ws[0] is not p.words[0]:
                near = max(near, 1.0)
            if not number_shaped(text, labelled=near >= 0.5):
                continue
            size = sorted(w.size for w in ws)[len(ws) // 2]
            score = 1.5 * _zone_score(p, width, height)
            score += max(-1.0, min(2.0, 1.4 * _log2(size / median)))
            if p in inline and near == 1.0 and ws[-1] is p.words[-1]:
                score += 0.3  # the whole value after the label
            score += 3.0 * near
            if any(_after(r, p) for r in referring) or REFERENCE_WORD.match(
                    fold(p.words[0].text)):
                score -= 3.0
            t = fold(text)
            if any(number_key(w.text) in taken for w in ws):
                score -= 1.5
            # Under or after another field's label ("PROJECT NO:" over
            # "1601") and not a number label's: that field's value.
            other = max([_near(lab, part, 2.0) for lab in others] or [0.0])
            if other > near:
                score -= 2.0 * other
            if PAPER_SIZE.match(t) and any(_near(lab, p, 8.0) for lab in formats):
                score -= 2.0  # the paper's size ("FORMAT A0")
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
    numbers = _dedupe(numbers, lambda c: (c.text, c.box))[:KEEP]

    titles: list[dict] = []
    for p in _blocks(ph, width, height):
        # An issue date printed after the title is not part of it, and no
        # reason to doubt it.
        t = fold(TRAILING_DATE.sub("", p.text))
        if len(re.findall(r"[A-ZА-Я]", t)) < 3 or NUMBER_LABEL.match(t) or TITLE_LABEL.match(t):
            continue
        if SCALE_LABEL.match(t) or number_shaped(p.text) or OTHER_LABEL.match(t) \
                or t.rstrip().endswith(":") or _COUNTER_LINE.search(t) or _grid_letters(t):
            continue
        score = 1.2 * _zone_score(p, width, height) + max(-1.0, min(1.5, 1.2 * _log2(
            p.size / median)))
        near = max([_near(lab, p, 3.0, cell=True) for lab in title_labels] or [0.0])
        score += 2.5 * near
        score -= 2.0 * max([_near(lab, p, 2.0, cell=True) for lab in others] or [0.0])
        if "@" in p.text or "WWW" in t or re.search(r"\+?\d[\d ()-]{7,}", t) \
                or MONTHS.search(t) or _ADDRESS.match(t) or _POSTAL.match(t):
            score -= 2.0  # an e-mail, a web or street address, a phone, a date
        if t.startswith(("- ", "-")):
            score -= 1.0  # the end of a line cut from its start
        if VIEW_TITLE.match(t.strip()):
            score -= 1.0  # one view's title ("SECTION D-D"), not the sheet's
        if _FILE_NAME.search(t):
            score -= 1.5  # a CAD file's name ("MO-S_4.dwg")
        text = _without_label(TRAILING_DATE.sub("", p.text).strip())
        c = Candidate(text, p.box, score, p.size, _slot(p, width, height)).to_json()
        c["lines"] = _lines(p)
        dated = date_of(p.text[len(text):].strip(" -–—,"))
        if dated:
            c["date"] = dated  # the sheet's issue date where no field gives one
        titles.append(c)
    titles.sort(key=lambda c: -c["score"])
    titles = _dedupe(titles, lambda c: (c["text"], tuple(c["box"])))[:2 * KEEP]

    fields = {}
    for name, found in title_fields(ph, _near).items():
        if found:
            text, p = found
            fields[name] = Candidate(text, p.box, 1.0, p.size, _slot(p, width, height)).to_json()
        else:
            fields[name] = None
    return {"numbers": [c.to_json() for c in numbers], "titles": titles,
            "scale": fields["scale"], "revision": fields["revision"],
            "issued": fields["issued"], "callouts": callouts(ph), "views": views(ph),
            "glyphs": page.glyphs, "words": len(page.words), "source": page.source,
            "hints": named, "index": index_rows(ph)}


def _without_label(text: str) -> str:
    """A title without the field's label it was printed after ("Drawing
    Title: Roof Plan" → "Roof Plan"; a one-word label only with its colon)."""
    words = text.split()
    for k in (3, 2, 1):
        head = " ".join(words[:k])
        if len(words) > k and (k > 1 or head.endswith(":")) \
                and TITLE_LABEL.match(fold(head).strip()):
            return " ".join(words[k:])
    return text


#: Rows of a drawing index kept per page, and how many must line up in one
#: column (sheet numbers down it, titles beside them) to be read as one.
MAX_INDEX_ROWS, MIN_INDEX_ROWS = 400, 4
#: How far right of its number a row's title may start, in letter heights.
INDEX_REACH = 40


def index_rows(ph: list[Phrase]) -> list[dict]:
    """A drawing index (sheet list) printed on the page: ``[{"number",
    "title", "box"}]``, one per row, where at least MIN_INDEX_ROWS
    number-shaped phrases stand in one column, each with a title to its
    right on its line ("A131 … REFLECTED CEILING PLAN"). Upright text
    only; [] when the page holds none."""
    upright = [p for p in ph if p.angle == 0]
    numbers = [p for p in upright if len(p.words) <= 3 and len(p.text) <= 24
               and number_shaped(p.text)]
    if len(numbers) < MIN_INDEX_ROWS:
        return []
    lines: dict[int, list[Phrase]] = defaultdict(list)
    for q in upright:
        lines[int(q.cy // 16)].append(q)
    titled: dict[int, bool] = {}

    def a_title(q: Phrase) -> bool:
        if id(q) not in titled:
            t = fold(q.text)
            titled[id(q)] = len(re.findall(r"[A-ZА-Я]", t)) >= 3 and not (
                number_shaped(q.text) or NUMBER_LABEL.match(t) or TITLE_LABEL.match(t))
        return titled[id(q)]

    columns: dict[int, list[dict]] = defaultdict(list)
    for p in numbers:
        h = max(p.box[3], 1)
        right = p.box[0] + p.box[2]
        best = None
        for b in range(int((p.cy - h) // 16), int((p.cy + h) // 16) + 1):
            for q in lines.get(b, ()):
                gap = q.box[0] - right
                if q is p or not -h / 2 <= gap <= INDEX_REACH * h \
                        or (best is not None and gap >= best[0]) \
                        or abs(q.cy - p.cy) > 0.6 * max(h, q.box[3]) or not a_title(q):
                    continue
                best = (gap, q)
        if best is not None:
            columns[round(p.box[0] / (2 * h))].append(
                {"number": p.text, "title": best[1].text, "box": list(p.box)})
    rows = [r for col in columns.values() if len(col) >= MIN_INDEX_ROWS for r in col]
    return sorted(rows, key=lambda r: (r["box"][0], r["box"][1]))[:MAX_INDEX_ROWS]


_GLUED_LABEL = re.compile(r"^(N[OR°º]\.?)[-.:#]+(\S+)$", re.I)


def _glued_values(ph: list[Phrase]) -> list[Phrase]:
    """Values PDFium ran into their label's last word ("DRAWING
    NO-ID20250018 -01" → "ID20250018 -01"), as phrases of their own."""
    out = []
    for p in ph:
        for i, w in enumerate(p.words[1:3], start=1):
            m = _GLUED_LABEL.match(w.text)
            if not m or not NUMBER_LABEL.match(fold(" ".join(
                    [x.text for x in p.words[:i]] + [m.group(1)])).strip()):
                continue
            cut = len(w.text) - len(m.group(2))
            dx = w.w * cut // max(1, len(w.text)) if w.angle == 0 else 0
            ws = [Word(m.group(2), w.x + dx, w.y, max(1, w.w - dx), w.h, w.size, w.angle),
                  *p.words[i + 1:]]
            x0, y0 = min(x.x for x in ws), min(x.y for x in ws)
            x1, y1 = max(x.x + x.w for x in ws), max(x.y + x.h for x in ws)
            out.append(Phrase(" ".join(x.text for x in ws), (x0, y0, x1 - x0, y1 - y0),
                              p.size, p.angle, ws))
            break
    return out


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


def _dedupe(items: list, key) -> list:
    """``items`` without repeats of ``key(item)``, first kept."""
    seen: set = set()
    out = []
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            out.append(item)
    return out


def _lines(p: Phrase) -> list[str]:
    """The folded text of each line a title candidate is made of."""
    return [fold(x) for x in getattr(p, "lines", None) or [p.text]]


def _pframe(p: Phrase, width: int, height: int) -> tuple[float, float, float, float]:
    """A phrase's box in its reading frame (see :func:`reading_frame`)."""
    x, y, w, h = p.box
    return reading_frame(Word("", x, y, w, h, p.size, p.angle), width, height)


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
            if _COUNTER_LINE.search(fold(q.text)):
                break  # "SHEET 7 OF 13" closes the cell's title
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
