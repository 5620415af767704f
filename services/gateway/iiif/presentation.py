"""IIIF Presentation API 3.0 (https://iiif.io/api/presentation/3.0/) on the
gateway: a Manifest per job and per plan (its current set), the pages'
callouts as AnnotationPages, Content Search (:mod:`.search`) and the
Mirador page (:mod:`.mirador`), all under ``/iiif/3`` (docs/iiif.md).

Who may read: a bearer token (viewer role, the job's org) or the job's
signed link in the path, ``/iiif/3/cap/{link}/…`` (IIIF clients append to
the ids they are given and send no header). A manifest fetched with a
bearer token names ids that carry one link minted for it (never in a query
string for IIIF services), so a viewer handed it needs no header until the
link expires (``PLANZOOM_GATEWAY_LINK_SECONDS``, or the token's end).
Another org's job answers 404, exactly as an unknown one.
"""

from __future__ import annotations

import gzip
import hashlib
import json

from fastapi import APIRouter, Request, Response
from google.protobuf import json_format

from planzoom.errors import FailedPrecondition, NotFound
from planzoom.ids import check_id
from planzoom.storage import ObjectNotFound
from planzoom.v1 import jobs_pb2
from services.gateway.access import Access
from services.gateway.iiif import manifest as build
from services.gateway.iiif import mirador, search
from services.gateway.sheet_routes import _plan_job
from services.gateway.tiles import cache_scope, job_place

#: Manifests over this many bytes go gzipped to a client that accepts it
#: (a 2,000-page set's is ~8 MB of JSON, ~0.6 MB gzipped), at this level.
GZIP_BYTES = 64 * 1024
GZIP_LEVEL = 1

router = APIRouter()
router.include_router(search.router)
router.include_router(mirador.router)


def base_url(request: Request) -> str:
    """The gateway's URL as the client reached it, no trailing slash."""
    return str(request.base_url).rstrip("/")


def _check(request: Request, job_id: str, link: str | None) -> tuple[str, Access]:
    gw = request.app.state.gateway
    job_id = check_id("job_id", job_id)
    access = gw.gatekeeper.check(request, "viewer", allow_link=True, job_id=job_id, cap=link)
    request.state.via_link = access.link is not None
    return job_id, access


async def _read_json(request: Request, key: str) -> dict | None:
    try:
        data, _, _ = await request.app.state.gateway.reader.get_if_changed(key, None)
    except ObjectNotFound:
        return None
    return json.loads(data)


async def _record(request: Request, job_id: str,
                  access: Access) -> tuple[jobs_pb2.Job, str]:
    """The job's record and the link its manifest's ids carry: with a
    signed link, ``manifest.json`` (written when the job ends; 409
    JOB_RUNNING before) and that link; with a bearer token, the live record
    (GetJob: 404 for another org's job) and a link minted now."""
    gw = request.app.state.gateway
    if access.link is not None:
        doc = await _read_json(request, f"{access.link.tiles_prefix}manifest.json")
        if doc is None:
            raise FailedPrecondition(
                f"job {job_id} has not ended yet: with a signed link its manifest is there "
                "once it has; meanwhile fetch /iiif/3/jobs/{job_id}/manifest with a bearer "
                "token", reason="JOB_RUNNING")
        job = json_format.ParseDict(doc, jobs_pb2.Job(), ignore_unknown_fields=True)
        cap = request.path_params.get("link") or request.query_params["cap"]
        return job, cap
    job = await gw.upstream.get_job(access, job_id)
    cap, _ = gw.gatekeeper.job_link(job, access.caller)
    return job, cap


def respond(request: Request, doc: dict) -> Response:
    """``doc`` as a Presentation 3 document (its section 6.1's media type)
    with an ETag (``If-None-Match`` answers 304) and ``Cache-Control``
    ``private`` for a bearer token, ``public`` for a signed link (the URL is
    the grant; services.gateway.tiles.cache_control), ``no-cache``: a person
    may correct a sheet, and a bearer's manifest carries a new link each
    time. Over GZIP_BYTES, gzipped for a client that accepts it."""
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    etag = '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": f"{cache_scope(request)}, no-cache",
               "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if len(body) > GZIP_BYTES and "gzip" in request.headers.get("accept-encoding", ""):
        body = gzip.compress(body, GZIP_LEVEL)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=build.PRESENTATION_TYPE, headers=headers)


