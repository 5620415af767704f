"""Streams, durable consumers and the KV bucket, by name, and their setup.

Names (KEDA's nats-jetstream scaler and operators use them as they are):

=================  =======================  =============  =========================
stream             subjects                 retention      durable consumers
=================  =======================  =============  =========================
PLANZOOM_RENDER    pages.render.<org>       work queue     render-<org>, one per org
PLANZOOM_TILE      pages.tile.<org>         work queue     tile-<org>, one per org
                   pages.tile.overlay.<org>                overlay-<org>, one per org
PLANZOOM_TRANSCODE videos.transcode.<org>   work queue     transcode-<org>, one per org
PLANZOOM_PROGRESS  progress.<stage>.<job>   limits (7 d)   progress
PLANZOOM_JOB_EVENTS jobs.ended.<org>.<job>  limits (7 d)   webhooks (the gateway)
PLANZOOM_WEBHOOKS  webhooks.deliver.<org>   work queue     deliveries-<org>, one per org
=================  =======================  =============  =========================

The progress service publishes a JobEnded on ``jobs.ended.<org>.<job>``
when a job ends (once: Nats-Msg-Id ``ended.<job>``); the gateway turns each
into one WebhookDelivery per endpoint that asked for it, which its delivery
workers send, retry and finally keep as a dead letter.

Dead letters: a message that fails for good (a permanent error, or its last
delivery failed) is copied with its reason and attempt count to stream
``PLANZOOM_DEAD_LETTERS`` (subjects ``deadletter.<stage>.<job_id>``, kept 30
days) before it is terminated. A page job whose worker died on every
delivery never reaches that code: the server's MAX_DELIVERIES advisory is
captured by stream ``PLANZOOM_ADVISORIES`` and the progress service (durable
consumer ``dead-letters``) dead-letters the message and fails its page.

KV bucket ``planzoom_jobs`` holds job records (see :mod:`planzoom.jobstore`),
``planzoom_gateway`` the gateway's state: tus uploads, webhook endpoints
and webhook dead letters.
All setup calls are idempotent: every service runs them at startup.

Replicas: every stream, durable consumer and KV bucket is kept on
``PLANZOOM_NATS_REPLICAS`` servers (1, or 3 or 5 on a JetStream cluster).
A stream or bucket made with another count is changed in place (the server
copies it to the new peers; setup waits until they are current); if the
server refuses (more replicas than servers), it keeps its count and the
refusal is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

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
from nats.js.errors import APIError, BadRequestError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from planzoom.config import Settings
from planzoom.v1 import events_pb2

log = logging.getLogger(__name__)

#: Work streams, their subjects and the prefix of their per-org consumers
#: (``render-<org>``; see :mod:`planzoom.messaging.workqueues`).
RENDER_STREAM, RENDER_SUBJECTS, RENDER_CONSUMER = "PLANZOOM_RENDER", "pages.render.>", "render"
TILE_STREAM, TILE_SUBJECTS, TILE_CONSUMER = "PLANZOOM_TILE", "pages.tile.>", "tile"
#: Overlays of revised sheets (TileJobs with ``overlay``) have consumers of
#: their own on the tile stream: one asked for as a page is done never
#: waits behind the set's pages still to tile.
OVERLAY_SUBJECTS, OVERLAY_CONSUMER = "pages.tile.overlay.>", "overlay"
TRANSCODE_STREAM, TRANSCODE_SUBJECTS, TRANSCODE_CONSUMER = (
    "PLANZOOM_TRANSCODE", "videos.transcode.>", "transcode")
PROGRESS_STREAM, PROGRESS_CONSUMER = "PLANZOOM_PROGRESS", "progress"
JOBS_BUCKET = "planzoom_jobs"
GATEWAY_BUCKET = "planzoom_gateway"
JOB_EVENTS_STREAM, JOB_EVENTS_CONSUMER = "PLANZOOM_JOB_EVENTS", "webhooks"
WEBHOOKS_STREAM, WEBHOOKS_CONSUMER = "PLANZOOM_WEBHOOKS", "deliveries"
#: Ack wait of the webhook consumers: a delivery's HTTP timeout and then some.
WEBHOOK_ACK_WAIT_SECONDS = 60.0

DEAD_LETTER_STREAM = "PLANZOOM_DEAD_LETTERS"
ADVISORY_STREAM, ADVISORY_CONSUMER = "PLANZOOM_ADVISORIES", "dead-letters"
#: The advisory consumer's earlier name: removed at setup (a work-queue stream
#: takes one unfiltered consumer; its advisories stay for the new one).
_OLD_ADVISORY_CONSUMER = "deadletters"
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

DUPLICATE_WINDOW_SECONDS = 15 * 60
PROGRESS_MAX_AGE_SECONDS = 7 * 24 * 3600
DEAD_LETTER_MAX_AGE_SECONDS = 30 * 24 * 3600
#: Ack wait and deliveries of the progress service's own consumers: an event
#: takes milliseconds to fold, and one must not be dropped while NATS or KV
#: is briefly unreachable.
PROGRESS_ACK_WAIT_SECONDS, PROGRESS_MAX_DELIVER = 30.0, 50
#: How long setup waits for a stream whose replica count it changed to have
#: a leader and every new replica current.
REPLICATION_WAIT_SECONDS = 60.0

#: Message type and stage of each work stream (the page jobs).
WORK_STREAMS = {
    RENDER_STREAM: (events_pb2.PageJob, "render"),
    TILE_STREAM: (events_pb2.TileJob, "tile"),
    TRANSCODE_STREAM: (events_pb2.PageJob, "transcode"),
}
#: Each work stream's subjects (the doorbell its workers listen to).
WORK_SUBJECTS = {RENDER_STREAM: RENDER_SUBJECTS, TILE_STREAM: TILE_SUBJECTS,
                 TRANSCODE_STREAM: TRANSCODE_SUBJECTS}
#: Message type and stage of every stream whose messages can be dead-lettered.
DEAD_LETTER_SOURCES = {**WORK_STREAMS, PROGRESS_STREAM: (events_pb2.ProgressEvent, "progress")}


def progress_subject(stage: str, job_id: str) -> str:
    """``progress.<stage>.<job_id>``: the stage is part of the subject so
    that NATS permissions tie it to the publisher (render may only publish
    ``progress.render.>``, tile ``progress.tile.>``)."""
    return f"progress.{stage}.{job_id}"


def job_ended_subject(org: str, job_id: str) -> str:
    return f"jobs.ended.{org}.{job_id}"


def webhook_subject(org: str) -> str:
    return f"webhooks.deliver.{org}"


def decode_work(stream: str, data: bytes):
    """The PageJob or TileJob carried by a message of a work stream."""
    return WORK_STREAMS[stream][0].FromString(data)


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except BadRequestError:  # created concurrently by another service
            info = await js.stream_info(config.name)
    await _update_stream(js, config, info.config.num_replicas)


async def _update_stream(js: JetStreamContext, config: StreamConfig, had: int) -> None:
    """Bring a stream that has ``had`` replicas to ``config``. A change of
    replicas the server refuses is logged, and the rest of ``config``
    applied with the replicas it has."""
    if config.num_replicas == had:
        await js.update_stream(config)
        return
    try:
        await js.update_stream(config)
    except APIError as e:
        log.error("stream %s keeps %s replicas: the server refused %s (%s); "
                  "PLANZOOM_NATS_REPLICAS cannot exceed the servers of the JetStream cluster",
                  config.name, had, config.num_replicas, e.description or e)
        await js.update_stream(replace(config, num_replicas=had))
        return
    log.info("stream %s: replicas %s, was %s", config.name, config.num_replicas, had)
    await _wait_replicated(js, config.name, config.num_replicas)


async def _wait_replicated(js: JetStreamContext, stream: str, replicas: int) -> None:
    """Wait until ``stream`` has a leader and ``replicas - 1`` current
    followers (consumers cannot be placed before); log if that takes longer
    than REPLICATION_WAIT_SECONDS."""
    deadline = time.monotonic() + REPLICATION_WAIT_SECONDS
    while time.monotonic() < deadline:
        cluster = (await js.stream_info(stream)).cluster
        if cluster is None or (cluster.leader and sum(
                bool(p.current) for p in cluster.replicas or ()) >= replicas - 1):
            return
        await asyncio.sleep(0.5)
    log.error("stream %s: its %s replicas are not all current after %.0f s",
              stream, replicas, REPLICATION_WAIT_SECONDS)


#: The consumer settings planzoom sets, compared to decide whether to update.
_CONSUMER_FIELDS = ("filter_subject", "ack_policy", "deliver_policy", "ack_wait", "max_deliver",
                    "max_ack_pending", "num_replicas")


async def ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    """Create the durable consumer, or bring an existing one's settings in
    line. Never deletes one: that would drop the delivery state of every
    page in flight. The server changes editable settings (ack wait,
    deliveries, replicas, ...) in place; if it refuses a change (a setting that
    cannot be edited, or another replica's differing settings), the
    consumer is kept as it is and the difference is logged."""
    try:
        info = await js.consumer_info(stream, config.durable_name)
    except NotFoundError:
        try:
            await js.add_consumer(stream, config)
            return
        except BadRequestError:  # created concurrently by another replica
            info = await js.consumer_info(stream, config.durable_name)
    current = {f: getattr(info.config, f) for f in _CONSUMER_FIELDS}
    wanted = {f: getattr(config, f) for f in _CONSUMER_FIELDS}
    if current == wanted:
        return
    try:
        await js.add_consumer(stream, config)
        log.info("consumer settings updated in place",
                 extra={"consumer": config.durable_name, "was": str(current)})
    except BadRequestError as e:
        log.error("consumer %s keeps its settings %s: the server refused %s (%s)",
                  config.durable_name, current, wanted, e)


async def ensure_jetstream(js: JetStreamContext, settings: Settings) -> KeyValue:
    """Create or update streams, durable consumers and the jobs KV bucket,
    each with ``settings.nats_replicas`` replicas; return the bucket. Safe
    to call from every service at every start."""
    replicas = settings.nats_replicas
    advisories = [f"{MAX_DELIVERIES_ADVISORY}.{stream}.*" for stream in WORK_STREAMS]
    for name, subjects, retention, max_age in (
        (RENDER_STREAM, [RENDER_SUBJECTS], RetentionPolicy.WORK_QUEUE, None),
        (TILE_STREAM, [TILE_SUBJECTS], RetentionPolicy.WORK_QUEUE, None),
        (TRANSCODE_STREAM, [TRANSCODE_SUBJECTS], RetentionPolicy.WORK_QUEUE, None),
        (PROGRESS_STREAM, ["progress.>"], RetentionPolicy.LIMITS, PROGRESS_MAX_AGE_SECONDS),
        (DEAD_LETTER_STREAM, ["deadletter.>"], RetentionPolicy.LIMITS, DEAD_LETTER_MAX_AGE_SECONDS),
        (ADVISORY_STREAM, advisories, RetentionPolicy.WORK_QUEUE, DEAD_LETTER_MAX_AGE_SECONDS),
        (JOB_EVENTS_STREAM, ["jobs.ended.>"], RetentionPolicy.LIMITS, PROGRESS_MAX_AGE_SECONDS),
        (WEBHOOKS_STREAM, ["webhooks.deliver.>"], RetentionPolicy.WORK_QUEUE,
         PROGRESS_MAX_AGE_SECONDS),
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
                num_replicas=replicas,
            ),
        )
    try:
        await js.delete_consumer(ADVISORY_STREAM, _OLD_ADVISORY_CONSUMER)
        log.info("advisory consumer %s renamed %s", _OLD_ADVISORY_CONSUMER, ADVISORY_CONSUMER)
    except NotFoundError:
        pass
    for stream, durable, subject, ack_wait, max_deliver in (
        (PROGRESS_STREAM, PROGRESS_CONSUMER, "progress.>", PROGRESS_ACK_WAIT_SECONDS,
         PROGRESS_MAX_DELIVER),
        (ADVISORY_STREAM, ADVISORY_CONSUMER, None, PROGRESS_ACK_WAIT_SECONDS,
         PROGRESS_MAX_DELIVER),
        (JOB_EVENTS_STREAM, JOB_EVENTS_CONSUMER, None, WEBHOOK_ACK_WAIT_SECONDS,
         PROGRESS_MAX_DELIVER),
    ):
        await ensure_consumer(
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
                num_replicas=replicas,
            ),
        )
    await ensure_bucket(js, GATEWAY_BUCKET, replicas)
    return await ensure_bucket(js, JOBS_BUCKET, replicas)


async def ensure_bucket(js: JetStreamContext, name: str, replicas: int = 1) -> KeyValue:
    """The KV bucket ``name`` (one revision per key, file storage, on
    ``replicas`` servers), created if missing; an existing one is brought
    to ``replicas``."""
    try:
        bucket = await js.key_value(name)
    except BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(
            bucket=name, history=1, storage=StorageType.FILE, replicas=replicas))
    info = await js.stream_info(f"KV_{name}")
    if info.config.num_replicas != replicas:
        await _update_stream(js, replace(info.config, num_replicas=replicas),
                             info.config.num_replicas)
    return bucket
