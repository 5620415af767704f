"""Resumable uploads at ``/v1/uploads/``: tus 1.0.0 (https://tus.io/protocols/
resumable-upload) with the creation, creation-with-upload, termination and
expiration extensions: the routes. :mod:`services.gateway.tus` is the
protocol (headers, metadata), :mod:`services.gateway.uploads` keeps the
uploads themselves.

- ``POST /v1/uploads/`` creates an upload of ``Upload-Length`` bytes (1 to
  ``PLANZOOM_MAX_UPLOAD_BYTES``). ``Upload-Metadata`` (tus: ``key
  base64(value)`` pairs, comma-separated) names ``project`` and ``plan``
  (required), ``org`` (default: the caller's), ``filename``, ``filetype``
  (a video's content type lets it use the video size limit), and the job
  options ``dpi``, ``tile_size``, ``overlap``, ``jpeg_quality``, ``layout``
  (``files`` or ``archive``). Ingest's
  CreateUploadUrl checks the plan, the caller (uploader of that org) and
  the size, and names the object the file is assembled at.
- ``PATCH`` appends bytes at ``Upload-Offset``; a cut connection keeps every
  byte that arrived: ``HEAD`` tells the offset to resume from.
- On the last byte the gateway calls ``SubmitJob`` with the caller's token;
  the PATCH answers ``Planzoom-Job-Id`` and ``GET /v1/uploads/{id}`` tells
  the job (or why ingest refused the file).
- ``DELETE`` ends an upload and drops its bytes (a job already made runs on).
- An upload not finished ``PLANZOOM_GATEWAY_UPLOAD_EXPIRY_SECONDS`` after
  its creation (``Upload-Expires``) is gone (410) and cleaned up.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from planzoom.errors import InvalidInput, reason_name
from services.gateway.problems import Problem
from services.gateway.tus import (
    EXTENSIONS,
    OFFSET_TYPE,
    TUS_VERSION,
    check_version,
    length_header,
    parse_metadata,
    state_headers,
    tus_headers,
)
from services.gateway.uploads import Uploads

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


def _uploads(request: Request) -> Uploads:
    return request.app.state.gateway.uploads


@router.options("/", include_in_schema=False)
async def discover(request: Request) -> Response:
    """tus discovery: the version, extensions and largest upload served."""
    settings = request.app.state.gateway.settings
    return Response(status_code=204, headers=tus_headers(**{
        "Tus-Version": TUS_VERSION, "Tus-Extension": EXTENSIONS,
        "Tus-Max-Size": str(settings.largest_upload_bytes)}))


@router.post("/", status_code=201, responses={201: {"description": "Created; Location names "
                                                      "the upload"}})
async def create_upload(request: Request) -> Response:
    """Create a tus upload (creation, creation-with-upload).

    Headers: ``Tus-Resumable: 1.0.0``, ``Upload-Length`` (bytes, 1 to the
    upload limit), ``Upload-Metadata`` (see the module); a body of type
    ``application/offset+octet-stream`` is the upload's first bytes. Needs
    the uploader role in the plan's org. Answers 201 with ``Location``,
    ``Upload-Expires`` and (with a body) ``Upload-Offset``. Errors: 400
    metadata or options, 401/403, 412 version, 413 over the limit (with
    ``Tus-Max-Size``), 415 a body of another type."""
    check_version(request)
    gateway = request.app.state.gateway
    access = gateway.gatekeeper.check(request, "uploader")
    if request.headers.get("upload-defer-length"):
        raise InvalidInput("Upload-Defer-Length is not supported: send Upload-Length",
                           field="Upload-Length")
    length = length_header(request, "Upload-Length")
    if not length:
        raise InvalidInput("Upload-Length (bytes, at least 1) is required", field="Upload-Length")
    meta = parse_metadata(request.headers.get("upload-metadata", ""))
    video = meta.get("filetype", "").startswith("video/")
    limit = gateway.settings.max_video_bytes if video else gateway.settings.max_upload_bytes
    if length > limit:
        raise Problem(413, f"Upload-Length {length:,} is over the limit of {limit:,} bytes"
                      + ("" if video else " (a video, with filetype video/..., may be larger)"
                         if gateway.settings.max_video_bytes > limit else ""),
                      "UPLOAD_TOO_LARGE", tus_headers(**{"Tus-Max-Size": str(limit)}))
    has_body = (length_header(request, "Content-Length") or 0) > 0 or \
        "chunked" in request.headers.get("transfer-encoding", "")
    if has_body and request.headers.get("content-type") != OFFSET_TYPE:
        raise Problem(415, f"an upload's bytes are sent as {OFFSET_TYPE}",
                      "UNSUPPORTED_MEDIA_TYPE", tus_headers())
    uploads = _uploads(request)
    upload = await uploads.create(access, length, meta)
    if has_body:
        upload = await uploads.append(access, upload.upload_id, 0, request.stream())
    headers = state_headers(upload)
    if not has_body:
        headers.pop("Upload-Offset")
    headers.pop("Upload-Length")
    headers["Location"] = str(request.url_for("upload_status", upload_id=upload.upload_id))
    return Response(status_code=201, headers=headers)


@router.head("/{upload_id}", include_in_schema=False)
async def upload_offset(upload_id: str, request: Request) -> Response:
    """tus HEAD: ``Upload-Offset`` (bytes kept), ``Upload-Length``,
    ``Upload-Expires``, and ``Planzoom-Job-Id`` once submitted."""
    check_version(request)
    access = request.app.state.gateway.gatekeeper.check(request, "viewer")
    upload, _ = await _uploads(request).load(access, upload_id)
    return Response(status_code=200, headers=state_headers(upload))


@router.patch("/{upload_id}", status_code=204)
async def append_bytes(upload_id: str, request: Request) -> Response:
    """Append bytes (tus core). Headers: ``Tus-Resumable``,
    ``Upload-Offset`` (must equal the upload's offset), ``Content-Type:
    application/offset+octet-stream``. Answers 204 with the new
    ``Upload-Offset``; after the last byte also ``Planzoom-Job-Id``. Errors:
    409 wrong offset, 410 expired, 413 past the length, 415, 423 another
    request is writing it, and SubmitJob's refusals (e.g. 400 not a PDF)."""
    check_version(request)
    access = request.app.state.gateway.gatekeeper.check(request, "uploader")
    if request.headers.get("content-type") != OFFSET_TYPE:
        raise Problem(415, f"send the bytes as {OFFSET_TYPE}", "UNSUPPORTED_MEDIA_TYPE",
                      tus_headers())
    offset = length_header(request, "Upload-Offset")
    if offset is None:
        raise InvalidInput("Upload-Offset is required", field="Upload-Offset")
    upload = await _uploads(request).append(access, upload_id, offset, request.stream())
    headers = state_headers(upload)
    headers.pop("Upload-Length")
    return Response(status_code=204, headers=headers)


@router.delete("/{upload_id}", status_code=204)
async def terminate_upload(upload_id: str, request: Request) -> Response:
    """End an upload and drop its bytes (tus termination); 204. A job it
    already made is not affected."""
    check_version(request)
    access = request.app.state.gateway.gatekeeper.check(request, "uploader")
    await _uploads(request).terminate(access, upload_id)
    return Response(status_code=204, headers=tus_headers())


@router.get("/{upload_id}", name="upload_status")
async def upload_status(upload_id: str, request: Request) -> dict:
    """An upload's state as JSON: ``upload_id``, ``offset`` and ``length``
    (bytes), ``expires_at`` (RFC 3339), ``plan``, ``filename``, and once
    the last byte came ``job_id`` with its ``job_url`` and ``view_url``, or
    ``error`` and ``reason`` if ingest refused the file."""
    access = request.app.state.gateway.gatekeeper.check(request, "viewer")
    upload, _ = await _uploads(request).load(access, upload_id)
    body = {"upload_id": upload.upload_id, "offset": upload.offset, "length": upload.length,
            "expires_at": upload.expires_at.ToJsonString(), "filename": upload.filename,
            "plan": {"org": upload.plan.org, "project": upload.plan.project,
                     "plan": upload.plan.plan}}
    if upload.job_id:
        body.update(job_id=upload.job_id,
                    job_url=str(request.url_for("get_job", job_id=upload.job_id)),
                    view_url=str(request.url_for("view", job_id=upload.job_id)))
    if upload.error:
        body.update(error=upload.error, reason=reason_name(upload.reason))
    return body
