"""Reading sheets from the text layer, without the stack: words with boxes
where PDFium draws them, sheet numbers and titles against what a person
reads (the corpus's sheets.json), the rules that keep a project number, a
date or a counter from passing for a sheet number, and callouts."""

from __future__ import annotations

import json

import pypdfium2 as pdfium
import pytest

from planzoom.engines.sheet_set import identify_set
from planzoom.engines.sheets import page_candidates, write_page_text
from planzoom.engines.text import PageWords, Word, read_words
from planzoom.engines.titleblock import discipline, number_key
from planzoom.pages import raster_size

CRAYFISH = "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"


def words_of(path, page: int, dpi: float = 100) -> PageWords:
    doc = pdfium.PdfDocument(str(path))
    pg = doc[page - 1]
    w, h = raster_size(*pg.get_size(), dpi)
    return read_words(pg, w, h)


def set_of(path, dpi: float = 100):
    doc = pdfium.PdfDocument(str(path))
    cands = {}
    for n in range(1, len(doc) + 1):
        pg = doc[n - 1]
        w, h = raster_size(*pg.get_size(), dpi)
        found = read_words(pg, w, h)
        cands[n] = page_candidates(found) if found.words else None
    return {s.page: s for s in identify_set(cands)}


def test_words_have_boxes_where_pdfium_draws_them(corpus):
    # /Rotate 90: the text runs along x once displayed, the title block is
    # bottom right; the sheet number "100‐00" is printed with U+2010.
    page = words_of(corpus / CRAYFISH, 1, 150)
    assert (page.width, page.height) == (4967, 3509) and page.source == "text"
    number = next(w for w in page.words if w.text == "100-00")
    assert number.angle == 0
    assert 4600 < number.x < number.x + number.w < 4967
    assert 3400 < number.y < number.y + number.h < 3509
    assert 12 < number.size < 18  # points: the letters' height across the line
    # The same word at another DPI scales with it.
    half = next(w for w in words_of(corpus / CRAYFISH, 1, 75).words if w.text == "100-00")
    assert abs(half.x - number.x / 2) <= 2 and abs(half.w - number.w / 2) <= 2


def test_a_page_with_no_text_layer_has_no_words(corpus):
    page = words_of(corpus / "arch-houseplan-hugepage-607x682in-solvespace-master1.pdf", 1, 5)
    assert page.words == [] and page.source == "none"


def test_the_sidecar_round_trips(corpus, tmp_path):
    doc = pdfium.PdfDocument(str(corpus / CRAYFISH))
    count = write_page_text(doc[0], 2000, 1413, str(tmp_path / "p"))
    import gzip

    data = json.loads(gzip.decompress((tmp_path / "p.words.json.gz").read_bytes()))
    assert len(data["words"]) == count > 500
    again = PageWords.from_json(data)
    assert again.words[0].text == data["words"][0][0]
    cands = json.loads((tmp_path / "p.sheet.json").read_text())
    assert cands["numbers"][0]["text"] == "100-00"


@pytest.mark.parametrize("name", [
    CRAYFISH,
    "arch-mos1-malm-desk-A2-autocad2016-quartz-pdfium-slow-michelagalassini-strumet.pdf",
])
def test_sheet_numbers_of_a_set_match_what_a_person_reads(corpus, name):
    want = {r["page"]: r for r in json.loads((corpus / "sheets.json").read_text())
            if r["file"] == name}
    got = set_of(corpus / name)
    for n, row in want.items():
        assert got[n].number == row["sheet_number"], (n, got[n])
        assert not got[n].needs_review and got[n].source == "text"


def test_pages_without_a_number_say_so(corpus):
    got = set_of(corpus / "arch-renovation-plans-7p-a4-affinity-latirasse.pdf", 40)
    assert [s.number for s in got.values()] == [None] * 7


def _cands(page: int, values: list[tuple[str, float, tuple[int, int]]]) -> dict:
    return {"numbers": [{"text": t, "box": [0, 0, 10, 10], "score": s, "size": 10.0,
                         "slot": list(slot)} for t, s, slot in values],
            "titles": [], "scale": None, "callouts": [], "glyphs": 100, "words": 10}


def test_a_value_printed_on_every_sheet_is_not_its_number():
    # The project number scores higher on each page, but it is the same on all.
    pages = {n: _cands(n, [("1601", 4.0, (44, 49)), (f"A-10{n}", 3.5, (47, 49))])
             for n in range(1, 5)}
    assert [s.number for s in identify_set(pages)] == ["A-101", "A-102", "A-103", "A-104"]


def test_dates_counters_and_scales_are_never_numbers():
    page = PageWords(3000, 2000, 1440, 960, [
        Word("SHEET", 2700, 1900, 60, 20, 10), Word("1", 2770, 1900, 10, 20, 10),
        Word("OF", 2785, 1900, 20, 20, 10), Word("12", 2810, 1900, 20, 20, 10),
        Word("12/05/2017", 2700, 1950, 90, 20, 10), Word("1:100", 2600, 1950, 60, 20, 10),
        Word("2017", 2500, 1950, 40, 20, 10),
    ])
    numbers = [c["text"] for c in page_candidates(page)["numbers"]]
    assert not {"12/05/2017", "1:100", "2017", "1 OF 12"} & set(numbers)
    assert [s.number for s in identify_set({1: page_candidates(page)})] == [None]


def test_spellings_of_one_number_are_one_sheet():
    assert len({number_key(t) for t in ("A-501", "A501", "A.501", "A 501", "a‐501")}) == 1
    assert number_key("A-501") != number_key("A-510")


@pytest.mark.parametrize("number, title, want", [
    ("A-201", None, "architectural"), ("FP-101", None, "fire protection"),
    ("S101", None, "structural"), ("E1.3", None, "electrical"),
    ("L02-R02D01-FOS-00-XX-DWG-AR-00001", None, "architectural"),
    ("100-00", "ELECTRICAL FIRST FLOOR", "electrical"), ("02.7", "FASADE", "architectural"),
    ("7", None, None),
])
def test_discipline_from_the_designator_else_the_title(number, title, want):
    assert discipline(number, title) == want


def test_callouts_link_only_to_sheets_of_the_set(corpus):
    got = set_of(corpus / CRAYFISH)
    # The plans' section bubbles ("A" over "300-00") point at page 4.
    assert {r["page"] for r in got[2].references} == {4}
    assert got[4].references == []
    assert all(r["number"] == "300-00" for r in got[1].references)
