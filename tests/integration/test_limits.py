"""Limits, budgets and fairness against the running stack: each way one
tenant could flood or starve the others is refused or contained, and the
service stays up."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from planzoom.scratch import tree_bytes
from planzoom.states import ended
from planzoom.v1 import ingest_pb2, jobs_pb2, progress_pb2
from planzoom_cli.client import Client
from tests.helpers import list_keys, rpc_reason, wait_ended, wait_until
from tests.hostile import huge_pages, xref_bomb
from tests.integration.conftest import MAX_JOB_PIXELS, UPLOAD_IDLE_SECONDS, client_for

pytestmark = pytest.mark.integration

SITEPLAN = "arch-siteplan-archd-36x24in-autocad-drawingparser.pdf"
MANYPAGES = "manypages-117p-vectorfigures-pypdf-geotopo.pdf"


def _upload(client: Client, data: bytes, plan, options=None, chunk: int = 1 << 20):
    def messages():
        yield ingest_pb2.UploadRequest(header=ingest_pb2.UploadHeader(
            plan=plan, options=options or jobs_pb2.JobOptions(dpi=30), filename="f.pdf"))
        for i in range(0, len(data), chunk):
            yield ingest_pb2.UploadRequest(chunk=data[i:i + chunk])

    return client.ingest.Upload(messages(), timeout=120)


def _refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_amplification_is_refused_before_anything_is_stored(client, s3):
    """Pages of 200 x 200 in (a file of a few KB) at 1200 DPI: 100 pages with
    64-pixel tiles make 13 million tiles; 200 pages, 80 gigapixels."""
    data = huge_pages(200)
    assert len(data) < 20_000
    plan = jobs_pb2.PlanRef(org="acme", project="limits", plan="amplification")
    for pages, tile_size, limit in ((100, 64, "PLANZOOM_MAX_JOB_TILES"),
                                    (200, 4096, "PLANZOOM_MAX_JOB_PIXELS")):
        e = _refusal(lambda p=pages, ts=tile_size: _upload(client, huge_pages(p), plan,
                                                           jobs_pb2.JobOptions(dpi=1200,
                                                                               tile_size=ts)))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
        assert limit in e.details() and rpc_reason(e) == "JOB_TOO_LARGE"
    assert client.list_jobs(plan) == []
    assert list_keys(s3, "sources/acme/limits/amplification/") == []
    # The same file at a sane DPI is a job.
    small = _upload(client, data, plan, jobs_pb2.JobOptions(dpi=10))
    assert small.job.planned_pixels <= MAX_JOB_PIXELS and small.job.total_pages == 200


def test_identical_submits_at_once_make_one_job(corpus, stack):
    plan = jobs_pb2.PlanRef(org="acme", project="limits", plan="six-at-once")
    clients = [client_for(stack) for _ in range(6)]
    try:
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda c: c.submit(str(corpus / SITEPLAN), plan,
                                                       jobs_pb2.JobOptions(dpi=33)), clients))
        assert len({r.job_id for r in replies}) == 1, [r.job_id for r in replies]
        assert sorted(r.deduplicated for r in replies) == [False] + [True] * 5
        assert [j.job_id for j in clients[0].list_jobs(plan)] == [replies[0].job_id]
    finally:
        for c in clients:
            c.close()


def test_an_idle_upload_is_cut_off(client, s3):
    plan = jobs_pb2.PlanRef(org="acme", project="limits", plan="idle")

    def messages():
        yield ingest_pb2.UploadRequest(header=ingest_pb2.UploadHeader(plan=plan))
        yield ingest_pb2.UploadRequest(chunk=b"%PDF-1.7\n")
        time.sleep(UPLOAD_IDLE_SECONDS * 4)  # the client goes quiet, with no deadline of its own

    t0 = time.monotonic()
    e = _refusal(lambda: client.ingest.Upload(messages()))
    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and rpc_reason(e) == "UPLOAD_IDLE"
    assert time.monotonic() - t0 < UPLOAD_IDLE_SECONDS * 3
    assert list_keys(s3, "sources/acme/limits/idle/") == []


def test_oversized_messages_are_refused_without_memory_growth(stack, client):
    plan = jobs_pb2.PlanRef(org="acme", project="limits", plan="huge-message")
    pid = stack.procs["ingest"].pid
    before = _rss_kib(pid)
    for size in (6, 60):
        payload = b"%PDF-1.7\n" + bytes(size * 1024 * 1024)
        e = _refusal(lambda p=payload: _upload(client, p, plan, chunk=len(p)))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.details()
    grown = _rss_kib(pid) - before
    assert grown < 64 * 1024, f"ingest grew {grown} KiB"
    with pytest.raises(grpc.RpcError) as e:
        client.get_job("0" * 22)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_one_org_cannot_take_every_upload_slot(corpus, stack, client):
    """PLANZOOM_MAX_CONCURRENT_UPLOADS_PER_ORG (4): a fifth upload of the
    same org is refused with a RetryInfo, another org's goes through, and
    the slots come back when the idle ones are cut off."""
    plan = jobs_pb2.PlanRef(org="acme", project="limits", plan="slots")
    release = threading.Event()

    def held():
        yield ingest_pb2.UploadRequest(header=ingest_pb2.UploadHeader(plan=plan))
        yield ingest_pb2.UploadRequest(chunk=b"%PDF-1.7\n")
        release.wait(UPLOAD_IDLE_SECONDS * 4)

    calls = [client.ingest.Upload.future(held(), timeout=60) for _ in range(4)]
    time.sleep(1.0)
    e = _refusal(lambda: _upload(client, (corpus / SITEPLAN).read_bytes(), plan))
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and rpc_reason(e) == "TOO_MANY_UPLOADS"
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in rpc_status.from_call(e).details)
    assert retry.retry_delay.seconds >= 1
    other = client_for(stack, org="other-org")
    try:
        done = other.submit(str(corpus / SITEPLAN), jobs_pb2.PlanRef(
            org="other-org", project="limits", plan="slots"), jobs_pb2.JobOptions(dpi=30))
        assert done.job_id
    finally:
        other.close()
    for call in calls:  # cut off by the server, idle
        assert call.exception(timeout=30).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    release.set()
    assert _upload(client, (corpus / SITEPLAN).read_bytes(), plan).job_id


def _bombs_and_bystanders(corpus, stack, replica: int, env: dict[str, str], project: str,
                          bystanders_after: float = 0.0) -> list:
    """On an ingest replica started with ``env``: two cross-reference bombs
    (a 164 KB PDF that takes PDFium seconds and a gigabyte to open) of org
    "attacker" and, ``bystanders_after`` seconds later, an innocent upload
    of each of three other orgs, all at once. Each one's reply or error."""
    name = stack.start_service("ingest", replica=replica, env=env)
    progress = stack.env()["PLANZOOM_PROGRESS_ADDR"]
    bomb, innocent = xref_bomb(), (corpus / SITEPLAN).read_bytes()
    orgs = ["attacker", "attacker", "bystander-1", "bystander-2", "bystander-3"]
    clients = [Client(stack.addrs[name], progress, token=stack.token(org, "uploader"))
               for org in orgs]
    try:
        def send(i: int):
            plan = jobs_pb2.PlanRef(org=orgs[i], project=project, plan=f"upload-{i}")
            if i >= 2:
                time.sleep(bystanders_after)
            try:
                return _upload(clients[i], bomb if i < 2 else innocent, plan)
            except grpc.RpcError as e:
                return e

        with ThreadPoolExecutor(5) as pool:
            return list(pool.map(send, range(5)))
    finally:
        for c in clients:
            c.close()
        stack.stop_service(name)


