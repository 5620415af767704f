"""tus 1.0 uploads through the gateway against the running stack: the tuspy
client, a connection cut mid-upload and resumed, S3 multipart parts, the
job made on the last byte, termination, expiry, and every refusal."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
import pypdfium2 as pdfium
import pytest
import requests
from tusclient import client as tus

from planzoom.errors import reason_code
from planzoom.v1 import ingest_pb2, jobs_pb2
from planzoom_cli.client import Client
from tests.helpers import rpc_reason, wait_ended, wait_until
from tests.integration.conftest import MAX_UPLOAD_BYTES
from tests.integration.test_gateway import assert_problem, bearer

PLANSET = "arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf"
PHOTOS = ["photo-12mp-arch-building-galaxy-s7-metadata-extractor-images.jpg",
          "photo-exif-orient8-skyscrapers-metadata-extractor-images.jpg",
          "photo-construction-cranes-glass-building-kyocera-metadata-extractor-images.jpg"]
PART = 8 * 1024 * 1024  # the gateway's default part size
TUS = {"Tus-Resumable": "1.0.0"}


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


@pytest.fixture(scope="module")
def big_set(corpus, tmp_path_factory) -> Path:
    """A plan set with site photos, over one S3 part: the crayfishinn sheets
    followed by three real photos as pages (about 10 MB, 11 pages)."""
    out = pdfium.PdfDocument.new()
    out.import_pages(pdfium.PdfDocument(corpus / PLANSET))
    for name in PHOTOS:
        image = pdfium.PdfImage.new(out)
        image.load_jpeg(str(corpus / "media" / name), inline=False)
        w, h = image.get_px_size()
        scale = 792 / max(w, h)
        page = out.new_page(w * scale, h * scale)
        image.set_matrix(pdfium.PdfMatrix().scale(w * scale, h * scale))
        page.insert_obj(image)
        page.gen_content()
    path = tmp_path_factory.mktemp("tus") / "planset-with-photos.pdf"
    out.save(path)
    assert path.stat().st_size > PART
    return path


def create(http, stack, size: int, token_org="acme", role="uploader", **meta) -> httpx.Response:
    meta = {"project": "tus", "plan": "upload", "filename": "set.pdf", "dpi": "20", **meta}
    return http.post("/v1/uploads/", headers={**TUS, **bearer(stack, token_org, role),
                                              "Upload-Length": str(size),
                                              "Upload-Metadata": metadata(**meta)})


def head(http, stack, url: str) -> httpx.Response:
    return http.head(url, headers={**TUS, **bearer(stack)})


def patch(http, stack, url: str, offset: int, data: bytes, **headers) -> httpx.Response:
    return http.patch(url, content=data, headers={
        **TUS, **bearer(stack, role="uploader"), "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream", **headers})


@contextlib.contextmanager
def patch_in_flight(url: str, token: str, offset: int, total: int, data: bytes):
    """A PATCH that announces ``total`` bytes and sends only ``data``: held
    open inside the block (the gateway has read what was sent), cut at its
    end."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall((f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                      f"Tus-Resumable: 1.0.0\r\nAuthorization: Bearer {token}\r\n"
                      f"Upload-Offset: {offset}\r\nContent-Length: {total}\r\n"
                      "Content-Type: application/offset+octet-stream\r\n\r\n").encode())
        sock.sendall(data)
        time.sleep(3)  # let the gateway take in what was sent
        yield
        sock.shutdown(socket.SHUT_RDWR)


def test_tuspy_uploads_a_plan_set_and_the_upload_names_its_job(stack, http, corpus, client):
    path = corpus / PLANSET
    client_tus = tus.TusClient(f"{stack.gateway_url}/v1/uploads/",
                               headers=bearer(stack, role="uploader"))
    uploader = client_tus.uploader(str(path), chunk_size=1024 * 1024, metadata={
        "project": "tus", "plan": "whole", "filename": path.name, "dpi": "20"})
    uploader.upload()
    status = http.get(uploader.url, headers=bearer(stack)).json()
    assert status["offset"] == status["length"] == path.stat().st_size
    job = wait_ended(client, status["job_id"])
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE and job.total_pages == 8
    assert job.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert job.source_name == path.name and job.options.dpi == 20
    assert status["view_url"].endswith(f"/view/{job.job_id}")


