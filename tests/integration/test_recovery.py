"""Correctness under failure, each read in the code and proved here against
the real stack: an ending's side effects happen once and agree with the
record; work/ is empty however a job ends; a tile upload that never
finishes is caught; a consumer is never recreated under a running job; a
lost FAILED outcome is repaired; one bad object does not stop the sweep."""

from __future__ import annotations

import json
import os
import signal
import time

import grpc
import pytest

from planzoom import keys
from planzoom.clock import now_ts
from planzoom.config import Settings
from planzoom.messaging import topology
from planzoom.messaging.workqueues import WorkQueues
from planzoom.v1 import events_pb2, jobs_pb2
from planzoom.v1.reasons_pb2 import Reason
from planzoom_cli.client import Client
from tests.helpers import list_keys, lose_progress_events, run_nats, wait_ended, wait_until
from tests.integration.conftest import (
    ACK_WAIT_SECONDS,
    MAX_DELIVER,
    STALL_SECONDS,
    SWEEP_SECONDS,
    TILE_PUT_TIMEOUT_SECONDS,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITEPLAN = "arch-siteplan-archd-36x24in-autocad-drawingparser.pdf"
RENOVATION = "arch-renovation-plans-7p-a4-affinity-latirasse.pdf"


def _submit(client, corpus, name, plan_id, dpi):
    plan = jobs_pb2.PlanRef(org="acme", project="recovery", plan=plan_id)
    return client.submit(str(corpus / name), plan, jobs_pb2.JobOptions(dpi=dpi))


def _manifest(s3, job) -> dict:
    return json.loads(s3.get_object(Bucket="planzoom", Key=job.manifest_key)["Body"].read())


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def test_a_cancel_racing_the_last_page_ends_in_one_state(corpus, client, s3):
    """Cancels sent as the single page of a job is being finished: whichever
    wins, KV, manifest.json and current.json agree, and work/ is empty."""
    outcomes = set()
    for i, delay in enumerate((0.0, 0.2, 0.4, 0.6, 0.9)):
        resp = _submit(client, corpus, SITEPLAN, f"race-{i}", 60 + i)
        wait_until("the page is being tiled", lambda r=resp: client.get_job(
            r.job_id).pages[0].state == jobs_pb2.PAGE_STATE_TILING, timeout=60, interval=0.02)
        time.sleep(delay)
        try:
            client.cancel(resp.job_id, "racing the last page")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e.details()
        job = wait_ended(client, resp.job_id)
        outcomes.add(job.state)
        assert _manifest(s3, job)["state"] == jobs_pb2.JobState.Name(job.state)
        assert not job.finalizing
        current = keys.current_key(job.plan)
        if job.state == jobs_pb2.JOB_STATE_COMPLETE:
            assert json.loads(s3.get_object(Bucket="planzoom", Key=current)["Body"].read())[
                "job_id"] == job.job_id
        else:
            assert job.state == jobs_pb2.JOB_STATE_CANCELLED
            assert list_keys(s3, current) == [], "current.json points at a cancelled job"
        assert list_keys(s3, f"work/{job.job_id}/") == []
    print("outcomes of the races:", sorted(jobs_pb2.JobState.Name(s) for s in outcomes))


def test_a_cancel_during_the_preview_passes_leaves_only_done_pages(corpus, client, s3):
    """A 117-page set cancelled while its preview passes run: once the render
    worker has settled, the job's folder holds manifest.json and the files
    of pages that were DONE, nothing of the others (overviews stored after
    the cancel included)."""
    resp = _submit(client, corpus, "manypages-117p-vectorfigures-pypdf-geotopo.pdf",
                   "cancel-previews", 20)
    wait_until("a page has its overview", lambda: any(
        p.variants for p in client.get_job(resp.job_id).pages), timeout=60, interval=0.02)
    client.cancel(resp.job_id, "cancelled during the previews")
    job = wait_ended(client, resp.job_id)
    assert job.state == jobs_pb2.JOB_STATE_CANCELLED
    done = {keys.page_name(p.page) for p in job.pages if p.state == jobs_pb2.PAGE_STATE_DONE}
    assert len(done) < job.total_pages

    def settled() -> list[str]:  # the listing, once unchanged for 2 s
        before = None
        while (now := list_keys(s3, job.tiles_prefix)) != before:
            before = now
            time.sleep(2)
        return now

    left = settled()
    stray = [k for k in left if k != job.manifest_key
             and k[len(job.tiles_prefix):].split(".")[0].split("_")[0] not in done]
    assert stray == [], f"{len(stray)} objects of pages that were not done: {stray[:5]}"
    assert list_keys(s3, f"work/{job.job_id}/") == []


def test_work_is_empty_after_a_cancel_during_the_raster_upload(corpus, client, s3, s3_proxy):
    s3_proxy.delay = 3.0  # every S3 request takes 3 s: the raster's PUT is slow
    try:
        resp = _submit(client, corpus, SITEPLAN, "cancel-upload", 300)
        raster = f"PUT /planzoom/work/{resp.job_id}/"
        wait_until("the raster's upload has started", lambda: any(
            r.startswith(raster) for r in list(s3_proxy.seen)), timeout=120, interval=0.05)
        client.cancel(resp.job_id, "during the upload")
    finally:
        s3_proxy.delay = 0.0
    wait_until("work/ is empty", lambda: list_keys(s3, f"work/{resp.job_id}/") == [],
               timeout=60)
    assert client.get_job(resp.job_id).state == jobs_pb2.JOB_STATE_CANCELLED


def test_a_page_job_delivered_after_its_job_completed_leaves_nothing(corpus, stack, client, s3):
    resp = _submit(client, corpus, SITEPLAN, "late-delivery", 45)
    job = wait_ended(client, resp.job_id)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE

    async def deliver_again(js):
        queues = WorkQueues(js, Settings(ack_wait_seconds=ACK_WAIT_SECONDS,
                                         max_deliver=MAX_DELIVER,
                                         work_grant_key=stack.grant_key))
        # The same page again, under a message id the stream has not seen.
        page_job = events_pb2.PageJob(job_id=job.job_id, plan=job.plan,
                                      source_key=job.source_key,
                                      source_sha256=job.source_sha256, page=1,
                                      total_pages=1, options=job.options)
        await js.publish("pages.render.acme", page_job.SerializeToString(),
                         headers={"Nats-Msg-Id": f"late.{job.job_id}"})
        tile_job = events_pb2.TileJob(job_id=job.job_id, plan=job.plan, page=1,
                                      raster_key=keys.raster_key(job.job_id, 1),
                                      width_px=10, height_px=10, bands=1, options=job.options)
        await queues.publish_tile_job(tile_job)

    run_nats(stack.admin_nats_url, deliver_again)

    async def drained(js):
        infos = [await js.consumer_info(s, f"{p}-acme") for s, p in (
            (topology.RENDER_STREAM, "render"), (topology.TILE_STREAM, "tile"))]
        return all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos)

    wait_until("both late page jobs are taken", lambda: run_nats(stack.admin_nats_url, drained),
               timeout=60)
    time.sleep(1.0)
    assert list_keys(s3, f"work/{job.job_id}/") == []
    after = client.get_job(job.job_id)
    assert after.state == jobs_pb2.JOB_STATE_COMPLETE and after.revision == job.revision


