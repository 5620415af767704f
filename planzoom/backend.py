"""What every service connects to: the S3 bucket, NATS JetStream (streams,
consumers) and the jobs KV bucket."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from planzoom import errors, messaging
from planzoom.config import Settings
from planzoom.ids import InvalidId, check_id
from planzoom.jobstore import JobNotFound, JobStore
from planzoom.server import Service
from planzoom.storage import ObjectStore
from planzoom.v1 import jobs_pb2


class BackedService(Service):
    """A service with ``store`` (S3), ``nc``/``js`` (NATS JetStream), ``kv``
    and ``jobs`` (job records). ``connect()`` at start, ``disconnect()`` at
    stop."""

    nc: NATS
    js: JetStreamContext
    kv: KeyValue
    jobs: JobStore

    def __init__(self, settings: Settings):
        self.s = settings
        self.store = ObjectStore(settings)

    async def connect(self) -> None:
        """Create the bucket if configured to, connect to NATS and set up
        streams, consumers and the KV bucket (idempotent)."""
        if self.s.s3_create_bucket:
            await asyncio.to_thread(self.store.ensure_bucket)
        self.nc = await messaging.connect(self.s, self.name)
        self.js = self.nc.jetstream()
        self.kv = await messaging.ensure_jetstream(self.js, self.s)
        self.jobs = JobStore(self.js, self.kv, messaging.JOBS_BUCKET)

    async def get_job_or_abort(self, job_id: str, context) -> jobs_pb2.Job:
        """The job record for a GetJob-style RPC; aborts with INVALID_ARGUMENT
        for a malformed id and NOT_FOUND for an unknown one."""
        try:
            check_id("job_id", job_id)
            return await self.jobs.get(job_id)
        except InvalidId as e:
            await errors.abort(context, errors.invalid(str(e), field="job_id"))
        except JobNotFound:
            await errors.abort(context, errors.job_not_found(job_id))

    async def disconnect(self) -> None:
        await messaging.close(self.nc)
