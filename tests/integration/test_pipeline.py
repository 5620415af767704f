"""End to end through the running stack: upload → render → tile → progress,
on real plan PDFs from the corpus."""

from __future__ import annotations

import json
import threading
import time

import grpc
import pytest

from planzoom.v1 import jobs_pb2
from tests.dzi_check import check_page
from tests.helpers import list_keys, wait_ended

pytestmark = pytest.mark.integration

# (file, DPI, extra options): a one-sheet AutoCAD plot, a 7-sheet set with
# mixed page sizes, the 8-sheet A1 set with /Rotate 90 and raster layers, and
# the 607 x 682 in sheet whose DPI the pixel cap must lower.
CASES = [
    ("arch-siteplan-archd-36x24in-autocad-drawingparser.pdf", 150, {}),
    ("arch-renovation-plans-7p-a4-affinity-latirasse.pdf", 100, {}),
    ("arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf", 50, {}),
    ("arch-houseplan-hugepage-607x682in-solvespace-master1.pdf", 300,
     {"max_page_pixels": 12_000_000}),
]


@pytest.mark.parametrize("name,dpi,extra", CASES, ids=[c[0].split("-")[1] + "-" + c[0][:12]
                                                      for c in CASES])
def test_end_to_end(corpus, client, s3, name, dpi, extra):
    pdf = corpus / name
    plan = jobs_pb2.PlanRef(org="acme", project="e2e", plan=name[:40].rstrip("-."))
    resp = client.submit(str(pdf), plan, jobs_pb2.JobOptions(dpi=dpi, **extra))
    assert not resp.deduplicated
    job = wait_ended(client, resp.job_id)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE, job.error
    assert job.completed_pages == job.total_pages == len(job.pages) == resp.job.total_pages
    assert job.percent == 100.0

    for record in job.pages:
        assert record.state == jobs_pb2.PAGE_STATE_DONE
        if "max_page_pixels" in extra:
            assert record.dpi < dpi, "the pixel cap should have lowered the DPI"
            assert record.width_px * record.height_px <= extra["max_page_pixels"]
        else:
            assert record.dpi == dpi
        # The overview (default 1024 px) is the highest level that fits.
        overview = next(v for v in record.variants if v.name == "overview")
        sides = (record.width_px, record.height_px)
        assert max(overview.width, overview.height) <= 1024
        assert overview.level == record.levels - 1 or max(
            -(-side // 2 ** (record.levels - 2 - overview.level)) for side in sides) > 1024
        # Its DPI is the page's at its width: an inch of paper is that many of its pixels.
        assert overview.dpi == pytest.approx(overview.width / (record.width_pt / 72), rel=5e-3)
        check_page(s3, record, str(pdf))

    manifest = json.loads(s3.get_object(Bucket="planzoom", Key=job.manifest_key)["Body"].read())
    assert manifest["job_id"] == job.job_id and manifest["state"] == "JOB_STATE_COMPLETE"
    assert manifest["total_pages"] == manifest["completed_pages"] == job.total_pages
    assert [p["dzi_key"] for p in manifest["pages"]] == [p.dzi_key for p in job.pages]
    assert manifest["source_sha256"] == job.source_sha256
    current = json.loads(s3.get_object(
        Bucket="planzoom", Key=job.tiles_prefix.rsplit("/", 2)[0] + "/current.json")["Body"].read())
    assert current["job_id"] == job.job_id
    assert list_keys(s3, f"work/{job.job_id}/") == [], "intermediates left behind"
    assert client.get_job(job.job_id).state == jobs_pb2.JOB_STATE_COMPLETE
    assert [j.job_id for j in client.list_jobs(plan)][0] == job.job_id


def test_two_watchers_see_the_same_states(corpus, client):
    pdf = corpus / "arch-renovation-plans-7p-a4-affinity-latirasse.pdf"
    plan = jobs_pb2.PlanRef(org="acme", project="watch", plan="renovation")
    resp = client.submit(str(pdf), plan, jobs_pb2.JobOptions(dpi=90))
    seen: dict[int, list[tuple[int, int, int]]] = {0: [], 1: []}

    def watch(i: int) -> None:
        for job in client.watch(resp.job_id, timeout=300):
            seen[i].append((job.revision, job.state, job.completed_pages))

    threads = [threading.Thread(target=watch, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    a, b = seen[0], seen[1]
    for s in (a, b):
        assert s and s[-1][1] == jobs_pb2.JOB_STATE_COMPLETE and s[-1][2] == 7
        assert [r for r, _, _ in s] == sorted({r for r, _, _ in s}), "revisions must increase"
        assert [c for _, _, c in s] == sorted(c for _, _, c in s), "progress went backwards"
    # Both streams carry the same states from the point both were connected.
    start = max(a[0][0], b[0][0])
    assert [x for x in a if x[0] >= start] == [x for x in b if x[0] >= start]
    assert len([x for x in a if x[0] >= start]) >= 2

    # A watcher that connects after the end gets the final state at once.
    t0 = time.monotonic()
    late = list(client.watch(resp.job_id, timeout=30))
    assert len(late) == 1 and late[0].state == jobs_pb2.JOB_STATE_COMPLETE
    assert time.monotonic() - t0 < 5


def test_watch_unknown_job_is_not_found(client):
    with pytest.raises(grpc.RpcError) as e:
        list(client.watch("0000000000000000000000", timeout=10))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        client.get_job("../etc")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
