"""Progress at scale: one job of many pages, many WatchJob streams on it,
and the stages' reports arriving at a steady pace, against the running
progress service.

The job record is created as ingest creates it (as ingest's NATS user) but
no page job is published: render and tile reports are published as the
render and tile services publish them (as their NATS users), so the progress
service folds real events into a record of the full size and fans each
change out to every stream, and nothing else competes for the cores.
Measured: page done (its ``finished_at``) → each stream has it, the bytes
each stream received, and the progress process's CPU seconds per event.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import grpc

from planzoom import keys
from planzoom.clock import now_ts
from planzoom.config import Settings
from planzoom.ids import new_job_id
from planzoom.jobstore import JobStore
from planzoom.messaging import connection, topology
from planzoom.messaging.events import report_page
from planzoom.v1 import jobs_pb2, progress_pb2, progress_pb2_grpc
from planzoom_devstack.stack import EmbeddedStack


@dataclass
class Scale:
    pages: int
    watchers: int
    reported: int  # pages that went rendering → tiling → done
    latencies: list[float]  # page done → a stream has it, seconds
    bytes_per_stream: float  # received over the run
    updates_per_stream: float
    snapshot_bytes: int
    events: int
    cpu_seconds: float  # the progress process, while the events came in


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def progress_at_scale(stack: EmbeddedStack, pages: int = 2000, watchers: int = 200,
                      reported: int = 300, pages_per_second: float = 10.0) -> Scale:
    """Create a ``pages``-page job, open ``watchers`` WatchJob streams on it,
    then report the first ``reported`` pages rendering, tiling and done at
    ``pages_per_second``; cancel the job at the end."""
    env = stack.env()
    plan = jobs_pb2.PlanRef(org="bench", project="scale", plan=f"p{pages}")
    job_id = new_job_id()
    admin = (("authorization", f"Bearer {stack.token('bench', 'admin')}"),)
    # A person per stream, as in the field (a caller may hold only so many).
    viewers = [(("authorization", "Bearer " + stack.issuer.mint(
        "bench", "viewer", subject=f"viewer-{i}@bench")),) for i in range(watchers)]
    address = env["PLANZOOM_PROGRESS_ADDR"]
    seen_at: list[tuple[float, float]] = []  # (page finished_at, a stream has it)
    sizes = [0] * watchers
    counts = [0] * watchers
    ready: list[int] = []
    snapshot_bytes = [0]

    def settings_as(service: str) -> Settings:
        values = {**{k: v for k, v in env.items() if k.startswith("PLANZOOM_")},
                  **stack.nats_credentials(service)}
        return Settings(**{k.removeprefix("PLANZOOM_").lower(): v for k, v in values.items()})

    async def watch(stub, i: int, first_seen: asyncio.Event) -> None:
        done: set[int] = set()
        request = progress_pb2.WatchJobRequest(job_id=job_id)
        try:
            async for update in stub.WatchJob(request, metadata=viewers[i]):
                now = time.time()
                sizes[i] += update.ByteSize()
                counts[i] += 1
                if update.snapshot and not snapshot_bytes[0]:
                    snapshot_bytes[0] = update.ByteSize()
                if len(ready) < watchers and i not in ready:
                    ready.append(i)
                    if len(ready) == watchers:
                        first_seen.set()
                for p in update.job.pages:
                    if p.state == jobs_pb2.PAGE_STATE_DONE and p.page not in done:
                        done.add(p.page)
                        seen_at.append((p.finished_at.ToNanoseconds() / 1e9, now))
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise

    async def run() -> tuple[int, float]:
        nc = await connection.connect(settings_as("ingest"), "ingest")
        render_nc = await connection.connect(settings_as("render"), "render")
        tile_nc = await connection.connect(settings_as("tile"), "tile")
        channels = [grpc.aio.insecure_channel(address) for _ in range(4)]
        try:
            js = nc.jetstream()
            store = JobStore(js, await js.key_value(topology.JOBS_BUCKET), topology.JOBS_BUCKET)
            now = now_ts()
            job = jobs_pb2.Job(
                job_id=job_id, plan=plan, state=jobs_pb2.JOB_STATE_PROCESSING,
                total_pages=pages, tiles_prefix=keys.tiles_prefix(plan, job_id),
                manifest_key=keys.manifest_key(plan, job_id), created_at=now, updated_at=now,
                source_kind="pdf",
                pages=[jobs_pb2.PageRecord(page=n, state=jobs_pb2.PAGE_STATE_PENDING,
                                           width_pt=2592, height_pt=1728, width_px=10800,
                                           height_px=7200, dpi=300)
                       for n in range(1, pages + 1)])
            await store.create(job)
            stubs = [progress_pb2_grpc.ProgressServiceStub(c) for c in channels]
            first_seen = asyncio.Event()
            streams = [asyncio.create_task(watch(stubs[i % len(stubs)], i, first_seen))
                       for i in range(watchers)]
            await asyncio.wait_for(first_seen.wait(), timeout=120)
            pid = stack.procs["progress"].pid
            cpu0 = _cpu_seconds(pid)
            render_js, tile_js = render_nc.jetstream(), tile_nc.jetstream()
            events = 0
            start = time.monotonic()
            for n in range(1, reported + 1):
                await asyncio.sleep(max(0.0, start + (n - 1) / pages_per_second
                                        - time.monotonic()))
                await report_page(render_js, "render", job_id, plan, jobs_pb2.PageRecord(
                    page=n, state=jobs_pb2.PAGE_STATE_RENDERING, started_at=now_ts()), 1)
                await report_page(tile_js, "tile", job_id, plan, jobs_pb2.PageRecord(
                    page=n, state=jobs_pb2.PAGE_STATE_TILING), 1)
                await report_page(tile_js, "tile", job_id, plan, jobs_pb2.PageRecord(
                    page=n, state=jobs_pb2.PAGE_STATE_DONE, tile_size=254, overlap=1,
                    format="jpg", levels=15, tile_count=1600, bands=1,
                    finished_at=now_ts()), 1)
                events += 3
            deadline = time.monotonic() + 30
            while len(seen_at) < reported * watchers and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            cpu = _cpu_seconds(pid) - cpu0
            cancel = progress_pb2_grpc.ProgressServiceStub(channels[0]).CancelJob
            await cancel(progress_pb2.CancelJobRequest(job_id=job_id, reason="bench"),
                         metadata=admin, timeout=30)
            await asyncio.wait_for(asyncio.gather(*streams, return_exceptions=True),
                                   timeout=60)
            return events, cpu
        finally:
            for c in channels:
                await c.close()
            for conn in (nc, render_nc, tile_nc):
                await connection.close(conn)

    events, cpu = asyncio.run(run())
    return Scale(pages=pages, watchers=watchers, reported=reported,
                 latencies=[got - done for done, got in seen_at],
                 bytes_per_stream=sum(sizes) / watchers, updates_per_stream=sum(counts) / watchers,
                 snapshot_bytes=snapshot_bytes[0],
                 events=events, cpu_seconds=cpu)
