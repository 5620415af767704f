"""tus uploads (:mod:`services.gateway.tus` is the protocol): their state in
KV, their bytes in S3.

Bytes go to an S3 multipart upload in parts of
``PLANZOOM_GATEWAY_UPLOAD_PART_BYTES``; bytes short of a part are kept as one
S3 object (``tus/<id>.pending``) between requests, so the gateway's disk
holds nothing and its memory one part per PATCH in flight
(``PLANZOOM_GATEWAY_MAX_CONCURRENT_PATCHES`` at once, beyond that 503). On
the last byte the parts are joined and ``SubmitJob`` runs with the caller's
token.

State is one KV entry per upload (``tus.<id>``, a TusUpload), changed only
by compare-and-set. A PATCH holds a lease on it (renewed as it goes) so that
two requests never write one upload: the second gets 423 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from nats.js.errors import KeyWrongLastSequenceError
from starlette.requests import ClientDisconnect

from planzoom import keys
from planzoom.config import Settings
from planzoom.errors import NotFound, reason_code
from planzoom.options import resolve_options
from planzoom.slots import PatchesBusy, Slots
from planzoom.storage import ObjectStore
from planzoom.v1 import events_pb2
from services.gateway.access import Access
from services.gateway.bus import Bus
from services.gateway.problems import Problem, rpc_reason
from services.gateway.tus import (
    http_date,
    job_request,
    seconds_of,
    timestamp,
    tus_headers,
)
from services.gateway.upstream import Upstream

log = logging.getLogger(__name__)

PDF_TYPE = "application/pdf"
#: Seconds a PATCH holds its upload without renewing; a gateway that died
#: mid-PATCH blocks the upload this long at most.
LEASE_SECONDS = 60.0
#: Seconds between two sweeps for expired uploads (at most; sooner when
#: uploads expire sooner).
CLEAN_SECONDS = 60.0


@dataclass
class Held:
    """An upload as last saved, and its KV revision."""

    upload: events_pb2.TusUpload
    revision: int


async def _until_idle(body: AsyncIterator[bytes], seconds: float) -> AsyncIterator[bytes]:
    """``body``'s chunks until it ends, or sends nothing for ``seconds``
    (then as if the client had gone: what arrived is kept, and the request's
    slot is free for one whose bytes flow)."""
    chunks = aiter(body)
    while True:
        try:
            chunk = await asyncio.wait_for(anext(chunks), seconds)
        except StopAsyncIteration:
            return
        except TimeoutError:
            log.info("upload request silent for %g s; cut", seconds)
            raise ClientDisconnect() from None
        yield chunk


class Uploads:
    """tus uploads: their state in KV, their bytes in S3."""

    def __init__(self, settings: Settings, bus: Bus, store: ObjectStore, upstream: Upstream):
        self.s, self.bus, self.store, self.upstream = settings, bus, store, upstream
        self.part_bytes = settings.gateway_upload_part_bytes
        # One org's requests hold at most its share of the PATCH slots: its
        # trickling uploads cannot take every slot from the other orgs.
        self.slots = Slots("upload requests", PatchesBusy,
                           settings.gateway_max_concurrent_patches,
                           settings.gateway_max_concurrent_patches_per_org, settings=(
                               "GATEWAY_MAX_CONCURRENT_PATCHES",
                               "GATEWAY_MAX_CONCURRENT_PATCHES_PER_ORG", ""))

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
        if not upload.job_id and seconds_of(upload.expires_at) < time.time():
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
            created_at=timestamp(now),
            expires_at=timestamp(now + self.s.gateway_upload_expiry_seconds),
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
        if upload.lease and seconds_of(upload.lease_until) > time.time():
            wait = max(1, round(seconds_of(upload.lease_until) - time.time()))
            raise Problem(423, "another request is writing to this upload; try again when it "
                          "has ended", "UPLOAD_LOCKED", tus_headers(**{"Retry-After": str(wait)}))
        if offset != upload.offset:
            raise Problem(409, f"Upload-Offset is {offset} but the upload has {upload.offset} "
                          "bytes; resume from there", "OFFSET_MISMATCH",
                          tus_headers(**{"Upload-Offset": str(upload.offset)}))
        refusal = None
        with self.slots.hold(access.caller.org):
            upload.lease = secrets.token_hex(8)
            upload.lease_until.CopyFrom(timestamp(time.time() + LEASE_SECONDS))
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
            async for chunk in _until_idle(body, self.s.gateway_patch_idle_seconds):
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
                    upload.lease_until.CopyFrom(timestamp(time.time() + LEASE_SECONDS))
                    await self._save(held)
                    renewed = time.monotonic()
                if time.monotonic() - renewed > LEASE_SECONDS / 3:
                    upload.lease_until.CopyFrom(timestamp(time.time() + LEASE_SECONDS))
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
            if seconds_of(upload.expires_at) > now or seconds_of(upload.lease_until) > now:
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
