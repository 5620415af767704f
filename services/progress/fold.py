"""Folding progress events into a job record (pure functions, no I/O).

A page moves PENDING → RENDERING → TILING → DONE | FAILED and never back: an
event whose state ranks below the page's current state (a late or redelivered
report) changes nothing, and a page that is DONE or FAILED stays so. An event
with no state (a preview pass's: the page's size, overview and thumbnail)
changes no state and is taken at any state short of DONE or FAILED.
A page's geometry (sizes, DPI) is in its record from ingest. A
reported variant replaces the page's variant of that name. The job
is PROCESSING once any page has moved, and ends when every page has: COMPLETE
if all are DONE, else FAILED with the failed pages' errors.
"""

from __future__ import annotations

from planzoom.clock import now_ts
from planzoom.errors import InvalidInput
from planzoom.states import ENDED_PAGE_STATES, ended
from planzoom.v1 import events_pb2, jobs_pb2
from planzoom.v1.reasons_pb2 import Reason

_RANK = {
    jobs_pb2.PAGE_STATE_UNSPECIFIED: 0,
    jobs_pb2.PAGE_STATE_PENDING: 0,
    jobs_pb2.PAGE_STATE_RENDERING: 1,
    jobs_pb2.PAGE_STATE_TILING: 2,
    jobs_pb2.PAGE_STATE_DONE: 3,
    jobs_pb2.PAGE_STATE_FAILED: 3,
}


def apply_event(job: jobs_pb2.Job, ev: events_pb2.ProgressEvent) -> bool:
    """Merge ``ev`` into ``job`` in place; return True if anything changed.

    Raises InvalidInput for an event that names a page the job does not have.
    ``ev`` is trusted (records.trusted_event checked it and cleared any
    output keys: they are derived where a record leaves planzoom).
    """
    if ended(job):
        return False
    n = ev.page.page
    if not 1 <= n <= len(job.pages):
        raise InvalidInput(f"job {job.job_id} has no page {n}", reason="NO_SUCH_PAGE")
    page = job.pages[n - 1]
    if page.state in ENDED_PAGE_STATES:
        return False
    before = page.SerializeToString(deterministic=True)
    if ev.page.state == jobs_pb2.PAGE_STATE_UNSPECIFIED:
        # A preview pass: the page's overview and thumbnail, at whatever
        # state the page has reached.
        _drop_variants(page, ev.page.variants)
        page.variants.extend(ev.page.variants)
        return _changed(job, ev, page, before)
    if _RANK[ev.page.state] < _RANK[page.state]:
        return False
    started = None
    if page.HasField("started_at"):
        started = type(page.started_at)()
        started.CopyFrom(page.started_at)
    _drop_variants(page, ev.page.variants)  # a reported variant replaces its namesake
    if ev.page.video.renditions:  # and so do a video's renditions
        del page.video.renditions[:]
    progress = page.progress
    page.MergeFrom(ev.page)
    page.progress = max(progress, page.progress)  # reports may cross; it never goes back
    if started is not None:  # the first attempt's start time stays
        page.started_at.CopyFrom(started)
    if page.state == jobs_pb2.PAGE_STATE_DONE:
        page.progress = 1.0
    return _changed(job, ev, page, before)


def _drop_variants(page: jobs_pb2.PageRecord, reported) -> None:
    """Remove from ``page`` the variants named in ``reported``."""
    names = {v.name for v in reported}
    if names:
        kept = [v for v in page.variants if v.name not in names]
        del page.variants[:]
        page.variants.extend(kept)


def _changed(job: jobs_pb2.Job, ev: events_pb2.ProgressEvent, page: jobs_pb2.PageRecord,
             before: bytes) -> bool:
    """Finish a merge into ``page``: False if it is as it was (``before``),
    else the job's report time and counts brought up to date and True."""
    if page.SerializeToString(deterministic=True) == before:
        return False
    job.stalled = False
    job.last_event_at.CopyFrom(ev.emitted_at if ev.HasField("emitted_at") else now_ts())
    recount(job)
    return True


def pages_ended(job: jobs_pb2.Job) -> bool:
    """True if every page is DONE or FAILED."""
    return all(p.state in ENDED_PAGE_STATES for p in job.pages)


def end_if_pages_ended(job: jobs_pb2.Job) -> bool:
    """End a job whose pages have all ended but whose record is not yet
    ended (the record stored just before a job's outputs are written, if
    the writer stopped there). Returns True if it changed the record."""
    if ended(job) or not job.pages or not pages_ended(job):
        return False
    recount(job)
    return True


def recount(job: jobs_pb2.Job) -> None:
    """Derive counts, percent and job state from the pages."""
    done = sum(p.state == jobs_pb2.PAGE_STATE_DONE for p in job.pages)
    failed = [p for p in job.pages if p.state == jobs_pb2.PAGE_STATE_FAILED]
    job.completed_pages, job.failed_pages = done, len(failed)
    partial = sum(p.progress for p in job.pages if p.state not in ENDED_PAGE_STATES)
    job.percent = (100.0 * (done + len(failed) + partial) / job.total_pages
                   if job.total_pages else 0.0)
    job.updated_at.CopyFrom(now_ts())
    if done + len(failed) == job.total_pages:
        job.finished_at.CopyFrom(job.updated_at)
        if failed:
            job.state = jobs_pb2.JOB_STATE_FAILED
            job.reason = Reason.REASON_PAGES_FAILED
            job.error = f"{len(failed)} of {job.total_pages} pages failed: " + "; ".join(
                f"page {p.page}: {p.error}" for p in failed[:5]
            ) + ("; ..." if len(failed) > 5 else "")
        else:
            job.state = jobs_pb2.JOB_STATE_COMPLETE
    elif any(p.state != jobs_pb2.PAGE_STATE_PENDING for p in job.pages):
        job.state = jobs_pb2.JOB_STATE_PROCESSING
