"""ProgressService and the progress-event consumer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

import grpc
from google.protobuf import json_format
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError

from planzoom import errors, keys, messaging, metrics
from planzoom.backend import BackedService
from planzoom.clock import now_ts
from planzoom.config import Settings, get_settings
from planzoom.dzi import done_record, parse_dzi
from planzoom.errors import RequestError, check_plan, invalid, job_not_found
from planzoom.ids import InvalidId, check_id
from planzoom.jobstore import Conflict, JobNotFound, is_terminal
from planzoom.logs import setup_logging
from planzoom.server import serve
from planzoom.v1 import jobs_pb2, progress_pb2, progress_pb2_grpc
from services.progress.feeds import JobFeeds
from services.progress.fold import apply_event, pages_ended, settle

log = logging.getLogger(__name__)

#: Events are fetched one at a time. nats-py 2.16's ``fetch(n)`` with n > 1
#: sometimes holds a message it already has until its pull request expires
#: (nats-io/nats.py#933 describes one way this happens): 150 events published
#: at random intervals reached a ``fetch(100, timeout=1)`` loop with a p99 of
#: 586 ms (max 689 ms), and a ``fetch(1)`` loop with a p99 of 5.5 ms. One
#: round trip per event is cheap next to what folding an event costs.
FETCH_BATCH = 1
CAS_RETRIES = 20
#: A job's PENDING pages are published again by the sweep up to this long
#: after its creation: the render stream's duplicate window less 3 minutes
#: (clock skew between hosts, one sweep period).
REPUBLISH_WITHIN_SECONDS = messaging.DUPLICATE_WINDOW_SECONDS - 180


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


class Progress(BackedService, progress_pb2_grpc.ProgressServiceServicer):
    name = "progress"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self._stopping = asyncio.Event()

    def register(self, server):
        progress_pb2_grpc.add_ProgressServiceServicer_to_server(self, server)
        return [progress_pb2.DESCRIPTOR.services_by_name["ProgressService"].full_name]

    async def start(self) -> None:
        await self.connect()
        self.feeds = JobFeeds(self.kv, self.jobs)
        self._subs = [
            await self.js.pull_subscribe_bind(durable=durable, stream=stream)
            for stream, durable in (
                (messaging.PROGRESS_STREAM, messaging.PROGRESS_CONSUMER),
                (messaging.ADVISORY_STREAM, messaging.ADVISORY_CONSUMER),
            )
        ]
        self._tasks = [
            asyncio.create_task(self._consume(self._subs[0], self._on_event)),
            asyncio.create_task(self._consume(self._subs[1], self._on_advisory)),
            asyncio.create_task(self._sweep_forever()),
        ]

    async def stop(self, grace: float) -> None:
        # Consumers stop fetching; open WatchJob streams end with UNAVAILABLE
        # and clients reconnect.
        self._stopping.set()
        self.feeds.close()
        # The events in hand are finished (acked) before the consumers stop.
        _, pending = await asyncio.wait(self._tasks[:2], timeout=grace)
        for task in [*pending, self._tasks[2]]:
            task.cancel()
        # A pull subscription's drain waits for fetched messages nobody
        # will take now; unsubscribing first lets the drain finish.
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        await self.disconnect()

    # -- consumers ----------------------------------------------------------

    async def _consume(self, sub, handle) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(FETCH_BATCH, timeout=1)
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as e:
                log.warning("fetch failed: %s", e)
                await asyncio.sleep(1)
                continue
            for msg in msgs:
                try:
                    await handle(msg.data)
                except (ValueError, JobNotFound) as e:
                    # Not retryable: the message stays in its stream for
                    # inspection, and the log says why it was not applied.
                    log.error("not applying %s: %s", msg.subject, e)
                    await msg.term()
                except Exception:
                    log.exception("%s failed; will be redelivered", msg.subject)
                    await msg.nak(delay=2)
                else:
                    await msg.ack()

    async def _on_event(self, data: bytes) -> None:
        ev = jobs_pb2.ProgressEvent.FromString(data)
        await self._mutate(ev.job_id, lambda job: apply_event(job, ev))
        if ev.HasField("emitted_at"):
            metrics.UPDATE_LAG.observe(max(0.0, time.time() - ev.emitted_at.ToNanoseconds() / 1e9))

    async def _on_advisory(self, data: bytes) -> None:
        """A page job exhausted its deliveries without a worker recording the
        failure (each worker died or stopped): dead-letter it, fail its page
        and remove it from the work queue."""
        advisory = json.loads(data)
        stream, seq = advisory["stream"], int(advisory["stream_seq"])
        deliveries = int(advisory.get("deliveries", 0))
        if stream not in messaging.WORK_STREAMS:
            return
        try:
            raw = await self.js.get_msg(stream, seq)
        except NotFoundError:
            return  # already acknowledged or removed
        stage = messaging.WORK_STREAMS[stream][1]
        reason = (f"gave up after {deliveries} deliveries: the {stage} worker stopped or "
                  "ran out of time on every one")
        await messaging.dead_letter(self.js, stream, raw.subject, seq, raw.data, reason,
                                    deliveries)
        work = messaging.decode_work(stream, raw.data)
        await messaging.report_page(
            self.js, stage, work.job_id, work.plan,
            jobs_pb2.PageRecord(page=work.page, state=jobs_pb2.PAGE_STATE_FAILED,
                                error=f"{stage}: {reason}", attempts=deliveries,
                                finished_at=now_ts()),
            deliveries,
        )
        with contextlib.suppress(NotFoundError):
            await self.js.delete_msg(stream, seq)
        log.warning("page dead-lettered", extra={"job_id": work.job_id, "page": work.page,
                                                 "stage": stage, "deliveries": deliveries})

    # -- job record changes ---------------------------------------------------

    async def _mutate(self, job_id: str, change: Callable[[jobs_pb2.Job], bool]) -> jobs_pb2.Job:
        """Apply ``change`` (returns True if it changed the record) with
        compare-and-set, retrying on conflict. A job that ends gets its
        outputs written before the terminal record is stored, and that record
        expires after the retention period."""
        for _ in range(CAS_RETRIES):
            job = await self.jobs.get(job_id)
            was_terminal, were_ended = is_terminal(job), pages_ended(job)
            settled = settle(job)  # an interim record left by a stopped writer
            if not (change(job) or settled):
                return job
            ended = is_terminal(job) and not was_terminal
            if ended and pages_ended(job) and not were_ended:
                # The last page: watchers hear of it now, in a record that is
                # not terminal yet (writing the outputs takes a while); the
                # terminal state follows. If this process stops in between,
                # the redelivered event or the sweep settles the record.
                interim = jobs_pb2.Job()
                interim.CopyFrom(job)
                interim.state = jobs_pb2.JOB_STATE_PROCESSING
                interim.ClearField("finished_at")
                interim.ClearField("error")
                try:
                    await self.jobs.update(interim)
                except Conflict:
                    continue
                job.revision = interim.revision
            if ended:
                # Outputs first: a terminal record in KV means they are there.
                await self._finish(job)
            try:
                await self.jobs.update(
                    job, ttl=self.s.job_retention_seconds if is_terminal(job) else None
                )
            except Conflict:
                continue
            if ended:
                metrics.JOBS.labels(
                    jobs_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()).inc()
                log.info("job ended", extra={
                    "job_id": job.job_id, "state": jobs_pb2.JobState.Name(job.state),
                    "pages": job.total_pages, "failed": job.failed_pages})
            return job
        raise Conflict(job_id)

    async def _finish(self, job: jobs_pb2.Job) -> None:
        """Write manifest.json, point current.json at a complete job, delete
        work/<job>/. Idempotent: a crash before the record is updated is
        repaired by the redelivered event."""
        await asyncio.to_thread(self.store.put_bytes, job.manifest_key, manifest_json(job),
                                "application/json")
        if job.state == jobs_pb2.JOB_STATE_COMPLETE:
            await asyncio.to_thread(self._update_current, job)
        await asyncio.to_thread(self.store.delete_prefix, keys.work_prefix(job.job_id))

    async def reconcile(self, job_id: str) -> tuple[jobs_pb2.Job, list[int]]:
        """Mark pages DONE whose .dzi is in S3 although the record missed it
        (a lost progress event). Returns the record and the pages repaired."""
        job = await self.jobs.get(job_id)
        if is_terminal(job):
            return job, []
        open_pages = [p.page for p in job.pages
                      if p.state not in (jobs_pb2.PAGE_STATE_DONE, jobs_pb2.PAGE_STATE_FAILED)]
        if not open_pages:
            return job, []
        # One level only: the .dzi files, not the tiles under page-N_files/.
        present = set(await asyncio.to_thread(
            lambda: list(self.store.list_keys(job.tiles_prefix, recursive=False))))
        found = {}
        for page in open_pages:
            key = keys.dzi_key(job.plan, job.job_id, page)
            if key in present:
                found[page] = done_record(
                    page, parse_dzi(await asyncio.to_thread(self.store.get_bytes, key)), key)
        if not found:
            return job, []

        def change(job: jobs_pb2.Job) -> bool:
            changed = False
            for record in found.values():
                ev = jobs_pb2.ProgressEvent(job_id=job.job_id, plan=job.plan, stage="reconcile",
                                            page=record, emitted_at=now_ts())
                changed = apply_event(job, ev) or changed
            if changed:
                job.reconciled = True
                job.reconciled_at.CopyFrom(now_ts())
            return changed

        job = await self._mutate(job_id, change)
        log.warning("reconciled missed page completions",
                    extra={"job_id": job_id, "pages": sorted(found)})
        return job, sorted(found)

    async def _sweep_forever(self) -> None:
        """Every sweep period: reconcile unfinished jobs, publish page jobs
        ingest did not, and flag stalled jobs."""
        while not self._stopping.is_set():
            await asyncio.sleep(self.s.sweep_seconds)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweep failed")

    async def _republish_pending(self, job: jobs_pb2.Job) -> None:
        """Publish again the page jobs of the pages still PENDING, while that
        is safe: within the render stream's duplicate window of the job's
        creation (less a margin for clock skew), a page job ingest did
        publish is not stored twice, and one it never published (it stopped
        after creating the record) is. Later, a lost page job only shows as
        a stalled job."""
        age = time.time() - job.created_at.ToSeconds()
        pending = [p.page for p in job.pages if p.state == jobs_pb2.PAGE_STATE_PENDING]
        if not pending or not self.s.sweep_seconds <= age < REPUBLISH_WITHIN_SECONDS:
            return
        if stored := await messaging.publish_page_jobs(self.js, job, pending):
            log.warning("published page jobs that ingest had not",
                        extra={"job_id": job.job_id, "pages": stored})

    async def sweep(self) -> None:
        now = time.time()

        def mark_stalled(job: jobs_pb2.Job) -> bool:
            last = job.last_event_at if job.HasField("last_event_at") else job.created_at
            if is_terminal(job) or job.stalled or now - last.ToSeconds() < self.s.stall_seconds:
                return False
            job.stalled = True
            job.updated_at.CopyFrom(now_ts())
            return True

        for job_id in await self.jobs.job_ids():
            try:
                job, _ = await self.reconcile(job_id)
                if not is_terminal(job):
                    await self._republish_pending(job)
                    job = await self._mutate(job_id, mark_stalled)
                    if job.stalled:
                        log.warning("job stalled", extra={"job_id": job_id})
            except JobNotFound:
                continue

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
        return await self.get_job_or_abort(request.job_id, context)

    async def ListJobs(self, request, context):
        try:
            check_plan(request.plan)
        except RequestError as e:
            await errors.abort(context, e)
        limit = min(request.page_size or 50, 500)
        return progress_pb2.ListJobsResponse(jobs=await self.jobs.list_for_plan(request.plan,
                                                                                limit))

    async def CancelJob(self, request, context):
        try:
            check_id("job_id", request.job_id)

            def cancel(job: jobs_pb2.Job) -> bool:
                if is_terminal(job):
                    raise RequestError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"job {job.job_id} has already ended "
                        f"({jobs_pb2.JobState.Name(job.state).removeprefix('JOB_STATE_')})",
                        reason="JOB_ENDED")
                job.state = jobs_pb2.JOB_STATE_CANCELLED
                job.error = f"cancelled: {request.reason or 'by request'}"[:1000]
                job.updated_at.CopyFrom(now_ts())
                job.finished_at.CopyFrom(job.updated_at)
                return True

            return await self._mutate(request.job_id, cancel)
        except InvalidId as e:
            await errors.abort(context, invalid(str(e), field="job_id"))
        except JobNotFound:
            await errors.abort(context, job_not_found(request.job_id))
        except RequestError as e:
            await errors.abort(context, e)

    async def Reconcile(self, request, context):
        try:
            check_id("job_id", request.job_id)
            job, repaired = await self.reconcile(request.job_id)
            return progress_pb2.ReconcileResponse(job=job, repaired_pages=repaired)
        except InvalidId as e:
            await errors.abort(context, invalid(str(e), field="job_id"))
        except JobNotFound:
            await errors.abort(context, job_not_found(request.job_id))

    async def WatchJob(self, request, context):
        job = await self.get_job_or_abort(request.job_id, context)
        if is_terminal(job):  # no feed needed for a job that has ended
            yield job
            return
        metrics.WATCHERS.inc()
        try:
            # The current record first, then each change from the job's feed
            # (one KV watcher per job in this process, whatever the streams).
            async with self.feeds.subscribe(request.job_id) as feed:
                yield job
                while not is_terminal(job):
                    await feed.wait(job.revision)
                    if self._stopping.is_set():
                        await errors.abort(context, RequestError(
                            grpc.StatusCode.UNAVAILABLE,
                            "the progress service is restarting; watch again to resume",
                            reason="RESTARTING"))
                    if feed.gone:
                        await errors.abort(context, job_not_found(request.job_id))
                    if feed.latest is not None and feed.latest.revision > job.revision:
                        job = feed.latest
                        yield job
        finally:
            metrics.WATCHERS.dec()


def main() -> None:
    settings = get_settings()
    setup_logging("progress", settings.log_level)
    asyncio.run(serve(Progress(settings), settings.progress_addr, settings.grpc_grace_seconds,
                      settings.metrics_port))
