"""ProgressService's RPCs (progress.proto says what each promises)."""

from __future__ import annotations

import asyncio

from planzoom import keys, metrics, updates
from planzoom.auth import current, require_org, visible
from planzoom.errors import NotFound, Unavailable
from planzoom.ids import check_id, check_plan
from planzoom.jobstore import JobNotFound, JobStore
from planzoom.sheets import sheet_from_json, version_from_json
from planzoom.slots import Slots
from planzoom.states import finalized
from planzoom.v1 import jobs_pb2, progress_pb2, progress_pb2_grpc
from services.progress import sheets
from services.progress.feeds import JobFeeds
from services.progress.records import JobRecords
from services.progress.sweep import Sweeper

#: ListJobs' page size when the request names none, and its maximum; the
#: records of one page stop at about LIST_MAX_BYTES (a 2,000-page job's
#: record is half a MiB: a hundred of them must not be serialized at once).
LIST_DEFAULT, LIST_MAX, LIST_MAX_BYTES = 20, 100, 2 << 20


class ProgressRpcs(progress_pb2_grpc.ProgressServiceServicer):
    """WatchJob, GetJob, ListJobs, CancelJob, Reconcile, SetSheet and
    ListSheets over the job records. ``stopping`` is set when the service begins to shut down."""

    def __init__(self, jobs: JobStore, records: JobRecords, sweeper: Sweeper, feeds: JobFeeds,
                 stopping: asyncio.Event, watches: Slots):
        self.jobs, self.records, self.sweeper = jobs, records, sweeper
        self.feeds, self.stopping, self.watches = feeds, stopping, watches

    async def _job(self, job_id: str) -> jobs_pb2.Job:
        """The caller's job: INVALID_ARGUMENT for a malformed id, NOT_FOUND
        for an unknown one or one of another org."""
        return visible(await self.jobs.get(check_id("job_id", job_id)), JobNotFound)

    async def GetJob(self, request, context):
        """The job record (viewer)."""
        return keys.with_keys(await self._job(request.job_id))

    async def ListJobs(self, request, context):
        """Up to ``page_size`` (default 20, at most 100) records of one plan
        of the caller's org, newest first, from after ``page_token`` (an
        earlier answer's ``next_page_token``; a page ends early at about 2
        MiB of records) (viewer). PERMISSION_DENIED for another org's plan;
        INVALID_ARGUMENT for a page token that is not one, or whose job
        expired."""
        check_plan(request.plan)
        require_org(request.plan.org)
        after = check_id("page_token", request.page_token) if request.page_token else ""
        limit = min(request.page_size or LIST_DEFAULT, LIST_MAX)
        jobs, last = await self.jobs.list_for_plan(request.plan, limit, after, LIST_MAX_BYTES)
        return progress_pb2.ListJobsResponse(jobs=[keys.with_keys(job) for job in jobs],
                                             next_page_token=last)

    async def CancelJob(self, request, context):
        """End the job CANCELLED (admin). FAILED_PRECONDITION if it has ended."""
        job = await self._job(request.job_id)
        return keys.with_keys(await self.records.cancel(job.job_id, request.reason))

    async def Reconcile(self, request, context):
        """Mark pages DONE whose ``.dzi`` is in S3 but not in the record
        (admin)."""
        job = await self._job(request.job_id)
        job, repaired = await self.sweeper.reconcile(job.job_id)
        return progress_pb2.ReconcileResponse(job=keys.with_keys(job), repaired_pages=repaired)

    async def SetSheet(self, request, context):
        """A person's sheet number and title for one page (uploader)."""
        job = await self._job(request.job_id)
        return await self.records.set_sheet(job.job_id, request.page, request.number,
                                            request.title)

    async def ListSheets(self, request, context):
        """The plan's current set (viewer): the newest version of each of
        its sheets with all its versions (services.progress.register)."""
        check_plan(request.plan)
        require_org(request.plan.org)
        found = await asyncio.to_thread(sheets.current_sheets, self.records.store, request.plan)
        if found is None:
            raise NotFound(f"plan {request.plan.org}/{request.plan.project}/"
                           f"{request.plan.plan} has no complete set yet", reason="NOT_FOUND")
        resp = progress_pb2.ListSheetsResponse(job_id=found["job_id"])
        for e in found["sheets"]:
            resp.sheets.add(page=int(e["page"]), job_id=e["job_id"],
                            sheet=sheet_from_json(e["sheet"]),
                            versions=[version_from_json(v) for v in e.get("versions", [])])
        return resp

    async def WatchJob(self, request, context):
        """A snapshot of the record, then a delta at each change, until the
        job has ended (viewer; progress.proto, ``JobUpdate``). UNAVAILABLE
        when the service stops (watch again to resume); RESOURCE_EXHAUSTED
        ``TOO_MANY_WATCHES`` (with RetryInfo) past the streams this replica,
        the org or the caller may hold open (``PLANZOOM_MAX_WATCHES``,
        ``_PER_ORG``, ``_PER_CALLER``)."""
        job = await self._job(request.job_id)
        if finalized(job):  # no feed needed for a job that has ended
            yield updates.snapshot(keys.with_keys(job))
            return
        caller = current()
        with self.watches.hold(caller.org, caller.subject):
            async for update in self._watch(request.job_id, job):
                yield update

    async def _watch(self, job_id: str, job: jobs_pb2.Job):
        metrics.WATCHERS.inc()
        try:
            # The current record first, then each change from the job's feed
            # (one KV watcher per job in this process, whatever the streams).
            async with self.feeds.subscribe(job_id) as feed:
                if feed.latest is not None and feed.latest.revision >= job.revision:
                    job = feed.latest  # a revision the feed can build deltas from
                    yield feed.snapshot()
                else:
                    yield updates.snapshot(keys.with_keys(job))
                while not finalized(job):
                    await feed.wait(job.revision)
                    if self.stopping.is_set():
                        raise Unavailable("the progress service is restarting; watch again "
                                          "to resume", reason="RESTARTING")
                    if feed.gone:
                        raise JobNotFound(job_id)
                    if feed.latest is not None and feed.latest.revision > job.revision:
                        update = feed.update_since(job.revision)
                        job = feed.latest
                        yield update
        finally:
            metrics.WATCHERS.dec()