async def _job_manifest(request: Request, job_id: str, link: str | None) -> Response:
    job_id, access = _check(request, job_id, link)
    job, cap = await _record(request, job_id, access)
    index = await _read_json(request, f"{job.tiles_prefix}sheets.json")
    urls = build.Urls(base_url(request), job.job_id, cap)
    return respond(request, build.manifest(job, index, urls))


@router.get("/jobs/{job_id}/manifest", summary="A job as an IIIF Presentation 3.0 manifest")
async def job_manifest(request: Request, job_id: str) -> Response:
    """The job's Manifest (JSON-LD, Presentation 3.0): a Canvas per page in
    page order (width and height: the page's full-resolution pixels; a
    video's frame and ``duration`` in seconds), labelled from the sheet
    index ("A-201 · Second floor plan", "Page N" without a number), with its
    thumbnail, its Image API 3.0 service (``{base}/iiif/3/cap/{link}/{job_id}-{n}``,
    level 2) or HLS rendition once the page is done (its overview before),
    its word boxes (``seeAlso``) and its callouts (``linking``
    annotations); a Range per discipline; the zip download
    (``rendering``) and Content Search 2.0 and 1.0 (``service``) once a PDF
    job has ended. Every id a client fetches carries a link minted for this
    answer. Bearer (viewer) or ``?cap=``. 404 for an unknown job or
    another org's."""
    return await _job_manifest(request, job_id, None)


@router.get("/cap/{link}/jobs/{job_id}/manifest",
            summary="A job's IIIF manifest, with a signed link")
async def job_manifest_cap(request: Request, link: str, job_id: str) -> Response:
    """As ``GET /iiif/3/jobs/{job_id}/manifest``, openable with no header:
    ``link`` is the job's signed link (``GET /v1/jobs/{id}/links``'s
    ``cap``, or the one in a manifest's ids), which its ids carry too. Read
    from the job's ``manifest.json``, so 409 (JOB_RUNNING) until the job
    has ended; 401 for a link not valid or expired; 404 for another job."""
    return await _job_manifest(request, job_id, link)


@router.get("/plans/{org}/{project}/{plan}/manifest",
            summary="A plan's current set as an IIIF Presentation 3.0 manifest")
async def plan_manifest(request: Request, org: str, project: str, plan: str) -> Response:
    """The manifest of the plan's current set (the newest complete job,
    the one its ``current.json`` names), shaped as ``GET
    /iiif/3/jobs/{job_id}/manifest``'s, its ``id`` this URL. Needs a
    bearer token with the viewer role in ``org``; 404 for another org's
    plan or one with no complete set yet."""
    job_id, _ = await _plan_job(request, f"{org}/{project}/{plan}")
    job_id, access = _check(request, job_id, None)
    job, cap = await _record(request, job_id, access)
    index = await _read_json(request, f"{job.tiles_prefix}sheets.json")
    urls = build.Urls(base_url(request), job.job_id, cap)
    plan_id = f"{base_url(request)}/iiif/3/plans/{org}/{project}/{plan}/manifest"
    return respond(request, build.manifest(job, index, urls, manifest_id=plan_id))


@router.get("/cap/{link}/jobs/{job_id}/callouts/{page}",
            summary="A page's callouts as an IIIF AnnotationPage")
async def callouts(request: Request, link: str, job_id: str, page: int) -> Response:
    """The AnnotationPage a manifest embeds in canvas ``page``'s
    ``annotations``: a ``linking`` annotation per callout on the page
    (target: its box, ``{canvas id}#xywh=``; body: the canvas of the sheet
    it names). Signed link in the path. 404 for a page with no callouts or
    a job with no sheet index (not a PDF, or not ended)."""
    place = await job_place(request, job_id, link)
    index = await _read_json(request, f"{place.tiles_prefix}sheets.json")
    sheets = {s["page"]: s for s in (index or {}).get("sheets", [])}
    labels = {n: build.canvas_label(n, s) for n, s in sheets.items()}
    doc = build.callout_page(build.Urls(base_url(request), job_id, link), page,
                             sheets.get(page), labels)
    if doc is None:
        raise NotFound(f"page {page} of job {job_id} has no callouts", reason="NOT_FOUND")
    return respond(request, {"@context": build.PRESENTATION_CONTEXT, **doc})
