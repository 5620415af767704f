"""Each service's Prometheus metrics, scraped over HTTP after a real job."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from planzoom.v1 import jobs_pb2
from tests.helpers import wait_ended

pytestmark = pytest.mark.integration


def scrape(stack, name: str) -> dict[tuple[str, tuple], float]:
    text = requests.get(f"http://127.0.0.1:{stack.metrics_ports[name]}/metrics", timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_services_export_metrics(corpus, stack, client):
    before = {n: scrape(stack, n) for n in ("ingest", "render", "tile", "progress")}
    plan = jobs_pb2.PlanRef(org="acme", project="metrics", plan="renovation")
    resp = client.submit(str(corpus / "arch-renovation-plans-7p-a4-affinity-latirasse.pdf"),
                         plan, jobs_pb2.JobOptions(dpi=22))
    assert wait_ended(client, resp.job_id).state == jobs_pb2.JOB_STATE_COMPLETE
    after = {n: scrape(stack, n) for n in ("ingest", "render", "tile", "progress")}

    def grew(service, name, by, **labels):
        delta = value(after[service], name, **labels) - value(before[service], name, **labels)
        assert delta >= by, f"{service} {name}{labels} grew by {delta}, expected {by}"

    grew("ingest", "planzoom_jobs_total", 1, outcome="created")
    grew("render", "planzoom_pages_total", 7, stage="render", outcome="done")
    grew("render", "planzoom_stage_duration_seconds_count", 7, stage="render")
    grew("tile", "planzoom_pages_total", 7, stage="tile", outcome="done")
    grew("tile", "planzoom_stage_duration_seconds_count", 7, stage="tile")
    grew("progress", "planzoom_jobs_total", 1, outcome="complete")
    grew("progress", "planzoom_progress_update_lag_seconds_count", 14)
    assert ("planzoom_watchers", ()) in after["progress"]
    assert ("planzoom_s3_retries_total", ()) in after["tile"]
