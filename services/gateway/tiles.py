"""Deep Zoom descriptors and tiles of a job, from the bucket.

Paths follow the DZI layout (Microsoft Deep Zoom, "DZI file format"; the
tile source OpenSeadragon derives from a ``.dzi`` URL): a page's descriptor
``/v1/jobs/{job_id}/pages/{n}.dzi`` and its tiles
``/v1/jobs/{job_id}/pages/{n}_files/{level}/{col}_{row}.{ext}`` (level 0 is
1x1 pixel, the last level full resolution; col and row count tiles from the
top left). A job's outputs never change once written, so answers carry
``Cache-Control: …, max-age=…, immutable`` and an ``ETag`` (``If-None-Match``
gets 304): ``private`` for a bearer token, ``public`` only for a signed link,
where the URL itself is the grant (:func:`cache_control`). With ``PLANZOOM_GATEWAY_TILE_REDIRECT`` a
tile is a 307 to a presigned GET of the bucket (which stays private).

The URLs are the same whatever the job's layout: in layout ARCHIVE the
descriptor comes from the page's archive's metadata and each tile is one
range GET of the archive, once its directory is known
(:mod:`services.gateway.archives`).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from planzoom.dzi import dzi_xml
from planzoom.errors import NotFound
from planzoom.ids import check_id
from planzoom.keys import ARCHIVE_SUFFIX, VARIANT_NAME
from planzoom.storage import ObjectNotFound
from services.gateway.upstream import JobPlace

router = APIRouter(prefix="/v1", tags=["tiles"])

PAGE_DZI = re.compile(r"([1-9][0-9]{0,5})\.dzi")
#: A revised page's overlay over its previous version (docs/revisions.md),
#: always in layout FILES, named by the version it lies over
#: (``{n}.overlay-{previous job}-{previous page}``; ``{n}.overlay`` before).
OVERLAY_DZI = re.compile(r"([1-9][0-9]{0,5})\.overlay((?:-[0-9a-f]{22}-[1-9][0-9]{0,5})?)\.dzi")
OVERLAY_FILES = re.compile(r"([1-9][0-9]{0,5})\.overlay((?:-[0-9a-f]{22}-[1-9][0-9]{0,5})?)_files")
PAGE_VARIANT = re.compile(
    rf"(?P<page>[1-9][0-9]{{0,5}})\.(?P<name>{VARIANT_NAME.pattern})\.(?P<ext>jpg|webp)")
PAGE_FILES = re.compile(r"([1-9][0-9]{0,5})_files")
TILE = re.compile(r"(0|[1-9][0-9]{0,5})_(0|[1-9][0-9]{0,5})\.(jpg|jpeg|png|webp)")
CONTENT_TYPES = {"dzi": "application/xml", "jpg": "image/jpeg", "jpeg": "image/jpeg",
                 "png": "image/png", "webp": "image/webp",
                 "m3u8": "application/vnd.apple.mpegurl", "ts": "video/mp2t"}
#: A video's preview files (planzoom/keys.py: previews/…/<job>/).
PREVIEW_FILE = re.compile(r"master\.m3u8|poster\.jpg|thumbnail\.jpg|"
                          r"[1-9][0-9]{1,3}p/(index\.m3u8|seg-[0-9]{5}\.ts)")


def _absent(what: str) -> NotFound:
    """404 naming what the client asked for, never the bucket key."""
    return NotFound(f"{what}: not found (a page's descriptor and tiles appear when the "
                    "page is done)", reason="NOT_FOUND")


async def job_place(request: Request, job_id: str, cap: str | None = None) -> JobPlace:
    """Where job ``job_id``'s outputs are, if ``request`` may read them: a
    bearer token (viewer) or a signed link of the job (``cap`` when the
    route has it in its path, else ``?cap=``). Marks whether a link was the
    grant (:func:`cache_control`). Raises Unauthenticated (401), NotFound
    (404: unknown, or another org's) or ResourceExhausted (429)."""
    gw = request.app.state.gateway
    job_id = check_id("job_id", job_id)
    access = gw.gatekeeper.check(request, "viewer", allow_link=True, job_id=job_id, cap=cap)
    place = await gw.upstream.place(access, job_id)
    request.state.via_link = access.link is not None
    return place


def cache_scope(request: Request) -> str:
    """``public`` when a signed link was the grant of ``request`` (after
    :func:`job_place`), else ``private``. A shared cache (a CDN, an ingress)
    keys on the URL alone, so an answer to a bearer token stored there would
    be served to anyone who has the URL (RFC 9111 section 5.2.2.7)."""
    return "public" if getattr(request.state, "via_link", False) else "private"


def cache_control(request: Request) -> str:
    """``Cache-Control`` for a job's output, which never changes, read by
    ``request`` (:func:`cache_scope`)."""
    seconds = request.app.state.gateway.settings.gateway_cache_seconds
    return f"{cache_scope(request)}, max-age={seconds}, immutable"


async def _immutable(request: Request, content_type: str, etag: str,
                     data: bytes | Callable[[], Awaitable[bytes]]) -> Response:
    """A part of an object that never changes: ``data`` (or what ``data()``
    reads) with ``etag``, a digest that names it; 304 when the client holds
    it, without reading it."""
    headers = {"ETag": etag, "Cache-Control": cache_control(request)}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    body = data if isinstance(data, bytes) else await data()
    return Response(body, media_type=content_type, headers=headers)


def digest(*parts: object) -> str:
    """An ETag naming ``parts`` (what makes an answer what it is)."""
    return '"' + hashlib.blake2b(repr(parts).encode(), digest_size=16).hexdigest() + '"'


async def _object(request: Request, key: str, content_type: str) -> Response:
    gw = request.app.state.gateway
    if gw.settings.gateway_tile_redirect and content_type not in (CONTENT_TYPES["dzi"],
                                                                  CONTENT_TYPES["m3u8"]):
        url = await asyncio.to_thread(gw.store.presigned_get, key,
                                      gw.settings.gateway_link_seconds)
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    try:
        data, etag, _ = await gw.reader.get_if_changed(key, request.headers.get("if-none-match"))
    except ObjectNotFound:
        raise _absent(request.url.path) from None
    headers = {"ETag": etag, "Cache-Control": cache_control(request)}
    if data is None:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=content_type, headers=headers)


