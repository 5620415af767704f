"""Crashes, restarts and faults against the real NATS server and S3
endpoint: every scenario ends in a correct, explained state."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import grpc
import pytest

from planzoom import keys
from planzoom.clock import now_ts
from planzoom.config import Settings
from planzoom.ids import new_job_id
from planzoom.jobstore import JobNotFound, JobStore
from planzoom.messaging import topology
from planzoom.messaging.workqueues import WorkQueues
from planzoom.v1 import events_pb2, jobs_pb2
from planzoom.v1.reasons_pb2 import Reason
from tests.dzi_check import check_page
from tests.helpers import list_keys, lose_progress_events, run_nats, wait_ended, wait_until
from tests.integration.conftest import (
    ACK_WAIT_SECONDS,
    MAX_DELIVER,
    STALL_SECONDS,
    SWEEP_SECONDS,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITEPLAN = "arch-siteplan-archd-36x24in-autocad-drawingparser.pdf"
PLANSET = "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
RENOVATION = "arch-renovation-plans-7p-a4-affinity-latirasse.pdf"


def _log_lines(stack, name: str, job_id: str) -> list[dict]:
    lines = []
    for path in stack.log_dir.glob(f"{name}*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if job_id in line:
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return lines


def _submit(client, corpus, name, plan_id, dpi, project="faults"):
    plan = jobs_pb2.PlanRef(org="acme", project=project, plan=plan_id)
    return client.submit(str(corpus / name), plan, jobs_pb2.JobOptions(dpi=dpi))


def _assert_complete(s3, corpus, name, job) -> None:
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE, job.error
    assert job.completed_pages == job.total_pages, "a page was counted twice or not at all"
    for record in job.pages:
        check_page(s3, record, str(corpus / name), compare=False)


def test_tile_worker_killed_mid_page(corpus, stack, client, s3):
    resp = _submit(client, corpus, SITEPLAN, "tile-kill", 300)
    wait_until("the tile worker holds the page",
               lambda: any(x.get("message") == "tiling page"
                           for x in _log_lines(stack, "tile", resp.job_id)), timeout=120)
    time.sleep(1.0)
    stack.kill("tile")
    stack.start_service("tile")
    job = wait_ended(client, resp.job_id)
    _assert_complete(s3, corpus, SITEPLAN, job)
    assert job.pages[0].attempts >= 2, "the page should have been redelivered"


def test_render_worker_killed_mid_page(corpus, stack, client, s3):
    resp = _submit(client, corpus, PLANSET, "render-kill", 150)
    wait_until("the render worker holds a page",
               lambda: any(x.get("message") == "rendering page"
                           for x in _log_lines(stack, "render", resp.job_id)), timeout=60)
    time.sleep(0.3)
    stack.kill("render")
    stack.start_service("render")
    job = wait_ended(client, resp.job_id)
    _assert_complete(s3, corpus, PLANSET, job)
    attempts = [x["attempt"] for x in _log_lines(stack, "render", resp.job_id)
                if x.get("message") == "rendering page"]
    assert max(attempts) >= 2, "the page in flight should have been redelivered"


def test_two_tile_workers_share_the_pages(corpus, stack, client, s3):
    second = stack.start_service("tile", replica=2)
    try:
        resp = _submit(client, corpus, PLANSET, "two-tilers", 100)
        job = wait_ended(client, resp.job_id)
        _assert_complete(s3, corpus, PLANSET, job)
        tiled = [x for x in _log_lines(stack, "tile", resp.job_id)
                 if x.get("message") == "page tiled"]
        assert sorted(x["page"] for x in tiled) == list(range(1, 9)), "each page tiled once"
        by_worker = {}
        for path in stack.log_dir.glob("tile*.log"):
            by_worker[path.stem] = sum('"page tiled"' in line and resp.job_id in line
                                       for line in path.read_text().splitlines())
        assert by_worker.get("tile", 0) >= 1 and by_worker.get(second, 0) >= 1, by_worker
    finally:
        stack.stop_service(second)


def test_nats_restart_mid_job(corpus, stack, client, s3):
    resp = _submit(client, corpus, PLANSET, "nats-restart", 120)
    wait_until("a page is done", lambda: client.get_job(resp.job_id).completed_pages >= 1,
               timeout=120)
    stack.restart_nats(down_seconds=1.0)
    job = wait_ended(client, resp.job_id)
    _assert_complete(s3, corpus, PLANSET, job)


def test_progress_restart_mid_job(corpus, stack, client):
    resp = _submit(client, corpus, PLANSET, "progress-restart", 120)
    seen: dict[int, list[tuple[int, int, int]]] = {0: [], 1: []}
    retries: dict[int, list[str]] = {0: [], 1: []}

    def follow(i: int) -> None:
        for job in client.follow(resp.job_id,
                                 on_retry=lambda e: retries[i].append(e.code().name)):
            seen[i].append((job.revision, job.state, job.completed_pages))

    threads = [threading.Thread(target=follow, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    wait_until("a page is done", lambda: client.get_job(resp.job_id).completed_pages >= 1,
               timeout=120)
    before = client.get_job(resp.job_id)
    stack.stop_service("progress")
    time.sleep(1.0)
    stack.start_service("progress")
    after = client.get_job(resp.job_id)
    assert after.revision >= before.revision and after.completed_pages >= before.completed_pages
    for t in threads:
        t.join(300)
    for i in (0, 1):
        s = seen[i]
        assert s[-1][1] == jobs_pb2.JOB_STATE_COMPLETE and s[-1][2] == 8
        assert [r for r, _, _ in s] == sorted({r for r, _, _ in s}), "revision went back"
        assert [c for _, _, c in s] == sorted(c for _, _, c in s), "progress went back"
        assert "UNAVAILABLE" in retries[i], retries[i]


def test_s3_faults_are_retried(corpus, stack, client, s3, s3_proxy):
    s3_proxy.counts.clear()
    s3_proxy.slowdown, s3_proxy.reset = 0.08, 0.04
    try:
        resp = _submit(client, corpus, RENOVATION, "s3-faults", 100)
        job = wait_ended(client, resp.job_id)
    finally:
        s3_proxy.slowdown = s3_proxy.reset = 0.0
    _assert_complete(s3, corpus, RENOVATION, job)
    assert s3_proxy.counts["slowdown"] >= 10 and s3_proxy.counts["reset"] >= 5, s3_proxy.counts


def test_worker_that_dies_every_time_is_dead_lettered(corpus, stack, client, s3):
    """A page whose worker never finishes (each delivery times out) ends
    FAILED with the reason, and the message is kept as a dead letter."""
    stack.stop_service("tile")
    try:
        resp = _submit(client, corpus, SITEPLAN, "dead-letter", 40)
        wait_until("the page waits for tiling",
                   lambda: client.get_job(resp.job_id).pages[0].state
                   == jobs_pb2.PAGE_STATE_TILING, timeout=60)

        async def hold_and_drop(js):
            # A stand-in worker that takes the page and dies without acking.
            sub = await js.pull_subscribe_bind(durable=f"{topology.TILE_CONSUMER}-acme",
                                               stream=topology.TILE_STREAM)
            deliveries = []
            for _ in range(MAX_DELIVER):
                msgs = await sub.fetch(1, timeout=ACK_WAIT_SECONDS * 3)
                deliveries.append(msgs[0].metadata.num_delivered)
            await sub.unsubscribe()
            return deliveries

        nats_url = stack.admin_nats_url
        assert run_nats(nats_url, hold_and_drop) == list(range(1, MAX_DELIVER + 1))
    finally:
        # The server notices the exhausted deliveries when a worker pulls again.
        stack.start_service("tile")
    job = wait_ended(client, resp.job_id, timeout=60)
    assert job.state == jobs_pb2.JOB_STATE_FAILED
    assert f"gave up after {MAX_DELIVER} deliveries" in job.pages[0].error
    assert job.pages[0].reason == Reason.REASON_DELIVERIES_EXHAUSTED
    assert job.reason == Reason.REASON_PAGES_FAILED

    async def dead_letter(js):
        msg = await js.get_last_msg(topology.DEAD_LETTER_STREAM, f"deadletter.tile.{resp.job_id}")
        info = await js.consumer_info(topology.TILE_STREAM, f"{topology.TILE_CONSUMER}-acme")
        return events_pb2.DeadLetter.FromString(msg.data), info

    letter, info = run_nats(nats_url, dead_letter)
    assert letter.attempts == MAX_DELIVER and letter.page == 1 and "gave up" in letter.error
    assert letter.reason == Reason.REASON_DELIVERIES_EXHAUSTED
    assert events_pb2.TileJob.FromString(letter.data).job_id == resp.job_id
    assert info.num_pending == 0 and info.num_ack_pending == 0, "the message is still queued"


def test_cancel_job(corpus, stack, client, s3):
    stack.stop_service("render")
    try:
        resp = _submit(client, corpus, PLANSET, "cancel", 60)
        seen: list[int] = []
        watcher = threading.Thread(
            target=lambda: seen.extend(j.state for j in client.follow(resp.job_id)))
        watcher.start()
        job = client.cancel(resp.job_id, reason="wrong revision uploaded")
        assert job.state == jobs_pb2.JOB_STATE_CANCELLED
        assert "wrong revision uploaded" in job.error
        watcher.join(30)
        assert seen and seen[-1] == jobs_pb2.JOB_STATE_CANCELLED
    finally:
        stack.start_service("render")

    async def drained(js):
        info = await js.consumer_info(topology.RENDER_STREAM,
                                      f"{topology.RENDER_CONSUMER}-acme")
        return info.num_pending == 0 and info.num_ack_pending == 0

    nats_url = stack.admin_nats_url
    wait_until("render skipped the cancelled pages", lambda: run_nats(nats_url, drained))
    time.sleep(1)
    assert list_keys(s3, job.tiles_prefix) == [job.manifest_key], "pages were tiled"
    assert list_keys(s3, f"work/{job.job_id}/") == []
    manifest = json.loads(s3.get_object(Bucket="planzoom", Key=job.manifest_key)["Body"].read())
    assert manifest["state"] == "JOB_STATE_CANCELLED"
    with pytest.raises(grpc.RpcError) as e:
        client.cancel(resp.job_id)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_cancel_while_a_page_is_being_tiled(corpus, stack, client, s3):
    """Tiles are uploaded while the page is cut; a cancel in the middle stops
    the page and deletes what it had uploaded."""
    resp = _submit(client, corpus, SITEPLAN, "cancel-tiling", 600)  # 21,600 x 14,400 px
    files = resp.job.tiles_prefix + "page-1_files/"
    wait_until("some tiles of the page are uploaded",
               lambda: len(list_keys(s3, files)) > 50, timeout=120, interval=0.2)
    job = client.cancel(resp.job_id, reason="superseded")
    assert job.state == jobs_pb2.JOB_STATE_CANCELLED
    wait_until("the tile worker stopped the page",
               lambda: any(x.get("message") == "job cancelled; page stopped, its tiles removed"
                           for x in _log_lines(stack, "tile", resp.job_id)), timeout=30)
    assert list_keys(s3, resp.job.tiles_prefix) == [job.manifest_key], "tiles were left"
    assert list_keys(s3, f"work/{job.job_id}/") == []


def test_reconcile_repairs_lost_progress_events(corpus, stack, client, s3):
    stack.stop_service("progress")
    try:
        resp = _submit(client, corpus, RENOVATION, "reconcile", 40)
        wait_until("every page's .dzi is in S3",
                   lambda: len([k for k in list_keys(s3, resp.job.tiles_prefix)
                                if k.endswith(".dzi")]) == 7, timeout=120)

        lose_progress_events(stack, resp.job_id, pages=7)
    finally:
        stack.start_service("progress")
    reconciled = client.reconcile(resp.job_id)
    assert set(reconciled.repaired_pages) <= set(range(1, 8))
    job = wait_ended(client, resp.job_id, timeout=60)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE and job.reconciled
    assert job.completed_pages == 7 and all(p.levels and p.dzi_key for p in job.pages)
    assert s3.get_object(Bucket="planzoom", Key=job.manifest_key)["ContentLength"] > 0


def test_sweep_publishes_pages_ingest_never_did(corpus, stack, client, s3):
    """Ingest stopped after storing a job's record and publishing page 1 of
    7: the sweep publishes pages 2-7 (page 1 is not stored twice) and the
    job completes."""
    template = _submit(client, corpus, RENOVATION, "ingest-stopped", 30)
    wait_ended(client, template.job_id)
    job = jobs_pb2.Job()
    job.CopyFrom(template.job)  # a record as ingest creates it: same source, all PENDING
    job.job_id = new_job_id()
    job.tiles_prefix = keys.tiles_prefix(job.plan, job.job_id)
    job.manifest_key = keys.manifest_key(job.plan, job.job_id)
    job.created_at.CopyFrom(now_ts())

    async def create_and_publish_page_1(js):
        kv = await js.key_value(topology.JOBS_BUCKET)
        await JobStore(js, kv, topology.JOBS_BUCKET).create(job)
        queues = WorkQueues(js, Settings(ack_wait_seconds=ACK_WAIT_SECONDS,
                                         max_deliver=MAX_DELIVER,
                                         work_grant_key=stack.grant_key))
        return await queues.publish_page_jobs(job, [1])

    assert run_nats(stack.admin_nats_url, create_and_publish_page_1) == [1]
    done = wait_ended(client, job.job_id, timeout=180)
    _assert_complete(s3, corpus, RENOVATION, done)
    published = [x["pages"] for x in _log_lines(stack, "progress", job.job_id)
                 if x.get("message") == "published page jobs that ingest had not"]
    # Pages 2-7 once each; page 1 (already published) not again.
    assert sorted(p for ps in published for p in ps) == [2, 3, 4, 5, 6, 7], published
    rendered = [x["page"] for x in _log_lines(stack, "render", job.job_id)
                if x.get("message") == "rendering page"]
    assert sorted(rendered) == list(range(1, 8)), "each page rendered once"


def test_stalled_job_is_flagged_then_recovers(corpus, stack, client):
    stack.stop_service("render")
    try:
        resp = _submit(client, corpus, RENOVATION, "stall", 41)
        job = wait_until("the job is flagged stalled",
                         lambda: (j := client.get_job(resp.job_id)).stalled and j,
                         timeout=STALL_SECONDS + 4 * SWEEP_SECONDS + 10)
        assert job.state == jobs_pb2.JOB_STATE_PENDING
    finally:
        stack.start_service("render")
    job = wait_ended(client, resp.job_id)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE and not job.stalled


def test_ended_jobs_expire_from_kv(stack, client, corpus):
    resp = _submit(client, corpus, RENOVATION, "retention", 30)
    assert wait_ended(client, resp.job_id).state == jobs_pb2.JOB_STATE_COMPLETE

    async def ttl_header_and_expiry(js):
        kv = await js.key_value(topology.JOBS_BUCKET)
        entry = await kv.get(f"job.{resp.job_id}")
        raw = await js.get_msg(f"KV_{topology.JOBS_BUCKET}", entry.revision)
        # An ended record written with a 1 s TTL is gone shortly after.
        store = JobStore(js, kv, topology.JOBS_BUCKET)
        probe = jobs_pb2.Job(job_id="0" * 12 + "ttlprobe00", state=jobs_pb2.JOB_STATE_COMPLETE,
                             plan=jobs_pb2.PlanRef(org="acme", project="faults", plan="probe"))
        await store.create(probe)
        await store.update(probe, ttl=1)
        expired = False
        for _ in range(100):
            await asyncio.sleep(0.1)
            try:
                await store.get(probe.job_id)
            except JobNotFound:
                expired = True
                break
        return raw.headers or {}, expired

    headers, expired = run_nats(stack.admin_nats_url, ttl_header_and_expiry)
    assert headers.get("Nats-TTL") in ("86400", "86400s", "24h0m0s"), headers
    assert expired
