"""What a compromised or mistaken service identity can do on NATS: only its
own subjects. Forged progress events are refused (and kept as dead
letters), never change another job, and never choose an object key."""

from __future__ import annotations

import asyncio

import nats
import pytest

from planzoom import keys
from planzoom.clock import now_ts
from planzoom.grants import WorkGrants
from planzoom.messaging import topology
from planzoom.v1 import events_pb2, jobs_pb2
from tests.helpers import run_nats, wait_ended, wait_until

pytestmark = pytest.mark.integration

SITEPLAN = "arch-siteplan-archd-36x24in-autocad-drawingparser.pdf"


def _as(stack, service: str, fn):
    """Run ``await fn(nc)`` connected as ``service``'s NATS user."""
    creds = stack.nats_credentials(service)

    async def go():
        errors = []

        async def on_error(e):
            errors.append(str(e))

        nc = await nats.connect(f"nats://127.0.0.1:{stack.ports.nats}",
                                user=creds["PLANZOOM_NATS_USER"],
                                password=creds["PLANZOOM_NATS_PASSWORD"],
                                inbox_prefix=f"_INBOX_{service}", error_cb=on_error,
                                allow_reconnect=False)
        try:
            return await fn(nc), errors
        finally:
            await nc.close()

    return asyncio.run(go())


async def _publish(nc, subject: str, payload: bytes) -> str:
    """'stored' if JetStream stored it, else why not."""
    try:
        await nc.jetstream().publish(subject, payload, timeout=2)
        return "stored"
    except Exception as e:  # a permissions violation shows as no answer
        return type(e).__name__


def _dead_letters(stack, subject: str) -> int:
    """Dead letters kept on ``subject``."""
    async def count(js):
        info = await js.stream_info(topology.DEAD_LETTER_STREAM, subjects_filter=subject)
        return sum((info.state.subjects or {}).values())

    return run_nats(stack.admin_nats_url, count)


def _event(job_id: str, stage: str, state: int, grant: str = "", **page) -> bytes:
    return events_pb2.ProgressEvent(
        job_id=job_id, stage=stage, emitted_at=now_ts(), grant=grant,
        page=jobs_pb2.PageRecord(page=1, state=state, **page)).SerializeToString()


@pytest.fixture
def waiting_job(corpus, stack, client, request):
    """A one-page job (of its own plan) that stays PENDING while the test
    works on it."""
    stack.stop_service("render")
    plan = jobs_pb2.PlanRef(org="acme", project="forgery",
                            plan=request.node.name.removeprefix("test_")[:60])
    try:
        yield client.submit(str(corpus / SITEPLAN), plan, jobs_pb2.JobOptions(dpi=35)).job
    finally:
        stack.start_service("render")


def test_service_users_are_held_to_their_subjects(stack, waiting_job):
    job_id = waiting_job.job_id
    record = f"$KV.{topology.JOBS_BUCKET}.job.{job_id}"
    done = _event(job_id, "tile", jobs_pb2.PAGE_STATE_DONE)
    attempts = {
        ("render", "write a job record"): (record, b"\x00"),
        ("tile", "write a job record"): (record, b"\x00"),
        ("render", "publish a page job"): ("pages.render.acme", b"\x00"),
        ("tile", "publish a tile job"): ("pages.tile.acme", b"\x00"),
        ("render", "report as tile"): (f"progress.tile.{job_id}", done),
        ("ingest", "report progress"): (f"progress.render.{job_id}", done),
        ("tile", "forge a dead letter of render"): (f"deadletter.render.{job_id}", b"\x00"),
    }
    for (service, what), (subject, payload) in attempts.items():
        outcome, errors = _as(stack, service, lambda nc, s=subject, p=payload: _publish(nc, s, p))
        assert outcome != "stored", f"{service} could {what}"
        assert any("permissions violation" in e.lower() for e in errors), (service, errors)


