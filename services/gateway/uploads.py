"""Resumable uploads at ``/v1/uploads/``: tus 1.0.0 (https://tus.io/protocols/
resumable-upload) with the creation, creation-with-upload, termination and
expiration extensions.

- ``POST /v1/uploads/`` creates an upload of ``Upload-Length`` bytes (1 to
  ``PLANZOOM_MAX_UPLOAD_BYTES``). ``Upload-Metadata`` (tus: ``key
  base64(value)`` pairs, comma-separated) names ``project`` and ``plan``
  (required), ``org`` (default: the caller's), ``filename``, ``filetype``
  (a video's content type lets it use the video size limit), and the job
  options ``dpi``, ``tile_size``, ``overlap``, ``jpeg_quality``. Ingest's
  CreateUploadUrl checks the plan, the caller (uploader of that org) and
  the size, and names the object the file is assembled at.
- ``PATCH`` appends bytes at ``Upload-Offset``. They go to an S3 multipart
  upload in parts of ``PLANZOOM_GATEWAY_UPLOAD_PART_BYTES``; bytes short of
  a part are kept as one S3 object (``tus/<id>.pending``) between requests,
  so the gateway's disk holds nothing and its memory one part per PATCH in
  flight (``PLANZOOM_GATEWAY_MAX_CONCURRENT_PATCHES`` at once, beyond that
  503). A cut connection keeps every byte that arrived: ``HEAD`` tells the
  offset to resume from.
- On the last byte the parts are joined and the gateway calls ``SubmitJob``
  with the caller's token; the PATCH answers ``Planzoom-Job-Id`` and
  ``GET /v1/uploads/{id}`` tells the job (or why ingest refused the file).
- ``DELETE`` ends an upload and drops its bytes (a job already made runs on).
- An upload not finished ``PLANZOOM_GATEWAY_UPLOAD_EXPIRY_SECONDS`` after
  its creation (``Upload-Expires``) is gone (410) and cleaned up.

State is one KV entry per upload (``tus.<id>``, a TusUpload), changed only
by compare-and-set. A PATCH holds a lease on it (renewed as it goes) so that
two requests never write one upload: the second gets 423 with Retry-After.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from fastapi import APIRouter, Request, Response
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js.errors import KeyWrongLastSequenceError
from starlette.requests import ClientDisconnect

from planzoom import keys
from planzoom.config import Settings
from planzoom.errors import InvalidInput, NotFound, Unavailable, reason_code, reason_name
from planzoom.options import resolve_options
from planzoom.storage import ObjectStore
from planzoom.v1 import events_pb2, jobs_pb2
from services.gateway.access import Access
from services.gateway.bus import Bus
from services.gateway.problems import Problem, rpc_reason
from services.gateway.upstream import Upstream

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,expiration"
OFFSET_TYPE = "application/offset+octet-stream"
PDF_TYPE = "application/pdf"
#: Seconds a PATCH holds its upload without renewing; a gateway that died
#: mid-PATCH blocks the upload this long at most.
LEASE_SECONDS = 60.0
#: Seconds between two sweeps for expired uploads (at most; sooner when
#: uploads expire sooner).
CLEAN_SECONDS = 60.0
#: Job options an upload's metadata may set, and their types.
OPTION_FIELDS = {"dpi": float, "tile_size": int, "overlap": int, "jpeg_quality": int}
METADATA_KEYS = {"org", "project", "plan", "filename", "filetype", *OPTION_FIELDS}


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _seconds(ts: Timestamp) -> float:
    return ts.ToNanoseconds() / 1e9


def http_date(ts: Timestamp) -> str:
    """An RFC 9110 HTTP-date, as tus's Upload-Expires wants."""
    return email.utils.formatdate(_seconds(ts), usegmt=True)


