"""Tile worker: ``pages.tile`` → raster streamed from S3 → DZI pyramid
(libvips) → tiles in S3 while the rest is still being cut, ``.dzi`` last.

The PUTs run in ``PLANZOOM_TILE_PUT_PROCESSES`` child processes
(:mod:`services.tile.put_pool`) so that they do not share a GIL with the
pyramid."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future

from planzoom import keys, metrics, tracing
from planzoom.backend import PageStage
from planzoom.config import Settings
from planzoom.dzi import DziInfo, done_record, dzi_xml, parse_dzi
from planzoom.engines.pyramid import cut_pyramid
from planzoom.engines.raster import raster_rows
from planzoom.errors import Cancelled
from planzoom.heap import keep_freed_blocks
from planzoom.messaging import topology
from planzoom.messaging.worker import Delivery
from planzoom.v1 import events_pb2
from services.tile.put_pool import PutPool

log = logging.getLogger(__name__)

#: Seconds between checks, while a page is being tiled, that its job is not
#: cancelled.
CANCEL_CHECK_SECONDS = 1.0


class JobCancelled(Cancelled):
    """The job was cancelled while one of its pages was being tiled."""

    def __init__(self):
        super().__init__("the job was cancelled")


class Tile(PageStage):
    """Consumer ``tile``, any number of replicas: a page's raster → its DZI
    pyramid in S3, ``.dzi`` last."""

    name = "tile"
    stream, consumer = topology.TILE_STREAM, topology.TILE_CONSUMER

    def __init__(self, settings: Settings):
        super().__init__(settings)
        keep_freed_blocks()  # each page's raster blocks reuse the last page's memory
        self.concurrency = settings.tile_concurrency
        self.max_seconds = settings.tile_timeout_seconds
        self.puts = PutPool.from_settings(settings)

    async def release(self) -> None:
        await asyncio.to_thread(self.puts.close)

    async def _report_done(self, job: events_pb2.TileJob, dzi: DziInfo, dzi_key: str,
                           attempt: int) -> None:
        # Complete on its own (bands too): a DONE page takes no later report,
        # so it must not depend on the render's report arriving first. (Its
        # DPI and sizes are in the record from ingest.)
        record = done_record(job.page, dzi, dzi_key)
        record.bands, record.attempts = job.bands, attempt
        await self.report(job, record, attempt)

    async def handle(self, data: bytes, delivery: Delivery) -> None:
        job = events_pb2.TileJob.FromString(data)
        tracing.annotate(job_id=job.job_id, page=job.page)
        ctx = {"job_id": job.job_id, "page": job.page, "attempt": delivery.attempt}
        dzi_key = keys.dzi_key(job.plan, job.job_id, job.page)
        if await self.skip_ended(job, ctx):
            # A page job delivered again after its job ended: its raster is
            # not needed any more (work/<job>/ must end up empty).
            await asyncio.to_thread(self.store.delete, job.raster_key)
            return
        if await asyncio.to_thread(self.store.exists, dzi_key):
            # Redelivered after the page was finished: report, don't re-tile.
            dzi = parse_dzi(await asyncio.to_thread(self.store.get_bytes, dzi_key))
            log.info("page already tiled", extra=ctx)
            metrics.PAGES.labels(self.name, "done").inc()
            await self._report_done(job, dzi, dzi_key, delivery.attempt)
            return

        log.info("tiling page", extra=ctx)
        started = time.monotonic()
        files = keys.page_files_prefix(job.plan, job.job_id, job.page)
        loop = asyncio.get_running_loop()
        last_check = [time.monotonic()]

        def check() -> None:  # on the tiling thread, between blocks of rows
            if time.monotonic() - last_check[0] < CANCEL_CHECK_SECONDS:
                return
            last_check[0] = time.monotonic()
            try:
                cancelled = asyncio.run_coroutine_threadsafe(
                    self.jobs.ended(job.job_id), loop).result(timeout=5)
            except Exception as e:  # NATS unreachable for now: the next check will tell
                log.debug("cancellation check failed: %s", e, extra=ctx)
                return
            if cancelled:
                raise JobCancelled

        def put(key: str, data: bytes) -> Future:
            return self.puts.put(files + key, data, "image/jpeg")

        def tile() -> DziInfo:
            body = self.store.get_stream(job.raster_key)
            try:
                return cut_pyramid(
                    raster_rows(body, job.width_px, job.height_px, job.bands),
                    job.width_px, job.height_px, job.bands, job.options.tile_size,
                    job.options.overlap, job.options.jpeg_quality, put,
                    max_in_flight=4 * self.s.tile_put_concurrency, check=check,
                )
            finally:
                body.close()

        try:
            dzi = await asyncio.to_thread(tile)
        except JobCancelled:
            removed = await asyncio.to_thread(self.store.delete_prefix, files)
            # and the variants render made beside it (page-<n>.<variant>.<ext>)
            removed += await asyncio.to_thread(
                self.store.delete_prefix, keys.tiles_prefix(job.plan, job.job_id)
                + keys.page_name(job.page) + ".")
            log.info("job cancelled; page stopped, its tiles removed",
                     extra={**ctx, "tiles": removed})
            metrics.PAGES.labels(self.name, "skipped").inc()
            return
        # The descriptor goes last: its presence means the page is complete.
        await asyncio.to_thread(self.store.put_bytes, dzi_key, dzi_xml(dzi), "application/xml")
        # Watchers hear of the page first; the raster goes after (if this
        # process stops in between, the job's end removes work/<job>/).
        await self._report_done(job, dzi, dzi_key, delivery.attempt)
        await asyncio.to_thread(self.store.delete, job.raster_key)
        metrics.STAGE_SECONDS.labels(self.name).observe(time.monotonic() - started)
        metrics.PAGES.labels(self.name, "done").inc()
        log.info("page tiled", extra={**ctx, "tiles": dzi.tile_count(), "levels": dzi.levels,
                                      "seconds": round(time.monotonic() - started, 2)})