@router.get("/jobs/{job_id}/pages/{name}",
            summary="A page's Deep Zoom descriptor (.dzi) or one of its variants")
async def page_dzi(request: Request, job_id: str, name: str) -> Response:
    """The DZI XML of page ``n`` (``{n}.dzi``, 1-based), of its overlay
    over its previous version (``{n}.overlay-{job}-{page}.dzi``, as the
    page's ``/overlay`` names it; docs/revisions.md), or
    one of the page's variants (``{n}.thumbnail.jpg``, ``{n}.overview.jpg``,
    ``{n}.icon.jpg``, ``{n}.display.jpg``, ``{n}.webp-{px}.webp``; the job
    record lists them). 404 until the page has it (a PDF's overview and
    thumbnail come first, the ``.dzi`` once the page is DONE), or for one
    the job does not have.
    Bearer (viewer) or ``?cap=``."""
    if match := PAGE_DZI.fullmatch(name):
        place = await job_place(request, job_id)
        if place.archive:
            try:
                index = await request.app.state.gateway.archives.index(
                    f"{place.tiles_prefix}page-{match[1]}.{ARCHIVE_SUFFIX}")
            except ObjectNotFound:
                raise _absent(request.url.path) from None
            xml = dzi_xml(index.dzi)
            return await _immutable(request, CONTENT_TYPES["dzi"], digest(xml), xml)
        return await _object(request, f"{place.tiles_prefix}page-{match[1]}.dzi",
                             CONTENT_TYPES["dzi"])
    if match := OVERLAY_DZI.fullmatch(name):
        place = await job_place(request, job_id)
        return await _object(request, f"{place.tiles_prefix}page-{match[1]}.overlay{match[2]}"
                             ".dzi", CONTENT_TYPES["dzi"])
    if match := PAGE_VARIANT.fullmatch(name):
        place = await job_place(request, job_id)
        return await _object(request, f"{place.tiles_prefix}page-{match['page']}."
                             f"{match['name']}.{match['ext']}", CONTENT_TYPES[match["ext"]])
    raise _absent(f"{name} (a descriptor is named <page>.dzi, a variant "
                  "<page>.<variant>.<jpg|webp>)")


