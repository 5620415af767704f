"""IngestService: upload, check, store, create the job, publish page jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator

from planzoom import engines, keys, metrics
from planzoom.admission import Admission, Quota
from planzoom.auth import require_org
from planzoom.backend import BackedService
from planzoom.boundary import method_roles
from planzoom.clock import now_ts
from planzoom.config import Settings
from planzoom.engines import Limits, SourceInfo
from planzoom.engines.sandbox import ProcessPool
from planzoom.errors import (
    FailedPrecondition,
    InvalidInput,
    NotFound,
    PlanzoomError,
    Timeout,
)
from planzoom.ids import check_plan, new_job_id
from planzoom.jobstore import JobNotFound, dedup_key
from planzoom.media import KINDS, Kind
from planzoom.options import resolve_options
from planzoom.pages import Work, set_geometry
from planzoom.scratch import Scratch
from planzoom.slots import Slots, UploadsBusy
from planzoom.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc, jobs_pb2
from services.ingest import inspection
from services.ingest.spool import Spool, UploadTooLarge

log = logging.getLogger(__name__)

#: The content type a presigned upload must declare.
PDF_TYPE = "application/pdf"
#: Content types a presigned POST may declare (the bytes decide the kind).
UPLOAD_TYPES = frozenset(kind.content_type for kind in KINDS.values())
#: Bytes read from a staged upload at a time.
READ_BYTES = 4 * 1024 * 1024
#: A dedup claim whose job record has not appeared after this long belongs
#: to a submit that died: another may take it over. Long enough to store a
#: source of PLANZOOM_MAX_UPLOAD_BYTES; identical submits wait meanwhile.
CLAIM_STALE_SECONDS = 600.0
CLAIM_POLL_SECONDS = 0.2


@contextlib.contextmanager
def counting_refusals() -> Iterator[None]:
    """Count an upload refused inside the block in
    ``planzoom_jobs_total{outcome="rejected"}``."""
    try:
        yield
    except PlanzoomError:
        metrics.JOBS.labels("rejected").inc()
        raise


class Ingest(BackedService, ingest_pb2_grpc.IngestServiceServicer):
    """The IngestService RPCs (see ingest.proto for what each promises)."""

    name = "ingest"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        # Uploads are spooled here, the one directory its inspecting
        # workers may read (and write).
        self.tmp = tempfile.mkdtemp(prefix="planzoom-ingest-", dir=settings.work_dir)
        self.pool = ProcessPool(workers=settings.inspect_workers, recycle_after=100,
                                memory_bytes=settings.worker_memory_bytes,
                                queue_seconds=settings.inspect_queue_seconds, scratch=self.tmp,
                                per_owner=max(1, settings.inspect_workers // 2))
        self.slots = Slots("uploads", UploadsBusy, settings.max_concurrent_uploads,
                           settings.max_concurrent_uploads_per_org, settings=(
                               "MAX_CONCURRENT_UPLOADS", "MAX_CONCURRENT_UPLOADS_PER_ORG", ""))
        self.limits = Limits.from_settings(settings)
        self.scratch = Scratch(settings.work_dir, settings.scratch_bytes)

    def register(self, server):
        ingest_pb2_grpc.add_IngestServiceServicer_to_server(self, server)
        return method_roles(ingest_pb2.DESCRIPTOR.services_by_name["IngestService"], {
            "Upload": "uploader", "CreateUploadUrl": "uploader", "SubmitJob": "uploader",
            "GetJob": "viewer"})

    async def start(self) -> None:
        await self.connect()
        self.admission = Admission(self.jobs, Quota.from_settings(self.s), self.queues)

    async def close(self) -> None:
        # After the drain: an upload in flight was still inspecting its file.
        await self.pool.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        await super().close()

    # -- RPCs ---------------------------------------------------------------

    async def Upload(self, request_iterator: AsyncIterator[ingest_pb2.UploadRequest], context):
        """Client-streaming upload (uploader): an UploadHeader, then chunks of
        at most 4 MiB. A stream silent for PLANZOOM_UPLOAD_IDLE_SECONDS ends
        with DEADLINE_EXCEEDED; over PLANZOOM_MAX_CONCURRENT_UPLOADS(_PER_ORG)
        uploads at once, RESOURCE_EXHAUSTED with a RetryInfo."""
        with counting_refusals():
            messages = aiter(request_iterator)
            first = await self._next(messages)
            if first is None or first.WhichOneof("payload") != "header":
                raise InvalidInput("the first message of Upload must be an UploadHeader",
                                   field="header")
            header = first.header
            check_plan(header.plan)
            require_org(header.plan.org)
            options = resolve_options(header.options, self.s)
            if header.size_bytes > self.s.largest_upload_bytes:
                raise UploadTooLarge(header.size_bytes, self.s.largest_upload_bytes)
            with self.slots.hold(header.plan.org):
                spool = self._spool()
                try:
                    while (req := await self._next(messages)) is not None:
                        if req.WhichOneof("payload") != "chunk":
                            raise InvalidInput("only the first message of Upload may be a "
                                               "header", field="header")
                        await asyncio.to_thread(spool.write, req.chunk)
                    sha = spool.finish()
                    return await self._create_job(spool, sha, header.plan, options,
                                                  header.filename)
                finally:
                    spool.discard()

    async def _next(self, messages: AsyncIterator):
        """The next message of an upload stream, or None at its end; Timeout
        (DEADLINE_EXCEEDED) if none comes for PLANZOOM_UPLOAD_IDLE_SECONDS."""
        try:
            async with asyncio.timeout(self.s.upload_idle_seconds):
                return await anext(messages, None)
        except TimeoutError:
            raise Timeout(f"the upload sent nothing for {self.s.upload_idle_seconds:g} s and "
                          "was abandoned; start it again", reason="UPLOAD_IDLE",
                          retryable=False) from None

    async def CreateUploadUrl(self, request, context):
        """A presigned POST upload for a large file (uploader): its policy
        binds the key, the content type and the size (see ingest.proto)."""
        check_plan(request.plan)
        require_org(request.plan.org)
        video = (request.content_type or "").startswith("video/")
        limit = self.s.max_video_bytes if video else self.s.max_upload_bytes
        if request.size_bytes > limit:
            raise UploadTooLarge(request.size_bytes, limit)
        content_type = request.content_type or PDF_TYPE
        if content_type not in UPLOAD_TYPES:
            raise InvalidInput(f"content_type {content_type[:80]!r} is not one planzoom takes: "
                               f"{', '.join(sorted(UPLOAD_TYPES))}", field="content_type")
        upload_id = secrets.token_hex(16)
        key = keys.upload_key(request.plan, upload_id)
        low, high = ((request.size_bytes, request.size_bytes) if request.size_bytes
                     else (1, limit))
        # Reserved until SubmitJob takes it or it can no longer be submitted.
        held = (self.s.gateway_upload_expiry_seconds if request.resumable
                else self.s.upload_url_expiry_seconds) + keys.UPLOAD_GRACE_SECONDS
        await self.admission.stage(request.plan.org, upload_id, high, held)
        url, fields = await asyncio.to_thread(
            self.store.presigned_post, key, content_type, low, high,
            self.s.upload_url_expiry_seconds)
        return ingest_pb2.CreateUploadUrlResponse(
            url=url, object_key=key, fields=fields,
            expires_in_seconds=self.s.upload_url_expiry_seconds)

    async def SubmitJob(self, request, context):
        """A job for a file uploaded to a CreateUploadUrl URL (uploader)."""
        with counting_refusals():
            check_plan(request.plan)
            require_org(request.plan.org)
            options = resolve_options(request.options, self.s)
            upload_id = keys.upload_id_of(request.plan, request.object_key)
            if upload_id is None:
                raise InvalidInput("object_key must be exactly a key CreateUploadUrl returned "
                                   f"for this plan ({keys.upload_prefix(request.plan)}<id>)",
                                   field="object_key")
            size = await asyncio.to_thread(self.store.size, request.object_key)
            if size is None:
                raise NotFound(f"no uploaded object at {request.object_key}; POST the file to "
                               "the presigned URL first", reason="UPLOAD_NOT_FOUND")
            # Before the upload is marked used: one refused for want of room
            # stays staged and can be submitted again.
            await asyncio.to_thread(self.scratch.need, size, "the upload")
            try:
                if not await self.jobs.use_upload(upload_id,
                                                  2 * self.s.upload_url_expiry_seconds):
                    raise FailedPrecondition("this upload was submitted already; each upload "
                                             "makes one job", reason="UPLOAD_USED")
                await self._unstage(request.plan.org, upload_id)
                if size > self.s.largest_upload_bytes:
                    raise UploadTooLarge(size, self.s.largest_upload_bytes)
                with self.slots.hold(request.plan.org):
                    spool = self._spool(checked=True)
                    try:
                        body = await asyncio.to_thread(self.store.get_stream,
                                                       request.object_key)
                        try:
                            while chunk := await asyncio.to_thread(body.read, READ_BYTES):
                                await asyncio.to_thread(spool.write, chunk)
                        finally:
                            body.close()
                        sha = spool.finish()
                        return await self._create_job(spool, sha, request.plan, options,
                                                      request.filename)
                    finally:
                        spool.discard()
            finally:
                # The staged upload is either stored under sources/ now or refused.
                await asyncio.to_thread(self.store.delete, request.object_key)

    def _spool(self, checked: bool = False) -> Spool:
        """A new upload's file in this server's scratch directory, which
        it checks for room as it grows unless that was ``checked`` for its
        whole size beforehand."""
        return Spool(self.tmp, self.s.max_upload_bytes, self.s.max_video_bytes,
                     None if checked else self.scratch)

    async def _unstage(self, org: str, upload_id: str) -> None:
        """Free a submitted upload's staging reservation (it lapses by
        itself if the bus cannot take the change now)."""
        try:
            await self.admission.unstage(org, upload_id)
        except Exception:
            log.warning("could not free an upload's staging reservation; it lapses by itself",
                        exc_info=True, extra={"org": org, "upload_id": upload_id})

    async def GetJob(self, request, context):
        """The caller's job record (viewer)."""
        return await self.get_job(request.job_id)

    # -- job creation -------------------------------------------------------

    async def _claim(self, key: str, job_id: str) -> jobs_pb2.Job | None:
        """Claim the dedup ``key`` for ``job_id`` (None), or return the job
        that holds it: identical submits at once, or a client retrying after
        a timeout, get one job. A holder that has not created its record yet
        is waited for, until its claim is CLAIM_STALE_SECONDS old; a claim
        whose job FAILED, was CANCELLED or never came is taken over."""
        while (holder := await self.jobs.claim_dedup(key, job_id)) is not None:
            holder_id, claimed_at = holder
            try:
                existing = await self.jobs.get(holder_id)
            except JobNotFound:
                existing = None
            if existing is not None and existing.state not in (
                    jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED):
                return keys.with_keys(existing)
            if existing is None and time.time() - claimed_at < CLAIM_STALE_SECONDS:
                await asyncio.sleep(CLAIM_POLL_SECONDS)  # its creator is storing the source
                continue
            if await self.jobs.replace_dedup(key, holder_id, job_id):
                return None
        return None

    async def _create_job(self, spool: Spool, sha: str, plan: jobs_pb2.PlanRef,
                          options: jobs_pb2.JobOptions,
                          filename: str) -> ingest_pb2.SubmitJobResponse:
        """Inspect the spooled file, then return the job these bytes, plan and
        options already have (deduplicated) or create it: store the source
        under its hash, store the record, publish one page job per page."""
        info = await inspection.inspect_upload(self.pool, self.limits,
                                               self.s.inspect_timeout_seconds, spool.path,
                                               spool.kind, plan.org)
        # A TIFF container may hold a RAW (and a RAW-looking file be a TIFF):
        # the worker decided from the whole file.
        kind = KINDS.get(info.kind, spool.kind)
        geometries = engines.geometries(info, options, self.s.max_page_side_pixels)
        work = inspection.check_budget(self.s, info, geometries, options)
        job_id, claim = new_job_id(), dedup_key(plan, sha, options)
        existing = await self._claim(claim, job_id)
        if existing is not None:
            log.info("duplicate submit", extra={"job_id": existing.job_id})
            metrics.JOBS.labels("deduplicated").inc()
            return ingest_pb2.SubmitJobResponse(job_id=existing.job_id, deduplicated=True,
                                                job=existing)
        try:
            return await self._store_job(spool, sha, plan, options, filename, job_id, kind,
                                         info, geometries, work)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release_claim(claim, job_id))
            raise

    async def _release_claim(self, claim: str, job_id: str) -> None:
        """Drop ``job_id``'s dedup claim if no record came of it, so an
        identical retry need not wait for the claim to go stale (a record
        that was stored keeps it: the sweep publishes its pages)."""
        try:
            await self.jobs.get(job_id)
        except JobNotFound:
            await self.jobs.release_dedup(claim, job_id)

    async def _store_job(self, spool: Spool, sha: str, plan: jobs_pb2.PlanRef,
                         options: jobs_pb2.JobOptions, filename: str, job_id: str, kind: Kind,
                         info: SourceInfo, geometries: list[events_pb2.PageGeometry],
                         work: Work) -> ingest_pb2.SubmitJobResponse:
        """Store the source and the record of a job whose dedup claim is
        ``job_id``'s, and publish its page jobs (unless its org is at its
        quota)."""
        src_key = keys.source_key(plan, sha, kind.suffix)
        if not await asyncio.to_thread(self.store.exists, src_key):
            await asyncio.to_thread(self.store.upload_file, spool.path, src_key,
                                    kind.content_type)

        admitted = await self.admission.admit(plan.org, job_id, work.pixels)
        now = now_ts()
        job = jobs_pb2.Job(
            job_id=job_id, plan=plan, state=jobs_pb2.JOB_STATE_PENDING, options=options,
            source_key=src_key, source_sha256=sha, source_bytes=spool.size,
            source_name=os.path.basename(filename or "")[:255],
            total_pages=len(info.page_sizes),
            planned_pixels=work.pixels, planned_tiles=work.tiles, queued=not admitted,
            tiles_prefix=keys.tiles_prefix(plan, job_id),
            manifest_key=keys.manifest_key(plan, job_id),
            created_at=now, updated_at=now,
            pages=[jobs_pb2.PageRecord(page=g.page, state=jobs_pb2.PAGE_STATE_PENDING)
                   for g in geometries],
            source_kind=kind.name,
        )
        for page, geometry in zip(job.pages, geometries, strict=True):
            set_geometry(page, geometry)
        for page, facts in zip(job.pages, info.facts, strict=False):
            if info.video:
                page.video.CopyFrom(jobs_pb2.VideoFacts(**{
                    k: v for k, v in info.video.items() if k not in ("width", "height")}))
                continue
            if not options.keep_gps:  # a photo's position is kept only when asked for
                facts = {k: v for k, v in facts.items() if not k.startswith("gps_")}
            page.image.CopyFrom(jobs_pb2.ImageFacts(**facts))
        if admitted:
            job.released_at.CopyFrom(now)
        await self.jobs.create(job)
        if admitted:
            # If this process stops part-way, the progress sweep publishes the
            # pages still PENDING again (deduplicated by their message ids).
            await self.queues.publish_page_jobs(job, range(1, job.total_pages + 1))
        metrics.JOBS.labels("created" if admitted else "queued").inc()
        log.info("job created" if admitted else "job queued: its org is at its quota",
                 extra={"job_id": job_id, "pages": job.total_pages, "sha256": sha,
                        "bytes": spool.size, "pixels": work.pixels})
        return ingest_pb2.SubmitJobResponse(job_id=job_id, deduplicated=False, job=job)
