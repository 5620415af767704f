"""What the stages publish about their work: progress events on
``progress.<stage>.<job_id>``, dead letters on ``deadletter.<stage>.<job_id>``
and, once a job has ended, a JobEnded on ``jobs.ended.<org>.<job_id>``."""

from __future__ import annotations

import contextlib

from nats.js import JetStreamContext

from planzoom.clock import now_ts
from planzoom.errors import PlanzoomError
from planzoom.ids import ID_PATTERN
from planzoom.messaging.publishing import publish, publish_retrying
from planzoom.messaging.topology import (
    DEAD_LETTER_SOURCES,
    PROGRESS_STREAM,
    job_ended_subject,
    progress_subject,
)
from planzoom.v1 import events_pb2, jobs_pb2


async def report_page(js: JetStreamContext, stage: str, job_id: str, plan: jobs_pb2.PlanRef,
                      page: jobs_pb2.PageRecord, attempt: int, kind: str = "",
                      grant: str = "") -> None:
    """Publish a ProgressEvent for one page on ``progress.<stage>.<job_id>``.

    ``page`` is a PageRecord with the fields the stage knows; ``attempt`` is
    the delivery of the page job that reports (part of the message id, so
    a redelivered page reports anew while a retried publish is stored
    once; ``kind`` tells apart two reports of one state in one attempt);
    ``grant`` is the stage's for the job (:mod:`planzoom.grants`).
    Retried as :func:`~planzoom.messaging.publishing.publish_retrying`.
    """
    ev = events_pb2.ProgressEvent(job_id=job_id, plan=plan, stage=stage, page=page,
                                  emitted_at=now_ts(), grant=grant)
    await publish_retrying(js, progress_subject(stage, job_id), ev.SerializeToString(),
                           f"{job_id}.{page.page}.{stage}.{page.state}.{attempt}{kind}")


async def dead_letter(js: JetStreamContext, stream: str, subject: str, seq: int, data: bytes,
                      error: PlanzoomError, attempts: int) -> None:
    """Keep a message that failed for good in PLANZOOM_DEAD_LETTERS, with
    its job and page when its stream's message type names them (for a
    progress event, the job its subject names: the payload may be forged),
    and ``error``'s message and reason."""
    job_id, page, stage = "", 0, stream.removeprefix("PLANZOOM_").lower()
    if stream == PROGRESS_STREAM:
        stage, job_id = "progress", subject.rsplit(".", 1)[-1]
        with contextlib.suppress(Exception):
            page = events_pb2.ProgressEvent.FromString(data).page.page
    elif stream in DEAD_LETTER_SOURCES:
        message_type, stage = DEAD_LETTER_SOURCES[stream]
        try:
            message = message_type.FromString(data)
            job_id = message.job_id
            page = message.page.page if message_type is events_pb2.ProgressEvent else message.page
        except Exception:  # an undecodable message is kept all the same
            pass
    if not ID_PATTERN.fullmatch(job_id):  # it becomes a subject token
        job_id = ""
    letter = events_pb2.DeadLetter(
        stream=stream, subject=subject, stream_sequence=seq, data=data, error=error.message,
        reason=error.reason_code, attempts=attempts, job_id=job_id, page=page, failed_at=now_ts(),
    )
    await publish(js, f"deadletter.{stage}.{job_id or 'unknown'}", letter.SerializeToString(),
                  f"dl.{stream}.{seq}")


async def announce_ended(js: JetStreamContext, job: jobs_pb2.Job) -> None:
    """Publish ``job``'s JobEnded (it has ended) on
    ``jobs.ended.<org>.<job_id>``, once (Nats-Msg-Id ``ended.<job_id>``: a
    finalization run again within the duplicate window is not announced
    again). Retried as :func:`~planzoom.messaging.publishing.publish_retrying`."""
    ended = events_pb2.JobEnded(
        job_id=job.job_id, plan=job.plan, state=job.state, total_pages=job.total_pages,
        completed_pages=job.completed_pages, failed_pages=job.failed_pages, error=job.error,
        reason=job.reason, manifest_key=job.manifest_key, finished_at=job.finished_at,
        sheet_changes=[events_pb2.SheetChange(page=p.page, number=p.sheet.number,
                                              change=p.sheet.change)
                       for p in job.pages if p.sheet.change])
    await publish_retrying(js, job_ended_subject(job.plan.org, job.job_id),
                           ended.SerializeToString(), f"ended.{job.job_id}")
