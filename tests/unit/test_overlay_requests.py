"""Which overlay requests the tile stage makes (services.tile.overlays): a
final one only over the version the job record names, a provisional one
only over a done page of another complete job of the same plan."""

from __future__ import annotations

import pytest

from planzoom.errors import Unavailable
from planzoom.v1 import events_pb2, jobs_pb2
from services.tile.overlays import OverlayRefused, check_provisional, check_request

PLAN = jobs_pb2.PlanRef(org="acme", project="tower", plan="main")
OTHER_PLAN = jobs_pb2.PlanRef(org="acme", project="tower", plan="annex")
DONE, RUNNING = jobs_pb2.PAGE_STATE_DONE, jobs_pb2.PAGE_STATE_TILING


def record(job_id: str, states, plan=PLAN, state=jobs_pb2.JOB_STATE_PROCESSING) -> jobs_pb2.Job:
    job = jobs_pb2.Job(job_id=job_id, plan=plan, state=state)
    for n, s in enumerate(states, 1):
        job.pages.add(page=n, state=s)
    return job


def request(page: int, previous: str, previous_page: int, provisional: bool,
            plan=PLAN) -> events_pb2.TileJob:
    return events_pb2.TileJob(job_id="b" * 22, plan=plan, page=page, overlay=(
        events_pb2.OverlayRequest(previous_job_id=previous, previous_page=previous_page,
                                  provisional=provisional)))


def test_a_final_request_needs_the_version_the_record_names():
    job = record("b" * 22, [DONE, DONE], state=jobs_pb2.JOB_STATE_COMPLETE)
    job.pages[0].sheet.change = "revised"
    job.pages[0].sheet.previous.job_id, job.pages[0].sheet.previous.page = "a" * 22, 3
    check_request(request(1, "a" * 22, 3, False), job)
    for forged in (request(1, "a" * 22, 2, False), request(2, "a" * 22, 3, False),
                   request(3, "a" * 22, 3, False), request(1, "a" * 22, 3, False, OTHER_PLAN)):
        with pytest.raises(OverlayRefused):
            check_request(forged, job)
    job.finalizing = True
    with pytest.raises(Unavailable):
        check_request(request(1, "a" * 22, 3, False), job)


def test_a_provisional_request_needs_a_done_page_of_another_complete_job_of_the_plan():
    job = record("b" * 22, [DONE, RUNNING])
    previous = record("a" * 22, [DONE, DONE, DONE], state=jobs_pb2.JOB_STATE_COMPLETE)
    check_provisional(request(1, "a" * 22, 3, True), job, previous)
    refused = [
        (request(2, "a" * 22, 3, True), job, previous),  # this page is not done yet
        (request(1, "a" * 22, 4, True), job, previous),  # no such previous page
        (request(1, "a" * 22, 3, True, OTHER_PLAN), job, previous),  # the request's plan
        (request(1, "a" * 22, 3, True), job,
         record("a" * 22, [DONE] * 3, plan=OTHER_PLAN, state=jobs_pb2.JOB_STATE_COMPLETE)),
        (request(1, "a" * 22, 3, True), job, record("a" * 22, [DONE] * 3)),  # still running
        (request(1, "a" * 22, 3, True), job,
         record("a" * 22, [DONE] * 3, state=jobs_pb2.JOB_STATE_FAILED)),
        (request(1, "b" * 22, 1, True), job, job),  # itself
    ]
    for forged, mine, theirs in refused:
        with pytest.raises(OverlayRefused):
            check_provisional(forged, mine, theirs)
