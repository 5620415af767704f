"""Transcode worker: ``videos.transcode`` → PyAV (in a sandboxed worker
process) → HLS under ``previews/<org>/<project>/<plan>/<job>/``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time

from planzoom import keys, metrics, tracing
from planzoom.backend import SourceStage
from planzoom.clock import now_ts
from planzoom.config import Settings
from planzoom.engines.sandbox import ProcessPool, WorkerTimeout
from planzoom.engines.video import probe, transcode
from planzoom.errors import Timeout
from planzoom.messaging import topology
from planzoom.messaging.worker import Delivery
from planzoom.v1 import events_pb2, jobs_pb2

log = logging.getLogger(__name__)

#: Seconds between two looks at the worker's progress (and at a cancel).
POLL_SECONDS = 0.5
#: Smallest change of progress worth a report.
REPORT_STEP = 0.02
#: A transcode may take this long besides its per-second allowance.
BASE_SECONDS = 60.0
#: Free scratch space a transcode wants: this many times the source's size
#: (the ladder's bit rates keep the outputs well under it).
SCRATCH_FACTOR = 3
CONTENT_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t",
                 ".jpg": "image/jpeg"}


class Transcode(SourceStage):
    """Consumer ``transcode``: one video → an HLS ladder, a poster and a
    thumbnail; progress reported as the share of the source transcoded."""

    name = "transcode"
    stream, consumer = topology.TRANSCODE_STREAM, topology.TRANSCODE_CONSUMER

    def __init__(self, settings: Settings):
        # One video per worker process: a transcode holds its decoders' memory.
        super().__init__(settings, lambda scratch: ProcessPool(
            settings.transcode_concurrency, 1, memory_bytes=settings.worker_memory_bytes,
            queue_seconds=settings.render_timeout_seconds, scratch=scratch))

    async def handle(self, data: bytes, delivery: Delivery) -> None:
        job = events_pb2.PageJob.FromString(data)
        tracing.annotate(job_id=job.job_id, page=job.page)
        ctx = {"job_id": job.job_id, "attempt": delivery.attempt}
        if await self.skip_ended(job, ctx, "video skipped"):
            return
        started = time.monotonic()
        await self.report(job, jobs_pb2.PageRecord(
            page=job.page, state=jobs_pb2.PAGE_STATE_RENDERING, attempts=delivery.attempt,
            started_at=now_ts()), delivery.attempt)
        source = await self.sources.path(job.source_key, job.source_sha256)
        info = await self.pool.run(self.s.inspect_timeout_seconds, probe, source,
                                   self.s.max_video_seconds, self.s.max_video_pixels)
        await asyncio.to_thread(self.scratch.need, SCRATCH_FACTOR * os.path.getsize(source),
                                "the video's renditions")
        out_dir = tempfile.mkdtemp(prefix=f"{job.job_id}-", dir=self.tmp)
        try:
            result = await self._transcode(job, source, info, out_dir, delivery)
            if result is None:
                return  # cancelled: nothing was stored
            log.info("video transcoded", extra={**ctx, "seconds": info.duration_seconds,
                                                 "renditions": len(result["renditions"])})
            prefix = keys.preview_prefix(job.plan, job.job_id)
            for name in result["files"]:  # the master playlist last: it commits the set
                key = prefix + name
                await asyncio.to_thread(self.store.upload_file, os.path.join(out_dir, name),
                                        key, CONTENT_TYPES[os.path.splitext(name)[1]])
            if await self.skip_ended(job, ctx, "preview removed: the job ended during its "
                                               "upload"):
                await asyncio.to_thread(self.store.delete_prefix, prefix)
                return
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        renditions = [jobs_pb2.Rendition(**r) for r in result["renditions"]]
        fields = dataclasses.asdict(info)
        await self.report(job, jobs_pb2.PageRecord(
            page=job.page, state=jobs_pb2.PAGE_STATE_DONE, width_px=info.width,
            height_px=info.height, attempts=delivery.attempt, finished_at=now_ts(),
            progress=1.0, video=jobs_pb2.VideoFacts(
                renditions=renditions, **{k: v for k, v in fields.items()
                                          if k not in ("width", "height")})),
            delivery.attempt)
        metrics.STAGE_SECONDS.labels(self.name).observe(time.monotonic() - started)
        metrics.PAGES.labels(self.name, "done").inc()

    async def _transcode(self, job: events_pb2.PageJob, source: str, info, out_dir: str,
                         delivery: Delivery) -> dict | None:
        """Run the transcode in a worker, reporting its progress; None if the
        job ended meanwhile (the worker is killed within POLL_SECONDS)."""
        limit = BASE_SECONDS + info.duration_seconds * self.s.transcode_seconds_per_second
        progress_path = os.path.join(out_dir, ".progress")
        task = asyncio.create_task(self.pool.run(limit, transcode, source, out_dir,
                                                 dataclasses.asdict(info), progress_path))
        reported = 0.0
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=POLL_SECONDS)
                if task.done():
                    break
                if await self.jobs.ended(job.job_id):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    log.info("job ended; transcode stopped", extra={"job_id": job.job_id})
                    metrics.PAGES.labels(self.name, "skipped").inc()
                    return None
                with contextlib.suppress(OSError, ValueError):
                    with open(progress_path) as f:
                        done = float(f.read() or 0)
                    if done - reported >= REPORT_STEP and done < 1.0:
                        reported = done
                        await self.report(job, jobs_pb2.PageRecord(
                            page=job.page, state=jobs_pb2.PAGE_STATE_RENDERING,
                            progress=round(done, 4)), delivery.attempt,
                            kind=f".p{int(done * 1000)}")
            return task.result()
        except WorkerTimeout:
            raise Timeout(f"the transcode ran past {limit:.0f} s", reason="TRANSCODE_TOO_SLOW",
                          retryable=False) from None
        finally:
            if not task.done():
                task.cancel()