def test_a_slow_pdf_never_fails_other_uploads(corpus, stack):
    """Two uploads that take PDFium seconds and a gigabyte to open (a 164 KB
    cross-reference bomb) against an ingest with two inspection workers and
    a 2 s limit: they are refused as too slow; three innocent uploads sent
    at the same time all become jobs (at worst delayed), none 'damaged'."""
    outcomes = _bombs_and_bystanders(corpus, stack, 2, {
        "PLANZOOM_INSPECT_TIMEOUT_SECONDS": "2", "PLANZOOM_INSPECT_WORKERS": "2"}, "slow-pdf")
    for bad in outcomes[:2]:
        assert isinstance(bad, grpc.RpcError), "the bomb was accepted"
        assert bad.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and rpc_reason(bad) == \
            "PDF_TOO_SLOW", bad.details()
    for good in outcomes[2:]:
        assert not isinstance(good, grpc.RpcError), good.details()
        assert good.job.total_pages == 1


def test_one_orgs_slow_files_hold_at_most_half_the_inspection_workers(corpus, stack):
    """Two cross-reference bombs of one org, sent at once, against an ingest
    with two inspection workers, a 6 s limit and a 4 s queue: the org gets
    one worker (its second bomb waits for it, then is refused as busy or too
    slow), so three other orgs' uploads, sent just after, all become jobs
    instead of waiting out the bombs."""
    outcomes = _bombs_and_bystanders(corpus, stack, 3, {
        "PLANZOOM_INSPECT_TIMEOUT_SECONDS": "6", "PLANZOOM_INSPECT_QUEUE_SECONDS": "4",
        "PLANZOOM_INSPECT_WORKERS": "2"}, "fair-inspection", bystanders_after=1.0)
    for bad in outcomes[:2]:
        assert isinstance(bad, grpc.RpcError), "the bomb was accepted"
        assert (bad.code(), rpc_reason(bad)) in {
            (grpc.StatusCode.RESOURCE_EXHAUSTED, "PDF_TOO_SLOW"),
            (grpc.StatusCode.UNAVAILABLE, "WORKERS_BUSY")}, bad.details()
    for good in outcomes[2:]:
        assert not isinstance(good, grpc.RpcError), good.details()
        assert good.job.total_pages == 1


