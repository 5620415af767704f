"""Reading sheets from the text layer, without the stack: words with boxes
where PDFium draws them, sheet numbers and titles against what a person
reads (the corpus's sheets.json), the rules that keep a project number, a
date or a counter from passing for a sheet number, and callouts."""

from __future__ import annotations

import json

import pypdfium2 as pdfium
import pytest

from planzoom.engines.callouts import detail_id, views
from planzoom.engines.sheet_set import identify_set
from planzoom.engines.sheets import page_candidates
from planzoom.engines.sidecar import write_page_text
from planzoom.engines.text import PageWords, Word, read_words
from planzoom.engines.titleblock import discipline, fold, number_key, phrases
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
    # Each section bubble lands on its section's title on the section sheet.
    titles = {fold(w.text) for w in words_of(corpus / CRAYFISH, 4).words}
    assert {"SECTION", "A-A", "D-D"} <= titles
    for r in got[1].references:
        x, y, w, h = r["target_box"]
        want = r["text"].split("/")[0]
        assert 0 < w and 0 < h, r
        names = " ".join(v.text for v in words_of(corpus / CRAYFISH, 4).words
                         if x <= v.x + v.w / 2 <= x + w and y <= v.y + v.h / 2 <= y + h)
        assert names == f"SECTION {want}-{want}", (r, names)


@pytest.mark.parametrize("text, want", [
    ("SECTION A-A", "A"), ("Section 2", "2"), ("DETAIL 5: EAVES", "5"), ("SEZIONE B-B", "B"),
    ("SECTIONS", None), ("SECTION A-B", None), ("DETAILS OF STAIR", None), ("ELEVATION", None),
])
def test_view_titles_name_their_view(text, want):
    words = [Word(t, 100 + 60 * i, 100, 50, 20, 10) for i, t in enumerate(text.split())]
    got = views(phrases(PageWords(3000, 2000, 1440, 960, words)))
    assert [v["id"] for v in got] == ([want] if want else [])
    assert detail_id("D/300-00") == "D" and detail_id("3/A-501") == "3"
    assert detail_id("SEE A-201") is None


@pytest.mark.parametrize("text, want", [
    ("A101 - EXISTING MAIN FLOOR PLAN", ("A101", "EXISTING MAIN FLOOR PLAN")),
    ("Sheets: L02-R02D01-FOS-00-XX-DWG-AR-00001 - Cover Sheet",
     ("L02-R02D01-FOS-00-XX-DWG-AR-00001", "Cover Sheet")),
    ("ASK-05 - STRUCTURE - MOMENT FRAME (1)", ("ASK-05", "STRUCTURE - MOMENT FRAME (1)")),
    ("[1] LS-11435", ("LS-11435", "")),
    ("[1] Model", None), ("12", None), ("iii", None), ("Chapter 1: Creators", None),
    ("1.2 Metrische Räume", None),
])
def test_bookmarks_and_page_labels_that_name_a_sheet(text, want):
    from planzoom.engines.titleblock import parse_hint

    got = parse_hint(text)
    assert (got and (got["number"], got["title"])) == (want or None)


def test_the_pdfs_own_bookmarks_cross_check_the_title_block():
    """A bookmark naming the sheet lifts the candidate it names over a
    louder one (also when an export prefixed it) and its title over
    another; one naming a number the title block does not hold sends the
    page to review; a page with no title block read stays without a
    number (a bookmark is not what is printed on the sheet)."""
    def page(numbers, titles, hints):
        c = _cands(1, numbers)
        c["titles"] = [{"text": t, "box": [0, 0, 10, 10], "score": s, "size": 10.0,
                        "slot": [40, 40], "lines": [t.upper()]} for t, s in titles]
        c["hints"] = [{"number": n, "title": t} for n, t in hints]
        return c

    pages = {
        1: page([("3", 4.0, (40, 40)), ("A101", 3.0, (47, 49))],
                [("GENERAL NOTES", 3.0), ("Existing main floor plan", 2.0)],
                [("A101", "EXISTING MAIN FLOOR PLAN")]),
        2: page([("A102", 5.0, (47, 49))], [], [("A-103", "")]),
        3: page([], [], [("A104", "ROOF PLAN")]),
        4: page([("A104", 5.0, (47, 49))], [], []),
        5: page([("7", 3.4, (40, 40)), ("SC20-02T", 3.0, (47, 49))], [],
                [("XL3476_PS_SC20-02T", "")]),
    }
    sheets = {s.page: s for s in identify_set(pages)}
    assert (sheets[1].number, sheets[1].title) == ("A101", "Existing main floor plan")
    assert sheets[2].number == "A102" and sheets[2].needs_review
    assert not sheets[4].needs_review
    assert sheets[3].number is None
    assert sheets[5].number == "SC20-02T"


