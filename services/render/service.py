"""Render worker: ``pages.render`` → PDFium → ``work/<job>/page-N.raw.zst`` →
``pages.tile``; and a PDF's preview passes (overviews and thumbnails, ahead
of its pages)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time

from planzoom import engines, keys, metrics, tracing
from planzoom.backend import SourceStage
from planzoom.clock import now_ts
from planzoom.config import Settings
from planzoom.engines import Raster
from planzoom.engines.sandbox import ProcessPool, WorkerTimeout
from planzoom.errors import PlanzoomError, Timeout
from planzoom.messaging import topology
from planzoom.messaging.worker import Delivery
from planzoom.pages import level_dpi
from planzoom.states import ended
from planzoom.v1 import events_pb2, jobs_pb2

log = logging.getLogger(__name__)

#: Times a page may run past PLANZOOM_RENDER_TIMEOUT_SECONDS before it fails
#: for good (rather than being retried up to PLANZOOM_MAX_DELIVER times).
MAX_RENDER_TIMEOUTS = 2
#: What the engine writes beside a PDF page's raster (planzoom.engines.text).
TEXT_SIDECAR, CANDIDATES = ".words.json.gz", ".sheet.json"
#: What a page may spend, beyond PDFium, fetching its source and storing its
#: raster.
RENDER_IO_SECONDS = 600.0


class Render(SourceStage):
    """Consumer ``render``: one page (of a PDF, or of an image) → raster in
    ``work/<job>/`` → a TileJob on ``pages.tile``."""

    name = "render"
    stream, consumer = topology.RENDER_STREAM, topology.RENDER_CONSUMER

    def __init__(self, settings: Settings):
        super().__init__(settings, lambda scratch: ProcessPool(
            settings.render_concurrency, settings.render_recycle_pages,
            memory_bytes=settings.worker_memory_bytes,
            queue_seconds=settings.render_timeout_seconds, scratch=scratch,
            # a page's raster: at most 4 bytes a pixel, and its header
            file_bytes=4 * settings.max_page_pixels + (64 << 20)))
        # PDFium's own limit, plus the source's download and the raster's upload.
        self.max_seconds = settings.render_timeout_seconds + RENDER_IO_SECONDS

    async def handle(self, data: bytes, delivery: Delivery) -> None:
        job = events_pb2.PageJob.FromString(data)
        tracing.annotate(job_id=job.job_id, page=job.page)
        if job.previews:
            await self._previews(job, delivery)
            return
        ctx = {"job_id": job.job_id, "page": job.page, "attempt": delivery.attempt}
        if await self.skip_ended(job, ctx):
            return
        log.info("rendering page", extra=ctx)
        started = time.monotonic()
        await self.report(job, jobs_pb2.PageRecord(
            page=job.page, state=jobs_pb2.PAGE_STATE_RENDERING, attempts=delivery.attempt,
            started_at=now_ts()), delivery.attempt)
        source = await self.sources.path(job.source_key, job.source_sha256)
        out = os.path.join(self.tmp, f"{job.job_id}-{job.page}.raw.zst")
        try:
            result = await self._render(job, source, out, delivery)
            if await self.skip_ended(job, ctx, "page stopped before upload"):
                return  # a safe point: nothing is stored yet
            raster_key = keys.raster_key(job.job_id, job.page)
            stored = await self._store_raster(job, out, raster_key, result)
            if await self.skip_ended(job, ctx, "raster removed: the job ended during its "
                                               "upload"):
                for key in stored:
                    await asyncio.to_thread(self.store.delete, key)
                return
        finally:
            for path in (out, out + TEXT_SIDECAR, out + CANDIDATES):
                if os.path.exists(path):
                    os.unlink(path)
        variants = await self._variants(job, source)
        if await self.skip_ended(job, ctx, "page stopped: the job ended while its variants "
                                           "were made"):
            for v in variants:
                await asyncio.to_thread(self.store.delete, keys.variant_key(
                    job.plan, job.job_id, job.page, v.name, v.format))
            for key in stored:
                await asyncio.to_thread(self.store.delete, key)
            return
        # Report before handing the page on, so that this report precedes the
        # tile worker's DONE on the job's progress subject (a DONE page takes
        # no later report; DONE carries the bands too, should they cross).
        await self.report(job, jobs_pb2.PageRecord(
            page=job.page, state=jobs_pb2.PAGE_STATE_TILING, bands=result.bands,
            variants=variants, content_digest=result.digest), delivery.attempt)
        tile_job = events_pb2.TileJob(
            job_id=job.job_id, plan=job.plan, page=job.page, total_pages=job.total_pages,
            options=job.options, raster_key=raster_key,
            encoding=events_pb2.RASTER_ENCODING_RAW_ZSTD,
            width_px=result.width_px, height_px=result.height_px, bands=result.bands,
            grant=job.tile_grant,
        )
        await self.queues.publish_tile_job(tile_job)
        metrics.STAGE_SECONDS.labels(self.name).observe(time.monotonic() - started)
        metrics.PAGES.labels(self.name, "done").inc()
        log.info("page rendered", extra={**ctx, "dpi": job.geometry.dpi,
                                         "width_px": result.width_px,
                                         "height_px": result.height_px,
                                         "raster_bytes": result.raster_bytes,
                                         "words": result.words})

    async def _store_raster(self, job: events_pb2.PageJob, out: str, raster_key: str,
                            result: Raster) -> list[str]:
        """Upload the raster and, for a PDF page, its word sidecar (beside
        the pyramid, for search and the viewer) and its sheet candidates
        (in ``work/``, read when the job ends), all at once. Returns the
        keys written."""
        uploads = [(out, raster_key, "application/zstd")]
        if result.words >= 0:
            uploads += [
                (out + TEXT_SIDECAR, keys.words_key(job.plan, job.job_id, job.page),
                 "application/gzip"),
                (out + CANDIDATES, keys.sheet_candidates_key(job.job_id, job.page),
                 "application/json"),
            ]
        await asyncio.gather(*(asyncio.to_thread(self.store.upload_file, path, key, ctype)
                               for path, key, ctype in uploads))
        return [key for _, key, _ in uploads]

    async def on_failure(self, data: bytes, delivery: Delivery, error: PlanzoomError) -> None:
        """A page job that failed for good fails its page; a preview pass
        fails no page (each page's own job still runs)."""
        if events_pb2.PageJob.FromString(data).previews:
            log.warning("preview pass given up: %s", error.message)
            return
        await super().on_failure(data, delivery, error)

    async def _variants(self, job: events_pb2.PageJob, source: str) -> list[jobs_pb2.Variant]:
        """Make and store the page's variants (planzoom.engines): all of them
        for an image page; for a PDF page its overview and thumbnail, unless
        its preview pass stored them already."""
        opts = job.options.variants
        if job.source_kind in ("", "pdf"):
            wanted = [keys.variant_key(job.plan, job.job_id, job.page, name, "jpg")
                      for name, px in (("overview", opts.overview_px),
                                       ("thumbnail", opts.thumbnail_px)) if px]
            stored = await asyncio.gather(*(asyncio.to_thread(self.store.exists, key)
                                            for key in wanted))
            if all(stored):
                return []
        watermark = opts.watermark_text or f"{job.plan.org} · {job.plan.project}/{job.plan.plan}"
        out_dir = tempfile.mkdtemp(prefix=f"{job.job_id}-{job.page}-", dir=self.tmp)
        try:
            made = await self.pool.run(self.s.render_timeout_seconds, engines.page_variants,
                                       source, job.source_kind, job.geometry, job.options,
                                       watermark, out_dir)
            return await self._store_variants(job, job.geometry, made)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)

    async def _store_variants(self, job: events_pb2.PageJob, geometry: events_pb2.PageGeometry,
                              made: list[dict]) -> list[jobs_pb2.Variant]:
        """Upload the variant files ``made`` (planzoom.engines.variants) of
        the page ``geometry`` describes, all at once; returns their records
        (each with its DPI against the page's paper size)."""
        page = geometry.page
        await asyncio.gather(*(asyncio.to_thread(
            self.store.upload_file, v["path"],
            keys.variant_key(job.plan, job.job_id, page, v["name"], v["format"]),
            "image/webp" if v["format"] == "webp" else "image/jpeg") for v in made))
        return [jobs_pb2.Variant(name=v["name"], format=v["format"], width=v["width"],
                                 height=v["height"], bytes=v["bytes"], level=v.get("level", 0),
                                 dpi=level_dpi(geometry.dpi, geometry.width_px, v["width"]))
                for v in made]

    async def _drop_unrecorded(self, job: events_pb2.PageJob,
                               stored: list[tuple[int, jobs_pb2.Variant]]) -> None:
        """If the job has ended, delete what a preview pass stored that its
        final record does not list (reports that came too late): nothing
        else would (a cancelled job's end removes the variants its record
        lists)."""
        record = await self.jobs.get(job.job_id)
        if not ended(record):
            return
        listed = {(p.page, v.name) for p in record.pages for v in p.variants}
        for page, v in stored:
            if (page, v.name) not in listed:
                await asyncio.to_thread(self.store.delete, keys.variant_key(
                    job.plan, job.job_id, page, v.name, v.format))

    async def _previews(self, job: events_pb2.PageJob, delivery: Delivery) -> None:
        """A preview pass: the overview and thumbnail of the pages in
        ``job.previews``, drawn in one worker call, then stored and reported
        (state unchanged) page by page, all pages at once (behind S3 latency
        one round trip, not one per file). Best effort: a page it misses
        gets them from its own page job, which also reports any error, so
        nothing here fails a page."""
        ctx = {"job_id": job.job_id, "pages": f"{job.previews[0].page}-{job.previews[-1].page}",
               "attempt": delivery.attempt}
        if await self.skip_ended(job, ctx, "preview skipped"):
            return
        out_dir = tempfile.mkdtemp(prefix=f"{job.job_id}-preview-{job.page}-", dir=self.tmp)
        stored: list[tuple[int, jobs_pb2.Variant]] = []
        try:
            source = await self.sources.path(job.source_key, job.source_sha256)
            made = await self.pool.run(self.s.render_timeout_seconds, engines.previews, source,
                                       list(job.previews), job.options, out_dir)

            geometries = {g.page: g for g in job.previews}

            async def store(page: dict) -> None:
                variants = await self._store_variants(job, geometries[page["page"]],
                                                      page["variants"])
                stored.extend((page["page"], v) for v in variants)
                await self.report(job, jobs_pb2.PageRecord(page=page["page"], variants=variants),
                                  delivery.attempt, kind="preview")

            for page in made:
                if "error" in page:
                    log.info("no preview of a page: %s", page["error"],
                             extra={**ctx, "page": page["page"]})
            try:
                await asyncio.gather(*(store(p) for p in made if "error" not in p))
            finally:
                await self._drop_unrecorded(job, stored)
            log.info("previews made", extra=ctx)
        except Exception as e:  # noqa: BLE001 - the pages' own jobs make what is missing
            log.warning("preview pass failed: %s", e, extra=ctx)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)

    async def _render(self, job: events_pb2.PageJob, source: str, out: str,
                      delivery: Delivery) -> Raster:
        """Render the page in a worker (planzoom.engines: PDFium, or an image
        decoder) at its geometry. A page that runs past its time limit is
        retried once; the second time it fails for good."""
        limit = self.s.render_timeout_seconds
        try:
            return await self.pool.run(limit, engines.rasterize, source, job.source_kind,
                                       job.geometry, out, self.s.render_band_bytes,
                                       job.source_kind in ("", "pdf"))
        except WorkerTimeout:
            # Rare: the one read of the whole record a page job may make.
            page = (await self.jobs.get(job.job_id)).pages[job.page - 1]
            timeouts = page.render_timeouts + 1
            await self.report(job, jobs_pb2.PageRecord(
                page=job.page, state=jobs_pb2.PAGE_STATE_RENDERING, render_timeouts=timeouts),
                delivery.attempt, kind="timeout")
            if timeouts >= MAX_RENDER_TIMEOUTS:
                raise Timeout(f"rendering the page ran past {limit:g} s {timeouts} times",
                              reason="PAGE_TOO_SLOW", retryable=False) from None
            raise