def test_a_tile_upload_that_never_finishes_is_retried(corpus, stack, client, s3, s3_proxy):
    """S3 takes the connection and never answers some tile PUTs: the upload
    process holding one is replaced after PLANZOOM_TILE_PUT_TIMEOUT_SECONDS
    and the page is done again; then an upload process is stopped outright."""
    # About 250 tile PUTs at 100 DPI: with 5 % held, the chance that none is
    # held is under 1e-5 (at 1 % over ~110 PUTs it was one in three).
    resp = _submit(client, corpus, RENOVATION, "never-answers", 100)
    s3_proxy.counts.clear()
    s3_proxy.match, s3_proxy.hang = "_files/", 0.05
    try:
        wait_until("a tile PUT is held", lambda: s3_proxy.counts["hang"] >= 1, timeout=120,
                   interval=0.05)
        s3_proxy.hang = 0.0  # no new ones; the held one stays unanswered
        job = wait_ended(client, resp.job_id, timeout=180)
    finally:
        s3_proxy.hang, s3_proxy.match = 0.0, ""
        s3_proxy.release()
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE, job.error
    assert any(p.attempts >= 2 for p in job.pages), "the held page was not done again"

    resp = _submit(client, corpus, RENOVATION, "stopped-uploader", 61)
    wait_until("tiling has started", lambda: any(
        p.state == jobs_pb2.PAGE_STATE_TILING for p in client.get_job(resp.job_id).pages),
        timeout=120, interval=0.05)
    uploaders = _children(stack.procs["tile"].pid)
    assert uploaders
    for pid in uploaders:
        os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    job = wait_ended(client, resp.job_id, timeout=180)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE, job.error
    assert any(p.attempts >= 2 for p in job.pages)
    assert time.monotonic() - t0 < 120, "the stopped uploads held the page too long"
    assert TILE_PUT_TIMEOUT_SECONDS < 30


def test_a_replica_with_other_settings_does_not_recreate_a_consumer(corpus, stack, client):
    resp = _submit(client, corpus, RENOVATION, "other-settings", 40)

    async def consumer(js):
        return await js.consumer_info(topology.TILE_STREAM, "tile-acme")

    before = run_nats(stack.admin_nats_url, consumer)
    other = stack.start_service("ingest", replica=4, env={"PLANZOOM_ACK_WAIT_SECONDS": "17"})
    other_client = Client(stack.addrs[other], stack.env()["PLANZOOM_PROGRESS_ADDR"],
                          token=stack.token("acme", "uploader"))
    try:
        assert _submit(other_client, corpus, SITEPLAN, "other-settings-2", 41).job_id
        after = run_nats(stack.admin_nats_url, consumer)
    finally:
        other_client.close()
        stack.stop_service(other)
    assert after.created == before.created, "the consumer was deleted and made again"
    job = wait_ended(client, resp.job_id)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE
    assert all(p.attempts == 1 for p in job.pages), "pages were redelivered"