def test_forged_events_are_refused_and_kept(stack, client, waiting_job):
    job_id = waiting_job.job_id
    before = client.get_job(job_id).pages[0]
    subject = f"progress.render.{job_id}"
    forgeries = [
        # render's own subject, naming another job in its payload
        _event("0" * 22, "render", jobs_pb2.PAGE_STATE_RENDERING),
        # render claiming a page is tiled (only tile reports DONE)
        _event(job_id, "render", jobs_pb2.PAGE_STATE_DONE, width_px=1, height_px=1, levels=1),
        # a well-formed report on a job render was never given work of: no
        # grant, another job's grant, tile's grant for this job
        _event(job_id, "render", jobs_pb2.PAGE_STATE_RENDERING),
        _event(job_id, "render", jobs_pb2.PAGE_STATE_RENDERING,
               grant=WorkGrants(stack.grant_key).mint("render", "0" * 22)),
        _event(job_id, "render", jobs_pb2.PAGE_STATE_RENDERING,
               grant=WorkGrants(stack.grant_key).mint("tile", job_id)),
    ]
    for payload in forgeries:
        outcome, _ = _as(stack, "render", lambda nc, p=payload: _publish(nc, subject, p))
        assert outcome == "stored"  # render may publish there; the progress service refuses it

    wait_until("every forgery is a dead letter",
               lambda: _dead_letters(stack, f"deadletter.progress.{job_id}") >= 5, timeout=30)
    page = client.get_job(job_id).pages[0]
    assert page.state == jobs_pb2.PAGE_STATE_PENDING and page.width_px != 1
    assert page == before, "a forged event changed the page"


def test_a_page_key_comes_from_the_job_never_from_an_event(stack, client, corpus, s3):
    """Even tile's own identity, reporting DONE with a key of its choosing,
    cannot point a job's record, manifest or current.json elsewhere."""
    stack.stop_service("render")
    stack.stop_service("tile")
    try:
        plan = jobs_pb2.PlanRef(org="acme", project="forgery", plan="keys")
        job = client.submit(str(corpus / SITEPLAN), plan, jobs_pb2.JobOptions(dpi=36)).job
        evil = "tiles/evil/evil/evil/x/page-1.dzi"
        outcome, _ = _as(stack, "tile", lambda nc: _publish(
            nc, f"progress.tile.{job.job_id}",
            _event(job.job_id, "tile", jobs_pb2.PAGE_STATE_DONE, dzi_key=evil, width_px=10,
                   height_px=10, levels=5, tile_size=256, format="jpg",
                   # as a tile given this job's page would hold
                   grant=WorkGrants(stack.grant_key).mint("tile", job.job_id))))
        assert outcome == "stored"
        final = wait_ended(client, job.job_id, timeout=60)
    finally:
        stack.start_service("render")
        stack.start_service("tile")
    assert final.pages[0].dzi_key == keys.dzi_key(plan, job.job_id, 1) != evil
    current = s3.get_object(Bucket="planzoom", Key=keys.current_key(plan))["Body"].read()
    assert b"evil" not in current


def test_a_tile_job_naming_another_object_is_refused(stack, client, corpus, s3):
    """A TileJob (render's to send) that names an object other than its own
    page's raster: tile neither reads nor deletes it, and keeps the message
    as a dead letter."""
    plan = jobs_pb2.PlanRef(org="acme", project="forgery", plan="raster")
    done = wait_ended(client, client.submit(str(corpus / SITEPLAN), plan,
                                            jobs_pb2.JobOptions(dpi=30)).job_id)
    target = done.pages[0].dzi_key  # the finished page: an ended job's raster is deleted
    assert s3.head_object(Bucket="planzoom", Key=target)
    forged = events_pb2.TileJob(job_id=done.job_id, plan=plan, page=1,
                                total_pages=done.total_pages, options=done.options,
                                raster_key=target, width_px=10, height_px=10, bands=1)
    outcome, _ = _as(stack, "render", lambda nc: _publish(
        nc, "pages.tile.acme", forged.SerializeToString()))
    assert outcome == "stored"

    wait_until("the forged tile job is a dead letter",
               lambda: _dead_letters(stack, f"deadletter.tile.{done.job_id}") >= 1, timeout=30)
    assert s3.head_object(Bucket="planzoom", Key=target), "tile deleted what it was sent"
