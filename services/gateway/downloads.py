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
import functools
import gzip
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

import itsdangerous
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool
from zipstream import ZipStream

from planzoom.config import Settings
from planzoom.dzi import DziInfo, dzi_xml, level_size, tile_name
from planzoom.engines.archive import ArchiveIndex
from planzoom.errors import FailedPrecondition, InvalidInput, ResourceExhausted, Unauthenticated
from planzoom.ids import check_id
from planzoom.keys import ARCHIVE_SUFFIX
from planzoom.pages import level_dpi
from planzoom.slots import Slots
from planzoom.storage import ObjectNotFound, ObjectStore
from services.gateway.viewer import STATIC_DIR, viewer_page

router = APIRouter(prefix="/v1", tags=["downloads"])

#: Objects fetched ahead of the one being written into the zip.
PREFETCH = 32
#: Jobs in one batch download.
MAX_BATCH_JOBS = 50
PAGES = re.compile(r"\s*(\d{1,6})\s*(?:-\s*(\d{1,6})\s*)?")


class ZipTooLarge(InvalidInput):
    reason = "ZIP_TOO_LARGE"


class DownloadsBusy(ResourceExhausted):
    reason = "TOO_MANY_DOWNLOADS"


def zip_slots(settings: Settings) -> Slots:
    """The gateway's zip downloads at once, in all and per org."""
    return Slots("zip downloads", DownloadsBusy, settings.gateway_max_concurrent_zips,
                 settings.gateway_max_concurrent_zips_per_org, settings=(
                     "GATEWAY_MAX_CONCURRENT_ZIPS", "GATEWAY_MAX_CONCURRENT_ZIPS_PER_ORG", ""))


@dataclass
class Entry:
    """One file of the zip: bytes in hand, or an object (or ``size`` bytes
    of it from ``offset``) to fetch."""

    arcname: str
    size: int
    data: bytes | None = None
    key: str | None = None
    offset: int | None = None


def parse_pages(spec: str | None, total: int) -> list[int]:
    """``"1,3-5"`` → [1, 3, 4, 5] (all pages if ``spec`` is empty). Raises
    InvalidInput naming the part that is not a page or range of pages."""
    if not spec:
        return list(range(1, total + 1))
    pages: set[int] = set()
    for part in spec.split(","):
        match = PAGES.fullmatch(part)
        first, last = (int(match[1]), int(match[2] or match[1])) if match else (0, -1)
        if not match or not 1 <= first <= last <= total:
            raise InvalidInput(f"pages: {part.strip()!r} is not a page or range of pages "
                               f"within 1-{total}", field="pages")
        pages.update(range(first, last + 1))
    return sorted(pages)


def _bundle_page(record: dict, max_level: int | None) -> tuple[dict, DziInfo, int]:
    """A page's record and descriptor in the bundle, and its top level."""
    full = DziInfo(record["width_px"], record["height_px"], record["tile_size"],
                   record["overlap"], record["format"])
    top = full.levels - 1 if max_level is None else min(max_level, full.levels - 1)
    width, height = level_size(full.width, full.height, top)
    info = DziInfo(width, height, full.tile_size, full.overlap, full.format)
    if top == full.levels - 1:
        return record, info, top
    scaled = {**record, "width_px": width, "height_px": height, "levels": info.levels,
              "tile_count": str(info.tile_count()),
              "dpi": level_dpi(record.get("dpi", 0), full.width, width)}
    if "sheet" in record:
        scaled["sheet"] = _scaled_sheet(record["sheet"], width / full.width)
    return scaled, info, top


def _scaled_sheet(sheet: dict, factor: float) -> dict:
    """A page's sheet (protobuf JSON) with its boxes in the pixels of a
    bundle's top level."""
    def box(b: dict) -> dict:
        return {k: round(int(b.get(k, 0)) * factor) for k in ("x", "y", "w", "h")}

    out = {**sheet}
    for field in ("box", "title_box", "scale_box"):
        if field in out:
            out[field] = box(out[field])
    out["references"] = [{**r, **({"box": box(r["box"])} if "box" in r else {})}
                         for r in sheet.get("references", [])]
    return out


