"""Render worker: ``pages.render`` → PDFium → ``work/<job>/page-N.raw.zst`` →
``pages.tile``."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time

from planzoom import keys, metrics
from planzoom.backend import PageStage
from planzoom.clock import now_ts
from planzoom.config import Settings
from planzoom.messaging import topology
from planzoom.messaging.publishing import publish
from planzoom.messaging.worker import Delivery
from planzoom.procpool import ProcessPool
from planzoom.v1 import events_pb2, jobs_pb2
from services.render.rasterize import render_page
from services.render.sources import SourceCache

log = logging.getLogger(__name__)

#: Seconds one page may take in PDFium before its worker is replaced.
RENDER_TIMEOUT_SECONDS = 600.0


class Render(PageStage):
    """Consumer ``render``: one PDF page → raster in ``work/<job>/`` → a
    TileJob on ``pages.tile``."""

    name = "render"
    stream, consumer = topology.RENDER_STREAM, topology.RENDER_CONSUMER

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.concurrency = settings.render_concurrency
        self.pool = ProcessPool(settings.render_concurrency, settings.render_recycle_pages)
        self.tmp = tempfile.mkdtemp(prefix="planzoom-render-", dir=settings.work_dir)
        self.sources = SourceCache(self.store, self.tmp)

    async def release(self) -> None:
        self.pool.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def handle(self, data: bytes, delivery: Delivery) -> None:
        job = events_pb2.PageJob.FromString(data)
        ctx = {"job_id": job.job_id, "page": job.page, "attempt": delivery.attempt}
        if await self.skip_cancelled(job, ctx):
            return
        log.info("rendering page", extra=ctx)
        started = time.monotonic()
        await self.report(job, jobs_pb2.PageRecord(
            page=job.page, state=jobs_pb2.PAGE_STATE_RENDERING, attempts=delivery.attempt,
            started_at=now_ts()), delivery.attempt)
        pdf = await self.sources.path(job.source_key, job.source_sha256)
        out = os.path.join(self.tmp, f"{job.job_id}-{job.page}.raw.zst")
        try:
            result = await self.pool.run(
                RENDER_TIMEOUT_SECONDS, render_page, pdf, job.page, job.options.dpi,
                job.options.max_page_pixels, out, self.s.render_band_bytes,
            )
            if await self.skip_cancelled(job, ctx, "page stopped before upload"):
                return  # a safe point: nothing is stored yet
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
        await self.report(job, jobs_pb2.PageRecord(
            page=job.page, state=jobs_pb2.PAGE_STATE_TILING,
            width_pt=result.width_pt, height_pt=result.height_pt, dpi=result.dpi,
            width_px=result.width_px, height_px=result.height_px, bands=result.bands,
        ), delivery.attempt)
        tile_job = events_pb2.TileJob(
            job_id=job.job_id, plan=job.plan, page=job.page, total_pages=job.total_pages,
            options=job.options, raster_key=raster_key,
            encoding=events_pb2.RASTER_ENCODING_RAW_ZSTD,
            width_px=result.width_px, height_px=result.height_px, bands=result.bands,
            dpi=result.dpi,
        )
        await publish(self.js, topology.TILE_SUBJECT, tile_job.SerializeToString(),
                      f"tile.{job.job_id}.{job.page}")
        metrics.STAGE_SECONDS.labels(self.name).observe(time.monotonic() - started)
        metrics.PAGES.labels(self.name, "done").inc()
        log.info("page rendered", extra={**ctx, "dpi": result.dpi, "width_px": result.width_px,
                                         "height_px": result.height_px,
                                         "raster_bytes": result.raster_bytes})
