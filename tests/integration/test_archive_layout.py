"""Layout ARCHIVE against the real stack: each page's pyramid in one PMTiles
object, written in a few requests, served through the same DZI URLs as
the file layout with the same tiles, downloaded whole or unpacked, and
the same under cancel, a killed tile worker and a lost report."""

from __future__ import annotations

import io
import time
import zipfile
from collections import Counter

import numpy as np
import pytest
import pyvips

from planzoom.dzi import parse_dzi
from planzoom.engines.archive import ArchiveIndex
from planzoom.v1 import jobs_pb2
from tests.dzi_check import psnr
from tests.helpers import list_keys, lose_progress_events, wait_ended, wait_until

PLANSET = "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
SITEPLAN = "arch-siteplan-archd-36x24in-autocad-drawingparser.pdf"
ARCHIVE = jobs_pb2.PYRAMID_LAYOUT_ARCHIVE


def _submit(client, corpus, name, plan_id, dpi, layout=ARCHIVE):
    plan = jobs_pb2.PlanRef(org="acme", project="archive", plan=plan_id)
    return client.submit(str(corpus / name), plan, jobs_pb2.JobOptions(dpi=dpi, layout=layout))


def _bearer(stack, org="acme", role="viewer"):
    return {"Authorization": f"Bearer {stack.token(org, role)}"}


@pytest.fixture(scope="module")
def pair(corpus, client, s3_proxy):
    """The crayfishinn set at 100 DPI in both layouts, and the store's
    requests while the archive job ran."""
    s3_proxy.seen.clear()
    archive = wait_ended(client, _submit(client, corpus, PLANSET, "pair-archive", 100).job_id)
    seen = list(s3_proxy.seen)
    files = wait_ended(client, _submit(client, corpus, PLANSET, "pair-files", 100,
                                       jobs_pb2.PYRAMID_LAYOUT_FILES).job_id)
    assert archive.state == files.state == jobs_pb2.JOB_STATE_COMPLETE
    return archive, files, seen


def test_each_page_is_one_archive_in_a_few_requests(pair, s3):
    archive, _, seen = pair
    keys = list_keys(s3, archive.tiles_prefix)
    assert not [k for k in keys if "_files/" in k or k.endswith(".dzi")]
    for page in archive.pages:
        assert page.archive_key == f"{archive.tiles_prefix}page-{page.page}.pmtiles"
        assert not page.dzi_key and page.archive_key in keys
        head = s3.get_object(Bucket="planzoom", Key=page.archive_key,
                             Range="bytes=0-16383")["Body"].read()
        index = ArchiveIndex.parse(head, lambda o, n, k=page.archive_key: s3.get_object(
            Bucket="planzoom", Key=k, Range=f"bytes={o}-{o + n - 1}")["Body"].read())
        assert (index.dzi.width, index.dzi.height) == (page.width_px, page.height_px)
        assert index.header["addressed_tiles_count"] == page.tile_count
    # What the tile stage asked the store for each page's pyramid.
    per_page = Counter()
    for request in seen:
        method, _, path = request.partition(" ")
        if ".pmtiles" in path and method in ("PUT", "POST"):
            per_page[path.split("?")[0].rsplit("page-", 1)[1]] += 1
    assert len(per_page) == archive.total_pages
    assert max(per_page.values()) <= 5, per_page


def test_the_gateway_serves_the_same_tiles_from_either_layout(pair, stack, http):
    archive, files, _ = pair
    for n in (1, 5):
        a = http.get(f"/v1/jobs/{archive.job_id}/pages/{n}.dzi", headers=_bearer(stack))
        f = http.get(f"/v1/jobs/{files.job_id}/pages/{n}.dzi", headers=_bearer(stack))
        assert a.status_code == f.status_code == 200
        dzi = parse_dzi(a.content)
        assert dzi == parse_dzi(f.content)
        top = dzi.levels - 1
        for level, col, row in ((top, 0, 0), (top, dzi.grid(top)[0] - 1, dzi.grid(top)[1] - 1),
                                (top - 3, 0, 0), (0, 0, 0)):
            path = f"pages/{n}_files/{level}/{col}_{row}.jpg"
            ta = http.get(f"/v1/jobs/{archive.job_id}/{path}", headers=_bearer(stack))
            tf = http.get(f"/v1/jobs/{files.job_id}/{path}", headers=_bearer(stack))
            assert ta.status_code == tf.status_code == 200, path
            # Two jobs render the page apart (strip sizes follow timings), so
            # a few pixels may differ; the same raster gives the same bytes
            # in both layouts (tests/unit/test_archive.py).
            a_px, f_px = _pixels(ta.content), _pixels(tf.content)
            assert a_px.shape == f_px.shape and psnr(a_px, f_px) >= 40, path
            assert "immutable" in ta.headers["cache-control"]
            again = http.get(f"/v1/jobs/{archive.job_id}/{path}",
                             headers={**_bearer(stack), "If-None-Match": ta.headers["etag"]})
            assert again.status_code == 304
    missing = http.get(f"/v1/jobs/{archive.job_id}/pages/1_files/{top}/999_0.jpg",
                       headers=_bearer(stack))
    assert missing.status_code == 404
    other = http.get(f"/v1/jobs/{archive.job_id}/pages/1.dzi", headers=_bearer(stack, "intruder"))
    assert other.status_code == 404