def parse_metadata(header: str) -> dict[str, str]:
    """tus Upload-Metadata: ``key base64value`` pairs separated by commas
    (a value may be absent). Raises InvalidInput for a malformed header, a
    key given twice, or a value that is not base64 of UTF-8 text."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in header.split(","))):
        key, _, value = item.partition(" ")
        if not key or " " in value.strip() or key in pairs:
            raise InvalidInput(f"Upload-Metadata has a malformed or repeated pair {item!r}",
                               field="Upload-Metadata")
        try:
            pairs[key] = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidInput(f"Upload-Metadata value of {key!r} is not base64 of UTF-8 text",
                               field="Upload-Metadata") from None
    return pairs


def job_request(meta: dict[str, str], caller_org: str
                ) -> tuple[jobs_pb2.PlanRef, jobs_pb2.JobOptions, str]:
    """The plan, job options and file name an upload's metadata names.
    Raises InvalidInput for unknown keys, a missing project or plan, or an
    option that is not a number in its range."""
    unknown = sorted(set(meta) - METADATA_KEYS)
    if unknown:
        raise InvalidInput(f"Upload-Metadata has unknown keys {unknown}; known: "
                           f"{sorted(METADATA_KEYS)}", field="Upload-Metadata")
    if not meta.get("project") or not meta.get("plan"):
        raise InvalidInput("Upload-Metadata must name the project and the plan",
                           field="Upload-Metadata")
    plan = jobs_pb2.PlanRef(org=meta.get("org") or caller_org, project=meta["project"],
                            plan=meta["plan"])
    options = jobs_pb2.JobOptions()
    for name, kind in OPTION_FIELDS.items():
        if name in meta:
            try:
                setattr(options, name, kind(meta[name]))
            except ValueError:
                raise InvalidInput(f"option {name} must be a number, not {meta[name]!r}",
                                   field=f"options.{name}") from None
    return plan, options, meta.get("filename", "")[:255]


def tus_headers(**extra: str) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **extra}


@dataclass
class Held:
    """An upload as last saved, and its KV revision."""

    upload: events_pb2.TusUpload
    revision: int


class Uploads:
    """tus uploads: their state in KV, their bytes in S3."""

    def __init__(self, settings: Settings, bus: Bus, store: ObjectStore, upstream: Upstream):
        self.s, self.bus, self.store, self.upstream = settings, bus, store, upstream
        self.part_bytes = settings.gateway_upload_part_bytes
        self.slots = asyncio.Semaphore(settings.gateway_max_concurrent_patches)

    @staticmethod
    def key(upload_id: str) -> str:
        return f"tus.{upload_id}"

    async def load(self, access: Access, upload_id: str) -> tuple[events_pb2.TusUpload, int]:
        """The caller's upload and its KV revision. NotFound (404) for an
        unknown id or another org's upload; 410 once it has expired."""
        got = None
        if keys.UPLOAD_ID.fullmatch(upload_id):
            got = await self.bus.get(self.key(upload_id), events_pb2.TusUpload)
        if got is None or got[0].plan.org != access.caller.org:
            raise NotFound(f"no upload {upload_id}", reason="UPLOAD_NOT_FOUND")
        upload, _ = got
        if not upload.job_id and _seconds(upload.expires_at) < time.time():
            raise Problem(410, f"upload {upload_id} expired at {http_date(upload.expires_at)}; "
                          "start a new one", "UPLOAD_EXPIRED", tus_headers())
        return got

    async def _save(self, held: Held) -> None:
        """Write ``held.upload`` over revision ``held.revision`` (409 if it
        changed meanwhile) and keep the new revision."""
        try:
            held.revision = await self.bus.kv.update(
                self.key(held.upload.upload_id), held.upload.SerializeToString(),
                last=held.revision)
        except KeyWrongLastSequenceError:
            raise Problem(409, "the upload was changed by another request meanwhile; HEAD it "
                          "for its offset and resume", "UPLOAD_CONFLICT", tus_headers()) from None

    async def create(self, access: Access, length: int, meta: dict[str, str]
                     ) -> events_pb2.TusUpload:
        """A new upload of ``length`` bytes (ingest names its object)."""
        plan, options, filename = job_request(meta, access.caller.org)
        resolve_options(options, self.s)  # refuse bad options now, not after a gigabyte
        # "filetype" (tus-js-client's and Uppy's name) sets the limit a video
        # gets; the bytes still decide what the file is.
        content_type = meta.get("filetype", "")
        content_type = content_type if content_type.startswith(("video/", "image/")) else ""
        object_key = await self.upstream.create_upload(access, plan, filename, length,
                                                       content_type)
        multipart_id = await asyncio.to_thread(self.store.start_multipart, object_key,
                                               content_type or PDF_TYPE)
        now = time.time()
        upload = events_pb2.TusUpload(
            upload_id=secrets.token_hex(16), plan=plan, options=options, filename=filename,
            length=length, object_key=object_key, multipart_id=multipart_id,
            created_at=_ts(now), expires_at=_ts(now + self.s.gateway_upload_expiry_seconds),
            subject=access.caller.subject)
        try:
            await self.bus.kv.create(self.key(upload.upload_id), upload.SerializeToString())
        except Exception:
            await asyncio.to_thread(self.store.abort_multipart, object_key, multipart_id)
            raise
        log.info("upload created", extra={"upload_id": upload.upload_id, "org": plan.org,
                                           "bytes": length})
        return upload

    async def append(self, access: Access, upload_id: str, offset: int,
                     body: AsyncIterator[bytes]) -> events_pb2.TusUpload:
        """Append ``body`` at ``offset`` (which must be the upload's offset:
        409 otherwise), holding the upload's lease. Every byte that arrives
        is kept, also when the client goes away mid-body. On the last byte
        the file is joined and submitted; a refusal of ingest is raised
        after it is recorded. A PATCH of no bytes at a complete upload's
        length submits it again if ingest could not be reached before."""
        held = Held(*await self.load(access, upload_id))
        upload = held.upload
        if upload.lease and _seconds(upload.lease_until) > time.time():
            wait = max(1, round(_seconds(upload.lease_until) - time.time()))
            raise Problem(423, "another request is writing to this upload; try again when it "
                          "has ended", "UPLOAD_LOCKED", tus_headers(**{"Retry-After": str(wait)}))
        if offset != upload.offset:
            raise Problem(409, f"Upload-Offset is {offset} but the upload has {upload.offset} "
                          "bytes; resume from there", "OFFSET_MISMATCH",
                          tus_headers(**{"Upload-Offset": str(upload.offset)}))
        if self.slots.locked():
            raise Unavailable("the gateway is taking as many upload requests as it can; try "
                              "again shortly", reason="UPLOADS_BUSY", retry_after=2.0)
        refusal = None
        async with self.slots:
            upload.lease = secrets.token_hex(8)
            upload.lease_until.CopyFrom(_ts(time.time() + LEASE_SECONDS))
            await self._save(held)
            try:
                if upload.offset < upload.length:
                    await self._write(held, body)
                else:
                    async for chunk in body:
                        if chunk:
                            raise Problem(413, "the upload is complete; no more bytes",
                                          "UPLOAD_TOO_LONG", tus_headers())
                if upload.offset == upload.length and not upload.job_id and not upload.error:
                    refusal = await self._submit(access, held)
            finally:
                with contextlib.suppress(Problem):
                    upload.lease = ""
                    upload.ClearField("lease_until")
                    await self._save(held)
        if refusal is not None:
            raise refusal
        return upload

    async def _write(self, held: Held, body: AsyncIterator[bytes]) -> None:
        """Stream ``body`` into parts, saving the upload after each."""
        upload = held.upload
        buffer = bytearray()
        if upload.pending_bytes:
            buffer += await asyncio.to_thread(self.store.get_bytes,
                                              keys.tus_pending_key(upload.upload_id))
            del buffer[upload.pending_bytes:]
        base = upload.offset - len(buffer)  # bytes already in parts
        renewed = time.monotonic()
        try:
            async for chunk in body:
                if base + len(buffer) + len(chunk) > upload.length:
                    raise Problem(413, f"more bytes than the upload's length ({upload.length})",
                                  "UPLOAD_TOO_LONG", tus_headers())
                buffer += chunk
                while len(buffer) >= self.part_bytes:
                    part, buffer = bytes(buffer[:self.part_bytes]), buffer[self.part_bytes:]
                    etag = await asyncio.to_thread(
                        self.store.put_part, upload.object_key, upload.multipart_id,
                        len(upload.part_etags) + 1, part)
                    upload.part_etags.append(etag)
                    base += len(part)
                    upload.offset, upload.pending_bytes = base, 0
                    upload.lease_until.CopyFrom(_ts(time.time() + LEASE_SECONDS))
                    await self._save(held)
                    renewed = time.monotonic()
                if time.monotonic() - renewed > LEASE_SECONDS / 3:
                    upload.lease_until.CopyFrom(_ts(time.time() + LEASE_SECONDS))
                    await self._save(held)
                    renewed = time.monotonic()
        except ClientDisconnect:
            log.info("upload request cut; keeping what arrived",
                     extra={"upload_id": upload.upload_id, "bytes": base + len(buffer)})
        pending_key = keys.tus_pending_key(upload.upload_id)
        if base + len(buffer) == upload.length:
            if buffer or not upload.part_etags:
                etag = await asyncio.to_thread(
                    self.store.put_part, upload.object_key, upload.multipart_id,
                    len(upload.part_etags) + 1, bytes(buffer))
                upload.part_etags.append(etag)
            await asyncio.to_thread(self.store.complete_multipart, upload.object_key,
                                    upload.multipart_id, list(upload.part_etags))
            upload.offset, upload.pending_bytes = upload.length, 0
            await self._save(held)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.delete, pending_key)
        elif base + len(buffer) != upload.offset:
            await asyncio.to_thread(self.store.put_bytes, pending_key, bytes(buffer),
                                    "application/octet-stream")
            upload.offset, upload.pending_bytes = base + len(buffer), len(buffer)
            await self._save(held)
        log.info("upload bytes kept", extra={"upload_id": upload.upload_id,
                                              "offset": upload.offset})

    async def _submit(self, access: Access, held: Held) -> grpc.aio.AioRpcError | None:
        """SubmitJob for a complete upload; its job id, or ingest's refusal,
        is kept. Returns the refusal. An unreachable ingest is raised as it
        is: the upload stays complete without a job, to be submitted again."""
        upload = held.upload
        try:
            reply = await self.upstream.submit_job(access, upload.plan, upload.options,
                                                   upload.object_key, upload.filename)
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            upload.error = e.details() or e.code().name
            upload.reason = reason_code(rpc_reason(e)[0])
            await self._save(held)
            return e
        upload.job_id = reply.job_id
        await self._save(held)
        log.info("upload submitted", extra={"upload_id": upload.upload_id,
                                             "job_id": reply.job_id})
        return None

    async def terminate(self, access: Access, upload_id: str) -> None:
        """End an upload and drop its bytes (tus termination)."""
        upload, revision = await self.load(access, upload_id)
        await self._drop(upload)
        await self.bus.kv.delete(self.key(upload_id), last=revision)

    async def _drop(self, upload: events_pb2.TusUpload) -> None:
        if not upload.job_id and upload.offset < upload.length:
            await asyncio.to_thread(self.store.abort_multipart, upload.object_key,
                                    upload.multipart_id)
        elif not upload.job_id:  # joined but never taken by ingest
            await asyncio.to_thread(self.store.delete, upload.object_key)
        await asyncio.to_thread(self.store.delete, keys.tus_pending_key(upload.upload_id))

    async def clean(self) -> int:
        """Remove expired uploads (their parts, pending bytes and state);
        returns how many. Safe to run on every replica at once."""
        removed = 0
        for upload in await self.bus.values("tus.*", events_pb2.TusUpload, limit=100_000):
            now = time.time()
            if _seconds(upload.expires_at) > now or _seconds(upload.lease_until) > now:
                continue
            got = await self.bus.get(self.key(upload.upload_id), events_pb2.TusUpload)
            if got is None:
                continue
            try:
                await self._drop(got[0])
                await self.bus.kv.delete(self.key(upload.upload_id), last=got[1])
                removed += 1
            except Exception as e:  # changed meanwhile, or S3 away: next sweep
                log.warning("could not remove expired upload %s: %s", upload.upload_id, e)
        if removed:
            log.info("expired uploads removed", extra={"count": removed})
        return removed

    async def clean_forever(self) -> None:
        while True:
            await asyncio.sleep(min(CLEAN_SECONDS, self.s.gateway_upload_expiry_seconds))
            try:
                await self.clean()
            except Exception:
                log.exception("the sweep for expired uploads failed")


