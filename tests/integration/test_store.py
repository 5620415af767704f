"""The embedded S3 store (SeaweedFS) does what planzoom needs of a store
(docs/storage.md): presigned POST policies, multipart uploads, range GETs,
copies, batch deletes, conditional PUTs, refused signatures; and planzoom's
own use of them: a streamed part upload, current.json moved under races,
the gateway's reads."""

from __future__ import annotations

import asyncio
import json
import threading

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from planzoom.config import Settings
from planzoom.errors import Unavailable
from planzoom.parts import PartUpload
from planzoom.storage import ObjectNotFound, ObjectStore, WriteConflict
from planzoom.store_reader import AsyncReader
from planzoom.v1 import jobs_pb2
from planzoom_devstack.stack import S3_ACCESS_KEY, S3_SECRET_KEY
from services.progress.register import join_plan

BUCKET = "planzoom"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def direct(stack):
    """A client of the store itself (not through the fault proxy)."""
    return boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
                        config=Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def store(stack):
    return ObjectStore(Settings(s3_endpoint_url=stack.s3_endpoint, s3_bucket=BUCKET),
                       credentials=(S3_ACCESS_KEY, S3_SECRET_KEY))


def _code(e: pytest.ExceptionInfo) -> str:
    return e.value.response["Error"]["Code"]


def test_a_presigned_post_takes_only_what_its_policy_allows(direct):
    post = direct.generate_presigned_post(
        BUCKET, "store-test/post", Fields={"Content-Type": "application/pdf"},
        Conditions=[{"Content-Type": "application/pdf"}, ["content-length-range", 1, 100]],
        ExpiresIn=300)
    ok = httpx.post(post["url"], data=post["fields"], files={"file": ("f", b"%PDF" * 10)})
    assert ok.status_code == 204
    too_large = httpx.post(post["url"], data=post["fields"], files={"file": ("f", b"x" * 500)})
    assert too_large.status_code == 400 and "EntityTooLarge" in too_large.text
    other = httpx.post(post["url"], data={**post["fields"], "key": "store-test/other"},
                       files={"file": ("f", b"x" * 50)})
    assert other.status_code == 403
    with pytest.raises(ClientError):
        direct.head_object(Bucket=BUCKET, Key="store-test/other")


def test_multipart_range_copy_and_batch_delete(direct):
    mp = direct.create_multipart_upload(Bucket=BUCKET, Key="store-test/mp")
    etags = [direct.upload_part(Bucket=BUCKET, Key="store-test/mp", PartNumber=n,
                                UploadId=mp["UploadId"], Body=body)["ETag"]
             for n, body in ((1, b"a" * 5 * MIB), (2, b"bcd"))]
    direct.complete_multipart_upload(
        Bucket=BUCKET, Key="store-test/mp", UploadId=mp["UploadId"],
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]})
    got = direct.get_object(Bucket=BUCKET, Key="store-test/mp", Range=f"bytes={5 * MIB - 1}-")
    assert got["Body"].read() == b"abcd" and got["ResponseMetadata"]["HTTPStatusCode"] == 206
    direct.copy_object(Bucket=BUCKET, Key="store-test/copy",
                       CopySource={"Bucket": BUCKET, "Key": "store-test/mp"})
    assert direct.head_object(Bucket=BUCKET, Key="store-test/copy")["ContentLength"] == 5 * MIB + 3
    deleted = direct.delete_objects(Bucket=BUCKET, Delete={"Objects": [
        {"Key": "store-test/mp"}, {"Key": "store-test/copy"}]})["Deleted"]
    assert sorted(d["Key"] for d in deleted) == ["store-test/copy", "store-test/mp"]


