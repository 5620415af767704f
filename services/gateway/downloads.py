"""A job as one zip, streamed: ``GET /v1/jobs/{job_id}/download`` (``HEAD``
first gives its size) and ``POST /v1/downloads`` for several jobs.

The zip (PKZIP APPNOTE, stored entries, ZIP64 where needed; zipstream-ng)
is built while it is sent, from the bucket, never staged on disk: its size
is known before the first byte (every entry's size comes from the listing),
and objects are fetched a few dozen ahead of the one being written. It holds
``<job_id>/manifest.json`` and, per page, ``page-<n>.dzi`` and
``page-<n>_files/<level>/<col>_<row>.<ext>``: exactly the layout
OpenSeadragon opens; for a PDF, ``sheets.json`` (the sheet index) and
each page's ``page-<n>.words.json.gz`` (docs/sheets.md) too. A job of
layout ARCHIVE is held as ``page-<n>.dzi`` and ``page-<n>.pmtiles`` (the
page's archive as one file, for a static host or bucket that answers
range requests), unless a bundle cuts its levels or carries the viewer:
then its tiles are unpacked into ``page-<n>_files/``.

A smaller offline bundle: ``?pages=1,3-5`` keeps those pages (1-based),
``?max_level=N`` keeps levels 0..N. A level-N bundle is itself a valid DZI
of the level-N image (``ceil(W / 2**(L-1-N))`` pixels wide, the DZI level
arithmetic of :mod:`planzoom.dzi`): its descriptors and manifest say that
size, and its pages' DPI is scaled to match.

With ``?viewer=true`` the zip opens by itself: ``index.html`` (the plan
viewer, the bundle's manifest inline), the viewer's scripts in
``static/`` (OpenSeadragon included) and each page's variants beside its
pyramid (the strip's thumbnails): unzip it and open ``index.html`` from
disk, no server needed (what ``planzoom demo`` leaves).

Only an ended job (its ``manifest.json`` written) can be downloaded: 409
while it runs.

Every file listed costs the gateway memory while its zip is sent (about
1 KiB: its entry here and in the zip's central directory), so a zip holds
at most ``PLANZOOM_GATEWAY_MAX_ZIP_ENTRIES`` files, counted from the
pyramids' geometry before the bucket is listed (400 ``ZIP_TOO_LARGE``
beyond: fewer pages or levels, or layout ARCHIVE, whose page is one file),
and a gateway lists or sends ``PLANZOOM_GATEWAY_MAX_CONCURRENT_ZIPS`` zips
at once, ``_PER_ORG`` of one org's (429 ``TOO_MANY_DOWNLOADS`` beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Annotated

import itsdangerous
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool
from zipstream import ZipStream

from planzoom.config import Settings
from planzoom.errors import FailedPrecondition, ResourceExhausted, Unauthenticated
from planzoom.ids import check_id
from planzoom.slots import Slots
from planzoom.storage import ObjectNotFound, ObjectStore
from services.gateway.zips import (
    build_zip,
    check_zip_size,
    count_entries,
    job_entries,
    offline_words,
    parse_pages,
    variant_entries,
    viewer_entries,
)

router = APIRouter(prefix="/v1", tags=["downloads"])

#: Jobs in one batch download.
MAX_BATCH_JOBS = 50


class DownloadsBusy(ResourceExhausted):
    reason = "TOO_MANY_DOWNLOADS"


def zip_slots(settings: Settings) -> Slots:
    """The gateway's zip downloads at once, in all and per org."""
    return Slots("zip downloads", DownloadsBusy, settings.gateway_max_concurrent_zips,
                 settings.gateway_max_concurrent_zips_per_org, settings=(
                     "GATEWAY_MAX_CONCURRENT_ZIPS", "GATEWAY_MAX_CONCURRENT_ZIPS_PER_ORG", ""))


async def read_manifest(store: ObjectStore, tiles_prefix: str, job_id: str) -> dict:
    """The job's manifest.json; FailedPrecondition (409) while it runs."""
    try:
        return json.loads(await asyncio.to_thread(store.get_bytes,
                                                  f"{tiles_prefix}manifest.json"))
    except ObjectNotFound:
        raise FailedPrecondition(f"job {job_id} has not ended yet: download it when it has",
                                 reason="JOB_RUNNING") from None


def zip_response(request: Request, zs: ZipStream, filename: str,
                 held: contextlib.ExitStack) -> Response:
    """The zip as the answer; ``held`` (its download slot) is released
    when the last byte is sent or the client goes away."""
    headers = {"Content-Length": str(len(zs)), "Cache-Control": "private, no-store",
               "Content-Disposition": f'attachment; filename="{filename}"'}
    if request.method == "HEAD":
        held.close()
        return Response(status_code=200, media_type="application/zip", headers=headers)

    async def body():
        try:
            async for chunk in iterate_in_threadpool(iter(zs)):
                yield chunk
        finally:
            held.close()
    # The background task also runs when the client disconnected mid-zip.
    return StreamingResponse(body(), media_type="application/zip", headers=headers,
                             background=BackgroundTask(held.close))


@contextlib.contextmanager
def download_slot(request: Request, org: str, subject: str) -> Iterator[contextlib.ExitStack]:
    """One of the gateway's zip slots for ``org`` (DownloadsBusy, 429, if
    none), held in the ExitStack yielded: the block hands it on to
    :func:`zip_response`, or it is released if the block raises."""
    held = contextlib.ExitStack()
    held.enter_context(request.app.state.gateway.zips.hold(org, subject))
    try:
        yield held
    except BaseException:
        held.close()
        raise


