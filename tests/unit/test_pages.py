"""A page's geometry under the caps, a job's budget, the overview's level
(planzoom.pages, planzoom.engines.variants)."""

from __future__ import annotations

import math

from planzoom.dzi import level_count
from planzoom.pages import effective_dpi
from planzoom.v1 import jobs_pb2


def test_overview_is_the_highest_level_that_fits():
    from planzoom.dzi import level_size
    from planzoom.engines.variants import overview_level

    for w, h, px in ((2481, 3508, 1024), (1000, 800, 1024), (35000, 20, 1024), (5, 5, 1),
                     (4097, 4096, 4096), (1, 1, 1024)):
        level = overview_level(w, h, px)
        assert max(level_size(w, h, level)) <= px or level == 0
        assert level == level_count(w, h) - 1 or max(level_size(w, h, level + 1)) > px
    assert level_size(2481, 3508, overview_level(2481, 3508, 1024)) == (621, 877)


def test_effective_dpi_caps_pixels():
    # The 607 x 682 in SolveSpace sheet of the corpus.
    w, h = 43755.77, 49080.97
    dpi = effective_dpi(w, h, 300, 400_000_000)
    assert dpi < 300
    assert math.ceil(w * dpi / 72) * math.ceil(h * dpi / 72) <= 400_000_000
    up = dpi + 0.01
    assert math.ceil(w * up / 72) * math.ceil(h * up / 72) > 400_000_000
    assert effective_dpi(2592, 1728, 300, 400_000_000) == 300


def test_the_default_budget_takes_a_real_plan_set_and_refuses_amplification():
    from planzoom.config import Settings
    from planzoom.engines import SourceInfo, geometries
    from planzoom.pages import job_work

    def plan_work(sizes, dpi, tile_size):
        options = jobs_pb2.JobOptions(dpi=dpi, max_page_pixels=s.max_page_pixels)
        return job_work(geometries(SourceInfo(page_sizes=sizes), options), tile_size, 1)

    s = Settings()
    sheets = plan_work([(36 * 72, 48 * 72)] * 500, 300, 256)
    assert sheets.pixels <= s.max_job_pixels and sheets.tiles <= s.max_job_tiles
    bomb = plan_work([(14400, 14400)] * 2000, 1200, 64)
    assert bomb.tiles == 262_008_000 > s.max_job_tiles
    from planzoom.pages import effective_dpi, raster_size

    dpi = effective_dpi(14400, 72, 1200, s.max_page_pixels)  # a 200 x 1 in strip
    width, height = raster_size(14400, 72, dpi)
    assert width <= 65536 < raster_size(14400, 72, dpi + 0.01)[0], "the longest side is capped"
    assert width * height <= s.max_page_pixels
