"""A set's sheets from its pages' candidates (:func:`identify_set`, per
job when it ends): each page's number and title picked with what the whole
set shows, and its callouts resolved against the set's numbers
(docs/sheets.md).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass

from planzoom.engines.callouts import detail_id
from planzoom.engines.titleblock import discipline, fold, number_key

#: Confidence at or above which an answer is accepted without review.
ACCEPT_LEVEL = 0.8
#: Least score (with the set's evidence) of a sheet number read from the
#: text layer, and from OCR (whose misreadings of marks and dimensions
#: must not pass for a number on a sheet that has none).
MIN_SCORE, MIN_OCR_SCORE = 2.2, 3.0
#: What the PDF's own bookmarks or page label naming a candidate add to its
#: score: a second, independent source that agrees.
HINT_NUMBER_BONUS, HINT_TITLE_BONUS = 2.0, 2.5
#: How much less than one of its lines a title set on several lines may
#: score and still be taken whole.
BLOCK_MARGIN = 0.6
#: Sheets of the set a drawing index must name (by their best numbers) to
#: be taken for the set's index.
MIN_INDEX_MATCHES = 3
#: Least score of a title candidate (its place in the title block, its
#: size) whose trailing date is taken for the sheet's issue date.
DATED_LINE_MIN = 1.0


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
    revision: str | None = None
    issued: str | None = None
    revision_box: list[int] | None = None
    issued_box: list[int] | None = None
    references: list[dict] | None = None

    def to_json(self) -> dict:
        return {"page": self.page, "number": self.number, "title": self.title,
                "discipline": self.discipline, "scale": self.scale,
                "confidence": round(self.confidence, 3), "needs_review": self.needs_review,
                "source": self.source, "box": self.box, "title_box": self.title_box,
                "scale_box": self.scale_box, "revision": self.revision, "issued": self.issued,
                "revision_box": self.revision_box, "issued_box": self.issued_box,
                "references": self.references or []}


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
    hinted_on = {n: {number_key(h["number"]) for h in c.get("hints", [])} - {""}
                 for n, c in pages.items() if c}
    # A drawing index printed in the set names its sheets too: each page's
    # candidates that it lists count as named, as a bookmark names them.
    listed, index_page = _drawing_index(numbered)
    named_on = {n: hinted | {k for x in numbered.get(n, {}).get("numbers", [])
                             if n != index_page and (k := number_key(x["text"])) in listed}
                for n, hinted in hinted_on.items()}
    slots = Counter()
    for n, c in numbered.items():
        best = _pick(c["numbers"], seen, count, None, named_on[n])
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
        hints, hinted = c.get("hints", []), hinted_on[n]
        best = _pick(c.get("numbers", []), seen, count, cell, named_on[n])
        ocr = c.get("source") == "ocr"
        if best and best["adj"] >= (MIN_OCR_SCORE if ocr else MIN_SCORE):
            chosen[n] = best
            sheet.number = _clean_number(best["text"])
            sheet.box = best["box"]
            sheet.source = c.get("source") or source
            sheet.confidence = _confidence(best, c["numbers"], seen, count, cell, named_on[n])
            if len(hinted) == 1 and not _named(best["text"], hinted):
                # The page's one bookmark names another number: a person
                # looks. (Several are a page's views or parts, not its name.)
                sheet.confidence = min(sheet.confidence, ACCEPT_LEVEL - 0.05)
            if sheet.source == "ocr":
                # What OCR read is never accepted unseen: a person confirms it.
                sheet.confidence = min(sheet.confidence, ACCEPT_LEVEL - 0.05)
        row = listed.get(number_key(sheet.number or "")) if n != index_page else None
        title = _pick_title(c.get("titles", []), best, common,
                            [h["title"] for h in hints if h["title"]]
                            + ([row["title"]] if row else []))
        if title:
            sheet.title = title["text"]
            sheet.title_box = title["box"]
            if sheet.source == "none":
                sheet.source = c.get("source") or source
        for field in ("scale", "revision", "issued"):
            if c.get(field):
                setattr(sheet, field, c[field]["text"])
                setattr(sheet, f"{field}_box", c[field]["box"])
        if not sheet.issued:
            # "SITE PLAN - 07/11/2019": the date a title block prints after
            # the title (or the project's name), where no field is labelled.
            dated = [title] if title and title.get("date") else [
                t for t in c.get("titles", []) if t.get("date") and t["score"] >= DATED_LINE_MIN]
            if dated:
                sheet.issued, sheet.issued_box = dated[0]["date"], dated[0]["box"]
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
                found = {"number": _clean_number(ref["number"]), "page": target,
                         "box": ref["box"], "text": ref["text"]}
                # Where it lands: the view of that id on the target sheet.
                view = detail_id(ref["text"])
                landing = [v["box"] for v in (pages.get(target) or {}).get("views", [])
                           if view is not None and v["id"] == view]
                if landing:
                    found["target_box"] = landing[0]
                refs.append(found)
        s.references = refs
    return out


def _drawing_index(numbered: dict[int, dict]) -> tuple[dict[str, dict], int | None]:
    """The set's drawing index: of the pages that print one
    (``page_candidates``' ``index``), the one whose rows name the most
    numbers read on the set's other pages, when that is at least
    MIN_INDEX_MATCHES and half its rows. Returns its rows by number key and
    its page; ({}, None) without one."""
    keys = {n: {number_key(x["text"]) for x in c["numbers"]} for n, c in numbered.items()}
    found: tuple[dict[str, dict], int | None] = ({}, None)
    most = MIN_INDEX_MATCHES - 1
    for n, c in numbered.items():
        # A list numbered 1, 2, 3 is a page's notes as often as an index.
        rows = {k: r for r in c.get("index") or ()
                if not re.fullmatch(r"\d{1,2}", k := number_key(r["number"]))}
        named = {k for p, ks in keys.items() if p != n for k in ks & rows.keys()}
        if len(named) > most and len(named) >= 0.5 * len(rows):
            found, most = (rows, n), len(named)
    return found


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


def _pick(numbers: list[dict], seen: _Seen, count: int, cell,
          hinted: set[str] = frozenset()) -> dict | None:
    best = None
    for x in numbers:
        adj = x["score"] + (HINT_NUMBER_BONUS if _named(x["text"], hinted) else 0.0)
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


def _confidence(best: dict, numbers: list[dict], seen: _Seen, count: int, cell,
                hinted: set[str] = frozenset()) -> float:
    """From the winner's score and its lead over the next value: a number
    read in a labelled field, in the set's number cell, far ahead of any
    other (or named by the PDF's bookmarks too), is near 1."""
    others = [_pick([x], seen, count, cell, hinted) for x in numbers
              if number_key(x["text"]) != number_key(best["text"])]
    second = max((o["adj"] for o in others if o), default=0.0)
    lead = best["adj"] - second
    conf = 0.25 + 0.12 * min(best["adj"], 5.0) + 0.1 * min(lead, 3.0)
    return max(0.0, min(1.0, conf))


def _named(number: str, hinted: set[str]) -> bool:
    """True if a bookmark names ``number``: the same key, or one key ending
    the other (an export prefixes its file name: "XL3476_PS_SC20-02T" for
    sheet "SC20-02T"; ISO 19650 sheets are bookmarked by their last field)."""
    key = number_key(number)
    return bool(key) and any(key == h or (min(len(key), len(h)) >= 3 and (
        key.endswith(h) or h.endswith(key))) for h in hinted)


def _same_title(candidate: str, hint: str) -> bool:
    """A title candidate as a bookmark names it: holding the bookmark's
    title (once folded and spaced alike), or held in it and at least 60 %
    of its length."""
    c, h = _words(candidate), _words(hint)
    return bool(c and h) and (h in c or (c in h and len(c) >= 0.6 * len(h)))


def _words(text: str) -> str:
    return " ".join(re.findall(r"[0-9A-ZА-Я]+", fold(text)))


def _pick_title(titles: list[dict], number: dict | None, common: set[str],
                hinted: list[str] = ()) -> dict | None:
    """The best title candidate: its own score, near the number, none of
    its lines printed on most of the set's sheets, and as the PDF's
    bookmarks name the sheet (``hinted``)."""
    scored = []
    for t in titles:
        adj = t["score"]
        if any(_same_title(t["text"], h) for h in hinted):
            adj += HINT_TITLE_BONUS
            if any(_words(t["text"]) == _words(h) for h in hinted):
                adj += 0.5  # the whole of it, not a part or more
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
        scored.append({**t, "adj": adj, "shared": shared})
    if not scored:
        return None
    best = max(scored, key=lambda t: t["adj"])
    # A title set on several lines scores about as its lines do: its last
    # line alone ("WEST" of "ELEVATIONS - NORTH & WEST") must not win.
    lines = best.get("lines") or [fold(best["text"])]
    if len(lines) == 1:
        whole = [t for t in scored if len(t.get("lines") or ()) > 1 and lines[0] in t["lines"]
                 and not t["shared"] and t["adj"] >= best["adj"] - BLOCK_MARGIN]
        if whole:
            best = max(whole, key=lambda t: (len(t["lines"]), t["adj"]))
    return best if best["adj"] > 0.8 else None
