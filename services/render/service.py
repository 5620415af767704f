"""Render worker: ``pages.render`` → PDFium → ``work/<job>/page-N.raw.zst`` →
``pages.tile``."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time

from planzoom import keys, messaging, metrics
from planzoom.backend import BackedService
from planzoom.clock import now_ts
from planzoom.config import Settings, get_settings
from planzoom.logs import setup_logging
from planzoom.messaging import Delivery, PermanentError, PullWorker
from planzoom.procpool import ProcessPool
from planzoom.server import serve
from planzoom.storage import ObjectStore
from planzoom.v1 import jobs_pb2
from services.render.rasterize import RenderFailed, render_page

log = logging.getLogger(__name__)

#: Seconds one page may take in PDFium before its worker is replaced.
RENDER_TIMEOUT_SECONDS = 600.0
#: Source PDFs kept on local disk for the next pages of the same set.
SOURCE_CACHE_FILES = 8


class SourceCache:
    """Source PDFs downloaded once per worker, keyed by sha256."""

    def __init__(self, store: ObjectStore, root: str):
        self.store, self.root = store, root
        self._lock = asyncio.Lock()  # one download at a time; pages wait for their source

    async def path(self, key: str, sha256: str) -> str:
        path = os.path.join(self.root, f"{sha256}.pdf")
        async with self._lock:
            if not os.path.exists(path):
                tmp = path + ".part"
                if not await asyncio.to_thread(self.store.exists, key):
                    raise PermanentError(f"the source PDF {key} is no longer in the bucket")
                await asyncio.to_thread(self.store.download_file, key, tmp)
                os.replace(tmp, path)
                self._evict(keep=path)
        os.utime(path)
        return path

    def _evict(self, keep: str) -> None:
        files = sorted(
            (os.path.join(self.root, f) for f in os.listdir(self.root) if f.endswith(".pdf")),
            key=os.path.getmtime,
        )
        for f in files[: max(0, len(files) - SOURCE_CACHE_FILES)]:
            if f != keep:
                os.unlink(f)


class Render(BackedService):
    name = "render"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.pool = ProcessPool(settings.render_concurrency, settings.render_recycle_pages)
        self.tmp = tempfile.mkdtemp(prefix="planzoom-render-", dir=settings.work_dir)
        self.sources = SourceCache(self.store, self.tmp)

    async def start(self) -> None:
        await self.connect()
        self.worker = PullWorker(
            self.js, messaging.RENDER_STREAM, messaging.RENDER_CONSUMER,
            self.handle, self.on_failure,
            concurrency=self.s.render_concurrency, ack_wait=self.s.ack_wait_seconds,
            max_deliver=self.s.max_deliver,
        )
        await self.worker.start()

    async def stop(self, grace: float) -> None:
        await self.worker.stop(grace)
        self.pool.close()
        await self.disconnect()
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def handle(self, data: bytes, delivery: Delivery) -> None:
        job = jobs_pb2.PageJob.FromString(data)
        ctx = {"job_id": job.job_id, "page": job.page, "attempt": delivery.attempt}
        if await self.jobs.is_cancelled(job.job_id):
            log.info("job cancelled; page skipped", extra=ctx)
            metrics.PAGES.labels(self.name, "skipped").inc()
            return
        log.info("rendering page", extra=ctx)
        started = time.monotonic()
        await messaging.report_page(
            self.js, self.name, job.job_id, job.plan,
            jobs_pb2.PageRecord(page=job.page, state=jobs_pb2.PAGE_STATE_RENDERING,
                                attempts=delivery.attempt, started_at=now_ts()),
            delivery.attempt,
        )
        pdf = await self.sources.path(job.source_key, job.source_sha256)
        out = os.path.join(self.tmp, f"{job.job_id}-{job.page}.raw.zst")
        try:
            try:
                result = await self.pool.run(
                    RENDER_TIMEOUT_SECONDS, render_page, pdf, job.page, job.options.dpi,
                    job.options.max_page_pixels, out, self.s.render_band_bytes,
                )
            except RenderFailed as e:
                raise PermanentError(str(e)) from None
            if await self.jobs.is_cancelled(job.job_id):  # safe point: nothing stored yet
                log.info("job cancelled; page stopped before upload", extra=ctx)
                metrics.PAGES.labels(self.name, "skipped").inc()
                return
            raster_key = keys.raster_key(job.job_id, job.page)
            await asyncio.to_thread(
                self.store.upload_file, out, raster_key, "application/zstd"
            )
        finally:
            if os.path.exists(out):
                os.unlink(out)
        # Report before handing the page on, so that this report precedes the
        # tile worker's DONE on the job's progress subject (a DONE page takes
        # no later report; DONE carries the DPI too, should they cross anyway).
        await messaging.report_page(
            self.js, self.name, job.job_id, job.plan,
            jobs_pb2.PageRecord(
                page=job.page, state=jobs_pb2.PAGE_STATE_TILING,
                width_pt=result.width_pt, height_pt=result.height_pt, dpi=result.dpi,
                width_px=result.width_px, height_px=result.height_px, bands=result.bands,
            ),
            delivery.attempt,
        )
        tile_job = jobs_pb2.TileJob(
            job_id=job.job_id, plan=job.plan, page=job.page, total_pages=job.total_pages,
            options=job.options, raster_key=raster_key,
            encoding=jobs_pb2.RASTER_ENCODING_RAW_ZSTD,
            width_px=result.width_px, height_px=result.height_px, bands=result.bands,
            dpi=result.dpi,
        )
        await messaging.publish(self.js, messaging.TILE_SUBJECT, tile_job.SerializeToString(),
                                f"tile.{job.job_id}.{job.page}")
        metrics.STAGE_SECONDS.labels(self.name).observe(time.monotonic() - started)
        metrics.PAGES.labels(self.name, "done").inc()
        log.info("page rendered", extra={**ctx, "dpi": result.dpi, "width_px": result.width_px,
                                         "height_px": result.height_px,
                                         "raster_bytes": result.raster_bytes})

    async def on_failure(self, data: bytes, delivery: Delivery, reason: str) -> None:
        job = jobs_pb2.PageJob.FromString(data)
        await messaging.report_page(
            self.js, self.name, job.job_id, job.plan,
            jobs_pb2.PageRecord(page=job.page, state=jobs_pb2.PAGE_STATE_FAILED,
                                error=f"render: {reason}", attempts=delivery.attempt,
                                finished_at=now_ts()),
            delivery.attempt,
        )


def main() -> None:
    settings = get_settings()
    setup_logging("render", settings.log_level)
    asyncio.run(serve(Render(settings), settings.render_addr, settings.grpc_grace_seconds,
                      settings.metrics_port))
