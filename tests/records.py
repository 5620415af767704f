"""Job records and progress events made by hand, for the tests of the fold
and the feeds."""

from __future__ import annotations

from planzoom.v1 import events_pb2, jobs_pb2


def pending_job(pages: int) -> jobs_pb2.Job:
    """A PENDING job of ``pages`` PENDING pages."""
    return jobs_pb2.Job(
        job_id="j", state=jobs_pb2.JOB_STATE_PENDING, total_pages=pages,
        pages=[jobs_pb2.PageRecord(page=i + 1, state=jobs_pb2.PAGE_STATE_PENDING)
               for i in range(pages)],
    )


def event(page: int, state: int, **kw) -> events_pb2.ProgressEvent:
    """A progress event reporting ``state`` (and the fields ``kw``) of ``page``."""
    return events_pb2.ProgressEvent(job_id="j", page=jobs_pb2.PageRecord(page=page, state=state,
                                                                        **kw))
