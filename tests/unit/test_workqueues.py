"""Page jobs and preview passes as they are published (planzoom.messaging.workqueues)."""

from __future__ import annotations


def test_preview_passes_cover_runs_of_pages():
    from planzoom.messaging.workqueues import _runs

    assert _runs(list(range(1, 20)), 8) == [(1, 8), (9, 16), (17, 19)]
    assert _runs([9, 1, 2, 5, 6, 7, 2], 8) == [(1, 2), (5, 7), (9, 9)]
    assert _runs([], 8) == []
