"""The periodic sweep of unfinished jobs, and Reconcile: repair what a lost
message left behind (a page done in S3 that the record missed, page jobs
ingest never published) and flag jobs nobody reports on."""

from __future__ import annotations

import asyncio
import logging
import time

from planzoom import keys
from planzoom.clock import now_ts
from planzoom.config import Settings
from planzoom.dzi import done_record, parse_dzi
from planzoom.jobstore import JobNotFound, JobStore
from planzoom.messaging.publishing import publish_page_jobs
from planzoom.messaging.topology import DUPLICATE_WINDOW_SECONDS
from planzoom.states import TERMINAL_PAGE_STATES, is_terminal
from planzoom.storage import ObjectStore
from planzoom.v1 import jobs_pb2
from services.progress.records import JobRecords

log = logging.getLogger(__name__)

#: A job's PENDING pages are published again by the sweep up to this long
#: after its creation: the render stream's duplicate window less 3 minutes
#: (clock skew between hosts, one sweep period), so that a page job ingest
#: did publish is never stored twice.
REPUBLISH_WITHIN_SECONDS = DUPLICATE_WINDOW_SECONDS - 180


class Sweeper:
    """Reconcile, republish and stall checks over the jobs in KV."""

    def __init__(self, settings: Settings, jobs: JobStore, store: ObjectStore,
                 records: JobRecords, js):
        self.s, self.jobs, self.store, self.records, self.js = settings, jobs, store, records, js

    async def run(self, stopping: asyncio.Event) -> None:
        """Sweep every ``PLANZOOM_SWEEP_SECONDS`` until ``stopping`` is set."""
        while not stopping.is_set():
            await asyncio.sleep(self.s.sweep_seconds)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep failed")

    async def reconcile(self, job_id: str) -> tuple[jobs_pb2.Job, list[int]]:
        """Mark pages DONE whose ``.dzi`` is in S3 although the record missed
        it (a lost progress event). Returns the record and the pages
        repaired. Raises JobNotFound."""
        job = await self.jobs.get(job_id)
        if is_terminal(job):
            return job, []
        open_pages = [p.page for p in job.pages if p.state not in TERMINAL_PAGE_STATES]
        if not open_pages:
            return job, []
        # One level only: the .dzi files, not the tiles under page-N_files/.
        present = set(await asyncio.to_thread(
            lambda: list(self.store.list_keys(job.tiles_prefix, recursive=False))))
        found = []
        for page in open_pages:
            key = keys.dzi_key(job.plan, job.job_id, page)
            if key in present:
                xml = await asyncio.to_thread(self.store.get_bytes, key)
                found.append(done_record(page, parse_dzi(xml), key))
        if not found:
            return job, []
        job = await self.records.mark_done(job_id, found)
        repaired = sorted(r.page for r in found)
        log.warning("reconciled missed page completions",
                    extra={"job_id": job_id, "pages": repaired})
        return job, repaired

    async def _republish_pending(self, job: jobs_pb2.Job) -> None:
        """Publish again the page jobs of the pages still PENDING, while that
        is safe (see REPUBLISH_WITHIN_SECONDS): one ingest never published
        (it stopped after creating the record) is stored now. Later, a lost
        page job only shows as a stalled job."""
        age = time.time() - job.created_at.ToSeconds()
        pending = [p.page for p in job.pages if p.state == jobs_pb2.PAGE_STATE_PENDING]
        if not pending or not self.s.sweep_seconds <= age < REPUBLISH_WITHIN_SECONDS:
            return
        if stored := await publish_page_jobs(self.js, job, pending):
            log.warning("published page jobs that ingest had not",
                        extra={"job_id": job.job_id, "pages": stored})

    async def sweep(self) -> None:
        """One pass over every job record: reconcile, republish, flag stalls."""
        now = time.time()

        def mark_stalled(job: jobs_pb2.Job) -> bool:
            last = job.last_event_at if job.HasField("last_event_at") else job.created_at
            if is_terminal(job) or job.stalled or now - last.ToSeconds() < self.s.stall_seconds:
                return False
            job.stalled = True
            job.updated_at.CopyFrom(now_ts())
            return True

        for job_id in await self.jobs.job_ids():
            try:
                job, _ = await self.reconcile(job_id)
                if not is_terminal(job):
                    await self._republish_pending(job)
                    job = await self.records.change(job_id, mark_stalled)
                    if job.stalled:
                        log.warning("job stalled", extra={"job_id": job_id})
            except JobNotFound:
                continue
