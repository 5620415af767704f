"""A revised sheet laid over its previous version (docs/revisions.md),
made by the tile stage from what both versions left in the bucket: the
level of each stored pyramid nearest :data:`~planzoom.engines.overlay.WORK_DPI`
(either layout) and their word sidecars, registered and compared by
:mod:`planzoom.engines.overlay`. Writes the overlay's pyramid
(``page-N.overlay-<previous job>-<previous page>.dzi`` and ``…_files/``,
layout FILES whatever the job's) and then ``page-N.overlay.json``, whose
presence says the overlay is done (a redelivery finds it and stops).

A provisional request (asked as soon as the page is done, while its job
runs) makes the same, but never over an ``overlay.json`` already there;
the request made when the job ends replaces it if it names another
version.

Blocking (S3, OpenCV): call from a thread.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import simplejpeg

from planzoom import keys
from planzoom.dzi import DziInfo, dzi_xml, parse_dzi, tile_name
from planzoom.engines.archive import ArchiveIndex
from planzoom.engines.overlay import WORK_DPI, RegistrationFailed, overlay
from planzoom.engines.pyramid import cut_pyramid
from planzoom.errors import InvalidInput, NotFound, Unavailable, reason_name
from planzoom.storage import ObjectNotFound, ObjectStore, WriteConflict
from planzoom.v1 import events_pb2, jobs_pb2

log = logging.getLogger(__name__)

#: Stores one tile: ``(key, JPEG bytes, content type) -> Future``
#: (:meth:`services.tile.put_pool.PutPool.put`).
TilePut = Callable[[str, bytes, str], Future]

#: Tile GETs at once while a level is read.
READERS = 16
#: Largest level read, pixels (an A0 sheet at 150 DPI is about 27 MP).
MAX_LEVEL_PIXELS = 64_000_000
#: JPEG quality of the overlay's tiles.
QUALITY = 85


class OverlayRefused(InvalidInput):
    """An overlay the job record does not ask for (another page, another
    version): a stage may only lay a sheet over its recorded previous version."""

    reason = "FORGED_EVENT"


class VersionMissing(NotFound):
    reason = "OVERLAY_SOURCE_MISSING"


def check_request(job: events_pb2.TileJob, record: jobs_pb2.Job) -> None:
    """Raise OverlayRefused unless ``record`` (the job's own) says page
    ``job.page`` is done and revises the version ``job.overlay`` names;
    Unavailable (tried again) while the record is still being finalised
    (progress asks for overlays just before its last write). A provisional
    request is checked by :func:`check_provisional` instead."""
    if record.finalizing:
        raise Unavailable(f"job {job.job_id} is being finalised; its overlays wait",
                          reason="OVERLAY_NOT_READY")
    if not 1 <= job.page <= len(record.pages) or _plan(record.plan) != _plan(job.plan):
        raise OverlayRefused(f"job {job.job_id} has no page {job.page} in that plan")
    page = record.pages[job.page - 1]
    want = page.sheet.previous
    if page.state != jobs_pb2.PAGE_STATE_DONE or page.sheet.change != "revised" \
            or (want.job_id, want.page) != (job.overlay.previous_job_id,
                                            job.overlay.previous_page):
        raise OverlayRefused(f"page {job.page} of job {job.job_id} is not a revision of "
                             f"page {job.overlay.previous_page} of job "
                             f"{job.overlay.previous_job_id}")


def check_provisional(job: events_pb2.TileJob, record: jobs_pb2.Job,
                      previous: jobs_pb2.Job) -> None:
    """Raise OverlayRefused unless page ``job.page`` is done in ``record``
    (the job's own) and the version ``job.overlay`` names is a done page of
    ``previous``, another COMPLETE job of the same plan: a provisional
    overlay reads nothing a final one of this plan could not."""
    if not 1 <= job.page <= len(record.pages) \
            or record.pages[job.page - 1].state != jobs_pb2.PAGE_STATE_DONE:
        raise OverlayRefused(f"page {job.page} of job {job.job_id} is not done")
    n, plan = job.overlay.previous_page, _plan(job.plan)
    if _plan(record.plan) != plan:
        raise OverlayRefused(f"job {job.job_id} is not in plan {'/'.join(plan)}")
    if previous.job_id == record.job_id or previous.state != jobs_pb2.JOB_STATE_COMPLETE \
            or _plan(previous.plan) != plan \
            or not 1 <= n <= len(previous.pages) \
            or previous.pages[n - 1].state != jobs_pb2.PAGE_STATE_DONE:
        raise OverlayRefused(f"page {n} of job {previous.job_id} is not a version of a sheet "
                             f"in the plan of job {job.job_id}")


def _plan(plan: jobs_pb2.PlanRef) -> tuple[str, str, str]:
    return plan.org, plan.project, plan.plan


def _pyramid(store: ObjectStore, plan: jobs_pb2.PlanRef, job_id: str, page: int):
    """(descriptor, fetch(level, col, row) -> bytes) of a finished page in
    either layout. Raises VersionMissing."""
    archive_key = keys.archive_key(plan, job_id, page)
    try:
        if store.exists(archive_key):
            index = ArchiveIndex.load(lambda o, n: store.get_range(archive_key, o, n))

            def fetch(level: int, col: int, row: int) -> bytes:
                found = index.locate(level, col, row,
                                     lambda o, n: store.get_range(archive_key, o, n))
                if found is None:
                    raise VersionMissing(f"tile {level}/{col}_{row} is not in the archive")
                return store.get_range(archive_key, *found)
            return index.dzi, fetch
        dzi = parse_dzi(store.get_bytes(keys.dzi_key(plan, job_id, page)))
    except ObjectNotFound:
        raise VersionMissing(f"page {page} of job {job_id} has no pyramid in the bucket "
                             "(deleted?)") from None
    files = keys.page_files_prefix(plan, job_id, page)

    def fetch(level: int, col: int, row: int) -> bytes:
        return store.get_bytes(files + tile_name(level, col, row, dzi.format))
    return dzi, fetch


def level_for(dzi: DziInfo, dpi: float) -> int:
    """The smallest level at :data:`WORK_DPI` or more (the full level if the
    page was drawn at less), for a page drawn at ``dpi``."""
    top = dzi.levels - 1
    if dpi <= WORK_DPI:
        return top
    return top - int(math.floor(math.log2(dpi / WORK_DPI)))


def read_level(dzi: DziInfo, fetch, level: int) -> np.ndarray:
    """A level of a stored pyramid as one grey image (tiles read at once,
    overlaps cropped)."""
    w, h = dzi.level_size(level)
    if w * h > MAX_LEVEL_PIXELS:
        raise InvalidInput(f"level {level} is {w} x {h} pixels, more than an overlay reads")
    image = np.full((h, w), 255, np.uint8)
    cols, rows = dzi.grid(level)
    cells = [(c, r) for r in range(rows) for c in range(cols)]

    def one(cell: tuple[int, int]) -> None:
        col, row = cell
        x0, y0, tw, th = dzi.tile_box(level, col, row)
        pixels = simplejpeg.decode_jpeg(fetch(level, col, row), colorspace="GRAY")[:, :, 0]
        ox, oy = col * dzi.tile_size - x0, row * dzi.tile_size - y0
        cw, ch = min(dzi.tile_size, w - col * dzi.tile_size), min(dzi.tile_size,
                                                                   h - row * dzi.tile_size)
        image[row * dzi.tile_size:row * dzi.tile_size + ch,
              col * dzi.tile_size:col * dzi.tile_size + cw] = pixels[oy:oy + ch, ox:ox + cw]

    with ThreadPoolExecutor(READERS) as pool:
        list(pool.map(one, cells))
    return image


def _words(store: ObjectStore, plan: jobs_pb2.PlanRef, job_id: str, page: int) -> list | None:
    doc = store.get_json(keys.words_key(plan, job_id, page), keys.MAX_WORDS_BYTES, gzipped=True)
    return (doc or {}).get("words") or None


def record_failure(store: ObjectStore, job: events_pb2.TileJob, error) -> None:
    """``overlay.json`` for an overlay that failed for good: ``{"previous",
    "error", "reason"}`` (the route answers it as a problem)."""
    store.put_bytes(keys.overlay_key(job.plan, job.job_id, job.page), json.dumps({
        "previous": {"job_id": job.overlay.previous_job_id, "page": job.overlay.previous_page},
        "error": error.message, "reason": reason_name(error.reason_code)}).encode(),
        "application/json")


def make_overlay(store: ObjectStore, job: events_pb2.TileJob, record: jobs_pb2.Job,
                 put: TilePut) -> dict | None:
    """Lay page ``job.page`` over the version ``job.overlay`` names (already
    checked against ``record``), store its pyramid (each tile handed to
    ``put`` as it is cut: the tile stage's PUT processes) and
    ``overlay.json``;
    returns what ``overlay.json`` holds. Idempotent: an ``overlay.json``
    over the same version is returned as it is. One over another version
    (made while the job ran) is replaced, unless this request is itself
    provisional: then nothing is made (None)."""
    done = keys.overlay_key(job.plan, job.job_id, job.page)
    prev_id, prev_page = job.overlay.previous_job_id, job.overlay.previous_page
    try:
        there = json.loads(store.get_bytes(done))
        if job.overlay.provisional or there.get("previous") == {"job_id": prev_id,
                                                                "page": prev_page}:
            return None if job.overlay.provisional else there
    except ObjectNotFound:
        pass
    page = record.pages[job.page - 1]
    started = time.monotonic()
    cur_dzi, cur_fetch = _pyramid(store, job.plan, job.job_id, job.page)
    prev_dzi, prev_fetch = _pyramid(store, job.plan, prev_id, prev_page)
    # The previous page's DPI: the same sheet, so about the same long side.
    inches = max(page.width_pt, page.height_pt) / 72 or 1.0
    cur_level = level_for(cur_dzi, page.dpi or cur_dzi.width / inches)
    prev_level = level_for(prev_dzi, max(prev_dzi.width, prev_dzi.height) / inches)
    cur = read_level(cur_dzi, cur_fetch, cur_level)
    prev = read_level(prev_dzi, prev_fetch, prev_level)
    cur_scale = cur_dzi.width / cur.shape[1]
    prev_scale = prev_dzi.width / prev.shape[1]
    read = time.monotonic()
    try:
        result, image = overlay(prev, cur, prev_scale, cur_scale,
                                _words(store, job.plan, prev_id, prev_page),
                                _words(store, job.plan, job.job_id, job.page))
    except RegistrationFailed as e:
        raise InvalidInput(f"page {job.page} could not be laid over its previous version: "
                           f"{e}", reason="OVERLAY_FAILED") from None
    compared = time.monotonic()
    name = keys.overlay_pyramid(job.page, prev_id, prev_page)
    prefix = keys.tiles_prefix(job.plan, job.job_id)
    h, w = image.shape[:2]
    tile_size = job.options.tile_size or 254
    overlap = job.options.overlap if job.options.HasField("overlap") else 1
    dzi = cut_pyramid([image], w, h, 3, tile_size, overlap, QUALITY,
                      lambda level, col, row, data: put(
                          f"{prefix}{name}_files/{tile_name(level, col, row, 'jpg')}", data,
                          "image/jpeg"))
    # The descriptor last, as for a page: a pyramid with one is complete.
    store.put_bytes(f"{prefix}{name}.dzi", dzi_xml(dzi), "application/xml")
    doc = {"previous": {"job_id": prev_id, "page": prev_page},
           "transform": [round(v, 6) for v in result.transform],
           "residual_px": result.residual_px, "method": result.method,
           "changes": result.changes, "width": w, "height": h,
           "dpi": round((page.dpi or WORK_DPI) * w / cur_dzi.width, 2), "pyramid": name}
    try:
        # A provisional overlay never replaces one made meanwhile (the
        # job's end may have asked for another version's).
        store.put_bytes(done, json.dumps(doc).encode(), "application/json",
                        if_absent=job.overlay.provisional)
    except WriteConflict:
        log.info("provisional overlay not stored: one was made meanwhile",
                 extra={"job_id": job.job_id, "page": job.page})
        return None
    log.info("overlay made", extra={
        "job_id": job.job_id, "page": job.page, "changes": len(result.changes),
        "method": result.method, "residual_px": result.residual_px,
        "provisional": job.overlay.provisional, "read_seconds": round(read - started, 2),
        "compare_seconds": round(compared - read, 2),
        "write_seconds": round(time.monotonic() - compared, 2)})
    return doc
