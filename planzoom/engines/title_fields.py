"""The fields of a title block read as label and value: the scale, the
revision mark and the issue date (docs/sheets.md, docs/revisions.md).

A field is a label ("SCALE", "REV.", "Revision No:", "DATE", "Issue
Date", "DATA", "FECHA", "datum izdelave") with its value after it on its
line, under it or over it in the same cell (as the caller's ``near``
scores it), or in the same phrase ("Date: 11/07/16"). Only values of the
field's shape count: a date for a date, a short mark for a revision, so a
neighbouring cell's label or a scale bar's "0" is not taken for one.

A revision table (rows of mark, date and description under a header that
prints a revision label and a date label on one line) gives its newest
row: the latest date when every row's date reads, else the highest mark.
A labelled revision field wins over a table: where a title block has
both (ISO 19650 blocks print "Revision" beside their revision table), the
field is the sheet's current mark. The issue date is the date of the
current mark's row where the table has one: a "DATE" or "Issue Date" field
beside the table is often the first issue's.

Pure functions over phrases (:func:`planzoom.engines.titleblock.phrases`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from planzoom.engines.titleblock import SCALE_LABEL, SCALE_VALUE, Phrase, fold

#: Labels of a revision mark (folded: upper case, no accents), a whole
#: phrase.
REVISION_LABEL = re.compile(
    r"^(?:REV|REVISION|REVISIONE|REVISAO|REVIZIJA|ИЗМ)\b\.?(?: ?(?:NO|NR|N|NUMBER|#|№)\b\.?)?"
    r"[ .:#]*$")

#: Labels of an issue date (folded), a whole phrase or its first words.
DATE_LABEL = re.compile(
    r"^(?:(?:ISSUE|DRAWING|DWG|SHEET|REVISION) DATE|DATE (?:OF )?ISSUED?|ISSUED(?: ON)?|DATE"
    r"|DATA(?: EMISSIONE)?|DATUM(?: IZDELAVE| IZDAJE)?|FECHA(?: DE EMISION)?|ДАТА"
    r"|DATE D'EMISSION|(?:LAST )?UPDATED)\b[ .:]*")

#: The mark column of a revision table whose header says "No." (the
#: header also prints a date and a description).
ROW_LABEL = re.compile(r"^(?:NO|NR|N°|#|MARK|SYM|SYMBOL)\b[ .:]*$")
TABLE_WORD = re.compile(r"^(?:DESCRIPTION|REMARKS?|REVISIONS?|AMENDMENTS?|DESCRIZIONE|DESCRIPCION"
                        r"|BESCHREIBUNG|ANDERUNG|OPIS)\b")

#: Dates that are not when a sheet was issued.
NOT_ISSUE = re.compile(r"PLOT|PRINT|SAVED|MODIFIED|CREATED|SURVEY|FIELD|BIRTH|TIME")

_MONTH = (r"(?:JAN(?:UARY)?|FEB(?:RUARY)?|MAR(?:CH)?|APR(?:IL)?|MAY|JUNE?|JULY?|AUG(?:UST)?"
          r"|SEP(?:T(?:EMBER)?)?|OCT(?:OBER)?|NOV(?:EMBER)?|DEC(?:EMBER)?"
          r"|GENNAIO|FEBBRAIO|MARZO|APRILE|MAGGIO|GIUGNO|LUGLIO|AGOSTO|SETTEMBRE|OTTOBRE"
          r"|NOVEMBRE|DICEMBRE|ENERO|FEBRERO|ABRIL|MAYO|JUNIO|JULIO|AGOSTO|SEPTIEMBRE"
          r"|OCTUBRE|NOVIEMBRE|DICIEMBRE|JANUAR|FEBRUAR|MARZ|MAI|JUNI|JULI|OKTOBER|DEZEMBER"
          r"|JANVIER|FEVRIER|MARS|AVRIL|JUIN|JUILLET|AOUT|SEPTEMBRE|OCTOBRE|DECEMBRE)\.?")
_NUMERIC_DATE = r"\d{1,4} ?[/.-] ?\d{1,2} ?[/.-] ?\d{2,4}|(?:0?[1-9]|1[0-2])[./](?:19|20)\d{2}"

#: A date as title blocks print it: 04/12/2016, 2017/05/22, 01.29.2015,
#: 4 - 6 - 2021, April 2020, 12 APR 2016, APRIL 12, 2016.
DATE_VALUE = re.compile(
    rf"^(?:(?:{_NUMERIC_DATE})|(?:\d{{1,2}} )?{_MONTH},? (?:\d{{1,2}},? )?(?:19|20)\d{{2}})$")

#: A revision mark: A, 0, 2, 07, B01, N0, T1, P01, C02, T-1.
REVISION_VALUE = re.compile(r"^(?:[A-Z]|\d{1,3}|[A-Z]{1,2}-?\d{1,3}|\d{1,2}[A-Z])$")

#: A mark glued to the date of its row by the text layer ("C18/07/2017").
_GLUED = re.compile(rf"^([A-Z])({_NUMERIC_DATE})$")


def _value(text: str) -> str:
    return text.strip(" .:;,()[]")


def date_of(text: str) -> str | None:
    """``text`` as printed when it is a date (:data:`DATE_VALUE`), its
    date part when a revision mark is glued to it, else None."""
    t = _value(text)
    f = fold(t)
    if DATE_VALUE.match(f):
        return t
    m = _GLUED.match(f)
    return t[1:] if m else None


def mark_of(text: str) -> str | None:
    """``text`` as printed when it is a revision mark, the mark when it is
    glued to a date, else None."""
    t = _value(text)
    f = fold(t)
    if REVISION_VALUE.match(f) and f not in ("NO", "OF", "BY", "NR"):
        return t
    m = _GLUED.match(f)
    return t[0] if m else None


#: A scale bar's figure with its unit ("50mm", "20cm", "5 m").
_BAR_LENGTH = re.compile(r"^\d+(?:[.,]\d+)? ?(?:MM|CM|M|FT|')$")


def _scale_bar(ph: list[Phrase], p: Phrase) -> bool:
    """Whether ``p`` (a bare figure) is one of a scale bar's: a length
    with its unit on its line nearby."""
    h = max(p.box[3], 1)
    return p.text.isdigit() and any(
        q is not p and _same_line(p, q) and abs(q.cx - p.cx) < 15 * h
        and _BAR_LENGTH.match(fold(q.text)) for q in ph)


def _inline(label: re.Pattern, p: Phrase) -> str | None:
    """What is printed after ``label`` in the same phrase ("Date:
    11/07/16"), or None when the phrase is the label alone."""
    f = fold(p.text)
    rest = label.sub("", f, count=1).strip(" :")
    if not rest or rest == f.strip(" :"):
        return None
    return p.text[len(p.text) - len(rest):].strip(" :")


Near = Callable[[Phrase, Phrase, float], float]


def _field(ph: list[Phrase], labels: list[Phrase], shape: Callable[[str], str | None],
           near: Near, label: re.Pattern, reach: float, first: bool = False,
           reject: Callable[[Phrase], bool] = lambda p: False) -> tuple[str, Phrase] | None:
    """The value of the shape ``shape`` reads that sits best as the value
    of one of ``labels`` (``first``: of the first label, in page order,
    that has one), ``reject`` aside."""
    best: tuple[float, str, Phrase] | None = None
    values = None
    for lab in labels:
        rest = _inline(label, lab)
        if rest is not None:
            v = shape(rest)
            if v:
                return v, lab
            if not first:
                continue  # words that start like a label ("DATA STATION ...", "ISSUED FOR")
        if values is None:
            values = [(p, v) for p in ph for v in (shape(p.text),) if v]
        for p, v in values:
            score = near(lab, p, reach)
            if score <= 0 or reject(p):
                continue
            if _same_line(lab, p):
                score += 0.5  # the cell's own value beats the next cell's under it
            if best is None or score > best[0]:
                best = (score, v, p)
        if first and best:
            break
    return (best[1], best[2]) if best else None


def _same_line(a: Phrase, b: Phrase) -> bool:
    across = 1 if a.angle in (0, 180) else 0
    ca = a.box[across] + a.box[across + 2] / 2
    cb = b.box[across] + b.box[across + 2] / 2
    return abs(ca - cb) < 0.5 * max(a.box[across + 2], b.box[across + 2], 1)


def _header_rows(ph: list[Phrase], header: Phrase, date_label: Phrase
                 ) -> list[tuple[str, str | None, Phrase]]:
    """A revision table's rows: marks in the column of ``header`` (the
    revision label) under it, or over it for tables that grow upwards,
    row after row while no gap of more than a few rows breaks the column;
    each with the date on its row under ``date_label``'s column."""
    hx0, _, hw, hh = header.box
    dx0, _, dw, _ = date_label.box
    column = [p for p in ph if p.angle == header.angle and p is not header
              and abs(p.cy - header.cy) >= hh and abs(p.cy - header.cy) < 60 * hh
              and p.box[0] < hx0 + hw + hh and p.box[0] + p.box[2] > hx0 - hh
              and p.text.split() and mark_of(p.text.split()[0])]
    # The phrases of the date column, within the table's reach.
    dates = [q for q in ph if abs(q.cy - header.cy) < 61 * hh
             and q.box[0] < dx0 + dw + 4 * hh and q.box[0] + q.box[2] > dx0 - 2 * hh]
    rows = []
    for side in (1, -1):
        last = header.cy
        for p in sorted((p for p in column if (p.cy - header.cy) * side > 0),
                        key=lambda p: abs(p.cy - header.cy)):
            if abs(p.cy - last) > 5 * hh:
                break  # the column ends: what follows is another cell's
            last = p.cy
            date = None
            for q in dates:
                if abs(q.cy - p.cy) <= 0.6 * max(hh, q.box[3]):
                    date = date_of(q.text) or date_of(q.text.split()[0])
                    if date:
                        break
            rows.append((mark_of(p.text.split()[0]), date, p))
    return rows


def _date_key(text: str, day_first: bool) -> tuple[int, int, int] | None:
    nums = [int(n) for n in re.findall(r"\d+", text)]
    if len(nums) != 3:
        return None
    if nums[0] > 31:  # year first
        y, m, d = nums
    else:
        d, m, y = nums if day_first else (nums[1], nums[0], nums[2])
    if y < 100:
        y += 2000
    return (y, m, d) if 1 <= m <= 12 and 1 <= d <= 31 else None


def _mark_key(mark: str) -> tuple[str, int]:
    f = fold(mark)
    letters = re.sub(r"[^A-Z]", "", f)
    digits = re.sub(r"\D", "", f)
    return letters, int(digits) if digits else -1


def _newest(rows: list[tuple[str, str | None, Phrase]]) -> tuple[str, str | None, Phrase]:
    """The newest row: by date when every row's date reads in one order
    (day or month first, whichever reads all of them), else by mark."""
    for day_first in (True, False):
        keys = [_date_key(d, day_first) if d else None for _, d, _ in rows]
        if all(keys):
            return rows[max(range(len(rows)), key=lambda i: keys[i])]
    return max(rows, key=lambda r: _mark_key(r[0]))


def title_fields(ph: list[Phrase], near: Near) -> dict:
    """The scale, revision mark and issue date a page's phrases print, each
    ``(text, phrase)`` or None: ``{"scale", "revision", "issued"}``.
    ``near(label, value, reach)`` scores a phrase as a label's value
    (0 when it is not one)."""
    folded = {id(p): fold(p.text).strip() for p in ph}
    out: dict[str, tuple[str, Phrase] | None] = {"scale": None, "revision": None, "issued": None}
    scale_labels = [p for p in ph if SCALE_LABEL.match(folded[id(p)])]
    out["scale"] = _field(ph, scale_labels, lambda t: t.strip() if SCALE_VALUE.search(t) else None,
                          near, SCALE_LABEL, 4.0, first=True)

    rev_labels = [p for p in ph if REVISION_LABEL.match(folded[id(p)])]
    date_labels = [p for p in ph if DATE_LABEL.match(folded[id(p)])
                   and not NOT_ISSUE.search(folded[id(p)])]
    # A revision label and a date label on one line make a table's header.
    headers = []
    for r in rev_labels:
        for d in date_labels:
            if r.angle == d.angle and abs(r.cy - d.cy) < 0.6 * max(r.box[3], d.box[3]) and \
                    0 < d.box[0] - r.box[0] < 30 * max(r.box[3], 1):
                headers.append((r, d))
    # "No. | Description | Date": a mark column named by the table's words.
    for r in (p for p in ph if ROW_LABEL.match(folded[id(p)])):
        line = [p for p in ph if p.angle == r.angle and _same_line(p, r)
                and abs(p.cx - r.cx) < 40 * max(r.box[3], 1)]
        dates = [p for p in line if p in date_labels and p.box[0] > r.box[0]]
        if dates and any(TABLE_WORD.match(folded[id(p)]) for p in line):
            headers.append((r, dates[0]))
    in_header = {id(p) for pair in headers for p in pair}
    out["revision"] = _field(ph, [p for p in rev_labels if id(p) not in in_header],
                             mark_of, near, REVISION_LABEL, 3.0,
                             reject=lambda p: p.text.isdigit() and _scale_bar(ph, p))
    out["issued"] = _field(ph, [p for p in date_labels if id(p) not in in_header], date_of,
                           near, DATE_LABEL, 12.0)
    rows = [row for r, d in headers for row in _header_rows(ph, r, d)]
    if rows:
        # The newest row is the sheet's current issue, and its date is when
        # this version was issued, whatever a date field says (often the
        # first issue's).
        if out["revision"] is None:
            current = _newest(rows)
            out["revision"] = (current[0], current[2])
        else:
            same = [r for r in rows if fold(r[0]) == fold(out["revision"][0])]
            current = same[0] if same else None
        if current and current[1]:
            out["issued"] = (current[1], current[2])
    return out
