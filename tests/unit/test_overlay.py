"""A sheet registered onto its re-plotted version and its changes found
(planzoom.engines.overlay), on a real sheet moved by known amounts."""

from __future__ import annotations

import numpy as np
import pytest

from bench.overlay import draw, grid_error
from planzoom.engines.overlay import RegistrationFailed, overlay, register
from planzoom_devstack.revise import Edit, revise

SHEET = "arch-floorplan-70x45cm-archicad-atriumhouse.pdf"
DPI = 100


@pytest.fixture(scope="module")
def previous(corpus):
    return draw(str(corpus / SHEET), 1, DPI)


@pytest.mark.parametrize("edit", [
    Edit(shift=(0.04, -0.03), scale=0.93, rotate=1.7),
    Edit(shift=(-0.02, 0.01), scale=1.08, rotate=-1.2),
    Edit(turn=90, shift=(0.01, 0.0)),
], ids=["shrunk", "grown", "turned"])
@pytest.mark.parametrize("words", [True, False], ids=["words", "line-work"])
def test_a_moved_sheet_is_registered_within_two_pixels(corpus, tmp_path, previous, edit, words):
    prev, prev_words = previous
    truth = revise(str(corpus / SHEET), str(tmp_path / "r.pdf"), [1], {1: edit})[1]
    cur, cur_words = draw(str(tmp_path / "r.pdf"), 1, DPI)
    result, image = overlay(prev, cur, 1.0, 1.0, *((prev_words, cur_words) if words else ()))
    assert result.method == ("words" if words else "features")
    err = grid_error(truth, result.transform, prev.shape, DPI)
    assert np.percentile(err, 95) < 2.0, np.percentile(err, 95)
    assert result.changes == []  # the same drawing, moved
    assert image.shape == (*cur.shape, 3)


def test_added_and_removed_elements_are_found_where_they_are(corpus, tmp_path, previous):
    prev, prev_words = previous
    edit = Edit(shift=(0.02, 0.02), add=[(0.6, 0.2, 0.05, 0.04)], remove=[(0.3, 0.4, 0.08, 0.08)])
    revise(str(corpus / SHEET), str(tmp_path / "r.pdf"), [1], {1: edit})
    cur, cur_words = draw(str(tmp_path / "r.pdf"), 1, DPI)
    result, _ = overlay(prev, cur, 1.0, 1.0, prev_words, cur_words)
    h, w = cur.shape
    added = [c for c in result.changes if c["kind"] == "added"]
    assert len(added) == 1
    x, y, bw, bh = added[0]["box"]
    assert abs(x - 0.6 * w) < 4 and abs(y - 0.2 * h) < 4 and abs(bw - 0.05 * w) < 8
    removed = [c for c in result.changes if c["kind"] == "removed"]
    assert removed and all(0.3 * w - 20 < c["box"][0] < 0.42 * w for c in removed)
    assert result.residual_px is not None and result.residual_px < 1.0


def test_a_blank_page_cannot_be_registered():
    blank = np.full((400, 300), 255, np.uint8)
    with pytest.raises(RegistrationFailed):
        register(blank, blank, 1.0, 1.0)
