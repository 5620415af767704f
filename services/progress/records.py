"""Changes to job records: the progress service is their only writer after
ingest creates them, and every change goes through :meth:`JobRecords.change`
(compare-and-set on the KV revision, outputs written before a job's record
turns terminal)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from planzoom import metrics
from planzoom.clock import now_ts
from planzoom.errors import FailedPrecondition
from planzoom.jobstore import JobStore, compare_and_set
from planzoom.messaging.worker import Delivery
from planzoom.states import is_terminal, job_state_name
from planzoom.storage import ObjectStore
from planzoom.v1 import events_pb2, jobs_pb2
from services.progress.fold import apply_event, pages_ended, settle
from services.progress.outputs import write_outputs

log = logging.getLogger(__name__)

#: ``change(job)`` edits a record in place and returns True if it changed it.
Change = Callable[[jobs_pb2.Job], bool]


class JobEnded(FailedPrecondition):
    reason = "JOB_ENDED"


class JobRecords:
    """Job records in KV (``jobs``), their outputs in the bucket (``store``);
    ended records expire after ``retention_seconds``."""

    def __init__(self, jobs: JobStore, store: ObjectStore, retention_seconds: float):
        self.jobs, self.store, self.retention_seconds = jobs, store, retention_seconds

    async def change(self, job_id: str, change: Change) -> jobs_pb2.Job:
        """Apply ``change`` to the record with compare-and-set, again on a
        fresh read while another writer gets in first. A job that ends gets
        its outputs written before the terminal record is stored, and that
        record expires after the retention period. Returns the record as
        stored (or as read, if nothing changed). Raises JobNotFound, and
        Conflict after CAS_ATTEMPTS lost races."""
        async for attempt in compare_and_set():
            with attempt:
                return await self._change_once(job_id, change)
        raise AssertionError("unreachable")  # compare_and_set re-raises the last Conflict

    async def _change_once(self, job_id: str, change: Change) -> jobs_pb2.Job:
        job = await self.jobs.get(job_id)
        was_terminal, were_ended = is_terminal(job), pages_ended(job)
        settled = settle(job)  # an interim record left by a stopped writer
        if not (change(job) or settled):
            return job
        ended = is_terminal(job) and not was_terminal
        if ended and pages_ended(job) and not were_ended:
            # The last page: watchers hear of it now, in a record that is not
            # terminal yet (writing the outputs takes a while); the terminal
            # state follows. If this process stops in between, the
            # redelivered event or the sweep settles the record.
            interim = jobs_pb2.Job()
            interim.CopyFrom(job)
            interim.state = jobs_pb2.JOB_STATE_PROCESSING
            interim.ClearField("finished_at")
            interim.ClearField("error")
            await self.jobs.update(interim)
            job.revision = interim.revision
        if ended:
            # Outputs first: a terminal record in KV means they are there.
            await asyncio.to_thread(write_outputs, self.store, job)
        await self.jobs.update(job, ttl=self.retention_seconds if is_terminal(job) else None)
        if ended:
            state = job_state_name(job.state)
            metrics.JOBS.labels(state.lower()).inc()
            log.info("job ended", extra={"job_id": job.job_id, "state": state,
                                         "pages": job.total_pages, "failed": job.failed_pages})
        return job

    async def on_event(self, data: bytes, delivery: Delivery) -> None:
        """Fold one ProgressEvent (a message of PLANZOOM_PROGRESS) into its
        job's record."""
        ev = events_pb2.ProgressEvent.FromString(data)
        await self.change(ev.job_id, lambda job: apply_event(job, ev))
        if ev.HasField("emitted_at"):
            metrics.UPDATE_LAG.observe(max(0.0, time.time() - ev.emitted_at.ToNanoseconds() / 1e9))

    async def fail_page(self, job_id: str, page: int, error: str, attempts: int) -> None:
        """Record ``page`` as FAILED with ``error`` (a page whose job nobody
        could report on)."""
        record = jobs_pb2.PageRecord(page=page, state=jobs_pb2.PAGE_STATE_FAILED, error=error,
                                     attempts=attempts, finished_at=now_ts())
        ev = events_pb2.ProgressEvent(job_id=job_id, page=record, emitted_at=now_ts())
        await self.change(job_id, lambda job: apply_event(job, ev))

    async def mark_done(self, job_id: str, records: list[jobs_pb2.PageRecord]) -> jobs_pb2.Job:
        """Record pages found complete in S3 (``records``, DONE) that the
        record missed, and flag the job ``reconciled``."""

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
            if is_terminal(job):
                raise JobEnded(
                    f"job {job.job_id} has already ended ({job_state_name(job.state)})")
            job.state = jobs_pb2.JOB_STATE_CANCELLED
            job.error = f"cancelled: {reason or 'by request'}"[:1000]
            job.updated_at.CopyFrom(now_ts())
            job.finished_at.CopyFrom(job.updated_at)
            return True

        return await self.change(job_id, cancel)
