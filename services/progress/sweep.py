"""The periodic sweep of unfinished jobs, and Reconcile: repair what a lost
message or a stopped process left behind, and flag jobs nobody reports on.

For each job: a record left ``finalizing`` is finalized; pages complete in
S3 (their ``.dzi`` or archive) or failed in the dead letters that the record missed
are recorded; page jobs of a released job that were never published are
published (within the render stream's duplicate window); a job with no
report for ``PLANZOOM_STALL_SECONDS`` is flagged ``stalled``. Then each
org's quota record is tidied. One job or org that fails to sweep is logged
and does not stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.errors import TimeoutError as NatsTimeoutError

from planzoom import keys, metrics
from planzoom.admission import Admission
from planzoom.clock import now_ts
from planzoom.config import Settings
from planzoom.dzi import done_record
from planzoom.engines.archive import page_descriptor
from planzoom.jobstore import JobNotFound, JobStore
from planzoom.messaging.topology import DEAD_LETTER_STREAM, DUPLICATE_WINDOW_SECONDS
from planzoom.states import ENDED_PAGE_STATES, ended
from planzoom.storage import ObjectStore
from planzoom.v1 import events_pb2, jobs_pb2
from services.progress.records import JobRecords

log = logging.getLogger(__name__)

#: A job's PENDING pages are published again by the sweep up to this long
#: after its release: the render stream's duplicate window less 3 minutes
#: (clock skew between hosts, one sweep period), so that a page job ingest
#: did publish is never stored twice.
REPUBLISH_WITHIN_SECONDS = DUPLICATE_WINDOW_SECONDS - 180
#: A record still finalizing this long after its last change was left by a
#: writer that stopped; the sweep finalizes it.
FINALIZE_AFTER_SECONDS = 30.0


class Sweeper:
    """Reconcile, republish, finalize and stall checks over the jobs in KV."""

    def __init__(self, settings: Settings, jobs: JobStore, store: ObjectStore,
                 records: JobRecords, admission: Admission, js):
        self.s, self.jobs, self.store, self.js = settings, jobs, store, js
        self.records, self.admission = records, admission

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep every ``PLANZOOM_SWEEP_SECONDS`` until ``stopping`` is set."""
        while not stopping.is_set():
            await asyncio.sleep(self.s.sweep_seconds)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep failed")

    async def reconcile(self, job_id: str, settled_seconds: float = 0.0
                        ) -> tuple[jobs_pb2.Job, list[int]]:
        """Record the outcomes the record missed: pages whose ``.dzi`` (or
        archive) is in S3 (DONE), written at least ``settled_seconds`` ago,
        and pages in the dead letters (FAILED, with the reason). Returns the
        record and the pages repaired. Raises JobNotFound.

        The sweep passes the stall timeout: a completion mark is written just
        before its page's DONE report, and taking the page DONE from the
        bucket while that report (or the render's, with the page's bands
        and variants) is still on its way would drop what they carry (a
        DONE page takes no later report)."""
        job = await self.jobs.get(job_id)
        if ended(job):
            return job, []
        open_pages = {p.page for p in job.pages if p.state not in ENDED_PAGE_STATES}
        if not open_pages:
            return job, []
        found = await self._done_in_s3(job, open_pages, time.time() - settled_seconds)
        found += await self._failed_in_dead_letters(job, open_pages - {r.page for r in found})
        if not found:
            return job, []
        job = await self.records.mark_pages(job_id, found)
        repaired = sorted(r.page for r in found)
        log.warning("reconciled missed page outcomes", extra={"job_id": job_id,
                                                              "pages": repaired})
        return job, repaired

    async def _done_in_s3(self, job: jobs_pb2.Job, pages: set[int], before: float) -> list:
        """DONE records for ``pages`` whose completion mark (``.dzi`` or
        archive, planzoom.keys.done_key) was written before ``before``
        (epoch seconds)."""
        # One level only: the marks, not the tiles under page-N_files/.
        present = {key for key, modified in await asyncio.to_thread(
            lambda: list(self.store.list_objects(job.tiles_prefix, recursive=False)))
            if modified <= before}
        found = []
        for page in sorted(pages):
            key = keys.done_key(job.plan, job.job_id, page, job.options)
            if key in present:
                dzi = await asyncio.to_thread(page_descriptor, key, self.store.get_range,
                                              self.store.get_bytes)
                found.append(done_record(page, dzi))
        return found

    async def _failed_in_dead_letters(self, job: jobs_pb2.Job, pages: set[int]) -> list:
        """FAILED records for ``pages`` that have a dead letter of render or
        tile (a failure whose report was lost)."""
        subject = f"deadletter.*.{job.job_id}"
        info = await self.js.stream_info(DEAD_LETTER_STREAM, subjects_filter=subject)
        if not pages or not info.state.subjects:
            return []
        found: dict[int, jobs_pb2.PageRecord] = {}
        sub = await self.js.pull_subscribe(subject, stream=DEAD_LETTER_STREAM)
        try:
            while True:
                try:
                    msgs = await sub.fetch(100, timeout=1)
                except (TimeoutError, NatsTimeoutError):
                    break
                for msg in msgs:
                    letter = events_pb2.DeadLetter.FromString(msg.data)
                    stage = msg.subject.split(".")[1]
                    if letter.page in pages and stage in ("render", "tile"):
                        found[letter.page] = jobs_pb2.PageRecord(
                            page=letter.page, state=jobs_pb2.PAGE_STATE_FAILED,
                            error=f"{stage}: {letter.error}", reason=letter.reason,
                            attempts=letter.attempts, finished_at=letter.failed_at)
                    await msg.ack()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return list(found.values())

    async def _republish_pending(self, job: jobs_pb2.Job) -> None:
        """Publish again the page jobs of a released job's pages still
        PENDING, while that is safe (see REPUBLISH_WITHIN_SECONDS): one
        ingest never published (it stopped after creating the record) is
        stored now. Later, a lost page job only shows as a stalled job."""
        if job.queued or not job.HasField("released_at"):
            return
        age = time.time() - job.released_at.ToSeconds()
        pending = [p.page for p in job.pages if p.state == jobs_pb2.PAGE_STATE_PENDING]
        if not pending or not self.s.sweep_seconds <= age < REPUBLISH_WITHIN_SECONDS:
            return
        if stored := await self.admission.queues.publish_page_jobs(job, pending):
            log.warning("published page jobs that ingest had not",
                        extra={"job_id": job.job_id, "pages": stored})

    async def _sweep_job(self, job_id: str, now: float) -> bool:
        """One job's sweep; True if it is (still) stalled."""
        job = await self.jobs.get(job_id)
        if job.finalizing:
            if now - job.updated_at.ToSeconds() >= FINALIZE_AFTER_SECONDS:
                log.warning("finalizing a job its writer left", extra={"job_id": job_id})
                await self.records.finalize(job)
            return False
        job, _ = await self.reconcile(job_id, self.s.stall_seconds)
        if ended(job):
            return False
        await self._republish_pending(job)

        def mark_stalled(job: jobs_pb2.Job) -> bool:
            last = job.last_event_at if job.HasField("last_event_at") else job.created_at
            if ended(job) or job.stalled or job.queued or \
                    now - last.ToSeconds() < self.s.stall_seconds:
                return False
            job.stalled = True
            job.updated_at.CopyFrom(now_ts())
            return True

        job = await self.records.change(job_id, mark_stalled)
        if job.stalled:
            log.warning("job stalled", extra={"job_id": job_id})
        return job.stalled

    async def sweep(self) -> None:
        """One pass over every job record, then every org's quota record."""
        now, stalled = time.time(), 0
        for job_id in await self.jobs.job_ids():
            try:
                stalled += await self._sweep_job(job_id, now)
            except JobNotFound:
                continue
            except Exception:
                log.exception("sweeping a job failed; going on with the others",
                              extra={"job_id": job_id})
        metrics.STALLED_JOBS.set(stalled)
        for org in await self.admission.orgs():
            try:
                for job_id in await self.admission.tidy(org):
                    await self.admission.release(job_id)
            except Exception:
                log.exception("tidying an org's quota failed", extra={"org": org})
        try:
            await asyncio.to_thread(self._expire_uploads, now)
        except Exception:
            log.exception("removing expired uploads failed")

    def _expire_uploads(self, now: float) -> None:
        """Delete staged uploads (``uploads/``) whose presigned POST expired
        before anyone submitted them (on AWS S3, a lifecycle rule on the
        prefix does the same; docs/s3-policies.md)."""
        cutoff = now - self.s.upload_url_expiry_seconds - keys.UPLOAD_GRACE_SECONDS
        stale = [key for key, modified in self.store.list_objects(keys.UPLOADS_PREFIX)
                 if modified < cutoff]
        for key in stale:
            self.store.delete(key)
        if stale:
            log.info("expired uploads removed", extra={"count": len(stale)})