def test_a_cad_exports_bookmarks_reach_its_page_candidates(corpus, tmp_path):
    from planzoom.engines.text import document_hints

    name = "arch-floorplan-a1-rot90-heavyvector-scaledetection-drawing.pdf"
    doc = pdfium.PdfDocument(str(corpus / name))
    assert "A2-200 - GROUND FLOOR PLAN" in document_hints(doc)[0]
    page = doc[0]
    w, h = raster_size(*page.get_size(), 40)
    write_page_text(page, w, h, str(tmp_path / "p"), document_hints(doc)[0])
    stored = json.loads((tmp_path / "p.sheet.json").read_text())
    assert {"number": "A2-200", "title": "GROUND FLOOR PLAN"} in stored["hints"]


def test_a_title_on_two_lines_is_taken_whole_not_its_last_line():
    def title(text, lines, score, box):
        return {"text": text, "box": box, "score": score, "size": 20.0, "slot": [45, 45],
                "lines": lines}

    page = _cands(1, [("A-201", 4.0, (47, 49))])
    page["titles"] = [
        title("West", ["WEST"], 2.33, [5632, 3707, 167, 55]),
        title("Elevations - North & West", ["ELEVATIONS - NORTH &", "WEST"], 2.33,
              [5375, 3618, 683, 144]),
        title("Elevations - North &", ["ELEVATIONS - NORTH &"], 2.32, [5375, 3618, 683, 57])]
    assert identify_set({1: page})[0].title == "Elevations - North & West"
    # A block that takes in the project's name, printed on every sheet, is not.
    pages = {n: _cands(n, [(f"A-20{n}", 4.0, (47, 49))]) for n in (1, 2, 3)}
    for n, p in pages.items():
        p["titles"] = [title(f"Plan {n}", [f"PLAN {n}"], 2.3, [5632, 3707, 167, 55]),
                       title(f"Villa Rosa Plan {n}", ["VILLA ROSA", f"PLAN {n}"], 2.3,
                             [5375, 3618, 683, 144]),
                       title("Villa Rosa", ["VILLA ROSA"], 2.2, [5375, 3618, 683, 57])]
    assert [s.title for s in identify_set(pages)] == ["Plan 1", "Plan 2", "Plan 3"]


def test_a_street_address_is_not_a_title():
    page = PageWords(3000, 2000, 1440, 960, [
        Word("L-100", 2800, 1940, 90, 30, 14),
        *[Word(t, 2500 + 80 * i, 1850, 70, 24, 12)
          for i, t in enumerate(["1810", "SOUTH", "PARK", "STREET"])],
        *[Word(t, 2500 + 110 * i, 1900, 100, 20, 10)
          for i, t in enumerate(["LANDSCAPE", "PLAN"])]])
    assert identify_set({1: page_candidates(page)})[0].title == "LANDSCAPE PLAN"


def test_a_views_title_is_not_the_sheets():
    page = PageWords(3000, 2000, 1440, 960, [
        Word("A-301", 2800, 1940, 90, 30, 14),
        *[Word(t, 2500 + 110 * i, 1850, 100, 24, 12) for i, t in enumerate(["SECTION", "D-D"])],
        *[Word(t, 2500 + 110 * i, 1900, 100, 20, 10) for i, t in enumerate(["SECTIONS"])]])
    assert identify_set({1: page_candidates(page)})[0].title == "SECTIONS"


def test_a_cad_files_name_is_not_a_title():
    page = PageWords(3000, 2000, 1440, 960, [
        Word("A101", 2800, 1940, 90, 30, 14), Word("MO-S_4.dwg", 2500, 1850, 160, 24, 12),
        Word("PIANTA", 2500, 1900, 100, 20, 10)])
    assert identify_set({1: page_candidates(page)})[0].title == "PIANTA"


