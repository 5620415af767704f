"""Tile worker: ``pages.tile`` → raster streamed from S3 → DZI pyramid →
tiles in S3 while the rest is still being cut: one object per tile and the
``.dzi`` last (layout FILES), or one archive per page written in parts
(layout ARCHIVE, planzoom.engines.archive).

The PUTs run in ``PLANZOOM_TILE_PUT_PROCESSES`` child processes
(:mod:`services.tile.put_pool`) so that they do not share a GIL with the
pyramid."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future

from planzoom import keys, metrics, tracing
from planzoom.backend import PageStage
from planzoom.config import Settings
from planzoom.dzi import DziInfo, done_record, dzi_xml, tile_name
from planzoom.engines import archive
from planzoom.engines.archive import page_descriptor
from planzoom.engines.pyramid import cut_pyramid
from planzoom.engines.raster import raster_rows
from planzoom.errors import Cancelled, InvalidInput, reason_code
from planzoom.heap import keep_freed_blocks
from planzoom.jobstore import JobNotFound
from planzoom.messaging import topology
from planzoom.messaging.worker import Delivery
from planzoom.parts import PartUpload
from planzoom.states import ended
from planzoom.v1 import events_pb2, jobs_pb2
from services.tile import overlays
from services.tile.put_pool import PutPool

log = logging.getLogger(__name__)

#: Seconds between checks, while a page is being tiled, that its job is not
#: cancelled.
CANCEL_CHECK_SECONDS = 1.0
#: Reads of a record still being finalised before an overlay is tried again later.
FINALIZING_READS, FINALIZING_WAIT_SECONDS = 10, 0.2


class JobCancelled(Cancelled):
    """The job was cancelled while one of its pages was being tiled."""

    def __init__(self):
        super().__init__("the job was cancelled")


class ForeignRaster(InvalidInput):
    """A TileJob whose raster is not its own page's."""

    reason = "FORGED_EVENT"


def own_raster(job: events_pb2.TileJob) -> str:
    """The TileJob's ``raster_key`` if it is its own page's raster
    (:func:`planzoom.keys.raster_key`, under ``work/<its job>/``), which is
    all tile reads and deletes: a message that names another object (another
    job's, an org's outputs) is refused for good, not obeyed."""
    try:
        expected = keys.raster_key(job.job_id, job.page)
    except InvalidInput:
        expected = None
    if job.raster_key != expected:
        raise ForeignRaster(f"a tile job for page {job.page} of job {job.job_id!r} names the "
                            f"raster {job.raster_key[:200]!r}, not its own")
    return expected


