"""Durable, deduplicated publishing."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from tenacity import AsyncRetrying, before_sleep_log, stop_after_attempt, wait_exponential

from planzoom import tracing

log = logging.getLogger(__name__)


async def publish(js: JetStreamContext, subject: str, payload: bytes, msg_id: str) -> bool:
    """Publish durably (waits for the stream's ack, 10 s at most). ``msg_id``
    goes in the ``Nats-Msg-Id`` header so a retried publish is stored once.
    Returns False if the stream reported it as a duplicate. The current
    trace context goes along in the headers (:mod:`planzoom.tracing`)."""
    headers = tracing.inject({"Nats-Msg-Id": msg_id})
    ack = await js.publish(subject, payload, headers=headers, timeout=10)
    return not ack.duplicate


async def publish_retrying(js: JetStreamContext, subject: str, payload: bytes,
                           msg_id: str) -> bool:
    """:func:`publish`, tried 6 times with exponential backoff (0.5 s
    doubling) before the last error is raised: for reports that must not be
    lost to a NATS restart."""
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(6), wait=wait_exponential(multiplier=0.5), reraise=True,
        before_sleep=before_sleep_log(log, logging.WARNING),
    ):
        with attempt:
            return await publish(js, subject, payload, msg_id)
    raise AssertionError("unreachable")  # reraise=True raises the last error