def test_another_fields_value_is_not_the_sheets_number():
    """A re-plot pushed the sheet number off the sheet: what is left in the
    title block's corner is the project number under its label. A sheet
    alone (a one-sheet addendum) says it has no number rather than that."""
    corner = [Word("PROJECT", 2500, 1900, 90, 20, 10), Word("NO:", 2600, 1900, 40, 20, 10),
              Word("1601", 2500, 1935, 90, 32, 16),
              Word("DWG", 2800, 1900, 50, 20, 10), Word("NO:", 2860, 1900, 40, 20, 10)]
    page = PageWords(3000, 2000, 1440, 960, corner)
    assert identify_set({1: page_candidates(page)})[0].number is None
    # Its own number under its own label is read as before.
    page = PageWords(3000, 2000, 1440, 960, [*corner, Word("A-101", 2800, 1935, 100, 32, 16)])
    assert identify_set({1: page_candidates(page)})[0].number == "A-101"


def test_a_match_lines_sheet_is_not_this_sheets_number():
    """"SEE SHEET TS03" at a match line names the next sheet; its "SHEET" is
    no number label. The sheet's own number, small in its title block, is
    read; without one the page has no number."""
    match_line = [Word("SEE", 2500, 1500, 60, 30, 14), Word("SHEET", 2590, 1500, 110, 30, 14),
                  Word("TS03", 2730, 1500, 90, 30, 14)]
    page = PageWords(3000, 2000, 1440, 960, match_line)
    found = identify_set({1: page_candidates(page)})[0]
    assert found.number != "TS03"
    own = [Word("SHEET", 2800, 1900, 60, 12, 6), Word("TS02", 2800, 1930, 60, 14, 7)]
    page = PageWords(3000, 2000, 1440, 960, [*match_line, *own])
    assert identify_set({1: page_candidates(page)})[0].number == "TS02"


def test_a_number_run_together_with_upright_text_is_its_own_word(tmp_path):
    """PDFium can run a sheet number into a line set upright beside it when
    one text object holds both ("01freecad.com"): the word is cut where the
    next letter leaves the number's line."""
    pikepdf = pytest.importorskip("pikepdf")
    pdf = pikepdf.new()
    font = pdf.make_indirect(pikepdf.Dictionary(
        Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica))
    content = b"BT /F1 24 Tf 1 0 0 1 560 60 Tm (01) Tj 0 1 -1 0 587 500 Tm /F1 8 Tf " \
              b"(freecad.com) Tj ET"
    pdf.pages.append(pikepdf.Page(pikepdf.Dictionary(
        Type=pikepdf.Name.Page, MediaBox=[0, 0, 1224, 792],
        Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)),
        Contents=pdf.make_stream(content))))
    pdf.save(tmp_path / "glued.pdf")
    doc = pdfium.PdfDocument(str(tmp_path / "glued.pdf"))
    assert "01freecad" in doc[0].get_textpage().get_text_range()  # as PDFium runs them
    words = read_words(doc[0], 1224, 792).words
    assert [(w.text, w.angle) for w in words] == [("01", 0), ("freecad.com", 90)]


def test_a_seals_ring_of_words_is_no_title(tmp_path):
    """An engineer's seal sets "PROFESSIONAL" along a circle: its box is
    tall, as if its letters were large, but the word is curved. It stays
    searchable and is never the title."""
    pikepdf = pytest.importorskip("pikepdf")
    import math

    parts = [b"BT /F1 30 Tf"]
    for i, ch in enumerate("PROFESSIONAL"):
        a = math.radians(150 - i * 10)
        t = a - math.pi / 2
        parts.append(f"{math.cos(t):.4f} {math.sin(t):.4f} {-math.sin(t):.4f} {math.cos(t):.4f} "
                     f"{1000 + 80 * math.cos(a):.2f} {150 + 80 * math.sin(a):.2f} Tm ({ch}) Tj"
                     .encode())
    parts.append(b"ET BT /F1 10 Tf 1 0 0 1 900 40 Tm (FLOOR PLAN) Tj "
                 b"1 0 0 1 1150 20 Tm (A-101) Tj ET")
    pdf = pikepdf.new()
    font = pdf.make_indirect(pikepdf.Dictionary(
        Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica))
    pdf.pages.append(pikepdf.Page(pikepdf.Dictionary(
        Type=pikepdf.Name.Page, MediaBox=[0, 0, 1224, 792],
        Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)),
        Contents=pdf.make_stream(b" ".join(parts)))))
    pdf.save(tmp_path / "seal.pdf")
    doc = pdfium.PdfDocument(str(tmp_path / "seal.pdf"))
    words = read_words(doc[0], 2448, 1584)
    assert {w.text for w in words.words if w.curved} >= {"ONAL"}
    assert not any(w.curved for w in words.words if w.text in ("FLOOR", "PLAN", "A-101"))
    assert identify_set({1: page_candidates(words)})[0].title == "FLOOR PLAN"


