"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import boto3
import grpc
import nats
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from planzoom.messaging import topology
from planzoom.v1 import jobs_pb2
from planzoom_cli.client import Client


def rpc_reason(error: grpc.RpcError) -> str:
    """The reason (docs/reasons.md) in a refused call's ErrorInfo detail."""
    status = rpc_status.from_call(error)
    info = error_details_pb2.ErrorInfo()
    return next((info.reason for d in status.details if d.Unpack(info)), "")


def wait_ended(client: Client, job_id: str, timeout: float = 300) -> jobs_pb2.Job:
    """Follow the job (across progress restarts) to its end; fail the test
    if it has not ended after ``timeout`` seconds."""
    seen: list[jobs_pb2.Job] = []
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            seen.extend(client.follow(job_id))
        except BaseException as e:  # reported in the test's thread
            errors.append(e)

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    t.join(timeout)
    if errors:
        raise errors[0]
    assert not t.is_alive(), f"job {job_id} did not end in {timeout} s: " + (
        str(seen[-1]) if seen else "no record seen")
    assert seen, f"no record of job {job_id}"
    return seen[-1]


def completed(client: Client, path: str, plan: jobs_pb2.PlanRef,
              options: jobs_pb2.JobOptions) -> jobs_pb2.Job:
    """Submit ``path`` and follow its job to its end, which must be COMPLETE."""
    job = wait_ended(client, client.submit(path, plan, options).job_id)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE, job.error
    return job


def wait_until(what: str, predicate: Callable[[], object], timeout: float = 60,
               interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting until {what}")


def page_states(client: Client, job_id: str) -> list[int]:
    return [p.state for p in client.get_job(job_id).pages]


def run_nats(nats_url: str, fn):
    """Run ``await fn(js)`` against the stack's NATS server."""

    async def go():
        nc = await nats.connect(nats_url)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(go())


def lose_progress_events(stack, job_id: str, pages: int = 1) -> None:
    """Purge every progress event of ``job_id`` from PLANZOOM_PROGRESS, as
    if they had never arrived (the progress service should be stopped),
    once tile's reports of its ``pages`` pages are among them: tile writes a
    page's outputs before it reports them, so a purge right after the
    outputs appear could miss a report."""

    async def reported(js):
        info = await js.stream_info(topology.PROGRESS_STREAM,
                                    subjects_filter=f"progress.tile.{job_id}")
        return sum((info.state.subjects or {}).values())

    async def purge(js):
        await js.purge_stream(topology.PROGRESS_STREAM, subject=f"progress.*.{job_id}")

    wait_until("tile's reports", lambda: run_nats(stack.admin_nats_url, reported) >= pages,
               timeout=60)
    run_nats(stack.admin_nats_url, purge)


def s3_client(stack):
    """A boto3 client straight to a stack's S3 endpoint (no fault proxy)."""
    env = stack.env()
    return boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def list_keys(s3, prefix: str) -> list[str]:
    """Every key under ``prefix`` in the stack's bucket."""
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="planzoom", Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys
