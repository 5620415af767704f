"""Changes to job records: the progress service is their only writer after
ingest creates them, and every change goes through :meth:`JobRecords.change`.

A change is a compare-and-set on the record's KV revision, retried on a
fresh read while another writer gets in first. The change that ends a job
(COMPLETE, FAILED or CANCELLED) stores it with ``finalizing`` set, and only
the writer whose compare-and-set won then does the job's side effects, once
and outside any retry: a complete job added to its plan's register and
``current.json``, ``manifest.json`` written from that very record,
``work/<job>/`` emptied, the org's queued jobs released. A last write
clears ``finalizing`` (and starts the record's retention TTL); watchers
end at that record. A writer that stops in between leaves a finalizing
record, which the sweep finishes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from planzoom import keys, metrics, tracing
from planzoom.admission import Admission
from planzoom.clock import now_ts
from planzoom.errors import FailedPrecondition, InvalidInput, reason_code, reason_name
from planzoom.grants import WorkGrants
from planzoom.ids import ID_PATTERN
from planzoom.jobstore import JobStore, compare_and_set
from planzoom.keys import RENDITION_NAME
from planzoom.messaging.events import announce_ended
from planzoom.messaging.worker import Delivery
from planzoom.states import ended, job_state_name
from planzoom.storage import ObjectStore
from planzoom.v1 import events_pb2, jobs_pb2
from services.progress import register, sheets
from services.progress.fold import apply_event, end_if_pages_ended
from services.progress.outputs import write_outputs

log = logging.getLogger(__name__)

#: ``change(job)`` edits a record in place and returns True if it changed it.
Change = Callable[[jobs_pb2.Job], bool]

#: The page states each stage may report; anything else in an event is
#: refused (a stage cannot report another stage's work).
STAGE_STATES = {
    # UNSPECIFIED: a preview pass's report, which moves no state.
    "render": {jobs_pb2.PAGE_STATE_UNSPECIFIED, jobs_pb2.PAGE_STATE_RENDERING,
               jobs_pb2.PAGE_STATE_TILING, jobs_pb2.PAGE_STATE_FAILED},
    "tile": {jobs_pb2.PAGE_STATE_DONE, jobs_pb2.PAGE_STATE_FAILED},
    "transcode": {jobs_pb2.PAGE_STATE_RENDERING, jobs_pb2.PAGE_STATE_DONE,
                  jobs_pb2.PAGE_STATE_FAILED},
}


class JobEnded(FailedPrecondition):
    reason = "JOB_ENDED"


class ForgedEvent(InvalidInput):
    """A progress event whose subject, stage or payload do not agree."""

    reason = "FORGED_EVENT"


def trusted_event(subject: str, data: bytes, grants: WorkGrants | None = None
                  ) -> events_pb2.ProgressEvent:
    """The ProgressEvent of a message on ``progress.<stage>.<job_id>``, with
    its job id and stage taken from the subject (which NATS permissions tie
    to the publisher), not from the payload. Raises ForgedEvent if the
    payload names another job or stage, a state the stage may not report,
    or (with ``grants``) carries no grant of the stage for the job: the
    stage was never given work of it (:mod:`planzoom.grants`)."""
    parts = subject.split(".")
    if len(parts) != 3 or parts[1] not in STAGE_STATES or not ID_PATTERN.fullmatch(parts[2]):
        raise ForgedEvent(f"not a progress subject: {subject!r}")
    _, stage, job_id = parts
    ev = events_pb2.ProgressEvent.FromString(data)
    if ev.job_id != job_id or ev.stage != stage:
        raise ForgedEvent(f"an event on {subject} names job {ev.job_id!r}, stage {ev.stage!r}")
    if grants and not grants.check(stage, job_id, ev.grant):
        raise ForgedEvent(f"{stage} reported on job {job_id} without its grant: it was not "
                          "given work of this job")
    if ev.page.state not in STAGE_STATES[stage]:
        raise ForgedEvent(f"{stage} may not report page state "
                          f"{jobs_pb2.PageState.Name(ev.page.state)}")
    # Where a page's outputs are follows from the job (planzoom.keys.derive_keys,
    # where a record leaves planzoom), never from a report.
    keys.clear_keys(ev.page)
    for variant in ev.page.variants:
        if not keys.is_variant(variant.name, variant.format):
            raise ForgedEvent(f"{stage} reported a variant {variant.name!r}.{variant.format!r}")
    for rendition in ev.page.video.renditions:
        if stage != "transcode" or not RENDITION_NAME.fullmatch(rendition.name):
            raise ForgedEvent(f"{stage} reported a rendition {rendition.name!r}")
    if not 0 <= ev.page.progress <= 1:
        raise ForgedEvent(f"{stage} reported progress {ev.page.progress}")
    if ev.page.reason and not reason_name(ev.page.reason):
        raise ForgedEvent(f"{stage} reported a reason outside the catalogue: {ev.page.reason}")
    return ev


class JobRecords:
    """Job records in KV (``jobs``), their outputs in the bucket (``store``),
    the orgs' quotas (``admission``); ended records expire after
    ``retention_seconds``."""

    def __init__(self, jobs: JobStore, store: ObjectStore, admission: Admission,
                 retention_seconds: float, grants: WorkGrants | None = None):
        self.jobs, self.store, self.admission = jobs, store, admission
        self.retention_seconds, self.grants = retention_seconds, grants
        self.current_sets = sheets.CurrentSets(store)

    async def change(self, job_id: str, change: Change) -> jobs_pb2.Job:
        """Apply ``change`` to the record with compare-and-set and, if that
        ended the job, finalize it. Returns the record as it then stands.
        Raises JobNotFound, and Conflict after CAS_ATTEMPTS lost races."""
        job, just_ended = None, False
        async for attempt in compare_and_set():
            with attempt:
                job, just_ended = await self._change_once(job_id, change)
        if just_ended:
            job = await self.finalize(job)
        return job

    async def _change_once(self, job_id: str, change: Change) -> tuple[jobs_pb2.Job, bool]:
        job = await self.jobs.get(job_id)
        had_ended = ended(job)
        ended_by_pages = end_if_pages_ended(job)
        if not (change(job) or ended_by_pages):
            return job, False
        just_ended = ended(job) and not had_ended
        if just_ended:
            job.finalizing = True
        await self.jobs.update(job)
        return job, just_ended

    async def finalize(self, job: jobs_pb2.Job) -> jobs_pb2.Job:
        """The side effects of an ended job, then its final record (see the
        module docstring). Idempotent: the sweep runs it again for a record
        left finalizing."""
        with tracing.tracer.start_as_current_span("job ended", attributes={
                "planzoom.job_id": job.job_id, "planzoom.state": job_state_name(job.state),
                "planzoom.pages": job.total_pages}):
            return await self._finalize(job)

    async def _finalize(self, job: jobs_pb2.Job) -> jobs_pb2.Job:
        # First: the stages stop work on its pages as soon as they can.
        await self.jobs.mark_ended(job, self.retention_seconds)
        final = jobs_pb2.Job()
        final.CopyFrom(job)
        final.finalizing = False
        sketches = await asyncio.to_thread(sheets.read_set, self.store, final)
        if final.state == jobs_pb2.JOB_STATE_COMPLETE:
            await asyncio.to_thread(register.join_plan, self.store, final, sketches)
        await asyncio.to_thread(sheets.write, self.store, final)
        await asyncio.to_thread(write_outputs, self.store, final)
        await self.admission.queues.publish_overlays(final)
        for released in await self.admission.finish(job):
            await self.admission.release(released)
        # Announced before the record leaves "finalizing": a crash between
        # the two runs this again (the sweep), never skips it.
        await announce_ended(self.jobs.js, final)

        def done(record: jobs_pb2.Job) -> bool:
            if not record.finalizing:
                return False
            record.finalizing = False
            for page, ended_page in zip(record.pages, final.pages, strict=False):
                if ended_page.HasField("sheet"):
                    page.sheet.CopyFrom(sheets.compact(ended_page.sheet))
            return True

        job = await self.jobs.change(job.job_id, done, ttl=self.retention_seconds)
        state = job_state_name(job.state)
        metrics.JOBS.labels(state.lower()).inc()
        log.info("job ended", extra={"job_id": job.job_id, "state": state,
                                     "pages": job.total_pages, "failed": job.failed_pages})
        return job

    async def set_sheet(self, job_id: str, page: int, number: str, title: str) -> jobs_pb2.Sheet:
        """Record a page's sheet number and title as a person reads them
        (source ``user``); if the job has ended, its ``sheets.json`` and
        ``manifest.json`` say so too. Raises JobNotFound, PageNotFound,
        NoSheet, InvalidInput."""
        for what, value in (("number", number), ("title", title)):
            if len(value) > sheets.MAX_FIELD_CHARS or any(ord(c) < 32 for c in value):
                raise InvalidInput(f"a sheet {what} is at most {sheets.MAX_FIELD_CHARS} "
                                   "printable characters", field=what)

        def correct(job: jobs_pb2.Job) -> bool:
            if not 1 <= page <= len(job.pages):
                raise sheets.PageNotFound(f"job {job.job_id} has no page {page}")
            if job.source_kind not in ("", "pdf"):
                raise sheets.NoSheet(f"page {page} of job {job.job_id} is not a PDF page: "
                                     "only a PDF's pages are sheets")
            sheets.correct(job.pages[page - 1].sheet, number.strip(), title.strip())
            return True

        job = await self.change(job_id, correct)
        if ended(job) and not job.finalizing:
            await asyncio.to_thread(sheets.write_correction, self.store, job, page)
        return job.pages[page - 1].sheet

    async def on_event(self, data: bytes, delivery: Delivery) -> None:
        """Fold one ProgressEvent (a message of PLANZOOM_PROGRESS) into its
        job's record; a forged one is refused (and dead-lettered)."""
        ev = trusted_event(delivery.subject, data, self.grants)
        tracing.annotate(job_id=ev.job_id, page=ev.page.page)
        job = await self.change(ev.job_id, lambda job: apply_event(job, ev))
        if ev.stage == "tile" and ev.page.state == jobs_pb2.PAGE_STATE_DONE \
                and not ended(job) and not job.finalizing:
            await self._provisional_overlay(job, ev.page.page)
        if ev.HasField("emitted_at"):
            metrics.UPDATE_LAG.observe(max(0.0, time.time() - ev.emitted_at.ToNanoseconds() / 1e9))

    async def _provisional_overlay(self, job: jobs_pb2.Job, page: int) -> None:
        """Ask for page ``page``'s overlay as soon as it is done, over the
        version of its plan's current set with its number
        (:func:`sheets.provisional_previous`); the job's end asks again
        for the version the whole set pairs it with."""
        previous = await asyncio.to_thread(sheets.provisional_previous, self.store,
                                           self.current_sets, job, page)
        if previous is not None:
            await self.admission.queues.publish_overlay(job, page, *previous, provisional=True)
            log.info("provisional overlay asked", extra={
                "job_id": job.job_id, "page": page, "previous_job_id": previous[0],
                "previous_page": previous[1]})

    async def fail_page(self, job_id: str, page: int, error: str, reason: int,
                        attempts: int) -> None:
        """Record ``page`` as FAILED with ``error`` and ``reason`` (a page
        whose job nobody could report on)."""
        record = jobs_pb2.PageRecord(page=page, state=jobs_pb2.PAGE_STATE_FAILED, error=error,
                                     reason=reason, attempts=attempts, finished_at=now_ts())
        ev = events_pb2.ProgressEvent(job_id=job_id, page=record, emitted_at=now_ts())
        await self.change(job_id, lambda job: apply_event(job, ev))

    async def mark_pages(self, job_id: str, records: list[jobs_pb2.PageRecord]) -> jobs_pb2.Job:
        """Record outcomes the record missed (pages found DONE in S3, or
        FAILED in the dead letters) and flag the job ``reconciled``."""

        def change(job: jobs_pb2.Job) -> bool:
            changed = False
            for record in records:
                ev = events_pb2.ProgressEvent(job_id=job.job_id, plan=job.plan,
                                              stage="reconcile", page=record,
                                              emitted_at=now_ts())
                changed = apply_event(job, ev) or changed
            if changed:
                job.reconciled = True
                job.reconciled_at.CopyFrom(now_ts())
            return changed

        return await self.change(job_id, change)

    async def cancel(self, job_id: str, reason: str) -> jobs_pb2.Job:
        """End the job CANCELLED with ``reason`` in its error. Raises
        JobEnded if it has already ended, JobNotFound if there is none."""

        def cancel(job: jobs_pb2.Job) -> bool:
            if ended(job):
                raise JobEnded(
                    f"job {job.job_id} has already ended ({job_state_name(job.state)})")
            job.state = jobs_pb2.JOB_STATE_CANCELLED
            job.error = f"cancelled: {reason or 'by request'}"[:1000]
            job.reason = reason_code("JOB_CANCELLED")
            job.updated_at.CopyFrom(now_ts())
            job.finished_at.CopyFrom(job.updated_at)
            return True

        return await self.change(job_id, cancel)