def _corner(*cells: tuple[str, int, int, float]) -> PageWords:
    """A sheet 3000 x 2000 px whose words are (text, x, y, size in points),
    each word as wide as its letters."""
    return PageWords(3000, 2000, 1440, 960, [
        Word(t, x, y, max(8, int(len(t) * size * 1.1)), int(size * 2), size)
        for t, x, y, size in cells])


def test_a_label_run_into_its_value_on_one_line():
    """"Plan-Nr.: 6075_A_GR_EG_901" beside a building's code printed large
    in the corner: the value after the one-word label is the number."""
    page = _corner(("Plan-Nr.:", 2500, 1900, 6), ("6075_A_GR_EG_901", 2570, 1900, 7),
                   ("ST30", 2900, 1950, 12))
    assert identify_set({1: page_candidates(page)})[0].number == "6075_A_GR_EG_901"


def test_a_number_shaped_like_a_date_under_its_label_and_no_paper_size():
    """German templates: "PLANNUMMER" over "5.1.00" (a short date's shape),
    "FORMAT A0" in the corner. Without the label, "5.1.00" is a date."""
    size = [("FORMAT", 2600, 1960, 6), ("A0", 2900, 1960, 9)]
    page = _corner(("PLANNUMMER", 2600, 1850, 6), ("5.1.00", 2600, 1868, 20), *size)
    assert identify_set({1: page_candidates(page)})[0].number == "5.1.00"
    page = _corner(("DATUM", 2600, 1850, 6), ("5.1.00", 2600, 1868, 20), *size)
    assert identify_set({1: page_candidates(page)})[0].number is None


def test_a_project_number_and_the_sheets_on_one_line():
    """"TX17886.00 - S2.01", each part under its own label ("PROJECT No.",
    "DRAWING No."), beside other labels' values on the sheet."""
    page = _corner(("PROJECT", 2300, 1900, 6), ("No.", 2345, 1900, 6),
                   ("DRAWING", 2600, 1900, 6), ("No.", 2650, 1900, 6),
                   ("TX17886.00", 2300, 1915, 20), ("-", 2560, 1925, 20),
                   ("S2.01", 2600, 1915, 20), ("BP1", 1500, 1500, 21))
    assert identify_set({1: page_candidates(page)})[0].number == "S2.01"


def test_a_number_of_letters_only_under_its_label():
    page = _corner(("DRAWING", 2600, 1900, 7), ("No:", 2660, 1900, 7), ("COV-S", 2600, 1920, 10))
    assert identify_set({1: page_candidates(page)})[0].number == "COV-S"
    page = _corner(("NOTE", 2600, 1900, 7), ("COV-S", 2600, 1920, 10))
    assert identify_set({1: page_candidates(page)})[0].number is None


def test_a_titles_words_a_wide_space_apart_are_one_title():
    """CAD fonts space words up to about their letters' height apart
    ("FOOTING" and "PLAN", 0.95 of it)."""
    page = PageWords(3000, 2000, 1440, 960, [
        Word("S2.01", 2800, 1940, 90, 30, 14), Word("FOOTING", 2300, 1850, 170, 30, 14),
        Word("PLAN", 2498, 1850, 95, 30, 14)])
    assert identify_set({1: page_candidates(page)})[0].title == "FOOTING PLAN"


def test_a_tiny_label_over_its_larger_number():
    """WSDOT prints "PLAN REF NO" in 2 pt letters and the number in 5 pt a
    line below: it is the label's value, whatever large station mark the
    drawing holds."""
    page = _corner(("PLAN", 2800, 1880, 2), ("REF", 2815, 1880, 2), ("NO", 2830, 1880, 2),
                   ("TS01", 2805, 1900, 5), ("S5F4", 2500, 700, 18),
                   *[(t, 2400 + 90 * i, 1950, 5) for i, t in enumerate(
                       ("NEW", "EXPRESSWAY", "STATE", "ROUTE"))])
    assert identify_set({1: page_candidates(page)})[0].number == "TS01"


