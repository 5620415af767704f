"""NATS as a JetStream cluster of three servers under the embedded stack
(``planzoom up --nats-cluster 3``): every stream, durable consumer and KV
bucket is kept on all three, and SIGKILLing the server that leads the job
records while a job runs loses nothing: the job completes, and once that
server is back its own copy of every stream is the others'."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import nats
import pytest

from planzoom.messaging import topology
from planzoom.v1 import jobs_pb2
from planzoom_cli.client import Client
from planzoom_devstack.issuer import DevIssuer
from planzoom_devstack.stack import EmbeddedStack, Ports
from tests.helpers import wait_ended, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITEPLAN = "arch-siteplan-archd-36x24in-autocad-drawingparser.pdf"  # one page
#: What a PDF job needs (no transcode, no gateway: a quicker start).
SERVICES = ("ingest", "render", "tile", "progress")
STREAMS = {topology.RENDER_STREAM, topology.TILE_STREAM, topology.TRANSCODE_STREAM,
           topology.PROGRESS_STREAM, topology.DEAD_LETTER_STREAM, topology.ADVISORY_STREAM,
           topology.JOB_EVENTS_STREAM, topology.WEBHOOKS_STREAM,
           f"KV_{topology.JOBS_BUCKET}", f"KV_{topology.GATEWAY_BUCKET}"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> EmbeddedStack:
    stack = EmbeddedStack(data_dir=tmp_path_factory.mktemp("cluster"), ports=Ports.free(),
                          issuer=DevIssuer(tmp_path_factory.mktemp("cluster-issuer")),
                          nats_cluster=3)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def _jetstream(stack: EmbeddedStack, fn):
    """``await fn(js)`` as the setup user, connected to any server of the cluster."""

    async def go():
        nc = await nats.connect(stack.nats.admin_urls())
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(go())


def _local_copies(stack: EmbeddedStack) -> dict[str, dict[str, tuple[int, int]]]:
    """Each running server's own copy of each stream: (messages, last sequence),
    from its monitoring endpoint."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    copies = {}
    for node in stack.nats.nodes:
        url = f"http://127.0.0.1:{node.monitor_port}/jsz?accounts=true&streams=true"
        with opener.open(url, timeout=5) as resp:
            (account,) = json.load(resp)["account_details"]
        copies[node.server_name] = {s["name"]: (s["state"]["messages"], s["state"]["last_seq"])
                                    for s in account.get("stream_detail", [])}
    return copies


def test_streams_consumers_and_buckets_have_three_replicas(cluster):
    assert cluster.env()["PLANZOOM_NATS_REPLICAS"] == "3"
    assert len(cluster.env()["PLANZOOM_NATS_URL"].split(",")) == 3

    async def replicas(js):
        found = {}
        for info in await js.streams_info():
            found[info.config.name] = (info.config.num_replicas, len(info.cluster.replicas or []))
            for consumer in await js.consumers_info(info.config.name):
                found[f"{info.config.name} > {consumer.name}"] = (
                    consumer.config.num_replicas, len(consumer.cluster.replicas or []))
        return found

    found = _jetstream(cluster, replicas)
    assert STREAMS <= set(found), sorted(found)
    assert f"{topology.PROGRESS_STREAM} > {topology.PROGRESS_CONSUMER}" in found
    # Each kept on three servers: the leader and two followers.
    assert {name: r for name, r in found.items() if r != (3, 2)} == {}


def test_a_server_killed_mid_job_loses_nothing(cluster, corpus):
    async def records_leader(js):
        return (await js.stream_info(f"KV_{topology.JOBS_BUCKET}")).cluster.leader

    leader = _jetstream(cluster, records_leader)
    number = int(leader.rsplit("-", 1)[1])
    client = Client(cluster.addrs["ingest"], cluster.addrs["progress"],
                    token=cluster.token("acme", "admin"))
    try:
        resp = client.submit(str(corpus / SITEPLAN),
                             jobs_pb2.PlanRef(org="acme", project="cluster", plan="lost-server"),
                             jobs_pb2.JobOptions(dpi=40))
        # The job records' leader goes, as a crashed machine would, mid-job.
        cluster.kill_nats_node(number)
        job = wait_ended(client, resp.job_id, timeout=90)
        assert job.state == jobs_pb2.JOB_STATE_COMPLETE, job.error
        assert job.completed_pages == job.total_pages == 1

        cluster.restart_nats_node(number)

        def same_everywhere():
            copies = _local_copies(cluster)
            return len({json.dumps(c, sort_keys=True) for c in copies.values()}) == 1 and copies

        copies = wait_until("the restarted server's copies match the others'", same_everywhere,
                            timeout=30, interval=0.5)
        assert STREAMS <= set(copies[leader])
        records, _ = copies[leader][f"KV_{topology.JOBS_BUCKET}"]
        assert records >= 1, "the job's record is on the restarted server"
        after = client.get_job(resp.job_id)
        assert after.state == jobs_pb2.JOB_STATE_COMPLETE
        assert after.revision == job.revision
    finally:
        client.close()
