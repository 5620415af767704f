"""The end-to-end test against containers built by ``make images``: NATS,
the S3 endpoint and the four service images, started by testcontainers with
host networking."""

from __future__ import annotations

import json
import threading
import time

import pytest

from planzoom.v1 import jobs_pb2
from planzoom_cli.client import Client
from tests.dzi_check import check_page
from tests.e2e.containers import ContainerStack
from tests.helpers import s3_client, wait_ended, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.containers]


@pytest.fixture(scope="module")
def cstack(images):
    # The chart's scratch directory, under a tmpfs that starts empty.
    stack = ContainerStack(extra_env={"PLANZOOM_ACK_WAIT_SECONDS": "6",
                                      "PLANZOOM_WORK_DIR": "/tmp/planzoom"}).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def cclient(cstack):
    env = cstack.env()
    c = Client(env["PLANZOOM_INGEST_ADDR"], env["PLANZOOM_PROGRESS_ADDR"],
               token=cstack.issuer.mint("acme", "admin"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def cs3(cstack):
    return s3_client(cstack)


@pytest.mark.parametrize("name,dpi", [
    ("arch-siteplan-archd-36x24in-autocad-drawingparser.pdf", 100),
    ("arch-planset-8p-a1-rot90-mixedraster-crayfishinn.pdf", 40),
])
def test_end_to_end_in_containers(corpus, cclient, cs3, name, dpi):
    plan = jobs_pb2.PlanRef(org="acme", project="containers", plan=name[:30].rstrip("-"))
    resp = cclient.submit(str(corpus / name), plan, jobs_pb2.JobOptions(dpi=dpi))
    seen: list[tuple[int, int]] = []
    watcher = threading.Thread(target=lambda: seen.extend(
        (j.revision, j.completed_pages) for j in cclient.follow(resp.job_id)))
    watcher.start()
    job = wait_ended(cclient, resp.job_id)
    watcher.join(60)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE, job.error
    assert seen and seen[-1][1] == job.total_pages
    assert [c for _, c in seen] == sorted(c for _, c in seen)
    for record in job.pages:
        assert record.dpi == dpi
        check_page(cs3, record, str(corpus / name))
    manifest = json.loads(cs3.get_object(Bucket="planzoom", Key=job.manifest_key)["Body"].read())
    assert manifest["state"] == "JOB_STATE_COMPLETE"


def test_killed_tile_container_is_replaced(corpus, cstack, cclient, cs3):
    name = "arch-siteplan-archd-36x24in-autocad-drawingparser.pdf"
    plan = jobs_pb2.PlanRef(org="acme", project="containers", plan="tile-kill")
    resp = cclient.submit(str(corpus / name), plan, jobs_pb2.JobOptions(dpi=300))
    def tiling() -> bool:
        return any('"tiling page"' in line and resp.job_id in line
                   for line in cstack.logs("tile").splitlines())

    wait_until("the tile container holds the page", tiling, timeout=120)
    time.sleep(1.0)
    cstack.kill("tile")
    cstack.start_service("tile")
    job = wait_ended(cclient, resp.job_id)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE and job.completed_pages == 1
    assert job.pages[0].attempts >= 2
    check_page(cs3, job.pages[0], str(corpus / name), compare=False)
