"""Hostile and broken input: mutated PDFs through the PDFium worker pool and
through the whole service, a client that stalls."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import time
from pathlib import Path

import grpc
import pytest

from planzoom.config import Settings
from planzoom.engines.pdf import PdfDamaged
from planzoom.engines.sandbox import ProcessPool, WorkerCrashed, WorkerTimeout
from planzoom.errors import Internal, InvalidInput
from planzoom.media import KINDS
from planzoom.v1 import ingest_pb2, jobs_pb2
from services.ingest.inspection import inspect_upload
from services.ingest.service import Ingest
from tests.conftest import CORPUS
from tests.engines import render_pdf_page
from tests.helpers import list_keys, wait_ended

#: What a worker here reads besides its scratch directory: the functions it
#: runs (tests.engines) and the corpus.
READABLE = (str(Path(__file__).resolve().parents[1]), str(CORPUS))
SEEDS = ["arch-siteplan-archd-36x24in-autocad-drawingparser.pdf",
         "arch-renovation-plans-7p-a4-affinity-latirasse.pdf",
         "scanned-4p-four-orientations-ocrmypdf-cardinal.pdf"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Bit flips, a truncation, or a spliced-in run of garbage."""
    kind = rng.choice(["flip", "truncate", "splice"])
    b = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 200)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        b = b[: rng.randint(len(b) // 10, len(b) - 1)]
    else:
        at = rng.randrange(len(b))
        b[at : at + rng.randint(10, 5000)] = rng.randbytes(rng.randint(10, 5000))
    return bytes(b)


@pytest.mark.slow
def test_mutated_pdfs_do_not_wedge_the_render_pool(corpus, tmp_path):
    rng = random.Random(20261121)
    pool = ProcessPool(workers=1, recycle_after=10, memory_bytes=2 * 1024**3, readable=READABLE)
    outcomes: dict[str, int] = {}

    async def run() -> None:
        try:
            await attempts()
        finally:
            await pool.close()

    async def attempts() -> None:
        for i in range(36):
            seed = corpus / SEEDS[i % len(SEEDS)]
            path = tmp_path / f"m{i}.pdf"
            path.write_bytes(mutate(seed.read_bytes(), rng))
            t0 = time.monotonic()
            try:
                await pool.run(30, render_pdf_page, str(path), 1, 30, 10**7,
                               str(tmp_path / "out.zst"), 1 << 20)
                outcome = "rendered"
            except InvalidInput:  # PdfDamaged, PageUnrenderable
                outcome = "failed"
            except (WorkerCrashed, WorkerTimeout):
                outcome = "crashed"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            assert time.monotonic() - t0 < 35
        # The pool still renders a good page afterwards.
        r = await pool.run(60, render_pdf_page, str(corpus / SEEDS[0]), 1, 20, 10**7,
                           str(tmp_path / "ok.zst"), 1 << 20)
        assert r.width_px == 720

    asyncio.run(run())
    print("mutated PDF outcomes:", outcomes)
    assert sum(outcomes.values()) == 36, outcomes


@pytest.mark.integration
@pytest.mark.slow
def test_mutated_pdfs_through_the_service(corpus, client, s3):
    """Each mutated file is refused with a clear code or becomes a job that
    ends (COMPLETE or FAILED with reasons); the service keeps serving."""
    rng = random.Random(7)
    jobs = []
    for i in range(8):
        data = mutate((corpus / SEEDS[i % len(SEEDS)]).read_bytes(), rng)
        plan = jobs_pb2.PlanRef(org="acme", project="mutated", plan=f"m{i}")

        def requests(data=data, plan=plan):
            yield ingest_pb2.UploadRequest(header=ingest_pb2.UploadHeader(
                plan=plan, options=jobs_pb2.JobOptions(dpi=20)))
            yield ingest_pb2.UploadRequest(chunk=data)

        try:
            jobs.append(client.ingest.Upload(requests(), timeout=60).job_id)
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                grpc.StatusCode.FAILED_PRECONDITION), e.details()
            assert list_keys(s3, f"sources/acme/mutated/m{i}/") == []
    for job_id in jobs:
        job = wait_ended(client, job_id, timeout=180)
        assert job.state in (jobs_pb2.JOB_STATE_COMPLETE, jobs_pb2.JOB_STATE_FAILED)
        if job.state == jobs_pb2.JOB_STATE_FAILED:
            assert all(p.error for p in job.pages if p.state == jobs_pb2.PAGE_STATE_FAILED)


@pytest.mark.integration
def test_client_that_stops_sending_hits_its_deadline(corpus, client, s3):
    plan = jobs_pb2.PlanRef(org="acme", project="stalled-upload", plan="siteplan")
    data = (corpus / SEEDS[0]).read_bytes()

    def requests():
        yield ingest_pb2.UploadRequest(header=ingest_pb2.UploadHeader(plan=plan))
        yield ingest_pb2.UploadRequest(chunk=data[:50_000])
        time.sleep(4)  # the client goes quiet
        yield ingest_pb2.UploadRequest(chunk=data[50_000:])

    with pytest.raises(grpc.RpcError) as e:
        client.ingest.Upload(requests(), timeout=1.5)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(3)
    assert client.list_jobs(plan) == []
    assert list_keys(s3, "sources/acme/stalled-upload/") == []
    assert list_keys(s3, "tiles/acme/stalled-upload/") == []
    # The service still takes the same upload.
    resp = client.submit(str(corpus / SEEDS[0]), plan, jobs_pb2.JobOptions(dpi=20))
    assert wait_ended(client, resp.job_id).state == jobs_pb2.JOB_STATE_COMPLETE


def test_a_task_waiting_behind_an_overrun_gets_the_next_worker():
    """One worker; a task that overruns its 1 s and one queued behind it: the
    second starts on a new worker once the first is killed, long before its
    queue limit."""
    pool = ProcessPool(workers=1, recycle_after=5, queue_seconds=20, readable=READABLE)

    async def run():
        try:
            slow = asyncio.create_task(pool.run(1, time.sleep, 30))
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            queued = await pool.run(10, abs, -7)
            waited = time.monotonic() - t0
            with pytest.raises(WorkerTimeout):
                await slow
            return queued, waited
        finally:
            await pool.close()

    result, waited = asyncio.run(run())
    assert result == 7 and waited < 8, f"waited {waited:.1f} s for a worker"


def test_the_worker_reports_a_result_it_cannot_encode_and_lives_on():
    """A task whose result is not JSON (bytes here) is a failure of ours,
    reported as WORKER_FAILED, not a worker that died of its input."""
    pool = ProcessPool(workers=1, recycle_after=5, readable=READABLE)

    async def run():
        try:
            with pytest.raises(Internal) as failed:
                await pool.run(10, bytes.fromhex, "00ff")
            return failed.value, await pool.run(10, abs, -3)
        finally:
            await pool.close()

    error, after = asyncio.run(run())
    assert not isinstance(error, WorkerCrashed) and error.reason == "WORKER_FAILED"
    assert after == 3


def test_a_worker_that_dies_once_is_no_verdict_on_the_file(corpus, tmp_path):
    """Ingest inspects an upload in a fresh worker when the first one died
    under it (killed from outside, memory short at a bad moment): a good PDF
    is read. Only a file that kills the second worker too is refused as
    damaged."""
    service = Ingest(Settings(work_dir=str(tmp_path), inspect_workers=2))
    path = Path(service.tmp) / "upload.pdf"
    path.write_bytes((corpus / SEEDS[0]).read_bytes())
    real_run, tasks = service.pool.run, []

    async def run_dying(deaths: int, timeout, fn, *args, owner=None):
        tasks.append(fn)
        if len(tasks) <= deaths:  # the worker dies in the middle of the task
            return await real_run(timeout, os._exit, 1, owner=owner)
        return await real_run(timeout, fn, *args, owner=owner)

    async def inspect(deaths: int):
        tasks.clear()
        service.pool.run = functools.partial(run_dying, deaths)
        return await inspect_upload(service.pool, service.limits,
                                    service.s.inspect_timeout_seconds, str(path),
                                    KINDS["pdf"], "acme")

    async def run():
        try:
            info = await inspect(deaths=1)
            with pytest.raises(PdfDamaged) as refused:
                await inspect(deaths=2)
            return info, refused.value
        finally:
            await service.pool.close()

    info, refused = asyncio.run(run())
    assert len(info.page_sizes) == 1 and len(tasks) == 2
    assert "exit code 1" in refused.message and "probably damaged" in refused.message