def test_a_drawing_index_is_read_in_its_column_only():
    """Sheet numbers down a column, each with its title to the right, are a
    drawing index; a dimension beside a room's name elsewhere is not."""
    rows = [("G001", "GENERAL NOTES"), ("A101", "FIRST FLOOR PLAN"),
            ("A102", "SECOND FLOOR PLAN"), ("A201", "ELEVATIONS"), ("E101", "LIGHTING PLAN")]
    words = []
    for i, (number, title) in enumerate(rows):
        words.append(Word(number, 2000, 400 + 30 * i, 60, 16, 7))
        words += [Word(t, 2120 + 110 * k, 400 + 30 * i, 100, 16, 7)
                  for k, t in enumerate(title.split())]
    words += [Word("3.65", 500, 900, 50, 16, 7), Word("KITCHEN", 560, 900, 90, 16, 7),
              Word("4.10", 900, 1300, 50, 16, 7), Word("BATH", 960, 1300, 60, 16, 7)]
    index = page_candidates(PageWords(3000, 2000, 1440, 960, words))["index"]
    assert [(r["number"], r["title"]) for r in index] == [
        (n, t) for n, t in sorted(rows, key=lambda r: rows.index(r))]


def test_the_drawing_index_names_each_sheets_number_and_title():
    """A cover's index lists A-101…A-104. On each sheet a detail mark
    scores a little higher than the number and the title's first line alone
    a little higher than the title: the index settles both. Without it the
    detail marks win."""
    def sheets(with_index: bool):
        cover = _cands(1, [("G-001", 4.0, (47, 49))])
        cover["index"] = [{"number": f"A-10{n}", "title": f"PLAN LEVEL {n}",
                           "box": [100, 100 + 20 * n, 40, 10]} for n in range(1, 5)] \
            if with_index else []
        pages = {1: cover}
        for n in range(1, 5):
            c = _cands(n + 1, [(f"D-{n}", 3.2, (20, 30)), (f"A-10{n}", 3.0, (47, 49))])
            c["titles"] = [
                {"text": "PLAN", "box": [0, 0, 10, 10], "score": 2.5, "size": 10.0,
                 "slot": [45, 48], "lines": ["PLAN"]},
                {"text": f"PLAN LEVEL {n}", "box": [0, 0, 10, 20], "score": 1.6,
                 "size": 10.0, "slot": [45, 48], "lines": ["PLAN", f"LEVEL {n}"]}]
            pages[n + 1] = c
        return identify_set(pages)[1:]

    found = sheets(True)
    assert [s.number for s in found] == ["A-101", "A-102", "A-103", "A-104"]
    assert [s.title for s in found] == [f"PLAN LEVEL {n}" for n in range(1, 5)]
    assert [s.number for s in sheets(False)] == ["D-1", "D-2", "D-3", "D-4"]


@pytest.mark.parametrize("text", [
    "A-B5-1-00T", "T-V-P-0-B3-01", "K33:01", "V-57:11", "TEMPLE/28-1/24/SD-001",
    "BIC/03-0225-SD-001", "F014-PMEP-00-00-DR-E-01", "708171-M-30-1-0001"])
def test_number_shapes_of_other_offices(text):
    """Letter groups before the digits (Danish A-B5-…), colons (Swedish
    K33:01), a project's code and slashes (Indian TEMPLE/28-1/24/SD-001),
    four-letter originator codes (ISO 19650)."""
    from planzoom.engines.titleblock import number_shaped

    assert number_shaped(text)


@pytest.mark.parametrize("text", ["LEVEL-2", "BATHROOM1", "12:30", "25/01/25"])
def test_words_times_and_dates_are_not_number_shaped(text):
    from planzoom.engines.titleblock import number_shaped

    assert not number_shaped(text)


def test_a_code_with_a_date_in_it_under_its_label():
    """"CCC/25/01/25/MD/SD-001" holds a date's shape; under "DRAWING NO." it
    is the number, anywhere else a date is never one."""
    from planzoom.engines.titleblock import number_shaped

    assert number_shaped("CCC/25/01/25/MD/SD-001", labelled=True)
    assert not number_shaped("CCC/25/01/25/MD/SD-001")
    assert not number_shaped("25/01/2025", labelled=True)


