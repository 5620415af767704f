"""Job records over HTTP: ``GET /v1/jobs/{job_id}``, its live changes as
Server-Sent Events, a plan's jobs, and signed links to a job's outputs.

A job record is the protobuf ``planzoom.v1.Job`` in its JSON mapping with
the field names of jobs.proto (the shape of ``manifest.json``): sizes in
points (``width_pt``) and pixels (``width_px``), resolution in DPI.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Annotated

import grpc
from fastapi import APIRouter, Header, Query, Request
from google.protobuf import json_format
from sse_starlette.sse import EventSourceResponse

from planzoom import keys
from planzoom.ids import check_id
from planzoom.states import ended
from planzoom.updates import apply_update
from planzoom.v1 import jobs_pb2
from services.gateway.problems import to_problem

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["jobs"])

#: Seconds between SSE comments that keep idle proxies from closing the stream.
SSE_PING_SECONDS = 15


def job_json(job: jobs_pb2.Job) -> dict:
    """A job record as JSON (protobuf JSON mapping, proto field names, every
    field printed)."""
    return json_format.MessageToDict(job, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


@router.get("/jobs/{job_id}", summary="A job record")
async def get_job(request: Request, job_id: str) -> dict:
    """The job record (JSON, see the module docstring). Needs the viewer
    role. 400 for a malformed id, 404 for an unknown job or one of another
    org."""
    gw = request.app.state.gateway
    access = gw.gatekeeper.check(request, "viewer")
    return job_json(await gw.upstream.get_job(access, check_id("job_id", job_id)))


@router.get("/jobs/{job_id}/events", summary="A job's changes as Server-Sent Events",
            response_class=EventSourceResponse)
async def job_events(request: Request, job_id: str,
                     last_event_id: Annotated[str | None, Header()] = None,
                     deltas: Annotated[bool, Query()] = False):
    """``text/event-stream`` (WHATWG HTML, Server-Sent Events): event
    ``job`` with the whole record as data and the record's revision as id,
    first the current record, then one at every change; the stream ends
    after the record of an ended job (COMPLETE, FAILED, CANCELLED). A
    client that reconnects with ``Last-Event-ID`` gets only records newer
    than that revision: each record is complete, so the newest one covers
    whatever changed while it was away.

    With ``?deltas=true`` only the first record is whole; after it come
    events ``delta``: the record's fields but ``pages``, and in ``pages``
    only the pages that changed since the stream's previous event (each
    whole, with its ``page`` number), to be put in place of the client's.
    A 2,000-page record is hundreds of kB; a delta, a few. The first event
    after a reconnect is a whole ``job`` again.

    An error after the stream started comes as event ``problem`` (an RFC
    9457 document) and ends it; before that, as the usual 4xx. Needs the
    viewer role."""
    gw = request.app.state.gateway
    access = gw.gatekeeper.check(request, "viewer")
    job_id = check_id("job_id", job_id)
    seen = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    first = await gw.upstream.get_job(access, job_id)  # errors answered as 4xx
    stream = gw.upstream.watch_job(access, job_id)

    async def events():
        try:
            if ended(first) and first.revision <= seen:
                return
            job, sent = None, False
            async for update in stream:
                if deltas and sent and not update.snapshot:
                    # The client holds the record: the summary and the changed
                    # pages go as they came, nothing is rebuilt here.
                    record, event = update.job, "delta"
                else:
                    job = apply_update(job, update)
                    if job.revision <= seen:
                        continue
                    record, event = job, "job"
                yield {"event": event, "id": str(record.revision),
                       "data": json.dumps(job_json(record))}
                sent = True
                if ended(record) and not record.finalizing:
                    return
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED:
                return
            yield {"event": "problem", "data": json.dumps(to_problem(request, e)[1])}
        finally:
            stream.cancel()

    return EventSourceResponse(events(), ping=SSE_PING_SECONDS,
                               headers={"Cache-Control": "no-store"})


@router.get("/plans/{org}/{project}/{plan}/jobs", summary="A plan's jobs, newest first")
async def list_jobs(request: Request, org: str, project: str, plan: str,
                    limit: Annotated[int, Query(ge=1, le=100)] = 20,
                    page_token: Annotated[str, Query(max_length=64)] = "") -> dict:
    """``{"jobs": [job record, ...], "next_page_token": str}``, newest
    first, at most ``limit`` (a page ends early at about 2 MiB of records);
    pass ``next_page_token`` back as ``page_token`` for the next page (empty:
    the last). Needs the viewer role in ``org`` (403 for another org's
    plans); 400 for a page token that expired."""
    gw = request.app.state.gateway
    access = gw.gatekeeper.check(request, "viewer")
    ref = jobs_pb2.PlanRef(org=check_id("org", org), project=check_id("project", project),
                           plan=check_id("plan", plan))
    page = await gw.upstream.list_jobs(access, ref, limit, page_token)
    return {"jobs": [job_json(j) for j in page.jobs], "next_page_token": page.next_page_token}


@router.get("/jobs/{job_id}/links", summary="Signed links to a job's outputs")
async def job_links(request: Request, job_id: str) -> dict:
    """Links that work without a bearer token until ``expires_at`` (RFC 3339;
    ``PLANZOOM_GATEWAY_LINK_SECONDS`` from now, or when the caller's token
    ends if that is sooner):
    ``cap`` (append ``?cap=`` to any tile, descriptor or download URL of this
    job), ``dzi`` (one descriptor URL per page, 1-based page order) and
    ``download``; for a job of layout ARCHIVE also ``archives``: each page's
    archive as a presigned URL of the bucket, for a PMTiles reader's range
    requests (the viewer's ``#source=archive``). Needs the viewer role."""
    gw = request.app.state.gateway
    access = gw.gatekeeper.check(request, "viewer")
    job = await gw.upstream.get_job(access, check_id("job_id", job_id))
    cap, expires = gw.gatekeeper.job_link(job, access.caller)
    base = str(request.base_url).rstrip("/") + f"/v1/jobs/{job.job_id}"
    links = {
        "cap": cap,
        "expires_at": datetime.fromtimestamp(expires, UTC).isoformat(),
        "dzi": [f"{base}/pages/{n}.dzi?cap={cap}" for n in range(1, job.total_pages + 1)],
        "download": f"{base}/download?cap={cap}",
    }
    if keys.is_archive(job.options):
        seconds = max(1, int(expires - time.time()))
        links["archives"] = [gw.store.presigned_get(keys.archive_key(job.plan, job.job_id, n),
                                                    seconds)
                             for n in range(1, job.total_pages + 1)]
    return links
