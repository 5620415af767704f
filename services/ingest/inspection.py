"""What ingest checks of an upload before it makes a job of it: opening it
in a sandboxed worker (:func:`inspect_upload`) and the job's size against
the per-job limits (:func:`check_budget`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable

from planzoom import engines
from planzoom.config import Settings
from planzoom.engines import Limits, SourceInfo
from planzoom.engines.base import ImageDamaged
from planzoom.engines.pdf import PdfDamaged
from planzoom.engines.sandbox import ProcessPool, WorkerCrashed, WorkerTimeout
from planzoom.engines.video import VideoDamaged
from planzoom.errors import ResourceExhausted
from planzoom.media import Kind
from planzoom.pages import Work, job_work
from planzoom.v1 import events_pb2, jobs_pb2

log = logging.getLogger(__name__)


async def inspect_upload(pool: ProcessPool, limits: Limits, timeout: float, path: str,
                         kind: Kind, org: str) -> SourceInfo:
    """Open the upload at ``path`` in a sandboxed worker of ``pool`` (a PDF
    with PDFium, an image's headers with libvips or LibRaw), ``org`` holding
    at most the pool's share per owner: its slow files wait for each other,
    not other orgs'. Only this file's own time counts against it: waiting
    for a worker ends, at worst, in WorkersBusy (UNAVAILABLE, retry), never
    in a verdict on the file. Raises the kind's Damaged error
    (INVALID_ARGUMENT) if the file kills two workers in turn,
    ResourceExhausted if it overruns ``timeout`` seconds."""
    what, slow, damaged = (("PDF", "PDF_TOO_SLOW", PdfDamaged) if kind.is_pdf else
                           ("video", "VIDEO_TOO_SLOW", VideoDamaged) if kind.is_video else
                           ("image", "IMAGE_TOO_SLOW", ImageDamaged))

    def inspect() -> Awaitable[SourceInfo]:
        return pool.run(timeout, engines.inspect, path, kind.name, limits, owner=org)

    try:
        try:
            return await inspect()
        except WorkerCrashed as e:
            # A worker can die of something other than its input (memory
            # short at a bad moment, a kill from outside): only a file that
            # kills a second, fresh worker is called damaged.
            log.warning("an inspecting worker died (%s); trying a fresh one", e.message)
            return await inspect()
    except WorkerTimeout:
        raise ResourceExhausted(f"opening the {what} took longer than {timeout:g} s; it is "
                                "too complex or malformed", reason=slow) from None
    except WorkerCrashed as e:
        raise damaged(f"the {what} could not be read safely ({e.message}); it is "
                      "probably damaged") from None


def check_budget(settings: Settings, info: SourceInfo,
                 geometries: list[events_pb2.PageGeometry],
                 options: jobs_pb2.JobOptions) -> Work:
    """The job's pixels and tiles at its options; ResourceExhausted, naming
    the limit, if over PLANZOOM_MAX_JOB_PIXELS or _TILES."""
    if info.video:  # bounded by its length and frame size; pixel-seconds for quotas
        (g,) = geometries
        pixels = g.width_px * g.height_px
        return Work(pixels=int(pixels * math.ceil(info.video["duration_seconds"])),
                    tiles=0, largest_page_pixels=pixels)
    work = job_work(geometries, options.tile_size, options.overlap)
    for what, amount, limit, name in (
        ("pixels", work.pixels, settings.max_job_pixels, "PLANZOOM_MAX_JOB_PIXELS"),
        ("tiles", work.tiles, settings.max_job_tiles, "PLANZOOM_MAX_JOB_TILES"),
    ):
        if amount > limit:
            raise ResourceExhausted(
                f"at {options.dpi:g} DPI with {options.tile_size}-pixel tiles this job "
                f"makes {amount:,} {what}, more than the {limit:,} one job may ({name}); "
                "lower the DPI, use larger tiles, or split the set",
                reason="JOB_TOO_LARGE")
    return work
