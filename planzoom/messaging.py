"""NATS JetStream: connection, streams, consumers, KV bucket, publishing, and
the pull-consumer worker loop that render and tile share.

Names (KEDA's nats-jetstream scaler and operators use them as they are):

=================  ====================  ==============  =========================
stream             subjects              retention       durable consumer
=================  ====================  ==============  =========================
PLANZOOM_RENDER    pages.render          work queue      render
PLANZOOM_TILE      pages.tile            work queue      tile
PLANZOOM_PROGRESS  progress.<job_id>     limits (7 d)    progress
=================  ====================  ==============  =========================

Dead letters: a page job that fails for good (a permanent error, or its
last delivery failed) is copied with its reason and attempt count to stream
``PLANZOOM_DEAD_LETTERS`` (subjects ``deadletter.<stage>.<job_id>``, kept 30
days) before it is terminated. A message whose worker died on every
delivery never reaches that code: the server's MAX_DELIVERIES advisory is
captured by stream ``PLANZOOM_ADVISORIES`` and the progress service (durable
consumer ``deadletters``) dead-letters the message and fails its page.

KV bucket ``planzoom_jobs`` holds job records (see :mod:`planzoom.jobstore`).
All setup calls are idempotent: every service runs them at startup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from planzoom import metrics
from planzoom.clock import now_ts
from planzoom.config import Settings
from planzoom.v1 import jobs_pb2

log = logging.getLogger(__name__)

RENDER_STREAM, RENDER_SUBJECT, RENDER_CONSUMER = "PLANZOOM_RENDER", "pages.render", "render"
TILE_STREAM, TILE_SUBJECT, TILE_CONSUMER = "PLANZOOM_TILE", "pages.tile", "tile"
PROGRESS_STREAM, PROGRESS_CONSUMER = "PLANZOOM_PROGRESS", "progress"
JOBS_BUCKET = "planzoom_jobs"

DLQ_STREAM = "PLANZOOM_DEAD_LETTERS"
ADVISORY_STREAM, ADVISORY_CONSUMER = "PLANZOOM_ADVISORIES", "deadletters"
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

DUPLICATE_WINDOW_SECONDS = 15 * 60
PROGRESS_MAX_AGE_SECONDS = 7 * 24 * 3600
DLQ_MAX_AGE_SECONDS = 30 * 24 * 3600

#: Message type and stage name of each work stream.
WORK_STREAMS = {
    RENDER_STREAM: (jobs_pb2.PageJob, "render"),
    TILE_STREAM: (jobs_pb2.TileJob, "tile"),
}


def progress_subject(job_id: str) -> str:
    return f"progress.{job_id}"


async def connect(settings: Settings, name: str) -> NATS:
    """Connect with unlimited reconnects (a restarted server is picked up)."""

    async def on_error(e: Exception) -> None:
        log.warning("nats error: %s", e)

    return await nats.connect(
        settings.nats_url,
        user_credentials=settings.nats_creds_file,
        name=f"planzoom-{name}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        error_cb=on_error,
    )


async def close(nc: NATS, timeout: float = 5.0) -> None:
    """Drain the connection (flush publishes, end subscriptions), closing it
    outright if that takes longer than ``timeout`` seconds."""
    try:
        await asyncio.wait_for(nc.drain(), timeout)
    except Exception as e:
        log.warning("nats drain did not finish (%s); closing", e or type(e).__name__)
        with contextlib.suppress(Exception):
            await nc.close()


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except BadRequestError:
            pass  # created concurrently by another service: fall through to update
    await js.update_stream(config)


async def _ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    try:
        await js.add_consumer(stream, config)
    except BadRequestError:
        # Exists with other settings (e.g. changed ack wait): bring it in line.
        await js.delete_consumer(stream, config.durable_name)
        await js.add_consumer(stream, config)


async def ensure_jetstream(js: JetStreamContext, settings: Settings) -> KeyValue:
    """Create or update streams, durable consumers and the jobs KV bucket;
    return the bucket. Safe to call from every service at every start."""
    advisories = [f"{MAX_DELIVERIES_ADVISORY}.{RENDER_STREAM}.{RENDER_CONSUMER}",
                  f"{MAX_DELIVERIES_ADVISORY}.{TILE_STREAM}.{TILE_CONSUMER}"]
    for name, subjects, retention, max_age in (
        (RENDER_STREAM, [RENDER_SUBJECT], RetentionPolicy.WORK_QUEUE, None),
        (TILE_STREAM, [TILE_SUBJECT], RetentionPolicy.WORK_QUEUE, None),
        (PROGRESS_STREAM, ["progress.>"], RetentionPolicy.LIMITS, PROGRESS_MAX_AGE_SECONDS),
        (DLQ_STREAM, ["deadletter.>"], RetentionPolicy.LIMITS, DLQ_MAX_AGE_SECONDS),
        (ADVISORY_STREAM, advisories, RetentionPolicy.WORK_QUEUE, DLQ_MAX_AGE_SECONDS),
    ):
        await _ensure_stream(
            js,
            StreamConfig(
                name=name,
                subjects=subjects,
                retention=retention,
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
                max_age=max_age,
            ),
        )
    for stream, durable, subject, ack_wait, max_deliver in (
        (RENDER_STREAM, RENDER_CONSUMER, RENDER_SUBJECT, settings.ack_wait_seconds,
         settings.max_deliver),
        (TILE_STREAM, TILE_CONSUMER, TILE_SUBJECT, settings.ack_wait_seconds,
         settings.max_deliver),
        (PROGRESS_STREAM, PROGRESS_CONSUMER, "progress.>", 30.0, 50),
        (ADVISORY_STREAM, ADVISORY_CONSUMER, None, 30.0, 50),
    ):
        await _ensure_consumer(
            js,
            stream,
            ConsumerConfig(
                durable_name=durable,
                filter_subject=subject,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ack_wait,
                max_deliver=max_deliver,
                max_ack_pending=1000,
            ),
        )
    try:
        return await js.key_value(JOBS_BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(
            KeyValueConfig(bucket=JOBS_BUCKET, history=1, storage=StorageType.FILE)
        )


async def publish(js: JetStreamContext, subject: str, payload: bytes, msg_id: str) -> bool:
    """Publish durably (waits for the stream's ack). ``msg_id`` goes in the
    ``Nats-Msg-Id`` header so a retried publish is stored once. Returns False
    if the stream reported it as a duplicate."""
    ack = await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id}, timeout=10)
    return not ack.duplicate


async def publish_page_jobs(js: JetStreamContext, job: jobs_pb2.Job,
                            pages: Iterable[int]) -> list[int]:
    """Publish the PageJob of each of ``pages`` (1-based) of ``job`` on
    ``pages.render``, built from the job record alone, with Nats-Msg-Id
    ``render.<job_id>.<page>``: the same page published again within
    DUPLICATE_WINDOW_SECONDS of the first is not stored again (JetStream
    keeps a work-queue message's id for the whole window, acknowledged or
    not). Returns the pages actually stored (the others were duplicates)."""
    stored = []
    for page in pages:
        page_job = jobs_pb2.PageJob(
            job_id=job.job_id, plan=job.plan, source_key=job.source_key,
            source_sha256=job.source_sha256, page=page, total_pages=job.total_pages,
            options=job.options,
        )
        if await publish(js, RENDER_SUBJECT, page_job.SerializeToString(),
                         f"render.{job.job_id}.{page}"):
            stored.append(page)
    return stored


def decode_work(stream: str, data: bytes):
    """The PageJob or TileJob carried by a message of a work stream."""
    return WORK_STREAMS[stream][0].FromString(data)


async def dead_letter(js: JetStreamContext, stream: str, subject: str, seq: int, data: bytes,
                      reason: str, attempts: int) -> None:
    """Keep a page job that failed for good in PLANZOOM_DEAD_LETTERS."""
    work = decode_work(stream, data)
    stage = WORK_STREAMS[stream][1]
    letter = jobs_pb2.DeadLetter(
        stream=stream, subject=subject, stream_sequence=seq, data=data, reason=reason,
        attempts=attempts, job_id=work.job_id, page=work.page, failed_at=now_ts(),
    )
    await publish(js, f"deadletter.{stage}.{work.job_id}", letter.SerializeToString(),
                  f"dl.{stream}.{seq}")


class PermanentError(Exception):
    """A failure that no retry can fix (a page PDFium cannot render, a raster
    libvips cannot read). The message is terminated and the page FAILED."""


@dataclass
class Delivery:
    """What a handler learns about the message it handles."""

    attempt: int  # 1-based delivery count
    max_deliver: int

    @property
    def last(self) -> bool:
        return self.attempt >= self.max_deliver


Handler = Callable[[bytes, Delivery], Awaitable[None]]
FailureHandler = Callable[[bytes, Delivery, str], Awaitable[None]]


def retry_delay(attempt: int) -> float:
    """Seconds before a transient failure is retried: 2, 4, 8 ... capped at 60."""
    return float(min(60, 2**attempt))


class PullWorker:
    """Runs ``concurrency`` fetch loops on one durable pull consumer.

    Each message goes to ``handle``; success acks it. While the handler runs,
    an in-progress ack is sent every ack_wait / 3 seconds so a long page keeps
    its lease. A :class:`PermanentError`, or any error on the last delivery,
    terminates the message and calls ``on_failure`` (which reports the page
    FAILED); other errors nak it with exponential backoff.

    ``stop()`` stops fetching; messages in flight finish within ``grace``
    seconds or are nak'ed for immediate redelivery elsewhere.
    """

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        durable: str,
        handle: Handler,
        on_failure: FailureHandler,
        *,
        concurrency: int,
        ack_wait: float,
        max_deliver: int,
    ):
        self.js, self.stream, self.durable = js, stream, durable
        self.handle, self.on_failure = handle, on_failure
        self.concurrency, self.ack_wait, self.max_deliver = concurrency, ack_wait, max_deliver
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._in_flight: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._sub = await self.js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        self._tasks = [asyncio.create_task(self._loop(self._sub))
                       for _ in range(self.concurrency)]

    async def stop(self, grace: float) -> None:
        self._stopping.set()
        if self._in_flight:
            log.info("waiting for %d message(s) in flight", len(self._in_flight))
            await asyncio.wait(self._in_flight, timeout=grace)
        for t in list(self._in_flight) + self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._in_flight, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()

    async def _loop(self, sub) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(1, timeout=2)
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as e:  # connection trouble: the client reconnects by itself
                log.warning("fetch from %s failed: %s", self.durable, e)
                await asyncio.sleep(1)
                continue
            for msg in msgs:
                task = asyncio.create_task(self._process(msg))
                self._in_flight.add(task)
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    # Shutting down past the grace period: hand the page back.
                    with contextlib.suppress(Exception):
                        await msg.nak()
                    raise
                finally:
                    self._in_flight.discard(task)

    async def _heartbeat(self, msg: Msg) -> None:
        interval = max(1.0, self.ack_wait / 3)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _process(self, msg: Msg) -> None:
        delivery = Delivery(attempt=msg.metadata.num_delivered, max_deliver=self.max_deliver)
        if delivery.attempt > 1:
            metrics.REDELIVERIES.labels(self.durable).inc()
        beat = asyncio.create_task(self._heartbeat(msg))
        try:
            await self.handle(msg.data, delivery)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            permanent = isinstance(e, PermanentError)
            reason = str(e) or type(e).__name__
            if permanent or delivery.last:
                log.error(
                    "%s: giving up after attempt %d/%d: %s",
                    self.durable, delivery.attempt, self.max_deliver, reason,
                    exc_info=not permanent,
                )
                try:
                    await dead_letter(
                        self.js, msg.metadata.stream, msg.subject, msg.metadata.sequence.stream,
                        msg.data, reason, delivery.attempt,
                    )
                    await self.on_failure(msg.data, delivery, reason)
                except Exception:
                    # The failure could not be recorded: keep the message.
                    log.exception("%s: could not record the failure", self.durable)
                    await msg.nak(delay=retry_delay(delivery.attempt))
                else:
                    metrics.PAGES.labels(self.durable, "failed").inc()
                    await msg.term()
            else:
                metrics.PAGES.labels(self.durable, "retried").inc()
                delay = retry_delay(delivery.attempt)
                log.warning(
                    "%s: attempt %d/%d failed, retrying in %.0f s: %s",
                    self.durable, delivery.attempt, self.max_deliver, delay, reason,
                    exc_info=True,
                )
                await msg.nak(delay=delay)
        else:
            await msg.ack()
        finally:
            beat.cancel()


async def report_page(
    js: JetStreamContext,
    stage: str,
    job_id: str,
    plan: jobs_pb2.PlanRef,
    page: jobs_pb2.PageRecord,
    attempt: int,
) -> None:
    """Publish a :class:`ProgressEvent` for one page on ``progress.<job_id>``.

    ``page`` is a PageRecord with the fields the stage knows. Retried with
    exponential backoff (0.5 s doubling, 6 tries) before the error is raised.
    """
    ev = jobs_pb2.ProgressEvent(job_id=job_id, plan=plan, stage=stage, page=page,
                                emitted_at=now_ts())
    msg_id = f"{job_id}.{page.page}.{stage}.{page.state}.{attempt}"
    delay = 0.5
    for attempt_no in range(6):
        try:
            await publish(js, progress_subject(job_id), ev.SerializeToString(), msg_id)
            return
        except Exception as e:
            if attempt_no == 5:
                raise
            log.warning("progress publish failed, retrying in %.1f s: %s", delay, e)
            await asyncio.sleep(delay)
            delay *= 2
