"""References from a page to other sheets, and the view titles they can
land on (docs/sheets.md): :func:`callouts` finds "SEE A-201", "3/A-501"
and detail bubbles; :func:`views` finds the titles of a sheet's views
("SECTION A-A", "DETAIL 3"), so that a callout "A/300-00" opens sheet
300-00 at its section A. Pure functions over phrases
(:func:`planzoom.engines.titleblock.phrases`);
:func:`planzoom.engines.sheet_set.identify_set` resolves them against the
set.
"""

from __future__ import annotations

import re

from planzoom.engines.titleblock import Phrase, fold, number_shaped

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
    # stack those); :func:`planzoom.engines.sheet_set.identify_set` keeps only those the set has.
    shaped = [w for w in words if number_shaped(w.text)
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


#: A view's title naming its id: "SECTION A-A", "SECTION 2", "DETAIL 5",
#: "ELEVATION B", "SEZIONE A-A", "SCHNITT B-B", "CORTE 1-1", "COUPE A-A".
VIEW_TITLE = re.compile(
    r"^(?:(?:WALL |BUILDING |CROSS )?SECTION|SECT\.?|DETAIL|DET\.?|ELEVATION|ELEV\.?|VIEW"
    r"|SEZIONE|DETTAGLIO|PROSPETTO|SCHNITT|ANSICHT|CORTE|DETALLE|ALZADO|COUPE|VUE|PREREZ"
    r"|DETAJL)\s+([A-Z]{1,2}|\d{1,3})(?:\s*[-–—]\s*\1)?(?:\s|$|[:.,])")


def views(ph: list[Phrase]) -> list[dict]:
    """The titles of a sheet's views that name their id: ``{"id", "box"}``
    ("SECTION A-A" → id "A"), where a callout to the sheet can land."""
    out = []
    for p in ph:
        m = VIEW_TITLE.match(fold(p.text).strip())
        if m:
            out.append({"id": m.group(1), "box": list(p.box)})
    return out


def detail_id(text: str) -> str | None:
    """The view a callout names on its sheet ("D/300-00" → "D", "3/A-501"
    → "3"), None for one that names a sheet only ("SEE A-201")."""
    head, slash, _ = fold(text).partition("/")
    head = head.strip()
    return head if slash and re.fullmatch(r"[A-Z]{1,2}|\d{1,3}", head) else None