@router.api_route("/jobs/{job_id}/download", methods=["GET", "HEAD"],
                  summary="A job's tiles and descriptors as one zip")
async def download(request: Request, job_id: str, pages: str | None = None,
                   max_level: Annotated[int | None, Query(ge=0, le=64)] = None,
                   viewer: bool = False) -> Response:
    """``application/zip`` (see the module docstring), ``Content-Length``
    known up front; ``HEAD`` answers the size alone. ``pages``: ``1,3-5``
    (1-based); ``max_level``: keep DZI levels 0..N; ``viewer``: add the
    offline viewer and the pages' variants. Bearer (viewer) or ``?cap=``.
    400 bad pages, 404 unknown job, 409 job still running."""
    gw = request.app.state.gateway
    job_id = check_id("job_id", job_id)
    access = gw.gatekeeper.check(request, "viewer", allow_link=True, job_id=job_id)
    place = await gw.upstream.place(access, job_id)
    manifest = await read_manifest(gw.store, place.tiles_prefix, job_id)
    selected = parse_pages(pages, len(manifest["pages"]))
    check_zip_size(count_entries(manifest, selected, max_level, viewer, viewer),
                   gw.settings.gateway_max_zip_entries)
    with download_slot(request, access.caller.org, access.caller.subject) as held:
        entries = await asyncio.to_thread(job_entries, gw.store, manifest, job_id, selected,
                                          max_level, viewer)
        if viewer:
            bundle = json.loads(entries[0].data)  # the bundle's manifest.json
            words = await asyncio.to_thread(offline_words, gw.store, bundle, manifest)
            entries += viewer_entries(bundle, job_id, words)
            entries += await asyncio.to_thread(variant_entries, gw.store, bundle, job_id)
        plan = manifest["plan"]["plan"]
        return zip_response(request, build_zip(gw.store, entries), f"{plan}-{job_id}.zip",
                            held)


class BatchRequest(BaseModel):
    """Jobs to download together (each ended, of the caller's org)."""

    jobs: list[str] = Field(min_length=1, max_length=MAX_BATCH_JOBS)
    max_level: int | None = Field(None, ge=0, le=64)


class BatchLink(BaseModel):
    url: str  # GET it (no header needed) for the zip
    size_bytes: int
    expires_in_seconds: int


def _batch_signer(request: Request) -> itsdangerous.URLSafeTimedSerializer:
    return request.app.state.gateway.gatekeeper.serializer("planzoom-batch")


@router.post("/downloads", summary="Several jobs as one zip", response_model=BatchLink)
async def create_batch(request: Request, body: BatchRequest) -> BatchLink:
    """A signed URL for one zip holding each job under ``<job_id>/``, and the
    zip's size in bytes. Needs the viewer role; every job must be the
    caller's org's (404 otherwise) and ended (409 otherwise)."""
    gw = request.app.state.gateway
    access = gw.gatekeeper.check(request, "viewer")
    jobs = []
    for job_id in dict.fromkeys(body.jobs):
        place = await gw.upstream.place(access, check_id("job_id", job_id))
        jobs.append([job_id, place.tiles_prefix])
    with gw.zips.hold(access.caller.org, access.caller.subject):
        # 409 for a job still running, 400 for too many files
        zs = await _batch_zip(gw, jobs, body.max_level)
    token = _batch_signer(request).dumps({"o": access.caller.org, "s": access.caller.subject,
                                          "j": jobs, "m": body.max_level})
    return BatchLink(url=str(request.base_url).rstrip("/") + f"/v1/downloads/{token}",
                     size_bytes=len(zs), expires_in_seconds=gw.settings.gateway_link_seconds)


async def _batch_zip(gw, jobs: list[list[str]], max_level: int | None) -> ZipStream:
    """The zip of several ended jobs, each under ``<job_id>/``: the files
    of all of them counted against the zip's limit before any is listed."""
    manifests = [(job_id, await read_manifest(gw.store, prefix, job_id))
                 for job_id, prefix in jobs]
    check_zip_size(sum(count_entries(m, parse_pages(None, len(m["pages"])), max_level)
                       for _, m in manifests), gw.settings.gateway_max_zip_entries)
    entries = []
    for job_id, manifest in manifests:
        entries += await asyncio.to_thread(job_entries, gw.store, manifest, job_id,
                                           parse_pages(None, len(manifest["pages"])),
                                           max_level)
    return build_zip(gw.store, entries)


@router.api_route("/downloads/{token}", methods=["GET", "HEAD"],
                  summary="A batch download made by POST /v1/downloads")
async def batch_download(request: Request, token: str) -> Response:
    """The zip of a batch (no header needed: the URL is the grant, until it
    expires). 401 for an expired or altered URL."""
    gw = request.app.state.gateway
    try:
        grant = _batch_signer(request).loads(token, max_age=gw.settings.gateway_link_seconds)
    except itsdangerous.SignatureExpired:
        raise Unauthenticated("this download link has expired; ask for a new one",
                              reason="LINK_EXPIRED") from None
    except itsdangerous.BadData:
        raise Unauthenticated("this download link is not valid", reason="BAD_LINK") from None
    gw.gatekeeper.throttle(f"{grant['o']}:{grant['s']}")
    with download_slot(request, grant["o"], grant["s"]) as held:
        zs = await _batch_zip(gw, grant["j"], grant["m"])
        return zip_response(request, zs, "planzoom-download.zip", held)

