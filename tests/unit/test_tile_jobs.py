"""What the tile stage takes from a TileJob: only its own page's raster."""

from __future__ import annotations

import pytest

from planzoom import keys
from planzoom.v1 import events_pb2
from services.tile.service import ForeignRaster, own_raster

JOB = "0193a1b2c3d4e5f6a7b8c9"


def test_a_tile_job_reads_and_deletes_its_own_raster_only():
    job = events_pb2.TileJob(job_id=JOB, page=3, raster_key=keys.raster_key(JOB, 3))
    assert own_raster(job) == f"work/{JOB}/page-3.raw.zst"
    for forged in (keys.raster_key(JOB, 4), keys.raster_key("0193a1b2c3d4e5f6a7b8ff", 3),
                   "tiles/other-org/p/l/0193a1b2c3d4e5f6a7b8ff/page-1.dzi",
                   f"work/{JOB}/../../sources/other-org/x.pdf", ""):
        with pytest.raises(ForeignRaster):
            own_raster(events_pb2.TileJob(job_id=JOB, page=3, raster_key=forged))
    with pytest.raises(ForeignRaster):  # a job id that is not one
        own_raster(events_pb2.TileJob(job_id="../x", page=3, raster_key="work/../x/page-3.raw.zst"))
