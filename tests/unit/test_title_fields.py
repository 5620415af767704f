"""A title block's revision mark and issue date (planzoom.engines.title_fields):
labelled fields in several templates of the corpus, a revision table's
newest row, and the dates and marks that are not a sheet's."""

from __future__ import annotations

import pytest

from planzoom.engines.sheet_set import identify_set
from planzoom.engines.sheets import page_candidates
from planzoom.engines.text import PageWords, Word
from planzoom.engines.title_fields import date_of, mark_of
from tests.unit.test_sheets import words_of


def _fields(words: list[Word]) -> tuple[str | None, str | None]:
    c = page_candidates(PageWords(3000, 2000, 1440, 960, words))
    return ((c["revision"] or {}).get("text"), (c["issued"] or {}).get("text"))


def _w(text: str, x: int, y: int, w: int | None = None) -> Word:
    return Word(text, x, y, w or 12 * len(text), 20, 10)


@pytest.mark.parametrize("name, page, want", [
    # What a person reads in each title block (labels checked by eye).
    ("arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf", 1, (None, "04/12/2016")),
    ("arch-mos1-malm-desk-A2-autocad2016-quartz-pdfium-slow-michelagalassini-strumet.pdf", 2,
     ("A", "2017/05/22")),
    ("arch-facades-58x30cm-archicad-atriumhouse.pdf", 1, (None, "April 2020")),
])
def test_revision_and_date_as_the_title_block_prints_them(corpus, name, page, want):
    c = page_candidates(words_of(corpus / name, page, 100))
    assert ((c["revision"] or {}).get("text"), (c["issued"] or {}).get("text")) == want


def test_a_set_carries_them_into_its_sheets(corpus):
    pages = {1: page_candidates(words_of(
        corpus / "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf", 1, 100))}
    sheet = identify_set(pages)[0]
    assert sheet.issued == "04/12/2016" and sheet.issued_box and sheet.revision is None


def test_a_labelled_field_with_its_value_after_or_under_it():
    assert _fields([_w("REV:", 2500, 1800), _w("C", 2570, 1800),
                    _w("DATE:", 2500, 1850), _w("2019-03-04", 2600, 1850)]) == ("C", "2019-03-04")
    assert _fields([_w("Revision", 2500, 1800), _w("P02", 2500, 1830),
                    _w("Issue Date", 2700, 1800, 120), _w("12 APR 2016", 2700, 1830, 130)]) \
        == ("P02", "12 APR 2016")
    assert _fields([_w("Date: 11/07/16", 2500, 1800)]) == (None, "11/07/16")


def test_a_revision_tables_newest_row():
    # The table grows downwards; rows out of order on the page: the date decides.
    header = [_w("REV", 2300, 1500), _w("DATE", 2400, 1500), _w("DESCRIPTION", 2550, 1500)]
    rows = [_w("A", 2300, 1540), _w("06-24-19", 2400, 1540), _w("FOR APPROVAL", 2550, 1540),
            _w("C", 2300, 1580), _w("07-02-19", 2400, 1580), _w("AS BUILT", 2550, 1580),
            _w("B", 2300, 1620), _w("06-26-19", 2400, 1620), _w("PER COMMENTS", 2550, 1620)]
    assert _fields(header + rows) == ("C", "07-02-19")
    # "No. | Description | Date" (a Revit table) over one row, and a drawn date field.
    revit = [_w("No.", 2300, 1500), _w("Description", 2360, 1500), _w("Date", 2600, 1500),
             _w("2", 2300, 1540), _w("Permit set", 2360, 1540), _w("01.29.2015", 2600, 1540),
             _w("Date", 2300, 1800), _w("12.11.2014", 2400, 1800)]
    assert _fields(revit) == ("2", "01.29.2015")
    # An empty table says nothing; the date field stands.
    assert _fields(header + [_w("DATE", 2300, 1800), _w("04/12/2016", 2400, 1800)]) \
        == (None, "04/12/2016")


def test_marks_and_dates_that_are_not_a_sheets():
    # A plot stamp, a scale bar's figures under a label, words that start like a label.
    assert _fields([_w("PLOT DATE", 2500, 1800, 110), _w("12/31/2024", 2620, 1800)]) \
        == (None, None)
    assert _fields([_w("REV:", 2500, 1800), _w("0", 2500, 1830), _w("50mm", 2560, 1830),
                    _w("SCALE", 2700, 1800)]) == (None, None)
    assert _fields([_w("DATA STATION AND RAMP METER CABINET", 1000, 800),
                    _w("12/05/2017", 1000, 830)]) == (None, None)
    assert mark_of("NO") is None and mark_of("1:50") is None and mark_of("T-1") == "T-1"
    assert date_of("C18/07/2017") == "18/07/2017" and mark_of("C18/07/2017") == "C"
    assert date_of("1601") is None and date_of("4 - 6 - 2021") == "4 - 6 - 2021"


def test_a_date_printed_after_the_title_where_no_field_is_labelled():
    page = PageWords(3000, 2000, 1440, 960, [
        _w("A-101", 2700, 1900), _w("SITE", 2300, 1850), _w("PLAN", 2360, 1850),
        _w("-", 2415, 1850), _w("07/11/2019", 2435, 1850)])
    sheet = identify_set({1: page_candidates(page)})[0]
    assert (sheet.title, sheet.issued) == ("SITE PLAN", "07/11/2019")
