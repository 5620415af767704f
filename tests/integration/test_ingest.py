"""Ingest: refused input, deduplication, presigned uploads, failing pages."""

from __future__ import annotations

import os
import sys

import grpc
import pytest
import requests
from grpc_status import rpc_status

from planzoom.messaging import topology
from planzoom.v1 import events_pb2, ingest_pb2, jobs_pb2
from planzoom.v1.reasons_pb2 import Reason
from planzoom_cli.client import upload_requests
from tests.helpers import list_keys, run_nats, wait_ended
from tests.integration.conftest import MAX_PAGES, MAX_UPLOAD_BYTES

pytestmark = pytest.mark.integration

SITEPLAN = "arch-siteplan-archd-36x24in-autocad-drawingparser.pdf"


def _truncated(corpus) -> bytes:
    data = (corpus / SITEPLAN).read_bytes()
    return data[: len(data) // 3]


def _corrupt(corpus) -> bytes:
    return b"%PDF-1.7\n" + os.urandom(64 * 1024)


def _executable(corpus) -> bytes:
    with open(sys.executable, "rb") as f:
        return f.read(256 * 1024)


# (case, bytes or corpus file, expected code)
BAD_FILES = [
    ("executable", _executable, grpc.StatusCode.INVALID_ARGUMENT),
    ("empty", lambda c: b"", grpc.StatusCode.INVALID_ARGUMENT),
    ("truncated", _truncated, grpc.StatusCode.INVALID_ARGUMENT),
    ("corrupt", _corrupt, grpc.StatusCode.INVALID_ARGUMENT),
    ("encrypted-aes", "encrypted-aes-pw-ELXRTQWS-scan-pdfjs-issue3371.pdf",
     grpc.StatusCode.FAILED_PRECONDITION),
    ("encrypted-rc4", "encrypted-rc4-userpw-openpassword-pypdf-005.pdf",
     grpc.StatusCode.FAILED_PRECONDITION),
    ("too-many-pages", "manypages-352p-freeculture-pdfjs.pdf",
     grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("oversize", lambda c: b"%PDF-1.7\n" + bytes(MAX_UPLOAD_BYTES),
     grpc.StatusCode.RESOURCE_EXHAUSTED),
]


def _upload_bytes(client, data: bytes, plan, options=None):
    def requests_():
        yield ingest_pb2.UploadRequest(header=ingest_pb2.UploadHeader(
            plan=plan, options=options or jobs_pb2.JobOptions(), filename="input.pdf"))
        for i in range(0, len(data), 1024 * 1024):
            yield ingest_pb2.UploadRequest(chunk=data[i : i + 1024 * 1024])

    return client.ingest.Upload(requests_(), timeout=120)


def _assert_refused(err: grpc.RpcError, code: grpc.StatusCode) -> None:
    assert err.code() == code, f"{err.code()}: {err.details()}"
    assert len(err.details()) > 20, "the message should tell a person what to do"
    status = rpc_status.from_call(err)
    assert status is not None and status.details, "a google.rpc detail is attached"


def _assert_nothing_stored(client, s3, plan) -> None:
    assert client.list_jobs(plan) == []
    prefix = f"{plan.org}/{plan.project}/{plan.plan}/"
    assert list_keys(s3, "tiles/" + prefix) == []
    assert list_keys(s3, "sources/" + prefix) == []


def _assert_still_serving(client) -> None:
    # A refused upload must not take the service down: a good request works.
    with pytest.raises(grpc.RpcError) as e:
        client.ingest.GetJob(jobs_pb2.GetJobRequest(job_id="0000000000000000000000"),
                             timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("case,source,code", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_is_refused(corpus, client, s3, case, source, code):
    data = (corpus / source).read_bytes() if isinstance(source, str) else source(corpus)
    if case == "too-many-pages":
        assert MAX_PAGES < 352
    plan = jobs_pb2.PlanRef(org="acme", project="bad", plan=case)
    with pytest.raises(grpc.RpcError) as e:
        _upload_bytes(client, data, plan)
    _assert_refused(e.value, code)
    _assert_nothing_stored(client, s3, plan)
    _assert_still_serving(client)


BAD_REQUESTS = [
    ("slash-in-org", jobs_pb2.PlanRef(org="a/b", project="p", plan="l"), {}),
    ("dotdot-project", jobs_pb2.PlanRef(org="acme", project="..", plan="l"), {}),
    ("empty-plan", jobs_pb2.PlanRef(org="acme", project="p", plan=""), {}),
    ("nul-in-plan", jobs_pb2.PlanRef(org="acme", project="p", plan="a\x00b"), {}),
    ("long-id", jobs_pb2.PlanRef(org="acme", project="p", plan="x" * 1000), {}),
    ("negative-dpi", jobs_pb2.PlanRef(org="acme", project="opts", plan="dpi1"), {"dpi": -5}),
    ("absurd-dpi", jobs_pb2.PlanRef(org="acme", project="opts", plan="dpi2"), {"dpi": 100000}),
    ("tile-size", jobs_pb2.PlanRef(org="acme", project="opts", plan="ts"), {"tile_size": 8}),
    ("quality", jobs_pb2.PlanRef(org="acme", project="opts", plan="q"), {"jpeg_quality": 101}),
]


@pytest.mark.parametrize("case,plan,opts", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_is_refused(corpus, client, s3, case, plan, opts):
    before = set(list_keys(s3, ""))
    with pytest.raises(grpc.RpcError) as e:
        client.submit(str(corpus / SITEPLAN), plan, jobs_pb2.JobOptions(**opts))
    _assert_refused(e.value, grpc.StatusCode.INVALID_ARGUMENT)
    assert set(list_keys(s3, "")) == before, "a refused request wrote to the bucket"
    _assert_still_serving(client)


def _render_stream_last_seq(nats_url: str) -> int:
    async def last_seq(js):
        return (await js.stream_info(topology.RENDER_STREAM)).state.last_seq

    return run_nats(nats_url, last_seq)


def test_duplicate_submit_returns_the_same_job(corpus, stack, client):
    plan = jobs_pb2.PlanRef(org="acme", project="dedup", plan="siteplan")
    options = jobs_pb2.JobOptions(dpi=40)
    first = client.submit(str(corpus / SITEPLAN), plan, options)
    assert not first.deduplicated
    seq = (_render_stream_last_seq(stack.admin_nats_url))
    second = client.submit(str(corpus / SITEPLAN), plan, options)
    assert second.deduplicated and second.job_id == first.job_id
    assert (_render_stream_last_seq(stack.admin_nats_url)) == seq, (
        "a duplicate submit published page jobs")
    assert [j.job_id for j in client.list_jobs(plan)] == [first.job_id]
    # Other options make another job.
    third = client.submit(str(corpus / SITEPLAN), plan, jobs_pb2.JobOptions(dpi=41))
    assert not third.deduplicated and third.job_id != first.job_id
    for job_id in (first.job_id, third.job_id):
        assert wait_ended(client, job_id).state == jobs_pb2.JOB_STATE_COMPLETE


def test_a_submit_that_failed_does_not_hold_up_its_retry(corpus, client, s3_proxy):
    """Storing the source fails (every PUT under sources/ of this plan is
    refused by S3: AccessDenied, which no client retries) after the submit
    claimed its dedup key: the claim is let go, so the identical retry makes
    its job at once instead of waiting for the claim to go stale (600 s).
    (Throttling, retried for over a minute first, takes the same path.)"""
    plan = jobs_pb2.PlanRef(org="acme", project="dedup", plan="failed-first")
    s3_proxy.match, s3_proxy.deny = "PUT /planzoom/sources/acme/dedup/failed-first/", 1.0
    try:
        with pytest.raises(grpc.RpcError) as first:  # once: no retry on its hint
            client.ingest.Upload(upload_requests(str(corpus / SITEPLAN), plan,
                                                 jobs_pb2.JobOptions(dpi=22)), timeout=60)
        assert s3_proxy.counts["deny"] >= 1
    finally:
        s3_proxy.match, s3_proxy.deny = "", 0.0
    assert first.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)
    retry = client.ingest.Upload(
        upload_requests(str(corpus / SITEPLAN), plan, jobs_pb2.JobOptions(dpi=22)), timeout=30)
    assert not retry.deduplicated and retry.job.total_pages == 1
    assert wait_ended(client, retry.job_id).state == jobs_pb2.JOB_STATE_COMPLETE


def test_presigned_upload_then_submit(corpus, client, s3):
    plan = jobs_pb2.PlanRef(org="acme", project="presigned", plan="renovation")
    url = client.ingest.CreateUploadUrl(ingest_pb2.CreateUploadUrlRequest(plan=plan),
                                        timeout=10)
    assert url.object_key.startswith("uploads/acme/presigned/renovation/")
    data = (corpus / "arch-renovation-plans-7p-a4-affinity-latirasse.pdf").read_bytes()
    assert requests.post(url.url, data=dict(url.fields), timeout=30,
                         files={"file": ("plan.pdf", data, "application/pdf")}).status_code == 204
    resp = client.ingest.SubmitJob(ingest_pb2.SubmitJobRequest(
        plan=plan, object_key=url.object_key, options=jobs_pb2.JobOptions(dpi=30)), timeout=60)
    assert resp.job.total_pages == 7
    assert list_keys(s3, "uploads/acme/presigned/") == [], "the staged upload stays behind"
    assert wait_ended(client, resp.job_id).state == jobs_pb2.JOB_STATE_COMPLETE
    # A key outside this plan's upload prefix is refused.
    with pytest.raises(grpc.RpcError) as e:
        client.ingest.SubmitJob(ingest_pb2.SubmitJobRequest(
            plan=plan, object_key=resp.job.source_key), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_presigned_upload_of_a_photo_declares_its_type(corpus, client):
    plan = jobs_pb2.PlanRef(org="acme", project="presigned", plan="photo")
    data = (corpus / "media" / "photo-cmyk-park-sharp.jpg").read_bytes()
    url = client.ingest.CreateUploadUrl(ingest_pb2.CreateUploadUrlRequest(
        plan=plan, content_type="image/jpeg"), timeout=10)
    as_pdf = requests.post(url.url, data={**url.fields, "Content-Type": "application/pdf"},
                           timeout=30, files={"file": ("park.jpg", data, "application/pdf")})
    assert as_pdf.status_code == 403, "the policy let another content type through"
    assert requests.post(url.url, data=dict(url.fields), timeout=30,
                         files={"file": ("park.jpg", data, "image/jpeg")}).status_code == 204
    resp = client.ingest.SubmitJob(ingest_pb2.SubmitJobRequest(plan=plan,
                                                               object_key=url.object_key),
                                   timeout=60)
    assert resp.job.source_kind == "jpeg" and resp.job.source_key.endswith(".jpg")
    assert wait_ended(client, resp.job_id).state == jobs_pb2.JOB_STATE_COMPLETE
    with pytest.raises(grpc.RpcError) as refused:
        client.ingest.CreateUploadUrl(ingest_pb2.CreateUploadUrlRequest(
            plan=plan, content_type="text/html"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_owner_password_only_pdf_is_accepted(corpus, client):
    plan = jobs_pb2.PlanRef(org="acme", project="ownerpw", plan="indesign")
    resp = client.submit(str(corpus / "encrypted-ownerpw-only-a4landscape-pdfplumber-pr138.pdf"),
                         plan, jobs_pb2.JobOptions(dpi=30))
    assert wait_ended(client, resp.job_id).state == jobs_pb2.JOB_STATE_COMPLETE


def test_failing_pages_end_the_job_failed(corpus, stack, client, s3):
    """The source disappears before render gets to it: every page fails with
    its reason, the job ends FAILED with per-page errors, nothing retries
    forever, and the render service keeps serving."""
    stack.stop_service("render")
    try:
        plan = jobs_pb2.PlanRef(org="acme", project="fail", plan="renovation")
        resp = client.submit(str(corpus / "arch-renovation-plans-7p-a4-affinity-latirasse.pdf"),
                             plan, jobs_pb2.JobOptions(dpi=31))
        s3.delete_object(Bucket="planzoom", Key=resp.job.source_key)
    finally:
        stack.start_service("render")
    job = wait_ended(client, resp.job_id, timeout=120)
    assert job.state == jobs_pb2.JOB_STATE_FAILED
    assert job.failed_pages == 7 and job.completed_pages == 0
    for page in job.pages:
        assert page.state == jobs_pb2.PAGE_STATE_FAILED
        assert "no longer in the bucket" in page.error
        assert page.reason == Reason.REASON_SOURCE_GONE
    assert "7 of 7 pages failed" in job.error

    async def dead_letters(js):
        msg = await js.get_last_msg(topology.DEAD_LETTER_STREAM, f"deadletter.render.{job.job_id}")
        return events_pb2.DeadLetter.FromString(msg.data)

    letter = run_nats(stack.admin_nats_url, dead_letters)
    assert "no longer in the bucket" in letter.error and letter.attempts == 1
    assert letter.reason == Reason.REASON_SOURCE_GONE
    assert s3.get_object(Bucket="planzoom", Key=job.manifest_key)["ContentLength"] > 0
    assert list_keys(s3, job.tiles_prefix.rsplit("/", 2)[0] + "/current.json") == []
    # The next job still goes through.
    ok = client.submit(str(corpus / SITEPLAN), plan, jobs_pb2.JobOptions(dpi=31))
    assert wait_ended(client, ok.job_id).state == jobs_pb2.JOB_STATE_COMPLETE


def test_presigned_upload_is_bound_and_single_use(corpus, client, s3):
    """The POST policy refuses another type, a larger body and another key;
    an upload makes one job; an upload nobody submits is swept."""
    plan = jobs_pb2.PlanRef(org="acme", project="presigned", plan="siteplan")
    data = (corpus / SITEPLAN).read_bytes()
    url = client.ingest.CreateUploadUrl(ingest_pb2.CreateUploadUrlRequest(
        plan=plan, size_bytes=len(data)), timeout=10)

    def send(body: bytes, content_type: str = "application/pdf", **fields):
        return requests.post(url.url, data={**dict(url.fields), **fields}, timeout=30,
                             files={"file": ("plan.pdf", body, content_type)})

    def post(body: bytes, content_type: str = "application/pdf", **fields) -> int:
        return send(body, content_type, **fields).status_code

    assert post(b"<html>" + data[6:], **{"Content-Type": "text/html"}) == 403
    too_large = send(data + b"x" * 1000)  # S3 answers 400 EntityTooLarge
    assert too_large.status_code == 400 and "EntityTooLarge" in too_large.text, \
        "larger than the size the policy binds"
    assert post(data, key=url.object_key + "-other") == 403
    assert list_keys(s3, url.object_key) == [], "a refused POST stored nothing"
    assert post(data) == 204
    request = ingest_pb2.SubmitJobRequest(plan=plan, object_key=url.object_key,
                                          options=jobs_pb2.JobOptions(dpi=20))
    first = client.ingest.SubmitJob(request, timeout=60)
    # The POST policy is still valid, so S3 takes the bytes again; planzoom
    # does not take the upload again.
    assert post(data) == 204
    with pytest.raises(grpc.RpcError) as e:
        client.ingest.SubmitJob(request, timeout=60)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "submitted already" in \
        e.value.details()
    assert list_keys(s3, url.object_key) == [], "the second copy is removed too"
    for bad in (url.object_key + "/../x", url.object_key[:-1], url.object_key + "0"):
        with pytest.raises(grpc.RpcError) as e:
            client.ingest.SubmitJob(ingest_pb2.SubmitJobRequest(plan=plan, object_key=bad),
                                    timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
    assert wait_ended(client, first.job_id).state == jobs_pb2.JOB_STATE_COMPLETE