def test_jobs_over_the_org_quota_wait_queued(corpus, stack, client):
    """Services where an org may have one job in flight: the next two are
    created PENDING and queued, published only once the first ends, and
    everything completes. The quota is a setting of ingest (which admits)
    and of progress (which releases): both get it."""
    one = {"PLANZOOM_ORG_MAX_JOBS_IN_FLIGHT": "1"}
    stack.stop_service("progress")
    stack.start_service("progress", env=one)
    name = stack.start_service("ingest", replica=3, env=one)
    quota = Client(stack.addrs[name], stack.env()["PLANZOOM_PROGRESS_ADDR"],
                   token=stack.token("quota-org", "admin"))
    try:
        replies = [quota.submit(str(corpus / "arch-renovation-plans-7p-a4-affinity-latirasse.pdf"),
                                jobs_pb2.PlanRef(org="quota-org", project="q", plan=f"p{i}"),
                                jobs_pb2.JobOptions(dpi=60)) for i in range(3)]
        assert [r.job.queued for r in replies] == [False, True, True]
        # The first job may already have ended (and released the second) by
        # now, so read the second before the first: released implies ended.
        second = quota.get_job(replies[1].job_id)
        first = quota.get_job(replies[0].job_id)
        assert second.queued or ended(first), (
            "the second job left the queue while the first was still running")
        finals = [wait_ended(quota, r.job_id) for r in replies]
    finally:
        quota.close()
        stack.stop_service(name)
        stack.stop_service("progress")
        stack.start_service("progress")
    assert all(f.state == jobs_pb2.JOB_STATE_COMPLETE for f in finals)
    first_end = finals[0].finished_at.ToSeconds()
    for later in finals[1:]:
        assert not later.queued and later.released_at.ToSeconds() >= first_end - 1, (
            "a queued job was released before its org's first job ended")


def test_one_orgs_big_job_does_not_delay_another_orgs_page(corpus, stack, client):
    """Fairness: org 'big' submits 117 pages; once a few are done, org
    'small' submits one page. Its page waits for at most the pages already
    being worked on (about one page per stage), not for big's backlog: big
    finishes a few of its pages meanwhile, not the backlog's half. (Counted
    in big's pages rather than in seconds, so that a loaded machine slows
    both sides alike.)"""
    big = client_for(stack, org="big-org")
    small = client_for(stack, org="small-org")
    try:
        job = big.submit(str(corpus / MANYPAGES), jobs_pb2.PlanRef(
            org="big-org", project="fair", plan="backlog"), jobs_pb2.JobOptions(dpi=150))
        wait_until("big has pages done", lambda: big.get_job(job.job_id).completed_pages >= 5,
                   timeout=120)
        before = big.get_job(job.job_id)
        t0 = time.time()
        one = small.submit(str(corpus / SITEPLAN), jobs_pb2.PlanRef(
            org="small-org", project="fair", plan="one-page"), jobs_pb2.JobOptions(dpi=150))
        done = wait_ended(small, one.job_id)
        small_seconds = time.time() - t0
        after = big.get_job(job.job_id)
        big.cancel(job.job_id, "the fairness test has what it needs")
    finally:
        big.close()
        small.close()
    assert done.state == jobs_pb2.JOB_STATE_COMPLETE
    backlog = before.total_pages - before.completed_pages
    meanwhile = after.completed_pages - before.completed_pages
    print(f"fairness: one page of another org done in {small_seconds:.1f} s, while big "
          f"finished {meanwhile} of the {backlog} pages it had left")
    assert after.total_pages - after.completed_pages > 50, \
        "big's backlog was not there to delay small"
    assert meanwhile < backlog / 2, (
        f"small's page waited while big finished {meanwhile} of its {backlog} pages")


