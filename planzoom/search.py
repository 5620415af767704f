"""Search inside sheets: a job's words in one SQLite FTS5 database
(``search.sqlite`` beside its pyramids), built when the job ends and
queried by the gateway.

One row per line of a page (words in the text layer's order, on one line,
in one direction), with the line's word boxes beside it, so that a phrase
("fire damper") matches within a line and a hit can be drawn word by word.
The tokenizer is FTS5's ``unicode61`` (case folded, accents removed:
``remove_diacritics 2``), with the characters construction text is typed
with kept inside words: ``2'-6"``, ``Ø12``, ``W12x26``, ``GL-3``, ``A-201``
each stay one token. Every query term is a word prefix ("damp" finds
"DAMPER", "TYP" finds "TYP."); a query of several words is a phrase.

Format: https://www.sqlite.org/fts5.html (SQLite's own FTS5).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import unicodedata
from collections.abc import Collection, Iterable
from dataclasses import dataclass

#: The index's schema version (a reader refuses another).
SCHEMA = 1

#: Characters that stay inside a token (besides letters and digits).
TOKEN_CHARS = "-./'\"#Ø×°_"

#: Longest query, in characters, and most terms in it.
MAX_QUERY_CHARS = 200
MAX_TERMS = 12

#: Hits one query returns at most.
MAX_HITS = 500

_TRAILING = re.compile(r"[.,;:]+$")


def _tokenizer() -> str:
    chars = TOKEN_CHARS.replace("'", "''").replace('"', '""')
    return f"unicode61 remove_diacritics 2 tokenchars '{chars}'"


def _lines(words: list[list]) -> Iterable[list[list]]:
    """The sidecar's words (``[text, x, y, w, h, size, angle]``) grouped
    into lines: consecutive words in one direction whose boxes overlap
    across the line."""
    line: list[list] = []
    for w in words:
        if line:
            last = line[-1]
            angle = w[6] if len(w) > 6 else 0
            last_angle = last[6] if len(last) > 6 else 0
            if angle == last_angle:
                if angle in (90, 270):
                    a0, a1, b0, b1 = last[1], last[1] + last[3], w[1], w[1] + w[3]
                else:
                    a0, a1, b0, b1 = last[2], last[2] + last[4], w[2], w[2] + w[4]
                if min(a1, b1) - max(a0, b0) > 0.3 * min(a1 - a0, b1 - b0):
                    line.append(w)
                    continue
            yield line
        line = [w]
    if line:
        yield line


def build(path: str, pages: Iterable[tuple[int, dict, str | None]]) -> int:
    """Write the search index of one job at ``path``: ``pages`` gives each
    page's number, its word sidecar (planzoom.engines.text, as parsed JSON)
    and its sheet number (or None). Returns the lines indexed."""
    if os.path.exists(path):
        os.unlink(path)
    db = sqlite3.connect(path)
    try:
        db.executescript(f"""
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE pages (page INTEGER PRIMARY KEY, sheet TEXT);
            CREATE VIRTUAL TABLE lines USING fts5(
                text, page UNINDEXED, boxes UNINDEXED, tokenize = "{_tokenizer()}");
        """)
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
        count = 0
        for page, doc, sheet in pages:
            db.execute("INSERT INTO pages VALUES (?, ?)", (page, sheet))
            rows = []
            for line in _lines(doc.get("words", [])):
                texts = [_TRAILING.sub("", w[0]) or w[0] for w in line]
                rows.append((" ".join(texts), page,
                             json.dumps([[w[0], w[1], w[2], w[3], w[4]] for w in line],
                                        ensure_ascii=False, separators=(",", ":"))))
            db.executemany("INSERT INTO lines (text, page, boxes) VALUES (?, ?, ?)", rows)
            count += len(rows)
        db.execute("INSERT INTO lines(lines) VALUES ('optimize')")
        db.commit()
        return count
    finally:
        db.close()


class BadQuery(ValueError):
    """A query with nothing to search for, or too long."""


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


def terms(q: str) -> list[str]:
    """A query's terms (folded), as they are matched. Raises BadQuery."""
    if len(q) > MAX_QUERY_CHARS:
        raise BadQuery(f"the query is longer than {MAX_QUERY_CHARS} characters")
    out = [_TRAILING.sub("", t) or t for t in _fold(q).split()]
    out = [t for t in out if any(c.isalnum() for c in t)]
    if not out:
        raise BadQuery("the query has no letters or digits to search for")
    if len(out) > MAX_TERMS:
        raise BadQuery(f"the query has more than {MAX_TERMS} words")
    return out


def _phrase(words: list[str]) -> str:
    """The FTS5 expression for a query's terms: one phrase ("a" + "b"
    joins phrase terms) whose last term is a prefix, every term quoted so
    that no character of the user's is FTS5 syntax."""
    return " + ".join('"' + w.replace('"', '""') + '"' for w in words) + " *"


@dataclass
class Hit:
    """One matching line: ``page``, its ``text``, and the boxes (x, y, w,
    h, full-resolution pixels) of the words that matched."""

    page: int
    sheet: str | None
    text: str
    boxes: list[list[int]]


def query(path: str, q: str, limit: int = 100, pages: Collection[int] | None = None
          ) -> list[Hit]:
    """The lines of the index at ``path`` that match ``q`` (see the module
    docstring), in page order; only on ``pages`` (1-based) if given. Raises
    BadQuery."""
    words = terms(q)
    limit = max(1, min(limit, MAX_HITS))
    only = "" if pages is None else " AND l.page IN (SELECT value FROM json_each(?))"
    args = (_phrase(words),) + (() if pages is None else (json.dumps(sorted(pages)),))
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT l.page, p.sheet, l.text, l.boxes FROM lines l JOIN pages p "
            f"ON p.page = l.page WHERE lines MATCH ?{only} ORDER BY l.page, l.rowid LIMIT ?",
            (*args, limit)).fetchall()
    finally:
        db.close()
    hits = []
    for page, sheet, text, boxes in rows:
        line = json.loads(boxes)
        folded = [_TRAILING.sub("", _fold(w[0])) for w in line]
        matched: list[list[int]] = []
        n = len(words)
        for i in range(len(line) - n + 1):
            if all(folded[i + k] == words[k] for k in range(n - 1)) and \
                    folded[i + n - 1].startswith(words[-1]):
                matched.extend([w[1], w[2], w[3], w[4]] for w in line[i:i + n])
        hits.append(Hit(page, sheet, text, matched or [[w[1], w[2], w[3], w[4]] for w in line]))
    return hits