def _archive_tiles(store: ObjectStore, key: str, folder: str, page: int, top: int
                   ) -> list[Entry]:
    """The tiles of levels 0..``top`` of the page archive at ``key``, as
    the DZI layout's files (each read by a range of the archive)."""
    read = functools.partial(store.get_range, key)
    index = ArchiveIndex.load(read)
    return [Entry(f"{folder}/page-{page}_files/{tile_name(level, col, row, index.dzi.format)}",
                  length, key=key, offset=offset)
            for level, col, row, offset, length in index.tiles(read) if level <= top]


def count_entries(manifest: dict, pages: list[int], max_level: int | None,
                  expand: bool = False, viewer: bool = False) -> int:
    """How many files :func:`job_entries` (and, with ``viewer``, the
    pages' variants) would list for these pages, from each page's DZI
    geometry: no bucket read. An upper bound (a page's words may be
    missing)."""
    archive = manifest.get("options", {}).get("layout") == "PYRAMID_LAYOUT_ARCHIVE"
    count = 2  # manifest.json, sheets.json
    for page in pages:
        record = manifest["pages"][page - 1]
        if record.get("state") != "PAGE_STATE_DONE":
            continue
        _, info, _ = _bundle_page(record, max_level)
        whole = archive and max_level is None and not expand
        count += 2 + (1 if whole else info.tile_count())  # .dzi, words, tiles
        count += len(record.get("variants", [])) if viewer else 0
    return count


def check_zip_size(count: int, most: int) -> None:
    """ZipTooLarge (400) if ``count`` files are more than ``most``."""
    if count > most:
        raise ZipTooLarge(f"this download would hold {count:,} files, more than the "
                          f"{most:,} one zip may; ask for fewer pages (?pages=) or levels "
                          "(?max_level=), fewer jobs at once, or convert with layout ARCHIVE "
                          "(one file per page)", field="max_level")


def job_entries(store: ObjectStore, manifest: dict, folder: str, pages: list[int],
                max_level: int | None, expand: bool = False) -> list[Entry]:
    """The zip entries of one ended job (``manifest``: its manifest.json),
    under ``folder/``: per page its ``.dzi`` and ``_files/`` tiles, or, for
    a job of layout ARCHIVE kept whole (no ``max_level``, not ``expand``),
    its ``.dzi`` and its archive as one file. Blocking (reads the bucket)."""
    prefix = manifest["tiles_prefix"]
    archive = manifest.get("options", {}).get("layout") == "PYRAMID_LAYOUT_ARCHIVE"
    records, entries = [], []
    for page in pages:
        record = manifest["pages"][page - 1]
        if record.get("state") != "PAGE_STATE_DONE":
            continue
        record, info, top = _bundle_page(record, max_level)
        records.append(record)
        entries.append(Entry(f"{folder}/page-{page}.dzi", 0, data=dzi_xml(info)))
        if archive:
            key = f"{prefix}page-{page}.{ARCHIVE_SUFFIX}"
            if max_level is None and not expand:
                entries.append(Entry(f"{folder}/{key[len(prefix):]}", store.size(key) or 0,
                                     key=key))
            else:
                entries += _archive_tiles(store, key, folder, page, top)
            continue
        files = f"{prefix}page-{page}_files/"
        for key, size in store.list_sizes(files):
            level = key[len(files):].split("/", 1)[0]
            if level.isdigit() and int(level) <= top:
                entries.append(Entry(f"{folder}/{key[len(prefix):]}", size, key=key))
    # The sheet index and each page's words (boxes in full-resolution pixels
    # of the job's pages: a bundle that cuts levels says so in "bundle").
    for key in [f"{prefix}sheets.json",
                *(f"{prefix}page-{r['page']}.words.json.gz" for r in records)]:
        size = store.size(key)
        if size is not None:
            entries.append(Entry(f"{folder}/{key[len(prefix):]}", size, key=key))
    kept = {**manifest, "pages": records}
    if len(records) != len(manifest["pages"]) or max_level is not None:
        kept["bundle"] = {"pages": [r["page"] for r in records], "max_level": max_level}
    entries.insert(0, Entry(f"{folder}/manifest.json", 0,
                            data=json.dumps(kept, indent=2).encode()))
    return entries


