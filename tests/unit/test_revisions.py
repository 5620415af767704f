"""Sheets paired across a plan's sets (planzoom.engines.revisions)."""

from __future__ import annotations

import random

from planzoom.engines.revisions import (
    page_summary,
    sheet_history,
    sheet_number,
    similarity,
    sketch,
)

rng = random.Random(7)
VOCABULARY = [f"W{n}" for n in range(4000)]


def words(seed: int, n: int = 400) -> list[str]:
    return random.Random(seed).sample(VOCABULARY, n)


def page(n, number, title, digest, text):
    return page_summary(n, number, title, digest, sketch(text))


def current(history):
    return {(s["versions"][0]["number"], s["versions"][0]["job_id"]): s for s in history}


FULL = {"job_id": "001", "pages": [
    page(1, "A-101", "First floor plan", "d1", words(1)),
    page(2, "A-102", "Second floor plan", "d2", words(2)),
    page(3, "A-103", "Roof plan", "d3", words(3)),
]}


def test_an_addendum_replaces_only_its_sheets_and_says_what_changed():
    addendum = {"job_id": "002", "pages": [
        page(1, "A 102", "SECOND FLOOR PLAN", "d2-rev", words(2)[:380] + words(22, 20)),
        page(2, "A103", "Roof plan", "d3", words(3)),
        page(3, "A-104", "Third floor plan", "d4", words(4)),
    ]}
    history = sheet_history([FULL, addendum])
    assert [(s["versions"][0]["job_id"], s["versions"][0]["page"]) for s in history] == [
        ("001", 1), ("002", 1), ("002", 2), ("002", 3)]
    a102, a103, a104 = history[1], history[2], history[3]
    assert [(v["job_id"], v["change"], v["paired_by"]) for v in a102["versions"]] == [
        ("002", "revised", "number"), ("001", "new", "")]
    assert a103["versions"][0]["change"] == "unchanged"
    assert [v["change"] for v in a104["versions"]] == ["new"]
    assert history[0]["versions"][0]["job_id"] == "001"  # A-101 stays current


def test_the_history_is_the_same_whatever_order_the_sets_ended_in():
    addendum = {"job_id": "002", "pages": [page(1, "A-101", "First floor plan", "x", words(1))]}
    assert sheet_history([addendum, FULL]) == sheet_history([FULL, addendum])


def test_a_renumbered_sheet_is_paired_by_its_title():
    renumbered = {"job_id": "002", "pages": [
        page(1, "A-201", "Second Floor Plan", "d2b", words(2)),
    ]}
    history = sheet_history([FULL, renumbered])
    [sheet] = [s for s in history if len(s["versions"]) == 2]
    assert sheet["versions"][0]["number"] == "A-201"
    assert sheet["versions"][0]["paired_by"] == "title"
    assert sheet["versions"][1]["number"] == "A-102"


def test_a_sheet_whose_number_was_not_read_is_paired_by_its_words():
    unread = {"job_id": "002", "pages": [page(1, "", "", "d3b", words(3)[:390] + ["NEW"])]}
    history = sheet_history([FULL, unread])
    [sheet] = [s for s in history if len(s["versions"]) == 2]
    assert sheet["versions"][1]["number"] == "A-103"
    assert sheet["versions"][0]["paired_by"] == "content"
    # It is still sheet A-103: the next set's A-103 continues it by number,
    # and a page numbered anew is not taken for it by its words.
    assert sheet_number(sheet) == "A-103"
    again = {"job_id": "003", "pages": [page(1, "A-103", "Roof plan", "d3c", words(3)),
                                        page(2, "A-109", "Roof plan 2", "d9", words(3))]}
    history = sheet_history([FULL, unread, again])
    [sheet] = [s for s in history if len(s["versions"]) == 3]
    assert [(v["job_id"], v["paired_by"]) for v in sheet["versions"]] == [
        ("003", "number"), ("002", "content"), ("001", "")]
    assert [sheet_number(s) for s in history] == ["A-101", "A-102", "A-103", "A-109"]


def test_a_new_sheet_like_another_is_not_taken_for_its_version():
    """A typical floor repeats most words of the floor below; a new number
    with a new title is a new sheet, however alike."""
    new_floor = {"job_id": "002", "pages": [
        page(1, "A-105", "Fifth floor plan", "d5", words(2)[:395] + ["FIFTH"])]}
    history = sheet_history([FULL, new_floor])
    assert len(history) == 4
    assert history[-1]["versions"][0]["change"] == "new"


def test_options_that_share_a_number_are_kept_apart_and_flagged():
    options = {"job_id": "002", "pages": [
        page(1, "A-102", "Second floor plan - option B", "b", words(50)),
        page(2, "A-102", "Second floor plan - option A", "a", words(2)[:390] + words(51, 10)),
    ]}
    history = sheet_history([FULL, options])
    a102 = [s for s in history if s["versions"][0]["number"] == "A-102"]
    assert len(a102) == 2
    continued = next(s for s in a102 if len(s["versions"]) == 2)
    assert continued["versions"][0]["page"] == 2  # option A shares the words of the old sheet
    assert all(s["versions"][0]["duplicate_number"] for s in a102)
    other = next(s for s in a102 if len(s["versions"]) == 1)
    assert other["versions"][0]["change"] == "new"


def test_similarity_estimates_shared_words():
    a, b = words(9), words(9)[:200] + words(10, 200)
    assert similarity(sketch(a), sketch(a)) == 1.0
    assert similarity(sketch(a), sketch(words(11))) < 0.2
    assert 0.1 < similarity(sketch(a), sketch(b)) < 0.6  # true Jaccard 200/600
    assert similarity("", sketch(a)) is None
