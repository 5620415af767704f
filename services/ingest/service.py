"""IngestService: upload, check, store, create the job, publish page jobs."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import tempfile
from collections.abc import AsyncIterator

import grpc

from planzoom import errors, keys, messaging, metrics
from planzoom.backend import BackedService
from planzoom.clock import now_ts
from planzoom.config import Settings, get_settings
from planzoom.errors import RequestError, check_plan, invalid
from planzoom.ids import new_job_id
from planzoom.jobstore import JobNotFound, dedup_key
from planzoom.logs import setup_logging
from planzoom.procpool import ProcessPool, WorkerCrashed
from planzoom.server import serve
from planzoom.v1 import ingest_pb2, ingest_pb2_grpc, jobs_pb2
from services.ingest.checks import HEADER_WINDOW, PdfRejected, describe_magic, inspect_pdf

log = logging.getLogger(__name__)

INSPECT_TIMEOUT_SECONDS = 60.0
DPI_RANGE = (10.0, 1200.0)
TILE_SIZE_RANGE = (64, 4096)
OVERLAP_RANGE = (0, 16)


def resolve_options(opts: jobs_pb2.JobOptions, s: Settings) -> jobs_pb2.JobOptions:
    """Fill defaults and check ranges (INVALID_ARGUMENT RequestError)."""
    out = jobs_pb2.JobOptions(
        dpi=opts.dpi or s.default_dpi,
        tile_size=opts.tile_size or s.default_tile_size,
        overlap=opts.overlap if opts.HasField("overlap") else s.default_overlap,
        jpeg_quality=opts.jpeg_quality or s.default_jpeg_quality,
        max_page_pixels=min(opts.max_page_pixels or s.max_page_pixels, s.max_page_pixels),
    )
    if not DPI_RANGE[0] <= out.dpi <= DPI_RANGE[1]:
        raise invalid(f"dpi {opts.dpi:g} is out of range: use {DPI_RANGE[0]:g} to "
                      f"{DPI_RANGE[1]:g}", field="options.dpi")
    if not TILE_SIZE_RANGE[0] <= out.tile_size <= TILE_SIZE_RANGE[1]:
        raise invalid(f"tile_size {out.tile_size} is out of range: use {TILE_SIZE_RANGE[0]} "
                      f"to {TILE_SIZE_RANGE[1]} pixels", field="options.tile_size")
    if not OVERLAP_RANGE[0] <= out.overlap <= OVERLAP_RANGE[1]:
        raise invalid(f"overlap {out.overlap} is out of range: use {OVERLAP_RANGE[0]} to "
                      f"{OVERLAP_RANGE[1]} pixels", field="options.overlap")
    if not 1 <= out.jpeg_quality <= 100:
        raise invalid(f"jpeg_quality {out.jpeg_quality} is out of range: use 1 to 100",
                      field="options.jpeg_quality")
    return out


def too_large(size: int, limit: int) -> RequestError:
    return RequestError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"the file is larger than the {limit:,}-byte upload limit ({size:,} bytes or more); "
        "split the plan set or ask the operator to raise PLANZOOM_MAX_UPLOAD_BYTES",
        reason="UPLOAD_TOO_LARGE",
    )


class Spool:
    """The upload on local disk while it arrives: size, sha256, first bytes."""

    def __init__(self, work_dir: str | None, limit: int):
        fd, self.path = tempfile.mkstemp(prefix="planzoom-upload-", suffix=".pdf", dir=work_dir)
        self._file = os.fdopen(fd, "wb")
        self.limit, self.size, self.head = limit, 0, b""
        self._sha = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise too_large(self.size, self.limit)
        if len(self.head) < HEADER_WINDOW:
            self.head += chunk[: HEADER_WINDOW - len(self.head)]
            what = describe_magic(self.head)
            if what and len(self.head) >= HEADER_WINDOW:
                raise not_a_pdf(what)
        self._sha.update(chunk)
        self._file.write(chunk)

    def finish(self) -> str:
        """Close the file, check it, and return the sha256 hex digest."""
        self._file.close()
        if self.size == 0:
            raise invalid("the file is empty (0 bytes); upload the plan PDF itself",
                          reason="EMPTY_FILE")
        what = describe_magic(self.head)
        if what:
            raise not_a_pdf(what)
        return self._sha.hexdigest()

    def discard(self) -> None:
        self._file.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


def not_a_pdf(what: str) -> RequestError:
    return invalid(f"the file is not a PDF: it looks like {what}; upload a PDF plan set",
                   reason="NOT_A_PDF")


class Ingest(BackedService, ingest_pb2_grpc.IngestServiceServicer):
    name = "ingest"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.pool = ProcessPool(workers=1, recycle_after=100)

    def register(self, server):
        ingest_pb2_grpc.add_IngestServiceServicer_to_server(self, server)
        return [ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name]

    async def start(self) -> None:
        await self.connect()

    async def stop(self, grace: float) -> None:
        self.pool.close()
        await self.disconnect()

    # -- RPCs ---------------------------------------------------------------

    async def Upload(self, request_iterator: AsyncIterator[ingest_pb2.UploadRequest], context):
        spool = None
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None or first.WhichOneof("payload") != "header":
                raise invalid("the first message of Upload must be an UploadHeader",
                              field="header")
            header = first.header
            check_plan(header.plan)
            options = resolve_options(header.options, self.s)
            if header.size_bytes > self.s.max_upload_bytes:
                raise too_large(header.size_bytes, self.s.max_upload_bytes)
            spool = Spool(self.s.work_dir, self.s.max_upload_bytes)
            async for req in request_iterator:
                if req.WhichOneof("payload") != "chunk":
                    raise invalid("only the first message of Upload may be a header",
                                  field="header")
                spool.write(req.chunk)
            sha = spool.finish()
            return await self._create_job(
                spool.path, sha, spool.size, header.plan, options, header.filename
            )
        except RequestError as e:
            metrics.JOBS.labels("rejected").inc()
            log.info("upload refused: %s", e.message, extra={"reason": e.reason})
            await errors.abort(context, e)
        finally:
            if spool:
                spool.discard()

    async def CreateUploadUrl(self, request, context):
        try:
            check_plan(request.plan)
        except RequestError as e:
            await errors.abort(context, e)
        key = keys.upload_key(request.plan, secrets.token_hex(16))
        url = await asyncio.to_thread(
            self.store.presigned_put, key, self.s.upload_url_expiry_seconds
        )
        return ingest_pb2.CreateUploadUrlResponse(
            url=url, object_key=key, expires_in_seconds=self.s.upload_url_expiry_seconds
        )

    async def SubmitJob(self, request, context):
        spool = None
        try:
            check_plan(request.plan)
            options = resolve_options(request.options, self.s)
            prefix = keys.upload_prefix(request.plan)
            if not request.object_key.startswith(prefix) or not request.object_key[len(prefix):]:
                raise invalid(f"object_key must be a key returned by CreateUploadUrl for this "
                              f"plan (under {prefix})", field="object_key")
            size = await asyncio.to_thread(self.store.size, request.object_key)
            if size is None:
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"no uploaded object at {request.object_key}; PUT the file "
                                   "to the presigned URL first", reason="UPLOAD_NOT_FOUND")
            try:
                if size > self.s.max_upload_bytes:
                    raise too_large(size, self.s.max_upload_bytes)
                spool = Spool(self.s.work_dir, self.s.max_upload_bytes)
                body = await asyncio.to_thread(self.store.get_stream, request.object_key)
                try:
                    while chunk := await asyncio.to_thread(body.read, 4 * 1024 * 1024):
                        spool.write(chunk)
                finally:
                    body.close()
                sha = spool.finish()
                return await self._create_job(
                    spool.path, sha, spool.size, request.plan, options, request.filename
                )
            finally:
                # The staged upload is either stored under sources/ now or refused.
                await asyncio.to_thread(self.store.delete, request.object_key)
        except RequestError as e:
            metrics.JOBS.labels("rejected").inc()
            log.info("submit refused: %s", e.message, extra={"reason": e.reason})
            await errors.abort(context, e)
        finally:
            if spool:
                spool.discard()

    async def GetJob(self, request, context):
        return await self.get_job_or_abort(request.job_id, context)

    # -- job creation -------------------------------------------------------

    async def _inspect(self, path: str):
        try:
            info = await self.pool.run(INSPECT_TIMEOUT_SECONDS, inspect_pdf, path)
        except PdfRejected as e:
            if e.kind == "encrypted":
                raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, e.message,
                                   reason="PDF_ENCRYPTED") from None
            raise invalid(e.message, reason="PDF_DAMAGED") from None
        except WorkerCrashed as e:
            raise invalid(f"the PDF could not be read safely ({e}); it is probably damaged",
                          reason="PDF_DAMAGED") from None
        if len(info.page_sizes) > self.s.max_pages:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the PDF has {len(info.page_sizes)} pages, more than the limit of "
                f"{self.s.max_pages}; split the set or ask the operator to raise "
                "PLANZOOM_MAX_PAGES",
                reason="TOO_MANY_PAGES",
            )
        return info

    async def _create_job(self, path, sha, size, plan, options, filename):
        info = await self._inspect(path)
        dkey = dedup_key(plan, sha, options)
        job_id = new_job_id()
        while (holder := await self.jobs.claim_dedup(dkey, job_id)) is not None:
            try:
                existing = await self.jobs.get(holder)
            except JobNotFound:
                existing = None  # a creation that never finished: take the claim over
            if existing is not None and existing.state not in (
                jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED
            ):
                log.info("duplicate submit", extra={"job_id": holder})
                metrics.JOBS.labels("deduplicated").inc()
                return ingest_pb2.SubmitJobResponse(job_id=holder, deduplicated=True,
                                                    job=existing)
            if await self.jobs.replace_dedup(dkey, holder, job_id):
                break

        src_key = keys.source_key(plan, sha)
        if not await asyncio.to_thread(self.store.exists, src_key):
            await asyncio.to_thread(self.store.upload_file, path, src_key, "application/pdf")

        now = now_ts()
        job = jobs_pb2.Job(
            job_id=job_id, plan=plan, state=jobs_pb2.JOB_STATE_PENDING, options=options,
            source_key=src_key, source_sha256=sha, source_bytes=size,
            source_name=os.path.basename(filename or "")[:255],
            total_pages=len(info.page_sizes),
            tiles_prefix=keys.tiles_prefix(plan, job_id),
            manifest_key=keys.manifest_key(plan, job_id),
            created_at=now, updated_at=now,
            pages=[
                jobs_pb2.PageRecord(page=i + 1, state=jobs_pb2.PAGE_STATE_PENDING,
                                    width_pt=w, height_pt=h)
                for i, (w, h) in enumerate(info.page_sizes)
            ],
        )
        await self.jobs.create(job)
        # If this process stops part-way, the progress sweep publishes the
        # pages still PENDING again (deduplicated by their message ids).
        await messaging.publish_page_jobs(self.js, job, range(1, job.total_pages + 1))
        metrics.JOBS.labels("created").inc()
        log.info("job created", extra={"job_id": job_id, "pages": job.total_pages,
                                       "sha256": sha, "bytes": size})
        return ingest_pb2.SubmitJobResponse(job_id=job_id, deduplicated=False, job=job)


def main() -> None:
    settings = get_settings()
    setup_logging("ingest", settings.log_level)
    asyncio.run(serve(Ingest(settings), settings.ingest_addr, settings.grpc_grace_seconds,
                      settings.metrics_port))