def test_a_cut_upload_resumes_from_its_offset_with_tuspy(stack, http, big_set, client, s3):
    data = big_set.read_bytes()
    created = create(http, stack, len(data), plan="resumed", filename=big_set.name)
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    assert created.headers["Tus-Resumable"] == "1.0.0" and created.headers["Upload-Expires"]

    # a part and a bit, then the connection dies
    sent = PART + 1_000_000
    with patch_in_flight(url, stack.token("acme", "uploader"), 0, len(data), data[:sent]):
        # while it is open, nobody else may write the upload
        locked = patch(http, stack, url, 0, data[:100])
        assert_problem(locked, 423, "UPLOAD_LOCKED")
        assert int(locked.headers["Retry-After"]) >= 1
    offset = wait_until("the cut request released", lambda: _settled_offset(http, stack, url))
    assert offset == sent, "bytes that reached the gateway were lost"

    # tuspy asks for the offset and sends the rest
    resumed = tus.TusClient(f"{stack.gateway_url}/v1/uploads/",
                            headers=bearer(stack, role="uploader"))
    uploader = resumed.uploader(str(big_set), url=url, chunk_size=3 * 1024 * 1024)
    assert uploader.get_offset() == sent
    uploader.upload()
    final = head(http, stack, url)
    assert final.headers["Upload-Offset"] == str(len(data))
    job = wait_ended(client, final.headers["Planzoom-Job-Id"])
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE and job.total_pages == 11
    assert job.source_sha256 == hashlib.sha256(data).hexdigest(), "the joined file differs"
    upload_id = url.rsplit("/", 1)[1]
    pending = s3.list_objects_v2(Bucket=stack.bucket, Prefix=f"tus/{upload_id}")
    assert pending.get("KeyCount", 0) == 0, "the pending bytes were left behind"


def _settled_offset(http, stack, url: str) -> int | None:
    """The upload's offset once no request holds it (a PATCH of nothing at
    the wrong offset answers 409, not 423, when it is free)."""
    probe = patch(http, stack, url, 10**12, b"")
    if probe.status_code == 423:
        return None
    assert probe.status_code == 409, probe.text
    return int(head(http, stack, url).headers["Upload-Offset"])


def test_creation_with_upload_and_offsets_checked(stack, http, corpus):
    data = (corpus / PLANSET).read_bytes()
    created = http.post("/v1/uploads/", content=data[:1000], headers={
        **TUS, **bearer(stack, role="uploader"), "Upload-Length": str(len(data)),
        "Upload-Metadata": metadata(project="tus", plan="with-body"),
        "Content-Type": "application/offset+octet-stream"})
    assert created.status_code == 201 and created.headers["Upload-Offset"] == "1000"
    url = created.headers["Location"]
    assert_problem(patch(http, stack, url, 0, data[:10]), 409, "OFFSET_MISMATCH")
    assert_problem(patch(http, stack, url, 1000, data[1000:2000],
                         **{"Content-Type": "application/pdf"}), 415)
    too_long = patch(http, stack, url, 1000, data[1000:] + b"extra")
    assert_problem(too_long, 413, "UPLOAD_TOO_LONG")
    assert head(http, stack, url).headers["Upload-Offset"] == "1000", \
        "a refused body changed the upload"
    # another org cannot see it; a viewer cannot write it
    assert http.head(url, headers={**TUS, **bearer(stack, org="intruder")}).status_code == 404
    assert_problem(http.get(url, headers=bearer(stack, org="intruder")), 404)
    assert_problem(patch(http, stack, url, 1000, b"x",
                         **bearer(stack, role="viewer")), 403)
    # termination
    gone = http.delete(url, headers={**TUS, **bearer(stack, role="uploader")})
    assert gone.status_code == 204
    assert_problem(http.get(url, headers=bearer(stack)), 404, "UPLOAD_NOT_FOUND")


