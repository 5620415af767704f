"""Job and page states (``JobState``, ``PageState`` in jobs.proto): which
end a job or a page, and their short names for people."""

from __future__ import annotations

from planzoom.v1 import jobs_pb2

#: A job in one of these states takes no more changes.
ENDED_JOB_STATES = frozenset(
    {jobs_pb2.JOB_STATE_COMPLETE, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED})
#: A page in one of these states takes no more reports.
ENDED_PAGE_STATES = frozenset({jobs_pb2.PAGE_STATE_DONE, jobs_pb2.PAGE_STATE_FAILED})


def ended(job: jobs_pb2.Job) -> bool:
    """True once the job is COMPLETE, FAILED or CANCELLED."""
    return job.state in ENDED_JOB_STATES


def finalized(job: jobs_pb2.Job) -> bool:
    """True once the job has ended and its outputs are written (the last
    record a watcher gets)."""
    return ended(job) and not job.finalizing


def job_state_name(state: int) -> str:
    """``COMPLETE`` for JOB_STATE_COMPLETE, and so on."""
    return jobs_pb2.JobState.Name(state).removeprefix("JOB_STATE_")


def page_state_name(state: int) -> str:
    """``DONE`` for PAGE_STATE_DONE, and so on."""
    return jobs_pb2.PageState.Name(state).removeprefix("PAGE_STATE_")
