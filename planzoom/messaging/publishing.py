"""Durable, deduplicated publishing, and the page jobs of a job."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from nats.js import JetStreamContext
from tenacity import AsyncRetrying, before_sleep_log, stop_after_attempt, wait_exponential

from planzoom.messaging.topology import RENDER_SUBJECT
from planzoom.v1 import events_pb2, jobs_pb2

log = logging.getLogger(__name__)


async def publish(js: JetStreamContext, subject: str, payload: bytes, msg_id: str) -> bool:
    """Publish durably (waits for the stream's ack, 10 s at most). ``msg_id``
    goes in the ``Nats-Msg-Id`` header so a retried publish is stored once.
    Returns False if the stream reported it as a duplicate."""
    ack = await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id}, timeout=10)
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


async def publish_page_jobs(js: JetStreamContext, job: jobs_pb2.Job,
                            pages: Iterable[int]) -> list[int]:
    """Publish the PageJob of each of ``pages`` (1-based) of ``job`` on
    ``pages.render``, built from the job record alone, with Nats-Msg-Id
    ``render.<job_id>.<page>``: the same page published again within the
    duplicate window of the first is not stored again (JetStream keeps a
    work-queue message's id for the whole window, acknowledged or not).
    Returns the pages actually stored (the others were duplicates)."""
    stored = []
    for page in pages:
        page_job = events_pb2.PageJob(
            job_id=job.job_id, plan=job.plan, source_key=job.source_key,
            source_sha256=job.source_sha256, page=page, total_pages=job.total_pages,
            options=job.options,
        )
        if await publish(js, RENDER_SUBJECT, page_job.SerializeToString(),
                         f"render.{job.job_id}.{page}"):
            stored.append(page)
    return stored