def _pixels(jpeg: bytes) -> np.ndarray:
    return pyvips.Image.new_from_buffer(jpeg, "").numpy()


def test_a_tile_is_one_range_get_once_the_directory_is_known(pair, stack, http, s3_proxy):
    archive, _, _ = pair
    dzi = parse_dzi(http.get(f"/v1/jobs/{archive.job_id}/pages/2.dzi",  # reads the head
                             headers=_bearer(stack)).content)
    s3_proxy.seen.clear()
    for col in range(3):
        assert http.get(f"/v1/jobs/{archive.job_id}/pages/2_files/{dzi.levels - 1}/{col}_1.jpg",
                        headers=_bearer(stack)).status_code == 200
    gets = [r for r in s3_proxy.seen if ".pmtiles" in r]
    assert len(gets) == 3, gets
    # A tile read lately is kept: asked for again, it costs the store nothing.
    again = http.get(f"/v1/jobs/{archive.job_id}/pages/2_files/{dzi.levels - 1}/0_1.jpg",
                     headers=_bearer(stack))
    assert again.status_code == 200 and len([r for r in s3_proxy.seen if ".pmtiles" in r]) == 3


def test_downloads_hold_the_archives_or_unpack_them(pair, stack, http):
    archive, _, _ = pair
    whole = http.get(f"/v1/jobs/{archive.job_id}/download", params={"pages": "1-2"},
                     headers=_bearer(stack))
    names = zipfile.ZipFile(io.BytesIO(whole.content)).namelist()
    assert f"{archive.job_id}/page-1.pmtiles" in names and f"{archive.job_id}/page-2.dzi" in names
    assert not [n for n in names if "_files/" in n]
    bundle = http.get(f"/v1/jobs/{archive.job_id}/download",
                      params={"pages": "2", "viewer": "true"}, headers=_bearer(stack))
    z = zipfile.ZipFile(io.BytesIO(bundle.content))
    tiles = [n for n in z.namelist() if "/page-2_files/" in n]
    assert len(tiles) == archive.pages[1].tile_count
    direct = http.get(f"/v1/jobs/{archive.job_id}/pages/{tiles[-1].split('/', 1)[1]}"
                      .replace("page-2_files", "2_files"), headers=_bearer(stack))
    assert z.read(tiles[-1]) == direct.content


def test_a_cancel_mid_archive_leaves_nothing(corpus, client, s3, stack):
    resp = _submit(client, corpus, SITEPLAN, "cancel-archive", 600)  # 21,600 x 14,400 px
    prefix = resp.job.tiles_prefix
    wait_until("the archive's parts are being uploaded", lambda: s3.list_multipart_uploads(
        Bucket="planzoom", Prefix=prefix).get("Uploads"), timeout=120, interval=0.1)
    job = client.cancel(resp.job_id, reason="superseded")
    assert job.state == jobs_pb2.JOB_STATE_CANCELLED
    wait_until("its unfinished archive is dropped", lambda: not s3.list_multipart_uploads(
        Bucket="planzoom", Prefix=prefix).get("Uploads"), timeout=30)
    assert list_keys(s3, prefix) == [job.manifest_key]


@pytest.mark.slow
def test_a_tile_worker_killed_mid_archive_leaves_one_whole_archive(corpus, client, s3, stack):
    resp = _submit(client, corpus, SITEPLAN, "kill-archive", 400)
    wait_until("the page is being tiled", lambda: client.get_job(resp.job_id).pages[0].state
               == jobs_pb2.PAGE_STATE_TILING, timeout=120, interval=0.2)
    time.sleep(1.0)
    stack.kill("tile")
    stack.start_service("tile")
    job = wait_ended(client, resp.job_id, timeout=240)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE and job.pages[0].tile_count > 1000
    assert not s3.list_multipart_uploads(Bucket="planzoom",
                                         Prefix=job.tiles_prefix).get("Uploads")
    assert list_keys(s3, job.tiles_prefix + "page-1.") != []


@pytest.mark.slow
def test_reconcile_finds_archive_pages_done(corpus, stack, client):
    stack.stop_service("progress")
    try:
        resp = _submit(client, corpus, SITEPLAN, "reconcile-archive", 40)
        wait_until("the archive is written", lambda: stack_has(stack, resp.job), timeout=120)
        lose_progress_events(stack, resp.job_id)
    finally:
        stack.start_service("progress")
    job = client.reconcile(resp.job_id).job
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE and job.reconciled
    assert job.pages[0].archive_key.endswith("page-1.pmtiles")


def stack_has(stack, job) -> bool:
    from tests.helpers import s3_client

    return bool(list_keys(s3_client(stack), job.tiles_prefix + "page-1.pmtiles"))
