"""Tile worker: ``pages.tile`` → libvips dzsave → tiles in S3, ``.dzi`` last."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from planzoom import keys, messaging, metrics
from planzoom.backend import BackedService
from planzoom.clock import now_ts
from planzoom.config import Settings, get_settings
from planzoom.dzi import done_record, parse_dzi
from planzoom.logs import setup_logging
from planzoom.messaging import Delivery, PermanentError, PullWorker
from planzoom.server import serve
from planzoom.v1 import jobs_pb2
from services.tile.pyramid import RasterUnreadable, build_pyramid, decompress_raster, tile_files

log = logging.getLogger(__name__)


class Tile(BackedService):
    name = "tile"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.tmp = tempfile.mkdtemp(prefix="planzoom-tile-", dir=settings.work_dir)
        self.uploads = ThreadPoolExecutor(settings.upload_concurrency,
                                          thread_name_prefix="tile-upload")

    async def start(self) -> None:
        await self.connect()
        self.worker = PullWorker(
            self.js, messaging.TILE_STREAM, messaging.TILE_CONSUMER,
            self.handle, self.on_failure,
            concurrency=self.s.tile_concurrency, ack_wait=self.s.ack_wait_seconds,
            max_deliver=self.s.max_deliver,
        )
        await self.worker.start()

    async def stop(self, grace: float) -> None:
        await self.worker.stop(grace)
        self.uploads.shutdown(wait=False, cancel_futures=True)
        await self.disconnect()
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def _report(self, job: jobs_pb2.TileJob, record: jobs_pb2.PageRecord,
                      attempt: int) -> None:
        await messaging.report_page(self.js, self.name, job.job_id, job.plan, record, attempt)

    def _put_tile(self, path: str, key: str) -> None:
        with open(path, "rb") as f:
            self.store.put_bytes(key, f.read(), "image/jpeg")

    async def handle(self, data: bytes, delivery: Delivery) -> None:
        job = jobs_pb2.TileJob.FromString(data)
        ctx = {"job_id": job.job_id, "page": job.page, "attempt": delivery.attempt}
        dzi_key = keys.dzi_key(job.plan, job.job_id, job.page)
        if await self.jobs.is_cancelled(job.job_id):
            log.info("job cancelled; page skipped", extra=ctx)
            metrics.PAGES.labels(self.name, "skipped").inc()
            return
        if await asyncio.to_thread(self.store.exists, dzi_key):
            # Redelivered after the page was finished: report, don't re-tile.
            dzi = parse_dzi(await asyncio.to_thread(self.store.get_bytes, dzi_key))
            log.info("page already tiled", extra=ctx)
            metrics.PAGES.labels(self.name, "done").inc()
            await self._report(job, done_record(job.page, dzi, dzi_key), delivery.attempt)
            return

        log.info("tiling page", extra=ctx)
        started = time.monotonic()
        work = tempfile.mkdtemp(prefix=f"{job.job_id}-{job.page}-", dir=self.tmp)
        try:
            raw = os.path.join(work, "page.raw")
            expected = job.width_px * job.height_px * job.bands
            body = await asyncio.to_thread(self.store.get_stream, job.raster_key)
            try:
                await asyncio.to_thread(decompress_raster, body, raw, expected)
            except RasterUnreadable as e:
                raise PermanentError(str(e)) from None
            finally:
                body.close()

            name = keys.page_name(job.page)
            try:
                dzi = await asyncio.to_thread(
                    build_pyramid, raw, job.width_px, job.height_px, job.bands, work, name,
                    job.options.tile_size, job.options.overlap, job.options.jpeg_quality,
                )
            except Exception as e:  # pyvips.Error: libvips refused the raster
                raise PermanentError(f"libvips could not build the pyramid: {e}") from None
            os.unlink(raw)

            if await self.jobs.is_cancelled(job.job_id):  # safe point: nothing uploaded yet
                log.info("job cancelled; page stopped before upload", extra=ctx)
                metrics.PAGES.labels(self.name, "skipped").inc()
                return
            tiles = list(tile_files(work, name))
            prefix = keys.tiles_prefix(job.plan, job.job_id)
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(
                loop.run_in_executor(self.uploads, self._put_tile, path, prefix + rel)
                for path, rel in tiles
            ))
            # The descriptor goes last: its presence means the page is complete.
            await asyncio.to_thread(self.store.upload_file, os.path.join(work, f"{name}.dzi"),
                                    dzi_key, "application/xml")
        finally:
            shutil.rmtree(work, ignore_errors=True)

        await asyncio.to_thread(self.store.delete, job.raster_key)
        record = done_record(job.page, dzi, dzi_key)
        record.attempts = delivery.attempt
        await self._report(job, record, delivery.attempt)
        metrics.STAGE_SECONDS.labels(self.name).observe(time.monotonic() - started)
        metrics.PAGES.labels(self.name, "done").inc()
        log.info("page tiled", extra={**ctx, "tiles": len(tiles), "levels": dzi.levels})

    async def on_failure(self, data: bytes, delivery: Delivery, reason: str) -> None:
        job = jobs_pb2.TileJob.FromString(data)
        await self._report(
            job,
            jobs_pb2.PageRecord(page=job.page, state=jobs_pb2.PAGE_STATE_FAILED,
                                error=f"tile: {reason}", attempts=delivery.attempt,
                                finished_at=now_ts()),
            delivery.attempt,
        )


def main() -> None:
    settings = get_settings()
    setup_logging("tile", settings.log_level)
    asyncio.run(serve(Tile(settings), settings.tile_addr, settings.grpc_grace_seconds,
                      settings.metrics_port))
