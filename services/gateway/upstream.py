"""The gateway's gRPC clients: ProgressService (job records, their changes)
and IngestService (uploads finished over tus) with the caller's token on
every call, and a small cache of where each
job's tiles are, so that a tile request costs no RPC after the first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from planzoom import keys, tracing
from planzoom.config import Settings
from planzoom.jobstore import JobNotFound
from planzoom.v1 import ingest_pb2, ingest_pb2_grpc, jobs_pb2, progress_pb2, progress_pb2_grpc
from services.gateway.access import Access

#: Seconds one upstream unary call may take.
CALL_SECONDS = 10.0
#: Seconds SubmitJob may take: ingest reads the whole upload and opens it.
SUBMIT_SECONDS = 300.0
#: Jobs whose tile locations are kept (a few hundred bytes each).
CACHED_JOBS = 10_000


def aio_channel(addr: str, settings: Settings) -> grpc.aio.Channel:
    """A channel to ``addr``: TLS checked against ``PLANZOOM_TLS_CA_FILE``
    when set, else plaintext (a cluster-internal hop)."""
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    interceptors = tracing.client_interceptors()
    if settings.tls_ca_file:
        with open(settings.tls_ca_file, "rb") as f:
            creds = grpc.ssl_channel_credentials(f.read())
        return grpc.aio.secure_channel(addr, creds, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(addr, options=options, interceptors=interceptors)


@dataclass(frozen=True)
class JobPlace:
    """Where a job's outputs are, and whose they are."""

    org: str
    tiles_prefix: str
    archive: bool  # layout ARCHIVE: each page's pyramid in one object

    @property
    def preview_prefix(self) -> str:
        """Where a video job's HLS preview is (planzoom/keys.py: beside
        ``tiles/<plan>/<job>/`` as ``previews/<plan>/<job>/``)."""
        return "previews/" + self.tiles_prefix.removeprefix("tiles/")


class Upstream:
    """ProgressService and IngestService calls as the caller (its token
    forwarded)."""

    def __init__(self, settings: Settings):
        self.progress_channel = aio_channel(settings.progress_addr, settings)
        self.progress = progress_pb2_grpc.ProgressServiceStub(self.progress_channel)
        self.ingest_channel = aio_channel(settings.ingest_addr, settings)
        self.ingest = ingest_pb2_grpc.IngestServiceStub(self.ingest_channel)
        self._places: OrderedDict[str, JobPlace] = OrderedDict()

    async def close(self) -> None:
        await self.progress_channel.close()
        await self.ingest_channel.close()

    async def create_upload(self, access: Access, plan: jobs_pb2.PlanRef, filename: str,
                            size_bytes: int, content_type: str = "") -> str:
        """The object key where a resumable (tus) upload of ``size_bytes``
        for ``plan`` may be staged (CreateUploadUrl: ingest checks the plan,
        the caller's role and org, and the size, and reserves the bytes
        against the org's staging quota). Raises grpc.aio.AioRpcError."""
        resp = await self.ingest.CreateUploadUrl(
            ingest_pb2.CreateUploadUrlRequest(plan=plan, filename=filename,
                                              size_bytes=size_bytes, content_type=content_type,
                                              resumable=True),
            metadata=access.metadata, timeout=CALL_SECONDS)
        return resp.object_key

    async def submit_job(self, access: Access, plan: jobs_pb2.PlanRef,
                         options: jobs_pb2.JobOptions, object_key: str,
                         filename: str) -> ingest_pb2.SubmitJobResponse:
        """SubmitJob for a staged object (ingest checks and takes it, once)."""
        return await self.ingest.SubmitJob(
            ingest_pb2.SubmitJobRequest(plan=plan, options=options, object_key=object_key,
                                        filename=filename),
            metadata=access.metadata, timeout=SUBMIT_SECONDS)

    async def get_job(self, access: Access, job_id: str) -> jobs_pb2.Job:
        """The job record (GetJob). Raises grpc.aio.AioRpcError as the
        service answered: NOT_FOUND for a job of another org."""
        job = await self.progress.GetJob(jobs_pb2.GetJobRequest(job_id=job_id),
                                         metadata=access.metadata, timeout=CALL_SECONDS)
        self._remember(job)
        return job

    def watch_job(self, access: Access, job_id: str) -> AsyncIterator[progress_pb2.JobUpdate]:
        """WatchJob's stream of updates, a snapshot then deltas (merge them
        with :func:`planzoom.updates.apply_update`; the caller cancels the
        stream by leaving)."""
        return self.progress.WatchJob(progress_pb2.WatchJobRequest(job_id=job_id),
                                      metadata=access.metadata)

    async def list_jobs(self, access: Access, plan: jobs_pb2.PlanRef, page_size: int,
                        page_token: str = "") -> progress_pb2.ListJobsResponse:
        """One page of the plan's records, newest first (ListJobs)."""
        return await self.progress.ListJobs(
            progress_pb2.ListJobsRequest(plan=plan, page_size=page_size, page_token=page_token),
            metadata=access.metadata, timeout=CALL_SECONDS)

    async def set_sheet(self, access: Access, job_id: str, page: int, number: str,
                        title: str) -> jobs_pb2.Sheet:
        """A person's sheet number and title for a page (SetSheet)."""
        return await self.progress.SetSheet(
            progress_pb2.SetSheetRequest(job_id=job_id, page=page, number=number, title=title),
            metadata=access.metadata, timeout=CALL_SECONDS)

    async def list_sheets(self, access: Access,
                          plan: jobs_pb2.PlanRef) -> progress_pb2.ListSheetsResponse:
        """The plan's current set, a sheet per page (ListSheets)."""
        return await self.progress.ListSheets(progress_pb2.ListSheetsRequest(plan=plan),
                                              metadata=access.metadata, timeout=CALL_SECONDS)

    def _remember(self, job: jobs_pb2.Job) -> None:
        self._places[job.job_id] = JobPlace(job.plan.org, job.tiles_prefix,
                                            keys.is_archive(job.options))
        self._places.move_to_end(job.job_id)
        while len(self._places) > CACHED_JOBS:
            self._places.popitem(last=False)

    async def place(self, access: Access, job_id: str) -> JobPlace:
        """Where ``job_id``'s outputs are, if the caller may read them: from
        a signed link, the cache (a job's prefix never changes) or GetJob.
        A job of another org is NotFound, exactly as an unknown one."""
        if access.link is not None:
            return JobPlace(access.link.org, access.link.tiles_prefix, access.link.archive)
        place = self._places.get(job_id)
        if place is None:
            job = await self.get_job(access, job_id)
            place = self._places[job.job_id]
        if place.org != access.caller.org:
            raise JobNotFound(job_id)
        return place
