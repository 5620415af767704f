"""A plan's sheets across its sets: which page of a new set is the next
version of which earlier sheet (docs/revisions.md).

A plan's register keeps, for each of its COMPLETE jobs, a summary of its
pages (:func:`page_summary`); :func:`sheet_history` builds every sheet and
its versions from it, taking the jobs oldest first (job ids sort by
creation time), so that one register always gives one history whatever
order its jobs ended in.

Pairing, for each set in turn:

1. by sheet number (A-101, A101, "A 101" are one number): a page continues
   the sheet of its number. Two pages of one set with one number (options,
   alternates) are flagged ``duplicate_number``; each continues at most
   one sheet of that number, the one whose words it shares most;
2. a page whose number the plan has not seen, or that has none, continues
   a sheet this set did not continue by number: one with the same title
   (``paired_by`` "title": a renumbered sheet), or, where either has no
   number, one whose words it shares (``paired_by`` "content", a Jaccard
   similarity of at least :data:`CONTENT_MIN`);
3. any other page is a new sheet.

A sheet's number is its newest version's, or, when that version's was not
read (a re-plot that cut it off, paired by content), the newest one read
before (:func:`sheet_number`): a number nobody printed anew is still the
sheet's.

A version is ``unchanged`` when its raster's digest equals the one before
(the same pixels), else ``revised``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from planzoom.engines.titleblock import fold, number_key

#: Hashes kept of a page's words (bottom-k sketch): the Jaccard similarity
#: of two pages' words is estimated to about ±1/sqrt(k).
SKETCH_SIZE = 32
#: Shared words (Jaccard) for a same-title pair when both pages have words:
#: titles like "DETAILS" repeat within a set.
TITLE_MIN = 0.15
#: Shared words for pairing by content alone (a number read on one side only).
CONTENT_MIN = 0.6
#: Shortest word counted in a sketch, characters.
MIN_WORD = 2


def sketch(words: Iterable[str]) -> str:
    """A bottom-k sketch of a page's distinct words (folded, 2 characters or
    more): the :data:`SKETCH_SIZE` smallest 32-bit hashes, as one hex string
    of 8 digits each ("" for a page with no words)."""
    distinct = {fold(w).strip(".,:;()[]") for w in words}
    hashes = sorted(int.from_bytes(hashlib.blake2b(w.encode(), digest_size=4).digest(), "big")
                    for w in distinct if len(w) >= MIN_WORD)
    return "".join(f"{h:08x}" for h in hashes[:SKETCH_SIZE])


def _hashes(s: str) -> set[int]:
    return {int(s[i:i + 8], 16) for i in range(0, len(s), 8)}


def similarity(a: str, b: str) -> float | None:
    """The Jaccard similarity of two pages' words estimated from their
    sketches (Broder 1997, bottom-k): of the k smallest hashes of the
    union, the share found in both. None when either page has no words."""
    if not a or not b:
        return None
    ha, hb = _hashes(a), _hashes(b)
    union = sorted(ha | hb)[:SKETCH_SIZE]
    return sum(1 for h in union if h in ha and h in hb) / len(union)


def page_summary(page: int, number: str, title: str, digest: str, words_sketch: str,
                 revision: str = "", issued: str = "") -> dict:
    """What the register keeps of one page of a set."""
    return {"page": page, "number": number, "title": title, "revision": revision,
            "issued": issued, "digest": digest, "sketch": words_sketch}


def _title_key(title: str) -> str:
    return " ".join(fold(title).replace("&", " AND ").split())


def _version(p: dict, job_id: str, paired_by: str, change: str, duplicate: bool) -> dict:
    return {"job_id": job_id, "page": p["page"], "number": p["number"], "title": p["title"],
            "revision": p.get("revision", ""), "issued": p.get("issued", ""),
            "paired_by": paired_by, "change": change, "duplicate_number": duplicate,
            "digest": p.get("digest", ""), "sketch": p.get("sketch", "")}


def sheet_number(sheet: dict) -> str:
    """The number of a sheet of :func:`sheet_history`: its newest version's
    that has one ("" if none has)."""
    return next((v["number"] for v in sheet["versions"] if v["number"]), "")


def _by_number(pages: list[dict], open_sheets: list[dict]) -> list[tuple[dict, dict]]:
    """(page, sheet) pairs of one number: the one page and the one sheet,
    else most shared words first."""
    if len(pages) == 1 and len(open_sheets) == 1:
        return [(pages[0], open_sheets[0])]
    scored = sorted(((similarity(p["sketch"], s["versions"][0]["sketch"]) or 0.0, i, j)
                     for i, p in enumerate(pages) for j, s in enumerate(open_sheets)),
                    key=lambda t: (-t[0], t[1], t[2]))
    pairs, used_p, used_s = [], set(), set()
    for _, i, j in scored:
        if i not in used_p and j not in used_s:
            used_p.add(i)
            used_s.add(j)
            pairs.append((pages[i], open_sheets[j]))
    return pairs


def _by_title_or_content(pages: list[dict], open_sheets: list[dict]
                         ) -> list[tuple[dict, dict, str]]:
    """(page, sheet, paired_by) for pages no number paired (step 2 of the
    module docstring), best pairs first, each page and sheet once."""
    scored = []
    for i, p in enumerate(pages):
        title = _title_key(p["title"])
        for j, s in enumerate(open_sheets):
            last = s["versions"][0]
            sim = similarity(p["sketch"], last["sketch"])
            if title and title == _title_key(last["title"]) and (sim is None or sim >= TITLE_MIN):
                scored.append((1.0 + (sim or 0.0), i, j, "title"))
            elif (not p["number"] or not sheet_number(s)) and sim is not None \
                    and sim >= CONTENT_MIN:
                scored.append((sim, i, j, "content"))
    scored.sort(key=lambda t: (-t[0], t[1], t[2]))
    # A title shared by two open sheets with nothing to choose between them
    # (no words) pairs with neither.
    best: dict[int, list] = {}
    for score, i, _, _ in scored:
        best.setdefault(i, []).append(score)
    pairs, used_p, used_s = [], set(), set()
    for score, i, j, how in scored:
        if i in used_p or j in used_s:
            continue
        if best[i].count(score) > 1 and score == 1.0:
            continue
        used_p.add(i)
        used_s.add(j)
        pairs.append((pages[i], open_sheets[j], how))
    return pairs


def _join(sheets: list[dict], job_id: str, pages: list[dict]) -> None:
    """Add one set's pages to ``sheets`` (each ``{"versions": [...]}``,
    newest first), pairing as the module docstring says."""
    counts: dict[str, int] = {}
    for p in pages:
        if p["number"]:
            counts[number_key(p["number"])] = counts.get(number_key(p["number"]), 0) + 1
    open_sheets = list(sheets)
    sheet_keys = {id(s): number_key(sheet_number(s)) for s in sheets if sheet_number(s)}
    placed: dict[int, tuple[dict, str]] = {}
    for key in counts:
        group = [p for p in pages if p["number"] and number_key(p["number"]) == key]
        same = [s for s in open_sheets if sheet_keys.get(id(s)) == key]
        for p, s in _by_number(group, same):
            placed[p["page"]] = (s, "number")
            open_sheets.remove(s)
    seen_numbers = set(sheet_keys.values())
    rest = [p for p in pages if p["page"] not in placed
            and not (p["number"] and number_key(p["number"]) in seen_numbers)]
    for p, s, how in _by_title_or_content(rest, open_sheets):
        placed[p["page"]] = (s, how)
    for p in pages:
        duplicate = bool(p["number"]) and counts[number_key(p["number"])] > 1
        if p["page"] in placed:
            s, how = placed[p["page"]]
            before = s["versions"][0]
            same = bool(p.get("digest")) and p.get("digest") == before["digest"]
            s["versions"].insert(0, _version(p, job_id, how, "unchanged" if same else "revised",
                                             duplicate))
        else:
            sheets.append({"versions": [_version(p, job_id, "", "new", duplicate)]})


def sheet_history(jobs: list[dict]) -> list[dict]:
    """Every sheet of a plan with its versions, newest first, from the
    register's ``jobs`` (``[{"job_id", "pages": [page_summary, ...]}]``),
    taken oldest job first. Each sheet: ``{"versions": [{"job_id", "page",
    "number", "title", "revision", "issued", "paired_by", "change",
    "duplicate_number", "digest", "sketch"}]}``, in the order the sets first
    listed them."""
    sheets: list[dict] = []
    for job in sorted(jobs, key=lambda j: j["job_id"]):
        _join(sheets, job["job_id"], sorted(job["pages"], key=lambda p: p["page"]))
    return sheets
