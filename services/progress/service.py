"""The progress service's wiring: the event and advisory consumers, the
sweep, and ProgressService."""

from __future__ import annotations

import asyncio
import logging

from planzoom import metrics
from planzoom.admission import Admission, Quota
from planzoom.backend import BackedService
from planzoom.boundary import method_roles
from planzoom.config import Settings
from planzoom.messaging import topology
from planzoom.messaging.worker import PullWorker
from planzoom.slots import Slots, WatchesBusy
from planzoom.v1 import progress_pb2, progress_pb2_grpc
from services.progress.dead_letters import DeadLetters
from services.progress.feeds import JobFeeds
from services.progress.records import JobRecords
from services.progress.rpcs import ProgressRpcs
from services.progress.sweep import Sweeper

log = logging.getLogger(__name__)

#: Seconds between two exports of the queue depth gauges.
QUEUE_METRICS_SECONDS = 5.0


class Progress(BackedService):
    """Folds events into job records, serves ProgressService, sweeps."""

    name = "progress"

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.stopping = asyncio.Event()

    async def start(self) -> None:
        await self.connect()
        admission = Admission(self.jobs, Quota.from_settings(self.s), self.queues)
        if not self.queues.grants:
            log.warning("PLANZOOM_WORK_GRANT_KEY is not set: progress events are not checked "
                        "against the jobs their stage was given (planzoom.grants)")
        self.records = JobRecords(self.jobs, self.store, admission, self.s.job_retention_seconds,
                                  self.queues.grants)
        self.sweeper = Sweeper(self.s, self.jobs, self.store, self.records, admission, self.js)
        self.feeds = JobFeeds(self.kv, self.jobs)
        dead_letters = DeadLetters(self.js, self.records)
        self.workers = [
            PullWorker(self.js, stream, consumer, handle, concurrency=1,
                       ack_wait=topology.PROGRESS_ACK_WAIT_SECONDS,
                       max_deliver=topology.PROGRESS_MAX_DELIVER, on_dead=self.unhealthy)
            for stream, consumer, handle in (
                (topology.PROGRESS_STREAM, topology.PROGRESS_CONSUMER, self.records.on_event),
                (topology.ADVISORY_STREAM, topology.ADVISORY_CONSUMER,
                 dead_letters.on_advisory),
            )
        ]
        for worker in self.workers:
            await worker.start()
        self.tasks = [asyncio.create_task(self.sweeper.run(self.stopping)),
                      asyncio.create_task(self._export_queue_depth())]

    def register(self, server):
        watches = Slots("watch streams", WatchesBusy, self.s.max_watches,
                        self.s.max_watches_per_org, self.s.max_watches_per_caller,
                        ("MAX_WATCHES", "MAX_WATCHES_PER_ORG", "MAX_WATCHES_PER_CALLER"))
        rpcs = ProgressRpcs(self.jobs, self.records, self.sweeper, self.feeds, self.stopping,
                            watches)
        progress_pb2_grpc.add_ProgressServiceServicer_to_server(rpcs, server)
        return method_roles(progress_pb2.DESCRIPTOR.services_by_name["ProgressService"], {
            "GetJob": "viewer", "WatchJob": "viewer", "ListJobs": "viewer",
            "CancelJob": "admin", "Reconcile": "admin", "SetSheet": "uploader",
            "ListSheets": "viewer"})

    async def stop(self, grace: float) -> None:
        # Open WatchJob streams end with UNAVAILABLE and clients reconnect;
        # the events in hand are folded (acked) before the consumers stop.
        self.stopping.set()
        self.feeds.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*(w.stop(grace) for w in self.workers))
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _export_queue_depth(self) -> None:
        """Every QUEUE_METRICS_SECONDS: the page jobs waiting or in flight per
        stage, summed over the orgs' consumers (what KEDA scales on)."""
        while not self.stopping.is_set():
            for stream, gauge in ((topology.RENDER_STREAM, metrics.RENDER_QUEUE),
                                  (topology.TILE_STREAM, metrics.TILE_QUEUE),
                                  (topology.TRANSCODE_STREAM, metrics.TRANSCODE_QUEUE)):
                try:
                    infos = await self.js.consumers_info(stream)
                    gauge.set(sum((i.num_pending or 0) + (i.num_ack_pending or 0)
                                  for i in infos))
                except Exception as e:  # NATS away: the next round will tell
                    log.warning("queue depth of %s unknown: %s", stream, e)
            await asyncio.sleep(QUEUE_METRICS_SECONDS)
