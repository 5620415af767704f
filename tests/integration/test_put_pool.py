"""The tile worker's upload processes against the stack's S3 endpoint (real
HTTP, through the fault proxy)."""

from __future__ import annotations

import logging
import os
import re
import signal
import time
import uuid
from concurrent.futures import wait

import pytest

from planzoom.config import Settings
from planzoom.storage import ObjectStore
from services.tile.put_pool import PutPool, TilePutFailed
from tests.helpers import list_keys


def _pool(stack, credentials: tuple[str, str] | None = None) -> PutPool:
    env = stack.env()
    settings = Settings(s3_endpoint_url=env["PLANZOOM_S3_ENDPOINT_URL"], s3_bucket="planzoom")
    return PutPool(settings, processes=2, threads=4, credentials=credentials or (
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]))


@pytest.fixture
def pool(stack):
    p = _pool(stack)
    yield p
    p.close()


def test_uploads_land_and_errors_keep_the_stores_text_in_the_log(stack, pool, s3, caplog):
    prefix = f"test-uploads/{uuid.uuid4().hex}/"
    bodies = {f"{prefix}{i}.jpg": os.urandom(1000 + i) for i in range(60)}
    futures = [pool.put(k, v, "image/jpeg") for k, v in bodies.items()]
    done, _ = wait(futures, timeout=60)
    assert len(done) == 60 and all(f.result() is None for f in futures)
    assert sorted(list_keys(s3, prefix)) == sorted(bodies)
    for key in list(bodies)[::20]:
        got = s3.get_object(Bucket="planzoom", Key=key)
        assert got["Body"].read() == bodies[key] and got["ContentType"] == "image/jpeg"
    # S3 refuses the PUT: the error (which reaches the page's record) names
    # the kind and an error id; the store's own text, endpoint and key are
    # in the log under that id. The pool goes on.
    missing = _pool(stack, credentials=("planzoom-nobody", "not-the-secret"))
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(TilePutFailed) as failed:
            missing.put("a/b.jpg", b"x", "image/jpeg").result(timeout=60)
        error_id = re.fullmatch(r"storing a tile failed \(PutFailed; error id ([0-9a-f]{16}) in "
                                r"the service log\)", failed.value.message)[1]
        assert "a/b.jpg" not in failed.value.message
        assert any(error_id in r.getMessage() and "a/b.jpg" in r.getMessage() and
                   "InvalidAccessKeyId" in r.getMessage() for r in caplog.records)
        assert missing.put("a/c.jpg", b"x", "image/jpeg").exception(timeout=60) is not None
    finally:
        missing.close()


def test_a_dead_upload_process_fails_its_uploads_and_is_replaced(pool, s3, s3_proxy):
    prefix = f"test-uploads/{uuid.uuid4().hex}/"
    victim = pool.pids()[0]
    s3_proxy.delay = 3.0  # hold the PUTs in flight while one process is killed
    try:
        futures = [pool.put(f"{prefix}held-{i}.jpg", b"x", "image/jpeg") for i in range(8)]
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        wait(futures, timeout=30)
    finally:
        s3_proxy.delay = 0.0
    failed = [f for f in futures if f.exception() is not None]
    assert failed, "no upload was held by the killed process"
    assert all(isinstance(f.exception(), TilePutFailed) and "ended" in str(f.exception())
               for f in failed)
    assert len(failed) < len(futures), "the other process's uploads should have landed"
    # A new process took the dead one's place; every PUT lands again.
    deadline = time.monotonic() + 30
    while victim in pool.pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert victim not in pool.pids() and len(pool.pids()) == 2
    again = [pool.put(f"{prefix}after-{i}.jpg", b"y", "image/jpeg") for i in range(20)]
    assert all(f.result(timeout=60) is None for f in again)
    assert len([k for k in list_keys(s3, prefix) if "/after-" in k]) == 20


def test_put_small_retries_slowdowns_and_resets(stack, s3, s3_proxy):
    env = stack.env()
    store = ObjectStore(Settings(s3_endpoint_url=env["PLANZOOM_S3_ENDPOINT_URL"],
                                 s3_bucket="planzoom"),
                        credentials=(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]))
    prefix = f"test-uploads/{uuid.uuid4().hex}/"
    bodies = {f"{prefix}{i}.jpg": os.urandom(500) for i in range(40)}
    s3_proxy.counts.clear()
    s3_proxy.match = prefix  # faults for these PUTs only, not the services' own requests
    s3_proxy.slowdown, s3_proxy.reset = 0.25, 0.1
    try:
        retries = sum(store.put_small(k, v, "image/jpeg") for k, v in bodies.items())
    finally:
        s3_proxy.slowdown = s3_proxy.reset = 0.0
        s3_proxy.match = ""
    faults = s3_proxy.counts["slowdown"] + s3_proxy.counts["reset"]
    assert faults >= 5 and retries == faults, (retries, s3_proxy.counts)
    for key, body in bodies.items():
        assert s3.get_object(Bucket="planzoom", Key=key)["Body"].read() == body