class Tile(PageStage):
    """Consumer ``tile``, any number of replicas: a page's raster → its DZI
    pyramid in S3, ``.dzi`` last; and consumer ``overlay``: a revised
    sheet laid over its previous version (services.tile.overlays)."""

    name = "tile"
    stream, consumer = topology.TILE_STREAM, topology.TILE_CONSUMER

    def __init__(self, settings: Settings):
        super().__init__(settings)
        keep_freed_blocks()  # each page's raster blocks reuse the last page's memory
        self.concurrency = settings.tile_concurrency
        self.max_seconds = settings.tile_timeout_seconds
        self.puts = PutPool.from_settings(settings)

    async def start(self) -> None:
        await super().start()
        # Overlays from consumers of their own, one at a time beside the
        # pages (topology.OVERLAY_CONSUMER).
        self.overlays = self.pull_worker(topology.OVERLAY_CONSUMER, topology.OVERLAY_SUBJECTS, 1)
        await self.overlays.start()

    async def stop(self, grace: float) -> None:
        await asyncio.gather(super().stop(grace), self.overlays.stop(grace))

    async def release(self) -> None:
        await asyncio.to_thread(self.puts.close)

    async def _report_done(self, job: events_pb2.TileJob, dzi: DziInfo, attempt: int) -> None:
        # Complete on its own (bands too): a DONE page takes no later report,
        # so it must not depend on the render's report arriving first. (Its
        # DPI and sizes are in the record from ingest.)
        record = done_record(job.page, dzi)
        record.bands, record.attempts = job.bands, attempt
        await self.report(job, record, attempt)

    async def handle(self, data: bytes, delivery: Delivery) -> None:
        job = events_pb2.TileJob.FromString(data)
        tracing.annotate(job_id=job.job_id, page=job.page)
        if job.HasField("overlay"):
            await self._overlay(job)
            return
        own_raster(job)
        ctx = {"job_id": job.job_id, "page": job.page, "attempt": delivery.attempt}
        done_key = keys.done_key(job.plan, job.job_id, job.page, job.options)
        if await self.skip_ended(job, ctx):
            # A page job delivered again after its job ended: its raster is
            # not needed any more (work/<job>/ must end up empty).
            await asyncio.to_thread(self.store.delete, job.raster_key)
            return
        if await asyncio.to_thread(self.store.exists, done_key):
            # Redelivered after the page was finished: report, don't re-tile.
            dzi = await asyncio.to_thread(page_descriptor, done_key, self.store.get_range,
                                          self.store.get_bytes)
            log.info("page already tiled", extra=ctx)
            metrics.PAGES.labels(self.name, "done").inc()
            await self._report_done(job, dzi, delivery.attempt)
            return

        log.info("tiling page", extra=ctx)
        started = time.monotonic()
        layout = (ArchiveLayout(self, job, done_key, delivery.attempt)
                  if keys.is_archive(job.options) else FilesLayout(self, job, done_key))
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

        def tile() -> DziInfo:
            layout.begin()
            body = self.store.get_stream(job.raster_key)
            try:
                return cut_pyramid(
                    raster_rows(body, job.width_px, job.height_px, job.bands),
                    job.width_px, job.height_px, job.bands, job.options.tile_size,
                    job.options.overlap, job.options.jpeg_quality, layout.store,
                    max_in_flight=4 * self.s.tile_put_concurrency, check=check,
                )
            finally:
                body.close()

        try:
            dzi = await asyncio.to_thread(tile)
        except JobCancelled:
            await self._remove_page(job, layout, ctx)
            return
        except BaseException:
            # To be tried again: nothing of this attempt may look complete.
            await asyncio.to_thread(layout.abandon)
            raise
        # Last: its completion mark (the .dzi, or the archive itself).
        await asyncio.to_thread(layout.finish, dzi)
        if await self.jobs.ended(job.job_id):
            # Ended while the mark went up: the job's end may have missed it.
            await self._remove_page(job, layout, ctx)
            return
        # Watchers hear of the page first; the raster goes after (if this
        # process stops in between, the job's end removes work/<job>/).
        await self._report_done(job, dzi, delivery.attempt)
        await asyncio.to_thread(self.store.delete, job.raster_key)
        metrics.STAGE_SECONDS.labels(self.name).observe(time.monotonic() - started)
        metrics.PAGES.labels(self.name, "done").inc()
        metrics.PYRAMID_REQUESTS.labels(layout.name).inc(layout.requests)
        log.info("page tiled", extra={**ctx, "tiles": dzi.tile_count(), "levels": dzi.levels,
                                      "s3_requests": layout.requests,
                                      "seconds": round(time.monotonic() - started, 2)})


    async def _overlay(self, job: events_pb2.TileJob) -> None:
        """Lay a revised page over its previous version (services.tile.overlays),
        once the job record confirms that version; a provisional request
        only while the job runs."""
        started = time.monotonic()
        try:
            record = await self.jobs.get(job.job_id)
            if job.overlay.provisional:
                if ended(record) or record.finalizing:
                    log.info("provisional overlay dropped: its job has ended, which asks "
                             "again", extra={"job_id": job.job_id, "page": job.page})
                    return
                previous = await self.jobs.get(job.overlay.previous_job_id)
                overlays.check_provisional(job, record, previous)
            else:
                # Progress asks just before its last write of the record: a
                # moment's wait saves a redelivery's backoff.
                for _ in range(FINALIZING_READS):
                    if not record.finalizing:
                        break
                    await asyncio.sleep(FINALIZING_WAIT_SECONDS)
                    record = await self.jobs.get(job.job_id)
                overlays.check_request(job, record)
        except JobNotFound as e:
            log.info("overlay skipped: %s", e.message, extra={"job_id": job.job_id})
            return
        await asyncio.to_thread(overlays.make_overlay, self.store, job, record, self.puts.put)
        metrics.STAGE_SECONDS.labels("overlay").observe(time.monotonic() - started)

    async def on_failure(self, data: bytes, delivery: Delivery, error) -> None:
        """A page that fails for good is reported FAILED; an overlay that
        fails for good leaves ``overlay.json`` saying why (the page itself
        is done)."""
        job = events_pb2.TileJob.FromString(data)
        if not job.HasField("overlay"):
            await super().on_failure(data, delivery, error)
            return
        if error.reason_code == reason_code("FORGED_EVENT") or job.overlay.provisional:
            # Nothing is written for a request the record does not make, nor
            # for a provisional one (the job's end asks again and says why).
            return
        await asyncio.to_thread(overlays.record_failure, self.store, job, error)

    async def _remove_page(self, job: events_pb2.TileJob, layout, ctx: dict) -> None:
        """Remove what a page of an ended job left: its pyramid, and the
        variants render made beside it (``page-<n>.<variant>.<ext>``);
        unless the record has the page DONE (another delivery of the same
        page finished it first) or is gone (nothing more to tidy)."""
        try:
            record = await self.jobs.get(job.job_id)
        except JobNotFound:
            return
        if any(p.page == job.page and p.state == jobs_pb2.PAGE_STATE_DONE
               for p in record.pages):
            log.info("job ended; page was finished by another delivery", extra=ctx)
            return
        removed = await asyncio.to_thread(layout.remove)
        removed += await asyncio.to_thread(
            self.store.delete_prefix, keys.tiles_prefix(job.plan, job.job_id)
            + keys.page_name(job.page) + ".")
        log.info("job cancelled; page stopped, its tiles removed",
                 extra={**ctx, "objects": removed})
        metrics.PAGES.labels(self.name, "skipped").inc()


