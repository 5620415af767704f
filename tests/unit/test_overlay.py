"""A sheet registered onto its re-plotted version and its changes found
(planzoom.engines.overlay), on a real sheet moved by known amounts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bench.overlay import draw, grid_error
from planzoom.engines.overlay import RegistrationFailed, changes, overlay, register
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


IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def test_a_line_drawn_darker_is_no_change_but_ink_over_a_fill_is():
    """One version draws a line as a thin grey hairline, the other as two
    strokes on top of each other (darker, a pixel wider): the same line.
    Black drawn over a grey fill or over a screened line (existing work
    drawn again as new), or a new line across the old one, is a change."""
    old = np.full((200, 300), 255, np.uint8)
    old[100, 20:280] = 110  # a hairline
    old[140:190, 20:120] = 150  # a grey fill
    old[60, 20:150] = 170  # a screened line
    darker = old.copy()
    darker[99:101, 20:280] = 0
    assert changes(old, darker, IDENTITY)[0] == []
    over_fill = old.copy()
    over_fill[160:162, 30:110] = 0
    [found] = changes(old, over_fill, IDENTITY)[0]
    assert found["kind"] == "added" and 25 <= found["box"][0] <= 35
    now_new = old.copy()
    now_new[59:61, 20:150] = 0
    [found] = changes(old, now_new, IDENTITY)[0]
    assert found["kind"] == "added" and found["box"][1] in (59, 60)
    across = old.copy()
    across[20:135, 200:202] = 0
    [found] = changes(old, across, IDENTITY)[0]
    assert found["kind"] == "added" and found["box"][1] <= 25 and found["box"][3] >= 100


def test_a_line_the_previous_plot_clipped_at_its_edge_is_no_change():
    """The previous plot clipped its border line at the sheet's edge (drawn
    half, light); moved 10 px in, the new plot draws it whole."""
    old = np.full((200, 300), 255, np.uint8)
    old[20:180, 0] = 190
    old[20:180, 150:152] = 0
    new = np.full((200, 300), 255, np.uint8)
    new[20:180, 10:12] = 0
    new[20:180, 160:162] = 0
    moved = np.array([[1.0, 0.0, 10.0], [0.0, 1.0, 0.0]])
    assert changes(old, new, moved)[0] == []
    new[20:180, 100:102] = 0  # and a line that is new is found
    [found] = changes(old, new, moved)[0]
    assert found["box"][0] == 100


def test_faint_line_work_painted_out_is_found_and_faint_work_kept_is_not():
    """Grey hairlines (darkest 113 of 255) too light to count as ink: a
    patch of them painted out is a removal; the same lines a pixel off are
    no change."""
    old = np.full((300, 400), 255, np.uint8)
    for y in range(40, 260, 12):
        cv2.line(old, (40, y), (360, y + 3), 113, 1, cv2.LINE_AA)
    assert changes(old, np.roll(old, 1, axis=1), IDENTITY)[0] == []
    painted = old.copy()
    painted[100:180, 150:250] = 255
    [found] = changes(old, painted, IDENTITY)[0]
    assert found["kind"] == "removed"
    x, y, w, h = found["box"]
    assert 145 <= x <= 160 and 95 <= y <= 110 and 85 <= w <= 105 and 65 <= h <= 85