@pytest.mark.parametrize("label", ["DOKUMENTNUMMER", "Dwg n°:", "RITNINGSNUMMER", "TEGNINGSNR",
                                   "Tegning nr.", "PRANCHA", "Dwg. No."])
def test_number_labels_of_more_languages(label):
    from planzoom.engines.titleblock import NUMBER_LABEL

    assert NUMBER_LABEL.match(fold(label).strip())


def test_a_large_number_set_well_after_its_small_label():
    """"Dwg. No." in 8 pt letters and, 6 of its heights to the right, the
    number in 13 pt; the project's code alone, as large, in the corner."""
    page = _corner(("Dwg.", 2300, 1900, 8), ("No.", 2345, 1900, 8),
                   ("L118-CSC-ZZ-XX-DR-C-0100", 2480, 1895, 13), ("L118", 2900, 1950, 13),
                   *[(t, 2300 + 90 * i, 1960, 8) for i, t in enumerate(
                       ("Drn", "by", "Chkd", "by", "Date"))])
    assert identify_set({1: page_candidates(page)})[0].number == "L118-CSC-ZZ-XX-DR-C-0100"


@pytest.mark.parametrize("text", ["25 /02 /2015", "tel.0302886050", "Fax: 030 288 60 50"])
def test_spaced_dates_and_phones_are_not_numbers(text):
    from planzoom.engines.titleblock import number_shaped

    assert not number_shaped(text) and not number_shaped(text, labelled=True)


def test_a_titles_label_and_the_sheet_counter_are_not_the_title():
    """"Drawing Title:" on the title's first line and "Sheet 7 of 13" under
    it: the title is what lies between."""
    page = _corner(("Drawing", 2300, 1800, 10), ("Title:", 2390, 1800, 10),
                   ("Roof", 2460, 1800, 10), ("Plan", 2520, 1800, 10),
                   ("EXISTING", 2300, 1830, 10), ("Sheet", 2300, 1860, 10),
                   ("7", 2370, 1860, 10), ("of", 2390, 1860, 10), ("13", 2420, 1860, 10),
                   ("PD.104", 2800, 1950, 14))
    assert identify_set({1: page_candidates(page)})[0].title == "Roof Plan EXISTING"


@pytest.mark.parametrize("label", ["Sagsnr.", "Bygherre", "Ritad", "Granskad", "Uppdragsnr",
                                   "Proprietário", "Auftraggeber"])
def test_other_fields_labels_of_more_languages(label):
    from planzoom.engines.titleblock import OTHER_LABEL

    assert OTHER_LABEL.match(fold(label).strip())


def test_values_centred_in_wide_cells_under_their_labels():
    """Darmody's block: "Title." and "Client." at the left of wide cells,
    each value centred in its cell; the client's name sits nearer the
    corner and is as large as the title."""
    page = _corner(("Title.", 2200, 1780, 6), ("Proposed", 2370, 1796, 11),
                   ("Landscape", 2480, 1796, 11), ("Plan", 2600, 1796, 11),
                   ("Client.", 2200, 1875, 6), ("Lefgem", 2450, 1890, 11), ("Ltd.", 2540, 1890, 11),
                   ("Dwg.", 2200, 1950, 7), ("No.", 2250, 1950, 7), ("PA-010", 2310, 1968, 10))
    assert identify_set({1: page_candidates(page)})[0].title == "Proposed Landscape Plan"


def test_a_borders_zone_letters_and_a_postal_town_are_not_titles():
    page = _corner(("ABCDEFGH", 2300, 1960, 14), ("2860", 2300, 1900, 13),
                   ("Søborg", 2380, 1900, 13), ("Plantegning", 2300, 1850, 10),
                   ("Bygn.", 2430, 1850, 10), ("7", 2500, 1850, 10), ("A-B7-1-000", 2800, 1950, 12))
    assert identify_set({1: page_candidates(page)})[0].title == "Plantegning Bygn. 7"


def test_a_number_run_into_its_labels_last_word():
    """"DRAWING NO-ID20250018 -01": PDFium reads a hyphen where the title
    block has a space, and the number starts inside the label's word."""
    page = _corner(("DRAWING", 2300, 1900, 7), ("NO-ID20250018", 2360, 1900, 7),
                   ("-01", 2470, 1900, 7), ("A2", 1400, 0, 60))
    assert identify_set({1: page_candidates(page)})[0].number == "ID20250018-01"
