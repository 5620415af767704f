"""OpenTelemetry traces of the session stack, whose services export OTLP to
an in-memory receiver (tests/otlp.py): one page's trace joins the services
it went through, from the RPC or HTTP call to the job's end."""

from __future__ import annotations

import base64
import secrets

import httpx
import pytest

from planzoom.v1 import jobs_pb2
from tests.helpers import wait_ended, wait_until

pytestmark = pytest.mark.integration

PDF = "arch-siteplan-archd-36x24in-autocad-drawingparser.pdf"
SERVICES = {"planzoom-ingest", "planzoom-render", "planzoom-tile", "planzoom-progress"}


def tree(spans) -> str:
    """The trace as an indented tree: service, span, duration."""
    by_parent: dict[str, list] = {}
    for s in spans:
        by_parent.setdefault(s.parent_id, []).append(s)
    ids = {s.span_id for s in spans}
    lines = []

    def walk(span, depth):
        page = span.attributes.get("planzoom.page")
        lines.append(f"{'  ' * depth}{span.service}: {span.name}"
                     f"{f' (page {page})' if page else ''} "
                     f"{(span.end_ns - span.start_ns) / 1e6:.1f} ms")
        for child in by_parent.get(span.span_id, []):
            walk(child, depth + 1)

    for root in [s for s in spans if s.parent_id not in ids]:
        walk(root, 0)
    return "\n".join(lines)


def ended_trace(otlp, job_id: str):
    """The spans of the trace that holds ``job_id``'s "job ended" span, once
    they form one tree (each service exports its spans in its own batches,
    so a child can arrive before its parent)."""
    (ended,) = wait_until("the job's end is exported",
                          lambda: otlp.find("job ended", **{"planzoom.job_id": job_id}),
                          timeout=20)

    def whole():
        spans = otlp.trace(ended.trace_id)
        ids = {s.span_id for s in spans}
        return spans if sum(s.parent_id not in ids for s in spans) == 1 else None

    try:
        return ended, wait_until("the whole trace is exported", whole, timeout=20)
    except AssertionError:
        raise AssertionError(
            f"the trace is not one tree:\n{tree(otlp.trace(ended.trace_id))}") from None


def assert_joined(spans, ended, first_service: str) -> None:
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if s.parent_id not in by_id]
    assert len(roots) == 1, f"one root, not {[r.name for r in roots]}:\n{tree(spans)}"
    assert roots[0].service == first_service and roots[0].kind == 2  # SPAN_KIND_SERVER
    assert SERVICES <= {s.service for s in spans}, tree(spans)
    # The page's render span leads to its tile span, which leads to the end.
    chain, span = [], ended
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        chain.append((span.service, span.name))
    assert ("planzoom-tile", "PLANZOOM_TILE process") in chain, chain
    assert ("planzoom-render", "PLANZOOM_RENDER process") in chain, chain
    assert chain.index(("planzoom-tile", "PLANZOOM_TILE process")) < chain.index(
        ("planzoom-render", "PLANZOOM_RENDER process")), "tile comes after render"


def test_one_trace_joins_the_services_a_page_went_through(client, otlp, corpus):
    plan = jobs_pb2.PlanRef(org="acme", project="tracing", plan="site")
    resp = client.submit(str(corpus / PDF), plan, jobs_pb2.JobOptions(dpi=35))
    job = wait_ended(client, resp.job_id)
    assert job.state == jobs_pb2.JOB_STATE_COMPLETE
    ended, spans = ended_trace(otlp, resp.job_id)
    print(f"\ntrace {ended.trace_id}:\n{tree(spans)}")
    assert_joined(spans, ended, "planzoom-ingest")
    assert spans[0].name == "/planzoom.v1.IngestService/Upload"
    pages = {s.attributes.get("planzoom.page") for s in spans
             if s.service == "planzoom-tile"}
    assert pages == {1}


def test_an_http_callers_trace_goes_through_the_gateway(stack, otlp, corpus):
    """A caller's W3C traceparent on the tus upload is the trace the job's
    spans join."""
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    data = (corpus / PDF).read_bytes()
    meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                    for k, v in {"project": "tracing", "plan": "gateway"}.items())
    with httpx.Client(base_url=stack.gateway_url, timeout=60) as http:
        created = http.post("/v1/uploads/", content=data, headers={
            "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)),
            "Upload-Metadata": meta, "Content-Type": "application/offset+octet-stream",
            "Authorization": f"Bearer {stack.token('acme', 'uploader')}",
            "traceparent": f"00-{trace_id}-{parent}-01"})
    assert created.status_code == 201, created.text
    job_id = created.headers["Planzoom-Job-Id"]
    ended, spans = ended_trace(otlp, job_id)
    assert ended.trace_id == trace_id
    by_id = {s.span_id for s in spans}
    (root,) = [s for s in spans if s.parent_id not in by_id]
    assert root.parent_id == parent and root.service == "planzoom-gateway"
    assert {"planzoom-gateway", *SERVICES} <= {s.service for s in spans}, tree(spans)
    submit = {(s.service, s.kind) for s in spans
              if s.name == "/planzoom.v1.IngestService/SubmitJob"}
    assert submit == {("planzoom-gateway", 3), ("planzoom-ingest", 2)}, "client, then server"
