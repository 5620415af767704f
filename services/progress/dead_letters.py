"""Page jobs whose deliveries ran out while no worker could record the
failure (each worker died or overran its ack wait): found from the server's
MAX_DELIVERIES advisories, dead-lettered, and their pages failed."""

from __future__ import annotations

import contextlib
import json
import logging

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from planzoom.errors import Internal
from planzoom.messaging import topology
from planzoom.messaging.events import dead_letter
from planzoom.messaging.worker import Delivery
from services.progress.records import JobRecords

log = logging.getLogger(__name__)


class DeliveriesExhausted(Internal):
    """A page job's every delivery ended with its worker gone or out of time."""

    reason = "DELIVERIES_EXHAUSTED"


class DeadLetters:
    """The handler of consumer ``dead-letters`` on PLANZOOM_ADVISORIES."""

    def __init__(self, js: JetStreamContext, records: JobRecords):
        self.js, self.records = js, records

    async def on_advisory(self, data: bytes, delivery: Delivery) -> None:
        """One MAX_DELIVERIES advisory (JSON, as nats-server publishes it):
        copy the message to the dead letters, fail its page in the job
        record, and remove it from its work queue."""
        advisory = json.loads(data)
        stream, seq = advisory["stream"], int(advisory["stream_seq"])
        deliveries = int(advisory.get("deliveries", 0))
        if stream not in topology.WORK_STREAMS:
            return
        try:
            raw = await self.js.get_msg(stream, seq)
        except NotFoundError:
            return  # already acknowledged or removed
        stage = topology.WORK_STREAMS[stream][1]
        error = DeliveriesExhausted(f"gave up after {deliveries} deliveries: the {stage} "
                                    "worker stopped or ran out of time on every one")
        await dead_letter(self.js, stream, raw.subject, seq, raw.data, error, deliveries)
        work = topology.decode_work(stream, raw.data)
        await self.records.fail_page(work.job_id, work.page, f"{stage}: {error.message}",
                                     error.reason_code, deliveries)
        with contextlib.suppress(NotFoundError):
            await self.js.delete_msg(stream, seq)
        log.warning("page dead-lettered", extra={"job_id": work.job_id, "page": work.page,
                                                 "stage": stage, "deliveries": deliveries})
