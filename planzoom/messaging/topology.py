"""Streams, durable consumers and the KV bucket, by name, and their setup.

Names (KEDA's nats-jetstream scaler and operators use them as they are):

=================  ====================  ==============  =========================
stream             subjects              retention       durable consumer
=================  ====================  ==============  =========================
PLANZOOM_RENDER    pages.render          work queue      render
PLANZOOM_TILE      pages.tile            work queue      tile
PLANZOOM_PROGRESS  progress.<job_id>     limits (7 d)    progress
=================  ====================  ==============  =========================

Dead letters: a message that fails for good (a permanent error, or its last
delivery failed) is copied with its reason and attempt count to stream
``PLANZOOM_DEAD_LETTERS`` (subjects ``deadletter.<stage>.<job_id>``, kept 30
days) before it is terminated. A page job whose worker died on every
delivery never reaches that code: the server's MAX_DELIVERIES advisory is
captured by stream ``PLANZOOM_ADVISORIES`` and the progress service (durable
consumer ``deadletters``) dead-letters the message and fails its page.

KV bucket ``planzoom_jobs`` holds job records (see :mod:`planzoom.jobstore`).
All setup calls are idempotent: every service runs them at startup.
"""

from __future__ import annotations

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

from planzoom.config import Settings
from planzoom.v1 import events_pb2

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
#: Ack wait and deliveries of the progress service's own consumers: an event
#: takes milliseconds to fold, and one must not be dropped while NATS or KV
#: is briefly unreachable.
PROGRESS_ACK_WAIT_SECONDS, PROGRESS_MAX_DELIVER = 30.0, 50

#: Message type and stage of each work stream (the page jobs).
WORK_STREAMS = {
    RENDER_STREAM: (events_pb2.PageJob, "render"),
    TILE_STREAM: (events_pb2.TileJob, "tile"),
}
#: Message type and stage of every stream whose messages can be dead-lettered.
LETTER_STREAMS = {**WORK_STREAMS, PROGRESS_STREAM: (events_pb2.ProgressEvent, "progress")}


def progress_subject(job_id: str) -> str:
    return f"progress.{job_id}"


def decode_work(stream: str, data: bytes):
    """The PageJob or TileJob carried by a message of a work stream."""
    return WORK_STREAMS[stream][0].FromString(data)


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
        (PROGRESS_STREAM, PROGRESS_CONSUMER, "progress.>", PROGRESS_ACK_WAIT_SECONDS,
         PROGRESS_MAX_DELIVER),
        (ADVISORY_STREAM, ADVISORY_CONSUMER, None, PROGRESS_ACK_WAIT_SECONDS,
         PROGRESS_MAX_DELIVER),
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