#: Words a bundle's offline viewer carries inline for its search, at most
#: (a browser cannot read the word sidecars from disk): about 30 bytes each.
MAX_OFFLINE_WORDS = 300_000


def offline_words(store: ObjectStore, bundle: dict, manifest: dict) -> dict[str, list] | None:
    """Each page's words for the offline viewer's search: ``{page: [[text,
    x, y, w, h], …]}``, boxes in the bundle's pixels of the page; None when
    the job has none or more than :data:`MAX_OFFLINE_WORDS`. Blocking."""
    prefix, out, count = manifest["tiles_prefix"], {}, 0
    for record in bundle["pages"]:
        n = record["page"]
        try:
            doc = json.loads(gzip.decompress(store.get_bytes(f"{prefix}page-{n}.words.json.gz")))
        except ObjectNotFound:
            continue
        factor = record["width_px"] / max(1, manifest["pages"][n - 1]["width_px"])
        out[str(n)] = [[w[0], *(round(v * factor) for v in w[1:5])] for w in doc["words"]]
        count += len(out[str(n)])
        if count > MAX_OFFLINE_WORDS:
            return None
    return out or None


def viewer_entries(manifest: dict, folder: str, words: dict | None = None) -> list[Entry]:
    """What makes a bundle open by itself (``?viewer=true``): ``index.html``
    with ``manifest`` (the bundle's) and ``words`` (:func:`offline_words`,
    for its search) inline and its pages under ``folder/``, and the
    viewer's static files under ``static/``."""
    config = {"mode": "static", "job": manifest, "base": f"{folder}/", "static": "static"}
    if words:
        config["words"] = words
    page = viewer_page(config, "static").encode()
    files = [path for path in sorted(STATIC_DIR.rglob("*"))
             if path.is_file() and path.name != "viewer.html"]
    return [Entry("index.html", len(page), data=page),
            *(Entry(f"static/{path.relative_to(STATIC_DIR)}", 0, data=path.read_bytes())
              for path in files)]


def variant_entries(store: ObjectStore, manifest: dict, folder: str) -> list[Entry]:
    """The variant files (thumbnail, overview, ...) of the pages in
    ``manifest`` (a bundle's), under ``folder/`` beside their pyramids."""
    prefix = manifest["tiles_prefix"]
    wanted = {f"{prefix}page-{r['page']}.{v['name']}.{v['format']}"
              for r in manifest["pages"] for v in r.get("variants", [])}
    return [Entry(f"{folder}/{key[len(prefix):]}", size, key=key)
            for key, size in store.list_sizes(prefix, recursive=False) if key in wanted]


def build_zip(store: ObjectStore, entries: list[Entry]) -> ZipStream:
    """A sized ZipStream whose objects are fetched in order, PREFETCH ahead,
    by a thread pool, as the stream is read."""
    fetched = _prefetch(store, [(e.key, e.offset, e.size) for e in entries if e.key])
    zs = ZipStream(sized=True)
    for entry in entries:
        if entry.data is not None:
            zs.add(entry.data, entry.arcname)
        else:
            zs.add(_Next(fetched), entry.arcname, size=entry.size)
    return zs


class _Next:
    """An entry's data: the next object the prefetcher delivers."""

    def __init__(self, fetched: Iterator[bytes]):
        self.fetched = fetched

    def __iter__(self):
        yield next(self.fetched)


def _prefetch(store: ObjectStore, wanted: list[tuple[str, int | None, int]]
              ) -> Iterator[bytes]:
    """The bytes of each (key, offset, size): a whole object, or a range."""

    def fetch(key: str, offset: int | None, size: int) -> bytes:
        return store.get_bytes(key) if offset is None else store.get_range(key, offset, size)

    def generate():
        with ThreadPoolExecutor(8) as pool:
            window = [pool.submit(fetch, *w) for w in wanted[:PREFETCH]]
            for i in range(len(wanted)):
                data = window.pop(0).result()
                if i + PREFETCH < len(wanted):
                    window.append(pool.submit(fetch, *wanted[i + PREFETCH]))
                yield data
    return generate()


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