def test_a_lost_failure_is_repaired_from_the_dead_letters(corpus, stack, client):
    stack.stop_service("tile")
    try:
        resp = _submit(client, corpus, SITEPLAN, "lost-failure", 42)
        wait_until("the page waits for tiling", lambda: client.get_job(resp.job_id).pages[0]
                   .state == jobs_pb2.PAGE_STATE_TILING, timeout=60)

        async def fail_without_report(js):
            # What a tile worker does when a page fails for good, but its
            # report never arrives.
            letter = events_pb2.DeadLetter(stream=topology.TILE_STREAM, error="libvips broke",
                                           reason=Reason.REASON_TILE_ENCODING_FAILED,
                                           attempts=3, job_id=resp.job_id, page=1,
                                           failed_at=now_ts())
            await js.publish(f"deadletter.tile.{resp.job_id}", letter.SerializeToString())

        run_nats(stack.admin_nats_url, fail_without_report)
        job = wait_ended(client, resp.job_id, timeout=60)
    finally:
        stack.start_service("tile")
    assert job.state == jobs_pb2.JOB_STATE_FAILED and job.reconciled
    assert job.pages[0].error == "tile: libvips broke"
    assert job.pages[0].reason == Reason.REASON_TILE_ENCODING_FAILED


def test_the_sweep_leaves_a_fresh_dzi_to_its_page_s_reports(corpus, stack, client, s3):
    """A ``.dzi`` written moments ago has its page's DONE report on the way:
    the sweep takes the page DONE from the bucket only once the ``.dzi`` is
    PLANZOOM_STALL_SECONDS old (it would otherwise drop what the reports
    carry); Reconcile, asked for, takes it at once."""
    from planzoom.dzi import DziInfo, dzi_xml

    dzi = dzi_xml(DziInfo(width=300, height=200, tile_size=256, overlap=1, format="jpg"))
    stack.stop_service("render")
    try:
        slow = _submit(client, corpus, SITEPLAN, "fresh-dzi", 45)
        asked = _submit(client, corpus, SITEPLAN, "fresh-dzi-asked", 46)
        for resp in (slow, asked):
            s3.put_object(Bucket="planzoom", Key=keys.dzi_key(resp.job.plan, resp.job_id, 1),
                          Body=dzi)
        written = time.monotonic()
        assert client.reconcile(asked.job_id).repaired_pages == [1]
        time.sleep(3 * SWEEP_SECONDS)
        if time.monotonic() - written < STALL_SECONDS - 1:
            assert client.get_job(slow.job_id).pages[0].state != jobs_pb2.PAGE_STATE_DONE
        job = wait_ended(client, slow.job_id, timeout=60)
        assert job.reconciled and time.monotonic() - written >= STALL_SECONDS - 1
    finally:
        stack.start_service("render")


def test_one_bad_object_does_not_stop_the_sweep(corpus, stack, client, s3):
    """A garbage .dzi where reconcile looks for one fails that job's sweep,
    not the others': a lost completion of another job is still repaired."""
    stack.stop_service("render")
    try:
        bad = _submit(client, corpus, SITEPLAN, "bad-object", 43)
        s3.put_object(Bucket="planzoom", Key=keys.dzi_key(bad.job.plan, bad.job_id, 1),
                      Body=b"<html>not a descriptor</html>")
    finally:
        stack.start_service("render")
    stack.stop_service("progress")
    try:
        good = _submit(client, corpus, SITEPLAN, "good-object", 44)
        wait_until("the good page's .dzi is in S3", lambda: list_keys(
            s3, keys.dzi_key(good.job.plan, good.job_id, 1)), timeout=120)

        lose_progress_events(stack, good.job_id)
    finally:
        stack.start_service("progress")
    assert wait_ended(client, good.job_id, timeout=60).reconciled


def test_a_page_that_runs_past_its_limit_twice_fails_for_good(corpus, stack, client):
    """A render whose PDFium limit is 0.3 s: the page is tried twice, then
    FAILED with why, instead of PLANZOOM_MAX_DELIVER tries of the limit."""
    stack.stop_service("render")
    name = stack.start_service("render", env={"PLANZOOM_RENDER_TIMEOUT_SECONDS": "0.3"})
    try:
        resp = _submit(client, corpus, SITEPLAN, "too-slow", 900)
        job = wait_ended(client, resp.job_id, timeout=120)
    finally:
        stack.stop_service(name)
        stack.start_service("render")
    assert job.state == jobs_pb2.JOB_STATE_FAILED
    page = job.pages[0]
    assert page.render_timeouts == 2 and "ran past 0.3 s 2 times" in page.error
    assert page.attempts == 2 < MAX_DELIVER