@router.get("/jobs/{job_id}/pages/{files}/{level}/{tile}", summary="One Deep Zoom tile")
async def page_tile(request: Request, job_id: str, files: str, level: int,
                    tile: str) -> Response:
    """The tile at ``level`` (0 = 1x1 px), column ``col`` and row ``row``
    (``{col}_{row}.{ext}``, ext as the descriptor's Format) of a page
    (``{n}_files``) or of its overlay (``{n}.overlay-{job}-{page}_files``). Bearer (viewer)
    or ``?cap=``. 404 for a tile that does not exist."""
    page, cell = PAGE_FILES.fullmatch(files), TILE.fullmatch(tile)
    overlay = OVERLAY_FILES.fullmatch(files)
    if not (page or overlay) or not cell or not 0 <= level <= 64:
        raise _absent(f"tile {files}/{level}/{tile}")
    place = await job_place(request, job_id)
    if overlay:
        return await _object(request, f"{place.tiles_prefix}page-{overlay[1]}.overlay"
                             f"{overlay[2]}_files/{level}/{cell[1]}_{cell[2]}.{cell[3]}",
                             CONTENT_TYPES[cell[3]])
    if place.archive:
        archives = request.app.state.gateway.archives
        key = f"{place.tiles_prefix}page-{page[1]}.{ARCHIVE_SUFFIX}"
        try:
            found = await archives.locate(key, level, int(cell[1]), int(cell[2]), cell[3])
        except ObjectNotFound:
            found = None
        if found is None:
            raise _absent(f"tile {files}/{level}/{tile}")
        # An archive never changes once written: where the bytes are in it
        # names them (identical tiles, stored once, share it).
        return await _immutable(request, CONTENT_TYPES[cell[3]], digest(key, *found),
                                lambda: archives.read(key, *found))
    key = f"{place.tiles_prefix}page-{page[1]}_files/{level}/{cell[1]}_{cell[2]}.{cell[3]}"
    return await _object(request, key, CONTENT_TYPES[cell[3]])


@router.get("/jobs/{job_id}/video/{path:path}", summary="A video's HLS preview")
async def video_file(request: Request, job_id: str, path: str) -> Response:
    """A file of a video job's HLS preview (RFC 8216): ``master.m3u8``,
    ``<rung>/index.m3u8``, ``<rung>/seg-NNNNN.ts``, ``poster.jpg``,
    ``thumbnail.jpg``. 404 until the transcode is done. Bearer (viewer) or
    ``?cap=``: with a signed link, the playlists' URIs carry it too, so a
    player that cannot send headers (a ``<video>`` element, hls.js without
    configuration) follows them."""
    if not PREVIEW_FILE.fullmatch(path):
        raise _absent(f"video file {path}")
    place = await job_place(request, job_id)
    key = place.preview_prefix + path
    ext = path.rsplit(".", 1)[1]
    response = await _object(request, key, CONTENT_TYPES[ext])
    cap = request.query_params.get("cap")
    if ext != "m3u8" or not cap or response.status_code != 200:
        return response
    lines = [line if not line or line.startswith("#") else f"{line}?cap={cap}"
             for line in response.body.decode().splitlines()]
    headers = {k: v for k, v in response.headers.items()
               if k.lower() in ("cache-control", "etag")}
    return Response("\n".join(lines) + "\n", media_type=CONTENT_TYPES[ext], headers=headers)
