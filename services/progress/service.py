"""ProgressService and the progress-event consumer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import grpc
from google.protobuf import json_format
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.kv import KV_DEL, KV_PURGE

from planzoom import errors, keys, messaging
from planzoom.config import Settings, get_settings
from planzoom.errors import RequestError, invalid
from planzoom.ids import InvalidId, check_id
from planzoom.jobstore import Conflict, JobNotFound, JobStore, is_terminal, job_key
from planzoom.logs import setup_logging
from planzoom.server import Service, serve
from planzoom.storage import ObjectStore
from planzoom.v1 import jobs_pb2, progress_pb2, progress_pb2_grpc
from services.progress.fold import apply_event

log = logging.getLogger(__name__)

FETCH_BATCH = 100
CAS_RETRIES = 20


def manifest_json(job: jobs_pb2.Job) -> bytes:
    """The job record as ``manifest.json`` (protobuf JSON mapping, field
    names as in jobs.proto, every field printed)."""
    record = jobs_pb2.Job()
    record.CopyFrom(job)
    record.ClearField("revision")
    return json_format.MessageToJson(
        record, preserving_proto_field_name=True, always_print_fields_with_no_presence=True,
        indent=2,
    ).encode()


def not_found(job_id: str) -> RequestError:
    return RequestError(grpc.StatusCode.NOT_FOUND, f"no job with id {job_id!r}",
                        reason="JOB_NOT_FOUND")


class Progress(Service, progress_pb2_grpc.ProgressServiceServicer):
    name = "progress"

    def __init__(self, settings: Settings):
        self.s = settings
        self.store = ObjectStore(settings)
        self._stopping = asyncio.Event()

    def register(self, server):
        progress_pb2_grpc.add_ProgressServiceServicer_to_server(self, server)
        return [progress_pb2.DESCRIPTOR.services_by_name["ProgressService"].full_name]

    async def start(self) -> None:
        if self.s.s3_create_bucket:
            await asyncio.to_thread(self.store.ensure_bucket)
        self.nc = await messaging.connect(self.s, self.name)
        self.js = self.nc.jetstream()
        self.kv = await messaging.ensure_jetstream(self.js, self.s)
        self.jobs = JobStore(self.kv)
        self._sub = await self.js.pull_subscribe_bind(
            durable=messaging.PROGRESS_CONSUMER, stream=messaging.PROGRESS_STREAM
        )
        self._consumer = asyncio.create_task(self._consume(self._sub))

    async def stop(self, grace: float) -> None:
        self._stopping.set()
        # The batch in hand is finished (acked) before the consumer stops.
        done, _ = await asyncio.wait({self._consumer}, timeout=grace)
        if not done:
            self._consumer.cancel()
        # A pull subscription's drain waits for fetched messages nobody
        # will take now; unsubscribing first lets the drain finish.
        await self._sub.unsubscribe()
        await messaging.close(self.nc)

    # -- event consumer -----------------------------------------------------

    async def _consume(self, sub) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(FETCH_BATCH, timeout=1)
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as e:
                log.warning("progress fetch failed: %s", e)
                await asyncio.sleep(1)
                continue
            for msg in msgs:
                try:
                    ev = jobs_pb2.ProgressEvent.FromString(msg.data)
                    await self._apply(ev)
                except (ValueError, JobNotFound) as e:
                    # Not retryable: keep it in the stream (limits retention)
                    # for inspection, and say so.
                    log.error("dropping progress event %s: %s", msg.subject, e)
                    await msg.term()
                except Exception:
                    log.exception("progress event %s failed; will be redelivered", msg.subject)
                    await msg.nak(delay=2)
                else:
                    await msg.ack()

    async def _apply(self, ev: jobs_pb2.ProgressEvent) -> None:
        for _ in range(CAS_RETRIES):
            job = await self.jobs.get(ev.job_id)
            if not apply_event(job, ev):
                return
            if is_terminal(job):
                # Outputs first: a terminal record in KV means they are there.
                await self._finish(job)
            try:
                await self.jobs.update(job)
                if is_terminal(job):
                    log.info("job ended", extra={
                        "job_id": job.job_id, "state": jobs_pb2.JobState.Name(job.state),
                        "pages": job.total_pages, "failed": job.failed_pages})
                return
            except Conflict:
                continue
        raise Conflict(ev.job_id)

    async def _finish(self, job: jobs_pb2.Job) -> None:
        """Write manifest.json, point current.json at a complete job, delete
        work/<job>/. Idempotent: a crash before the record is updated is
        repaired by the redelivered event."""
        await asyncio.to_thread(self.store.put_bytes, job.manifest_key, manifest_json(job),
                                "application/json")
        if job.state == jobs_pb2.JOB_STATE_COMPLETE:
            await asyncio.to_thread(self._update_current, job)
        await asyncio.to_thread(self.store.delete_prefix, keys.work_prefix(job.job_id))

    def _update_current(self, job: jobs_pb2.Job) -> None:
        key = keys.current_key(job.plan)
        try:
            current = json.loads(self.store.get_bytes(key))
            if current.get("job_id", "") > job.job_id:  # ids sort by creation time
                return
        except self.store.client.exceptions.NoSuchKey:
            pass
        doc = {
            "job_id": job.job_id,
            "manifest_key": job.manifest_key,
            "tiles_prefix": job.tiles_prefix,
            "total_pages": job.total_pages,
            "dzi_keys": [p.dzi_key for p in job.pages],
            "finished_at": json_format.MessageToJson(job.finished_at).strip('"'),
        }
        self.store.put_bytes(key, json.dumps(doc, indent=2).encode(), "application/json")

    # -- RPCs ---------------------------------------------------------------

    async def GetJob(self, request, context):
        try:
            check_id("job_id", request.job_id)
            return await self.jobs.get(request.job_id)
        except InvalidId as e:
            await errors.abort(context, invalid(str(e), field="job_id"))
        except JobNotFound:
            await errors.abort(context, not_found(request.job_id))

    async def ListJobs(self, request, context):
        try:
            for field in ("org", "project", "plan"):
                check_id(field, getattr(request.plan, field))
        except InvalidId as e:
            await errors.abort(context, invalid(str(e), field=f"plan.{e.field}"))
        limit = min(request.page_size or 50, 500)
        return progress_pb2.ListJobsResponse(jobs=await self.jobs.list_for_plan(request.plan,
                                                                                limit))

    async def WatchJob(self, request, context):
        try:
            check_id("job_id", request.job_id)
            await self.jobs.get(request.job_id)
        except InvalidId as e:
            await errors.abort(context, invalid(str(e), field="job_id"))
        except JobNotFound:
            await errors.abort(context, not_found(request.job_id))
        # The record exists, so the watcher delivers it first, then each change.
        watcher = await self.kv.watch(job_key(request.job_id))
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=30)
                except NatsTimeoutError:
                    continue
                if entry is None:  # "initial values delivered" marker
                    continue
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    await errors.abort(context, not_found(request.job_id))
                job = jobs_pb2.Job.FromString(entry.value)
                job.revision = entry.revision
                yield job
                if is_terminal(job):
                    return
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()


def main() -> None:
    settings = get_settings()
    setup_logging("progress", settings.log_level)
    asyncio.run(serve(Progress(settings), settings.progress_addr, settings.grpc_grace_seconds))