def _uploads(request: Request) -> Uploads:
    return request.app.state.gateway.uploads


def _check_version(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise Problem(412, f"send 'Tus-Resumable: {TUS_VERSION}' (the only version served)",
                      "TUS_VERSION", tus_headers(**{"Tus-Version": TUS_VERSION}))


def _length_header(request: Request, name: str) -> int | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidInput(f"{name} must be a non-negative integer", field=name)
    return int(value)


def _state_headers(upload: events_pb2.TusUpload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.offset), "Upload-Length": str(upload.length),
               "Upload-Expires": http_date(upload.expires_at)}
    if upload.job_id:
        headers["Planzoom-Job-Id"] = upload.job_id
    return tus_headers(**headers)


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
    _check_version(request)
    gateway = request.app.state.gateway
    access = gateway.gatekeeper.check(request, "uploader")
    if request.headers.get("upload-defer-length"):
        raise InvalidInput("Upload-Defer-Length is not supported: send Upload-Length",
                           field="Upload-Length")
    length = _length_header(request, "Upload-Length")
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
    has_body = (_length_header(request, "Content-Length") or 0) > 0 or \
        "chunked" in request.headers.get("transfer-encoding", "")
    if has_body and request.headers.get("content-type") != OFFSET_TYPE:
        raise Problem(415, f"an upload's bytes are sent as {OFFSET_TYPE}",
                      "UNSUPPORTED_MEDIA_TYPE", tus_headers())
    uploads = _uploads(request)
    upload = await uploads.create(access, length, meta)
    if has_body:
        upload = await uploads.append(access, upload.upload_id, 0, request.stream())
    headers = _state_headers(upload)
    if not has_body:
        headers.pop("Upload-Offset")
    headers.pop("Upload-Length")
    headers["Location"] = str(request.url_for("upload_status", upload_id=upload.upload_id))
    return Response(status_code=201, headers=headers)


