"""A page's words and sheet candidates, read beside its render (in the
render's sandbox, from the page PDFium has already loaded) and written next
to its raster: the word sidecar and the candidates the set is read from
when the job ends (docs/sheets.md)."""

from __future__ import annotations

from planzoom.engines.sheets import page_candidates
from planzoom.engines.text import (
    OCR_BELOW_GLYPHS,
    OCR_SURE_SCORE,
    PageWords,
    ocr_words,
    read_words,
)


def page_text(page, width: int, height: int, ocr: bool = True) -> PageWords:
    """An open page's words: its text layer (:func:`read_words`), and where
    it has (almost) none, what OCR reads in its title block
    (:func:`ocr_words`, upright, then turned when nothing upright looks
    like a sheet number; ``source`` "ocr")."""
    found = read_words(page, width, height)
    if ocr and found.glyphs < OCR_BELOW_GLYPHS:
        read = ocr_words(page, width, height)
        numbers = page_candidates(read)["numbers"] if read.words else []
        if read.words and (not numbers or numbers[0]["score"] < OCR_SURE_SCORE):
            # Words, but nothing like a number: the sheet may be plotted
            # turned. (No words at all: there is nothing to read turned.)
            turned = ocr_words(page, width, height, (90, 270))
            read.words.extend(turned.words)
            read.glyphs += turned.glyphs
        if read.words:
            found.words.extend(read.words)
            found.glyphs += read.glyphs
            found.source = "ocr"
    return found


def write_page_text(page, width: int, height: int, out_base: str,
                    hints: list[str] | tuple = ()) -> int:
    """Read an open page's words (:func:`page_text`) and write, beside a
    raster at ``out_base``: ``<out_base>.words.json.gz``, the page's word
    sidecar (docs/sheets.md), and ``<out_base>.sheet.json``, its sheet
    candidates (:func:`page_candidates`, with the page's ``hints``: its
    bookmarks and label). Returns the words written."""
    import gzip
    import json

    found = page_text(page, width, height)
    with gzip.open(out_base + ".words.json.gz", "wt", encoding="utf-8", compresslevel=6) as f:
        json.dump(found.to_json(), f, ensure_ascii=False, separators=(",", ":"))
    with open(out_base + ".sheet.json", "w", encoding="utf-8") as f:
        json.dump(page_candidates(found, hints), f, ensure_ascii=False, separators=(",", ":"))
    return len(found.words)