def test_refused_uploads(stack, http):
    assert http.options("/v1/uploads/").headers["Tus-Extension"] == \
        "creation,creation-with-upload,termination,expiration"
    no_version = http.post("/v1/uploads/", headers={**bearer(stack, role="uploader"),
                                                    "Upload-Length": "10"})
    assert_problem(no_version, 412, "TUS_VERSION")
    assert no_version.headers["Tus-Version"] == "1.0.0"
    assert_problem(create(http, stack, MAX_UPLOAD_BYTES + 1), 413, "UPLOAD_TOO_LARGE")
    video = create(http, stack, MAX_UPLOAD_BYTES + 1, filetype="video/mp4")
    assert video.status_code == 201, "a video may be larger (PLANZOOM_MAX_VIDEO_BYTES)"
    assert http.delete(video.headers["Location"], headers={
        **TUS, **bearer(stack, role="uploader")}).status_code == 204
    assert_problem(create(http, stack, 0), 400)
    assert_problem(create(http, stack, 100, plan=""), 400)
    assert_problem(create(http, stack, 100, dpi="5000"), 400)
    assert_problem(create(http, stack, 100, dpi="lots"), 400)
    assert_problem(create(http, stack, 100, colour="red"), 400)
    assert_problem(create(http, stack, 100, role="viewer"), 403)
    assert_problem(create(http, stack, 100, org="intruder-target"), 403)
    bad = http.post("/v1/uploads/", headers={**TUS, **bearer(stack, role="uploader"),
                                             "Upload-Length": "10",
                                             "Upload-Metadata": "plan !!!"})
    assert_problem(bad, 400)
    assert_problem(http.post("/v1/uploads/", headers={**TUS, "Upload-Length": "10"}), 401)


def test_a_file_that_is_not_a_pdf_is_refused_at_its_last_byte(stack, http):
    data = b"GIF89a" + bytes(2000)
    url = create(http, stack, len(data), plan="not-a-pdf").headers["Location"]
    assert_problem(patch(http, stack, url, 0, data), 400)
    status = http.get(url, headers=bearer(stack)).json()
    assert status["offset"] == len(data) and "job_id" not in status
    assert status["error"] and reason_code(status["reason"])  # a reason of the catalogue


def test_expired_uploads_are_gone_and_cleaned_up(stack, corpus, s3):
    url_base = stack.start_gateway(name="gateway-expiry",
                                   env={"PLANZOOM_GATEWAY_UPLOAD_EXPIRY_SECONDS": "2"})
    try:
        with httpx.Client(base_url=url_base, timeout=30) as http:
            data = (corpus / PLANSET).read_bytes()
            url = create(http, stack, len(data), plan="expires").headers["Location"]
            assert patch(http, stack, url, 0, data[:5000]).status_code == 204
            upload_id = url.rsplit("/", 1)[1]
            assert s3.list_objects_v2(Bucket=stack.bucket,
                                      Prefix=f"tus/{upload_id}")["KeyCount"] == 1
            time.sleep(2.5)
            expired = patch(http, stack, url, 5000, data[5000:6000])
            assert expired.status_code in (404, 410), expired.text
            wait_until("the expired upload removed",
                       lambda: head(http, stack, url).status_code == 404, timeout=20)
            assert s3.list_objects_v2(Bucket=stack.bucket,
                                      Prefix=f"tus/{upload_id}")["KeyCount"] == 0
            multipart = s3.list_multipart_uploads(Bucket=stack.bucket, Prefix="uploads/acme/tus/"
                                                  "expires/")
            assert not multipart.get("Uploads"), "the multipart upload was not aborted"
    finally:
        stack.stop_service("gateway-expiry")


