"""What every service connects to: the S3 bucket, NATS JetStream (streams,
consumers) and the jobs KV bucket."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from planzoom import metrics
from planzoom.auth import visible
from planzoom.clock import now_ts
from planzoom.config import Settings
from planzoom.errors import PlanzoomError
from planzoom.ids import check_id
from planzoom.jobstore import JobNotFound, JobStore
from planzoom.messaging import connection, topology
from planzoom.messaging.events import report_page
from planzoom.messaging.worker import Delivery, FairConsumers, PullWorker
from planzoom.messaging.workqueues import WorkQueues
from planzoom.scratch import Scratch
from planzoom.server import Service
from planzoom.sources import SourceCache
from planzoom.storage import ObjectStore
from planzoom.v1 import jobs_pb2

log = logging.getLogger(__name__)


class BackedService(Service):
    """A service with ``store`` (S3), ``nc``/``js`` (NATS JetStream), ``kv``,
    ``jobs`` (job records) and ``queues`` (the work queues). ``connect()`` at
    start, ``close()`` once the server has drained."""

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
        self.nc = await connection.connect(self.s, self.name)
        self.js = self.nc.jetstream()
        if self.s.nats_setup:
            self.kv = await topology.ensure_jetstream(self.js, self.s)
        else:
            self.kv = await self.js.key_value(topology.JOBS_BUCKET)
        self.jobs = JobStore(self.js, self.kv, topology.JOBS_BUCKET)
        self.queues = WorkQueues(self.js, self.s)

    async def get_job(self, job_id: str) -> jobs_pb2.Job:
        """The caller's job record, for a GetJob-style RPC. Raises InvalidId
        for a malformed id and JobNotFound for an unknown one or one of
        another org."""
        return visible(await self.jobs.get(check_id("job_id", job_id)), JobNotFound)

    async def close(self) -> None:
        """Close the NATS connection (after the server has drained)."""
        await connection.close(self.nc)


class PageStage(BackedService):
    """A stage that works on one page at a time from a work stream (render,
    tile): a :class:`~planzoom.messaging.worker.PullWorker` on the stream's
    per-org consumers ``<consumer>-<org>``, taken in turn, runs
    :meth:`handle` for each page job, and a page that fails for good is
    reported FAILED with the reason."""

    stream: str
    consumer: str
    concurrency: int = 1  # pages handled at once
    max_seconds: float | None = None  # one page's work, at most

    async def handle(self, data: bytes, delivery: Delivery) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        await self.connect()
        self.worker = self.pull_worker(self.consumer, topology.WORK_SUBJECTS[self.stream],
                                       self.concurrency)
        await self.worker.start()

    def pull_worker(self, consumer: str, doorbell: str, concurrency: int) -> PullWorker:
        """A worker running :meth:`handle` for messages of the per-org
        consumers ``<consumer>-<org>`` of the stage's stream, orgs in turn
        (``doorbell``: the subjects that wake it)."""
        return PullWorker(
            self.js, self.stream, consumer, self.handle, self.on_failure,
            concurrency=concurrency, ack_wait=self.s.ack_wait_seconds,
            max_deliver=self.s.max_deliver, on_dead=self.unhealthy,
            source=FairConsumers(self.js, self.nc, self.stream, consumer, doorbell),
            max_seconds=self.max_seconds,
        )

    async def stop(self, grace: float) -> None:
        await self.worker.stop(grace)

    async def close(self) -> None:
        await self.release()
        await super().close()

    async def release(self) -> None:
        """Free the stage's own resources (worker processes, scratch space)
        once no page is in flight."""

    async def report(self, job, record: jobs_pb2.PageRecord, attempt: int,
                     kind: str = "") -> None:
        """Report ``record`` for the page of ``job`` (a PageJob or TileJob);
        ``kind`` tells apart two reports of one state in one attempt."""
        await report_page(self.js, self.name, job.job_id, job.plan, record, attempt, kind,
                          job.grant)

    async def skip_ended(self, job, ctx: dict, what: str = "page skipped") -> bool:
        """True (and logged, counted) if ``job``'s job has ended or is gone:
        cancelled, or a page job delivered again after its job finished."""
        if not await self.jobs.ended(job.job_id):
            return False
        log.info("job ended; %s", what, extra=ctx)
        metrics.PAGES.labels(self.name, "skipped").inc()
        return True

    async def on_failure(self, data: bytes, delivery: Delivery, error: PlanzoomError) -> None:
        """Report the page FAILED with ``error``'s message and reason."""
        job = topology.decode_work(self.stream, data)
        await self.report(job, jobs_pb2.PageRecord(
            page=job.page, state=jobs_pb2.PAGE_STATE_FAILED,
            error=f"{self.name}: {error.message}", reason=error.reason_code,
            attempts=delivery.attempt, finished_at=now_ts()), delivery.attempt)


class SourceStage(PageStage):
    """A stage that reads job sources in sandboxed worker processes (render,
    transcode): ``tmp`` (its scratch directory under ``PLANZOOM_WORK_DIR``),
    ``pool`` (``make_pool(tmp)``: the stage's
    :class:`planzoom.engines.sandbox.ProcessPool`, confined to ``tmp``, its
    size the stage's concurrency), ``scratch`` (the volume's room,
    :mod:`planzoom.scratch`) and ``sources`` (sources cached in ``tmp``).
    The pool and ``tmp`` are released when the stage stops."""

    def __init__(self, settings: Settings, make_pool):
        super().__init__(settings)
        self.tmp = tempfile.mkdtemp(prefix=f"planzoom-{self.name}-", dir=settings.work_dir)
        self.pool = make_pool(self.tmp)
        self.concurrency = self.pool.workers
        self.scratch = Scratch(settings.work_dir, settings.scratch_bytes)
        self.sources = SourceCache(self.store, self.tmp, self.scratch)

    async def release(self) -> None:
        await self.pool.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