def test_watch_streams_are_capped_per_caller_and_per_org(corpus, stack, client):
    """A progress replica that lets a caller hold 2 WatchJob streams and an
    org 3: a caller's third is refused with a retry hint, another caller of
    the org gets one more, the org's fourth is refused, and a closed stream
    frees its slot."""
    name = stack.start_service("progress", replica=2, env={
        "PLANZOOM_MAX_WATCHES_PER_CALLER": "2", "PLANZOOM_MAX_WATCHES_PER_ORG": "3"})
    stack.stop_service("render")  # the job stays PENDING: its streams stay open
    env = stack.env()
    callers = [Client(env["PLANZOOM_INGEST_ADDR"], stack.addrs[name],
                      token=stack.issuer.mint("acme", "viewer", subject=subject))
               for subject in ("alice@acme", "bob@acme")]
    streams = []
    try:
        job = client.submit(str(corpus / SITEPLAN), jobs_pb2.PlanRef(
            org="acme", project="limits", plan="watches"), jobs_pb2.JobOptions(dpi=30)).job

        def watch(caller: Client):
            stream = caller.progress.WatchJob(progress_pb2.WatchJobRequest(job_id=job.job_id),
                                              timeout=60)
            next(stream)  # the snapshot: the stream holds its slot
            streams.append(stream)
            return stream

        first = watch(callers[0])
        watch(callers[0])
        e = _refusal(lambda: watch(callers[0]))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and \
            rpc_reason(e) == "TOO_MANY_WATCHES", e.details()
        retry = error_details_pb2.RetryInfo()
        assert any(d.Unpack(retry) for d in rpc_status.from_call(e).details)
        watch(callers[1])  # the org's third
        e = _refusal(lambda: watch(callers[1]))
        assert rpc_reason(e) == "TOO_MANY_WATCHES" and "org 'acme'" in e.details()
        first.cancel()
        wait_until("the closed stream's slot is free",
                   lambda: _opened(lambda: watch(callers[1])), timeout=10)
    finally:
        for stream in streams:
            stream.cancel()
        for c in callers:
            c.close()
        stack.start_service("render")
        stack.stop_service(name)


def _opened(open_stream) -> bool:
    try:
        open_stream()
        return True
    except grpc.RpcError:
        return False


def test_uploads_wait_for_scratch_space_and_lose_nothing(corpus, stack, client, tmp_path):
    """An ingest whose scratch volume holds 600 kB (PLANZOOM_SCRATCH_BYTES,
    as the chart sets it from the emptyDir's size): a 1.2 MB upload is
    refused UNAVAILABLE SCRATCH_FULL, streamed or presigned, and leaves
    nothing on the volume; the presigned one stays staged and another
    ingest submits it; a small upload still goes through."""
    name = stack.start_service("ingest", replica=6, env={
        "PLANZOOM_WORK_DIR": str(tmp_path), "PLANZOOM_SCRATCH_BYTES": "600k"})
    small = Client(stack.addrs[name], stack.env()["PLANZOOM_PROGRESS_ADDR"],
                   token=stack.token("acme", "uploader"))
    big = (corpus / "arch-floorplan-a1-rot90-heavyvector-scaledetection-drawing.pdf").read_bytes()
    plan = jobs_pb2.PlanRef(org="acme", project="limits", plan="scratch")
    try:
        streamed = _refusal(lambda: _upload(small, big, plan))
        assert (streamed.code(), rpc_reason(streamed)) == (
            grpc.StatusCode.UNAVAILABLE, "SCRATCH_FULL"), streamed.details()
        assert "bytes of scratch space" in streamed.details()
        url = small.ingest.CreateUploadUrl(ingest_pb2.CreateUploadUrlRequest(
            plan=plan, size_bytes=len(big)), timeout=10)
        assert requests.post(url.url, data=dict(url.fields), timeout=30, files={
            "file": ("big.pdf", big, "application/pdf")}).status_code == 204
        submit = ingest_pb2.SubmitJobRequest(plan=plan, object_key=url.object_key,
                                             options=jobs_pb2.JobOptions(dpi=20))
        refused = _refusal(lambda: small.ingest.SubmitJob(submit, timeout=60))
        assert rpc_reason(refused) == "SCRATCH_FULL", refused.details()
        assert tree_bytes(str(tmp_path)) == 0, "a refused upload left bytes behind"
        assert client.ingest.SubmitJob(submit, timeout=60).job_id, "the staged upload was lost"
        assert _upload(small, (corpus / SITEPLAN).read_bytes(), plan).job_id
    finally:
        small.close()
        stack.stop_service(name)
