"""A bounded load test on loopback: 20 jobs at once, 200 concurrent
WatchJob streams, two tile workers; then watchers that come and go."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from planzoom.jobstore import job_key
from planzoom.messaging import topology
from planzoom.updates import apply_update
from planzoom.v1 import jobs_pb2, progress_pb2, progress_pb2_grpc
from planzoom_cli.client import channel
from tests.helpers import run_nats, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FILES = [
    ("arch-siteplan-archd-36x24in-autocad-drawingparser.pdf", 40),
    ("arch-renovation-plans-7p-a4-affinity-latirasse.pdf", 30),
    ("arch-facades-58x30cm-archicad-atriumhouse.pdf", 40),
    ("arch-floorplan-70x45cm-archicad-atriumhouse.pdf", 40),
    ("scanned-4p-four-orientations-ocrmypdf-cardinal.pdf", 30),
    ("mech-sheet-rasteronly-letter-pinscaling.pdf", 40),
    ("corrupt-brokenxref-cadtitleblock-42x32in-pdfjs-issue9418.pdf", 30),
    ("arch-floorplan-a4-dense-contentstreamerror-scaledetection-n96.pdf", 40),
    ("encrypted-ownerpw-only-a4landscape-pdfplumber-pr138.pdf", 30),
    ("arch-floorplan-a1-dense-offsetmediabox-scaledetection-dr.pdf", 30),
]
JOBS = 20
WATCHERS = 200


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _viewers(stack):
    """A ProgressService stub and WATCHERS viewers' call metadata: a viewer
    per stream, as in the field (one caller may hold only so many,
    PLANZOOM_MAX_WATCHES_PER_CALLER)."""
    stub = progress_pb2_grpc.ProgressServiceStub(channel(stack.env()["PLANZOOM_PROGRESS_ADDR"]))
    return stub, [(("authorization", "Bearer " + stack.issuer.mint(
        "acme", "viewer", subject=f"viewer-{i}@acme")),) for i in range(WATCHERS)]


def test_twenty_jobs_two_hundred_watchers(corpus, stack, client):
    second = stack.start_service("tile", replica=2)
    try:
        def submit(i: int):
            name, dpi = FILES[i % len(FILES)]
            plan = jobs_pb2.PlanRef(org="acme", project="load", plan=f"job{i}")
            return client.submit(str(corpus / name), plan, jobs_pb2.JobOptions(dpi=dpi + i))

        with ThreadPoolExecutor(JOBS) as pool:
            job_ids = [r.job_id for r in pool.map(submit, range(JOBS))]
        assert len(set(job_ids)) == JOBS

        results: dict[int, list[tuple[int, int, int]]] = {}
        stub, viewers = _viewers(stack)

        def watch(w: int) -> None:
            seq, job = [], None
            for update in stub.WatchJob(progress_pb2.WatchJobRequest(job_id=job_ids[w % JOBS]),
                                        timeout=600, metadata=viewers[w]):
                job = apply_update(job, update)
                seq.append((job.revision, job.state, job.completed_pages))
            results[w] = seq

        threads = [threading.Thread(target=watch, args=(w,)) for w in range(WATCHERS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        elapsed = time.monotonic() - t0
    finally:
        stack.stop_service(second)
    assert len(results) == WATCHERS, "a watcher did not see its job end"
    for w, seq in results.items():
        assert seq[-1][1] == jobs_pb2.JOB_STATE_COMPLETE, (w, seq[-1])
        assert [r for r, _, _ in seq] == sorted({r for r, _, _ in seq}), "state went back"
        assert [c for _, _, c in seq] == sorted(c for _, _, c in seq), "progress went back"
    print(f"{JOBS} jobs, {WATCHERS} watchers: all COMPLETE in {elapsed:.1f} s")


def test_progress_memory_flat_as_watchers_come_and_go(corpus, stack, client):
    """Rounds of 200 open WatchJob streams on one job that the clients drop:
    the 200 streams share one KV watch consumer, and the progress service's
    memory and its consumers return to the same level after each round."""
    stack.stop_service("render")  # keeps the job open, so streams stay open
    try:
        plan = jobs_pb2.PlanRef(org="acme", project="load", plan="held")
        job_id = client.submit(str(corpus / FILES[0][0]), plan,
                               jobs_pb2.JobOptions(dpi=33)).job_id
        nats_url = stack.admin_nats_url
        pid = stack.procs["progress"].pid

        subject = f"$KV.{topology.JOBS_BUCKET}.{job_key(job_id)}"

        async def kv_consumers(js):
            """Server-side KV watch consumers on this job's record."""
            infos = await js.consumers_info(f"KV_{topology.JOBS_BUCKET}")
            return sum(1 for i in infos
                       if subject in (i.config.filter_subject, *(i.config.filter_subjects or ())))

        stub, viewers = _viewers(stack)

        def one_round() -> None:
            calls = [stub.WatchJob(progress_pb2.WatchJobRequest(job_id=job_id), timeout=60,
                                   metadata=viewer) for viewer in viewers]
            for call in calls:
                assert next(call).job.job_id == job_id  # the stream is open
            wait_until("the job has a KV watcher",
                       lambda: run_nats(nats_url, kv_consumers) >= 1, timeout=30)
            assert run_nats(nats_url, kv_consumers) == 1, (
                "the streams of one job do not share one watcher")
            for call in calls:
                call.cancel()
            for call in calls:
                with pytest.raises(grpc.RpcError):
                    next(call)
            wait_until("the watch consumer is released",
                       lambda: run_nats(nats_url, kv_consumers) == 0, timeout=30)

        for _ in range(2):  # warm-up: allocator pools, gRPC buffers
            one_round()
        rss_after_first = _rss_kib(pid)
        for _ in range(4):
            one_round()
        rss_after_last = _rss_kib(pid)
    finally:
        stack.start_service("render")
    growth = rss_after_last - rss_after_first
    print(f"progress RSS {rss_after_first} KiB after round 2, {rss_after_last} KiB after 6")
    assert growth < 20 * 1024, f"progress service grew {growth} KiB over 4 rounds"