class FilesLayout:
    """A page's pyramid as one object per tile (``page-<n>_files/``, PUT by
    the stage's put processes as each tile is cut), its ``.dzi`` last."""

    name = "files"

    def __init__(self, stage: Tile, job: events_pb2.TileJob, done_key: str):
        self.stage, self.done_key = stage, done_key
        self.files = keys.page_files_prefix(job.plan, job.job_id, job.page)
        self._lock = threading.Lock()
        self.requests = 0  # S3 requests made for the pyramid so far

    def _count(self) -> None:
        with self._lock:  # PUTs are handed over from the encoder threads
            self.requests += 1

    def begin(self) -> None:
        pass

    def store(self, level: int, col: int, row: int, data: bytes) -> Future:
        self._count()
        return self.stage.puts.put(self.files + tile_name(level, col, row, "jpg"), data,
                                   "image/jpeg")

    def finish(self, dzi: DziInfo) -> None:
        # The descriptor goes last: its presence means the page is complete.
        self._count()
        self.stage.store.put_bytes(self.done_key, dzi_xml(dzi), "application/xml")

    def abandon(self) -> None:
        """A retry overwrites the tiles; nothing marks them complete."""

    def remove(self) -> int:
        return self.stage.store.delete_prefix(self.files)


class ArchiveLayout:
    """A page's pyramid as one object, ``page-<n>.pmtiles``
    (planzoom.engines.archive), its parts uploaded as the tiles come
    (PLANZOOM_ARCHIVE_PART_BYTES each; a smaller pyramid is one PUT); it
    appears complete, or not at all, when the upload is joined."""

    name = "archive"

    def __init__(self, stage: Tile, job: events_pb2.TileJob, done_key: str, attempt: int):
        self.stage, self.job, self.done_key, self.attempt = stage, job, done_key, attempt
        self.upload = PartUpload(stage.store, done_key, archive.CONTENT_TYPE)
        self.writer: archive.ArchiveWriter | None = None
        self._cleanup = 0

    @property
    def requests(self) -> int:
        """S3 requests made for the pyramid so far."""
        return self.upload.requests + self._cleanup

    def begin(self) -> None:
        if self.attempt > 1:  # an earlier attempt may have left parts behind
            self._cleanup = 1 + self.stage.store.abort_uploads(self.done_key)
        dzi = DziInfo(self.job.width_px, self.job.height_px, self.job.options.tile_size,
                      self.job.options.overlap, "jpg")
        self.writer = archive.ArchiveWriter(dzi, self.upload.part,
                                            self.stage.s.archive_part_bytes)

    def store(self, level: int, col: int, row: int, data: bytes):
        return self.writer.add(level, col, row, data)

    def finish(self, dzi: DziInfo) -> None:
        self.upload.finish(self.writer.finish().head)

    def abandon(self) -> None:
        self.upload.abort()

    def remove(self) -> int:
        self.upload.abort()
        return 0
