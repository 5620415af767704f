"""Search inside sheets (SQLite FTS5), without the stack: phrases and
prefixes, case and accents, construction text as typed, hostile queries."""

from __future__ import annotations

import pytest

from planzoom import search


def word(text, x, y=100, w=None, h=20):
    return [text, x, y, w or 12 * len(text), h, 10.0, 0]


@pytest.fixture
def index(tmp_path):
    path = str(tmp_path / "s.sqlite")
    line1 = [word("FIRE", 10), word("DAMPER", 70), word("TYP.", 160)]
    line2 = [word("W12x26", 10, 300), word("BEAM", 100, 300), word("2'-6\"", 170, 300),
             word("Ø12", 250, 300), word("GL-3", 320, 300)]
    line3 = [word("Électricité", 10, 500), word("générale", 160, 500)]
    search.build(path, [(1, {"words": line1 + line2}, "A-101"), (2, {"words": line3}, None)])
    return path


def test_a_phrase_matches_within_a_line_with_its_boxes(index):
    hits = search.query(index, "fire damp")
    assert [(h.page, h.sheet, h.text) for h in hits] == [(1, "A-101", "FIRE DAMPER TYP")]
    assert hits[0].boxes == [[10, 100, 48, 20], [70, 100, 72, 20]]
    assert search.query(index, "damper fire") == []


@pytest.mark.parametrize("q", ["w12x26", "2'-6\"", "ø12", "GL-3", "typ", "TYP.",
                               "electricite", "GÉNÉRALE"])
def test_construction_text_and_accents_as_typed(index, q):
    assert search.query(index, q), q


def test_a_token_is_not_split_inside(index):
    assert search.query(index, "26") == []  # not inside W12x26
    assert search.query(index, "3") == []   # not inside GL-3


@pytest.mark.parametrize("q", ['" OR "', "NEAR(fire", "fire*", "^fire", "fire:damper",
                               "{text}: fire", "a AND NOT b", ")(", "'; DROP TABLE lines; --"])
def test_fts5_syntax_is_only_text(index, q):
    try:
        search.query(index, q)
    except search.BadQuery:
        pass


@pytest.mark.parametrize("q", ["", "   ", "**", "\"\"", "x" * 300, " ".join(["a1"] * 13)])
def test_nothing_to_search_for_is_refused(index, q):
    with pytest.raises(search.BadQuery):
        search.query(index, q)


def test_only_the_pages_asked_for(index):
    assert [h.page for h in search.query(index, "fire", pages=[1, 3])] == [1]
    assert search.query(index, "fire", pages=[2]) == []
    assert search.query(index, "fire", pages=[]) == []
