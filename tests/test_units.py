"""Fast unit tests: ids, DZI arithmetic, magic bytes, event folding, DPI cap."""

from __future__ import annotations

import math

import pytest

from planzoom import keys
from planzoom.dzi import level_count, parse_dzi
from planzoom.ids import InvalidId, check_id, new_job_id
from planzoom.v1 import jobs_pb2
from services.ingest.checks import describe_magic
from services.progress.fold import apply_event
from services.render.rasterize import effective_dpi


@pytest.mark.parametrize("value", ["a", "Org-1", "plan_2024", "x" * 64, new_job_id()])
def test_valid_ids(value):
    assert check_id("org", value) == value


@pytest.mark.parametrize(
    "value", ["", "a/b", "..", "../etc", "a.b", "-lead", "_lead", "a b", "a\x00b", "é", "x" * 65,
              "a\nb", "a\\b"],
)
def test_invalid_ids(value):
    with pytest.raises(InvalidId):
        check_id("org", value)


def test_keys_refuse_bad_ids():
    with pytest.raises(InvalidId):
        keys.dzi_key(jobs_pb2.PlanRef(org="o", project="..", plan="p"), new_job_id(), 1)
    plan = jobs_pb2.PlanRef(org="o", project="p", plan="l")
    assert keys.dzi_key(plan, "j1", 3) == "tiles/o/p/l/j1/page-3.dzi"
    assert keys.current_key(plan) == "tiles/o/p/l/current.json"


def test_job_ids_sort_by_time():
    a = new_job_id()
    b = new_job_id()
    assert len(a) == 22 and a[:12] <= b[:12]


@pytest.mark.parametrize("w,h", [(1, 1), (2, 1), (255, 3), (256, 256), (257, 10), (10800, 7200)])
def test_level_count(w, h):
    expected = math.ceil(math.log2(max(w, h))) + 1 if max(w, h) > 1 else 1
    assert level_count(w, h) == expected


def test_parse_dzi_and_tile_count(tmp_path):
    pyvips = pytest.importorskip("pyvips")
    from services.tile.pyramid import build_pyramid, tile_files

    raw = tmp_path / "r.raw"
    w, h = 1000, 700
    raw.write_bytes(bytes(range(256)) * (w * h * 3 // 256) + bytes(w * h * 3 % 256))
    info = build_pyramid(str(raw), w, h, 3, str(tmp_path), "page-1", 254, 1, 80)
    assert (info.width, info.height, info.tile_size, info.overlap) == (w, h, 254, 1)
    assert len(list(tile_files(str(tmp_path), "page-1"))) == info.tile_count()
    top = info.levels - 1
    for col in range(info.grid(top)[0]):
        for row in range(info.grid(top)[1]):
            im = pyvips.Image.new_from_file(str(tmp_path / f"page-1_files/{top}/{col}_{row}.jpg"))
            assert (im.width, im.height) == info.tile_box(top, col, row)[2:]
    with pytest.raises(ValueError):
        parse_dzi(b"<html/>")


@pytest.mark.parametrize("head,expected", [
    (b"%PDF-1.7\n", None), (b"\n\n%PDF-1.4", None), (b"MZ\x90\x00", "Windows executable"),
    (b"\x7fELF\x02", "ELF"), (b"\x89PNG\r\n", "PNG"), (b"hello", "starts with bytes"),
])
def test_describe_magic(head, expected):
    got = describe_magic(head)
    assert got is None if expected is None else expected in got


def _job(pages: int) -> jobs_pb2.Job:
    return jobs_pb2.Job(
        job_id="j", state=jobs_pb2.JOB_STATE_PENDING, total_pages=pages,
        pages=[jobs_pb2.PageRecord(page=i + 1, state=jobs_pb2.PAGE_STATE_PENDING)
               for i in range(pages)],
    )


def _ev(page: int, state: int, **kw) -> jobs_pb2.ProgressEvent:
    return jobs_pb2.ProgressEvent(job_id="j", page=jobs_pb2.PageRecord(page=page, state=state,
                                                                       **kw))


def test_fold_moves_forward_only_and_completes():
    job = _job(2)
    assert apply_event(job, _ev(1, jobs_pb2.PAGE_STATE_RENDERING))
    assert job.state == jobs_pb2.JOB_STATE_PROCESSING
    assert apply_event(job, _ev(1, jobs_pb2.PAGE_STATE_TILING, width_px=10))
    assert not apply_event(job, _ev(1, jobs_pb2.PAGE_STATE_RENDERING))  # late report
    assert job.pages[0].state == jobs_pb2.PAGE_STATE_TILING
    assert apply_event(job, _ev(1, jobs_pb2.PAGE_STATE_DONE, levels=5))
    assert not apply_event(job, _ev(1, jobs_pb2.PAGE_STATE_DONE, levels=5))  # redelivery
    assert (job.completed_pages, job.percent) == (1, 50.0)
    assert job.pages[0].width_px == 10 and job.pages[0].levels == 5
    assert apply_event(job, _ev(2, jobs_pb2.PAGE_STATE_DONE))
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE and job.percent == 100.0
    assert not apply_event(job, _ev(2, jobs_pb2.PAGE_STATE_FAILED, error="x"))


def test_fold_failed_page_fails_job_at_the_end():
    job = _job(2)
    apply_event(job, _ev(1, jobs_pb2.PAGE_STATE_FAILED, error="render: broken"))
    assert job.state == jobs_pb2.JOB_STATE_PROCESSING
    apply_event(job, _ev(2, jobs_pb2.PAGE_STATE_DONE))
    assert job.state == jobs_pb2.JOB_STATE_FAILED
    assert "page 1: render: broken" in job.error and job.failed_pages == 1
    with pytest.raises(ValueError):
        apply_event(_job(1), _ev(3, jobs_pb2.PAGE_STATE_DONE))


def test_effective_dpi_caps_pixels():
    # The 607 x 682 in SolveSpace sheet of the corpus.
    w, h = 43755.77, 49080.97
    dpi = effective_dpi(w, h, 300, 400_000_000)
    assert dpi < 300
    assert math.ceil(w * dpi / 72) * math.ceil(h * dpi / 72) <= 400_000_000
    up = dpi + 0.01
    assert math.ceil(w * up / 72) * math.ceil(h * up / 72) > 400_000_000
    assert effective_dpi(2592, 1728, 300, 400_000_000) == 300