@router.head("/{upload_id}", include_in_schema=False)
async def upload_offset(upload_id: str, request: Request) -> Response:
    """tus HEAD: ``Upload-Offset`` (bytes kept), ``Upload-Length``,
    ``Upload-Expires``, and ``Planzoom-Job-Id`` once submitted."""
    _check_version(request)
    access = request.app.state.gateway.gatekeeper.check(request, "viewer")
    upload, _ = await _uploads(request).load(access, upload_id)
    return Response(status_code=200, headers=_state_headers(upload))


@router.patch("/{upload_id}", status_code=204)
async def append_bytes(upload_id: str, request: Request) -> Response:
    """Append bytes (tus core). Headers: ``Tus-Resumable``,
    ``Upload-Offset`` (must equal the upload's offset), ``Content-Type:
    application/offset+octet-stream``. Answers 204 with the new
    ``Upload-Offset``; after the last byte also ``Planzoom-Job-Id``. Errors:
    409 wrong offset, 410 expired, 413 past the length, 415, 423 another
    request is writing it, and SubmitJob's refusals (e.g. 400 not a PDF)."""
    _check_version(request)
    access = request.app.state.gateway.gatekeeper.check(request, "uploader")
    if request.headers.get("content-type") != OFFSET_TYPE:
        raise Problem(415, f"send the bytes as {OFFSET_TYPE}", "UNSUPPORTED_MEDIA_TYPE",
                      tus_headers())
    offset = _length_header(request, "Upload-Offset")
    if offset is None:
        raise InvalidInput("Upload-Offset is required", field="Upload-Offset")
    upload = await _uploads(request).append(access, upload_id, offset, request.stream())
    headers = _state_headers(upload)
    headers.pop("Upload-Length")
    return Response(status_code=204, headers=headers)


@router.delete("/{upload_id}", status_code=204)
async def terminate_upload(upload_id: str, request: Request) -> Response:
    """End an upload and drop its bytes (tus termination); 204. A job it
    already made is not affected."""
    _check_version(request)
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