def test_conditional_puts_and_signatures(direct, stack):
    direct.put_object(Bucket=BUCKET, Key="store-test/cond", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        direct.put_object(Bucket=BUCKET, Key="store-test/cond", Body=b"2", IfNoneMatch="*")
    assert _code(e) == "PreconditionFailed"
    etag = direct.head_object(Bucket=BUCKET, Key="store-test/cond")["ETag"]
    with pytest.raises(ClientError) as e:
        direct.put_object(Bucket=BUCKET, Key="store-test/cond", Body=b"3", IfMatch='"0ff1ce"')
    assert _code(e) == "PreconditionFailed"
    direct.put_object(Bucket=BUCKET, Key="store-test/cond", Body=b"3", IfMatch=etag)
    forged = boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
                          aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key="not-it",
                          config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        forged.get_object(Bucket=BUCKET, Key="store-test/cond")
    assert _code(e) in ("SignatureDoesNotMatch", "AccessDenied")
    assert httpx.get(f"{stack.s3_endpoint}/{BUCKET}/store-test/cond").status_code == 403


def test_a_part_upload_is_invisible_until_it_ends_and_whole_after(store, direct):
    upload = PartUpload(store, "store-test/parts", "application/octet-stream")
    upload.part(2, b"B" * 5 * MIB).result()
    upload.part(3, b"C" * 7).result()
    with pytest.raises(ClientError):
        direct.head_object(Bucket=BUCKET, Key="store-test/parts")
    upload.finish(b"A" * 5 * MIB)
    assert upload.requests == 5  # create, two parts, part 1, complete
    assert store.get_range("store-test/parts", 5 * MIB - 2, 4) == b"AABB"
    assert store.size("store-test/parts") == 10 * MIB + 7
    small = PartUpload(store, "store-test/small", "application/octet-stream")
    small.finish(b"whole")
    assert small.requests == 1 and store.get_bytes("store-test/small") == b"whole"
    dropped = PartUpload(store, "store-test/dropped", "application/octet-stream")
    dropped.part(2, b"x" * 5 * MIB).result()
    dropped.abort()
    assert store.size("store-test/dropped") is None
    assert store.abort_uploads("store-test/dropped") == 0


def test_current_json_ends_at_the_newest_of_jobs_ending_at_once(store):
    """Twelve sets of one plan end at once: each lands in the register, and
    current.json names the newest and holds all twelve versions."""
    plan = jobs_pb2.PlanRef(org="acme", project="store", plan="race")
    ids = [f"0{n:02d}race" for n in range(12)]  # job ids sort by creation time
    jobs = [jobs_pb2.Job(job_id=i, plan=plan, state=jobs_pb2.JOB_STATE_COMPLETE,
                         source_kind="pdf", total_pages=1,
                         pages=[jobs_pb2.PageRecord(
                             page=1, state=jobs_pb2.PAGE_STATE_DONE, content_digest=f"d{i}",
                             sheet=jobs_pb2.Sheet(number="A-101", title="First floor"))])
            for i in ids]
    start = threading.Barrier(len(jobs))

    def end(job):
        start.wait()
        join_plan(store, job, {})

    threads = [threading.Thread(target=end, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    current = json.loads(store.get_bytes("tiles/acme/store/race/current.json"))
    assert current["job_id"] == max(ids) and current["register_jobs"] == 12
    [sheet] = current["sheets"]
    assert [v["job_id"] for v in sheet["versions"]] == sorted(ids, reverse=True)
    assert [v["change"] for v in sheet["versions"]] == ["revised"] * 11 + ["new"]
    with pytest.raises(WriteConflict):
        store.put_bytes("tiles/acme/store/race/current.json", b"{}", "application/json",
                        if_absent=True)


def test_the_async_reader_reads_ranges_and_revalidates(store, stack, direct):
    direct.put_object(Bucket=BUCKET, Key="store-test/async", Body=b"0123456789")
    etag = direct.head_object(Bucket=BUCKET, Key="store-test/async")["ETag"]
    forged = ObjectStore(Settings(s3_endpoint_url=stack.s3_endpoint, s3_bucket=BUCKET),
                         credentials=(S3_ACCESS_KEY, "not-the-secret"))

    async def go():
        reader, refused = AsyncReader(store, 4), AsyncReader(forged, 1)
        try:
            assert await reader.get_range("store-test/async", 3, 4) == b"3456"
            data, got_etag, kind = await reader.get_if_changed("store-test/async", None)
            assert data == b"0123456789" and got_etag == etag
            assert (await reader.get_if_changed("store-test/async", etag))[0] is None
            with pytest.raises(ObjectNotFound):
                await reader.get_range("store-test/none", 0, 1)
            with pytest.raises(Unavailable, match="refused a read: SignatureDoesNotMatch"):
                await refused.get_range("store-test/async", 0, 1)
        finally:
            await reader.aclose()
            await refused.aclose()

    asyncio.run(go())


def test_json_another_stage_wrote_is_read_within_its_bound(store):
    import gzip

    store.put_bytes("t/json/ok.json.gz", gzip.compress(b'{"words": [["A-201", 1, 2, 3, 4]]}'),
                    "application/gzip")
    assert store.get_json("t/json/ok.json.gz", 1024, gzipped=True) == {
        "words": [["A-201", 1, 2, 3, 4]]}
    # 10 MiB of spaces gzip to 10 KiB: within the stored bound, over the decompressed one.
    store.put_bytes("t/json/bomb.json.gz", gzip.compress(b"{" + b" " * (10 * MIB) + b"}"),
                    "application/gzip")
    assert store.get_json("t/json/bomb.json.gz", 1 * MIB, gzipped=True) is None
    assert store.get_json("t/json/bomb.json.gz", 16 * MIB, gzipped=True) == {}
    store.put_bytes("t/json/big.json", b'{"a": "' + b"x" * 2048 + b'"}', "application/json")
    assert store.get_json("t/json/big.json", 1024) is None
    store.put_bytes("t/json/list.json", b"[1, 2]", "application/json")
    store.put_bytes("t/json/bad.json.gz", b"not gzip", "application/gzip")
    assert store.get_json("t/json/list.json", 1024) is None
    assert store.get_json("t/json/bad.json.gz", 1024, gzipped=True) is None
    assert store.get_json("t/json/missing.json", 1024) is None