def test_one_org_holds_its_share_of_upload_requests_and_silence_frees_it(stack, corpus):
    """A gateway with two PATCH slots, one per org, and a 6 s silence limit:
    while one org's PATCH trickles, its second is refused 503 UPLOADS_BUSY
    and another org's goes through; once the first has sent nothing for the
    limit it is cut (what arrived is kept) and its org may PATCH again."""
    url = stack.start_gateway(name="gateway-patches", env={
        "PLANZOOM_GATEWAY_MAX_CONCURRENT_PATCHES": "2",
        "PLANZOOM_GATEWAY_MAX_CONCURRENT_PATCHES_PER_ORG": "1",
        "PLANZOOM_GATEWAY_PATCH_IDLE_SECONDS": "6"})
    data = (corpus / PLANSET).read_bytes()[:200_000]
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            def upload(org: str) -> str:
                resp = create(http, stack, len(data), token_org=org, plan=f"share-{org}")
                assert resp.status_code == 201, resp.text
                return str(httpx.URL(url).join(resp.headers["location"]))

            def send(org: str, target: str, offset: int, chunk: bytes) -> httpx.Response:
                return http.patch(target, content=chunk, headers={
                    **TUS, **bearer(stack, org, "uploader"), "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream"})

            first, second, theirs = upload("acme"), upload("acme"), upload("other")
            with patch_in_flight(first, stack.token("acme", "uploader"), 0, len(data),
                                 data[:1000]):
                busy = send("acme", second, 0, data[:1000])
                assert_problem(busy, 503, "UPLOADS_BUSY")
                assert int(busy.headers["retry-after"]) >= 1
                assert send("other", theirs, 0, data[:1000]).status_code == 204
                time.sleep(5)  # the trickling PATCH has now been silent past the limit
                assert send("acme", second, 0, data[:1000]).status_code == 204
            kept = http.head(first, headers={**TUS, **bearer(stack)})
            assert kept.headers["upload-offset"] == "1000", "the cut request's bytes are kept"
    finally:
        stack.stop_service("gateway-patches")


def test_an_org_stages_at_most_its_quota_tus_and_presigned_alike(stack, corpus):
    """An ingest (and a gateway on it) where an org may hold 3 MB in 3
    uploads staged and not submitted: presigned and tus uploads draw on one
    reservation, an upload of no declared size reserves the whole upload
    limit; past the quota both are refused TOO_MUCH_STAGED while another
    org stages; submitting an upload frees its share."""
    name = stack.start_service("ingest", replica=4, env={
        "PLANZOOM_ORG_MAX_STAGED_BYTES": "3000000", "PLANZOOM_ORG_MAX_STAGED_UPLOADS": "3"})
    url = stack.start_gateway(name="gateway-staged",
                              env={"PLANZOOM_INGEST_ADDR": stack.addrs[name]})
    progress = stack.env()["PLANZOOM_PROGRESS_ADDR"]
    mine, theirs = (Client(stack.addrs[name], progress, token=stack.token(org, "uploader"))
                    for org in ("stager", "bystander"))
    plan = jobs_pb2.PlanRef(org="stager", project="staged", plan="p")
    data = (corpus / "arch-renovation-plans-7p-a4-affinity-latirasse.pdf").read_bytes()

    def presign(client: Client, plan: jobs_pb2.PlanRef, size: int = 0):
        return client.ingest.CreateUploadUrl(ingest_pb2.CreateUploadUrlRequest(
            plan=plan, size_bytes=size), timeout=10)

    def refused(call) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert rpc_reason(e.value) == "TOO_MUCH_STAGED", e.value.details()
        return e.value

    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            first = presign(mine, plan, len(data))
            assert create(http, stack, 1_000_000, token_org="stager",
                          project="staged").status_code == 201
            unsized = refused(lambda: presign(mine, plan)).details()
            assert "2 uploads" in unsized and "3,000,000 bytes" in unsized
            refused(lambda: presign(mine, plan, 3_000_000 - 1_000_000 - len(data) + 1))
            over = create(http, stack, 2_000_000, token_org="stager", project="staged")
            assert_problem(over, 429, "TOO_MUCH_STAGED")
            assert int(over.headers["retry-after"]) >= 1
            assert presign(theirs, jobs_pb2.PlanRef(org="bystander", project="staged",
                                                    plan="p"), 2_000_000).object_key
            # Submitting the presigned upload frees its bytes.
            assert requests.post(first.url, data=dict(first.fields), timeout=30, files={
                "file": ("plan.pdf", data, "application/pdf")}).status_code == 204
            job = mine.ingest.SubmitJob(ingest_pb2.SubmitJobRequest(
                plan=plan, object_key=first.object_key,
                options=jobs_pb2.JobOptions(dpi=20)), timeout=60)
            assert job.job_id
            assert create(http, stack, 1_900_000, token_org="stager",
                          project="staged").status_code == 201
    finally:
        mine.close()
        theirs.close()
        stack.stop_service("gateway-staged")
        stack.stop_service(name)
