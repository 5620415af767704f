"""WatchJob feeds and deltas (services.progress.feeds, planzoom.updates)."""

from __future__ import annotations

import pytest

from planzoom import keys
from planzoom.ids import new_job_id
from planzoom.v1 import events_pb2, jobs_pb2
from services.progress.feeds import COALESCE_SECONDS, JobFeed
from services.progress.fold import apply_event
from tests.records import event, pending_job


async def test_feed_holds_changes_that_end_nothing():
    """A page starting to render waits (and merges with the next change);
    a page ending wakes the streams at once and carries the held change."""
    import asyncio
    import time

    feed = JobFeed(kv=None, jobs=None, job_id="j")  # fed by hand, no watcher
    job = pending_job(2)
    apply_event(job, event(1, jobs_pb2.PAGE_STATE_RENDERING))  # the job is PROCESSING
    job.revision = 1
    feed._publish(job)  # the first record
    await asyncio.wait_for(feed.wait(0), 0.01)

    def change(page: int, state: int) -> jobs_pb2.Job:
        nxt = jobs_pb2.Job()
        nxt.CopyFrom(feed._held_job or feed.latest)  # as the KV record stands
        apply_event(nxt, event(page, state))
        nxt.revision += 1
        return nxt

    feed._publish(change(1, jobs_pb2.PAGE_STATE_TILING))  # held
    started = time.monotonic()
    waiting = asyncio.create_task(feed.wait(1))
    await asyncio.sleep(COALESCE_SECONDS / 4)
    assert not waiting.done()
    feed._publish(change(1, jobs_pb2.PAGE_STATE_DONE))  # at once, with the held one
    await asyncio.wait_for(waiting, 0.01)
    assert time.monotonic() - started < COALESCE_SECONDS
    assert (feed.latest.revision, feed.latest.completed_pages) == (3, 1)

    feed._publish(change(2, jobs_pb2.PAGE_STATE_TILING))  # held, then out by itself
    started = time.monotonic()
    await asyncio.wait_for(feed.wait(3), COALESCE_SECONDS * 5)
    assert time.monotonic() - started >= COALESCE_SECONDS * 0.9
    assert feed.latest.pages[1].state == jobs_pb2.PAGE_STATE_TILING

    feed.close()  # stopping wakes every stream for good
    await asyncio.wait_for(feed.wait(4), 0.01)
    await feed.stop()


def test_a_2000_page_record_fits_a_nats_message():
    """The largest job record (the page limit, every page DONE with every
    variant, ids of the longest allowed), as the fold stores it, stays under
    NATS's default 1 MiB max_payload; the output keys are added where the
    record leaves planzoom."""
    from planzoom.config import Settings

    plan = jobs_pb2.PlanRef(org="o" * 64, project="p" * 64, plan="q" * 64)
    job_id = new_job_id()
    pages = Settings().max_pages
    job = jobs_pb2.Job(job_id=job_id, plan=plan, total_pages=pages, source_kind="pdf")
    for n in range(1, pages + 1):
        job.pages.add(page=n, state=jobs_pb2.PAGE_STATE_UNSPECIFIED)
        event = events_pb2.ProgressEvent(job_id=job_id)
        event.page.CopyFrom(jobs_pb2.PageRecord(
            page=n, state=jobs_pb2.PAGE_STATE_DONE, width_pt=2592, height_pt=1728, dpi=300,
            width_px=10800, height_px=7200, tile_size=254, overlap=1, format="jpg",
            levels=15, tile_count=1600, attempts=1, bands=3))
        for name, fmt, px in (("thumbnail", "jpg", 300), ("icon", "jpg", 128),
                              ("display", "jpg", 1920), ("webp-400", "webp", 400),
                              ("webp-800", "webp", 800), ("webp-1920", "webp", 1920)):
            event.page.variants.add(name=name, format=fmt, width=px, height=px, bytes=10**6)
        event.page.started_at.GetCurrentTime()
        event.page.finished_at.GetCurrentTime()
        assert apply_event(job, event)
    stored = job.SerializeToString()
    assert len(stored) < 1024 * 1024, len(stored)
    assert not any(p.dzi_key or p.variants[0].key for p in job.pages)
    shown = keys.with_keys(job)
    assert shown.ByteSize() > 3 * len(stored)  # the keys would be most of it
    for n in (1, pages):
        page = shown.pages[n - 1]
        assert page.dzi_key == keys.dzi_key(plan, job_id, n)
        assert [v.key for v in page.variants] == [
            keys.variant_key(plan, job_id, n, v.name, v.format) for v in page.variants]


def _job_of(pages: int, revision: int) -> jobs_pb2.Job:
    job = jobs_pb2.Job(job_id="j", total_pages=pages, revision=revision,
                       state=jobs_pb2.JOB_STATE_PROCESSING)
    for n in range(1, pages + 1):
        job.pages.add(page=n, state=jobs_pb2.PAGE_STATE_PENDING)
    return job


def _next(job: jobs_pb2.Job, revision: int, **states) -> jobs_pb2.Job:
    new = jobs_pb2.Job()
    new.CopyFrom(job)
    new.revision = revision
    for n, state in states.items():
        new.pages[int(n.removeprefix("p")) - 1].state = state
    new.completed_pages = sum(p.state == jobs_pb2.PAGE_STATE_DONE for p in new.pages)
    return new


def test_watch_deltas_carry_only_the_pages_that_changed():
    """A feed works out once per change which pages changed; a stream gets
    the summary and the pages changed since its last update (over several
    changes if it skipped some), or a snapshot if the feed does not know
    every step since; merging rebuilds the record exactly."""
    from planzoom.updates import apply_update, snapshot

    feed = JobFeed(None, None, "j")
    r1 = _job_of(2000, 1)
    feed._advance(r1)
    r2 = _next(r1, 2, p7=jobs_pb2.PAGE_STATE_DONE)
    feed._advance(r2)
    r3 = _next(r2, 3, p1=jobs_pb2.PAGE_STATE_RENDERING, p2000=jobs_pb2.PAGE_STATE_DONE)
    feed._advance(r3)

    one_step = feed.update_since(2)
    assert apply_update(feed.snapshot().job, one_step) == feed.snapshot().job
    assert not one_step.snapshot and [p.page for p in one_step.job.pages] == [1, 2000]
    assert one_step.job.completed_pages == 2 and one_step.job.revision == 3
    assert one_step.ByteSize() < snapshot(r3).ByteSize() / 100
    assert feed.update_since(2) is one_step  # built once, shared by the streams at 2
    two_steps = feed.update_since(1)
    assert [p.page for p in two_steps.job.pages] == [1, 7, 2000]
    assert apply_update(r1, two_steps) == r3 and apply_update(r2, one_step) == r3
    assert feed.update_since(0).snapshot  # a revision the feed never had
    assert apply_update(None, feed.update_since(0)) == r3
    with pytest.raises(ValueError):
        apply_update(None, one_step)  # a delta needs the record before it
    with pytest.raises(ValueError):
        apply_update(_job_of(3, 2), one_step)  # page 2000 of a 3-page record
