"""Per-org quotas: how many jobs, and how many pixels, one org may have in
flight, and how many bytes it may hold staged (uploaded, not yet
submitted). A job over its org's quota is not refused: it is created PENDING
with ``queued`` set and its page jobs unpublished, and it is released, in
the order its org submitted, when an earlier job of the org ends.

What an org has in flight is one :class:`OrgUsage` record per org in the
jobs KV bucket (key ``org.<org>``), changed only with compare-and-set:
ingest admits or queues a new job, the progress service ends one and
releases what now fits. A job alone is always admitted, however large (the
per-job budget bounds it), so a queue always drains. The sweep calls
:meth:`Admission.tidy` to drop jobs that ended or vanished without being
finished here (a process that stopped in between).

Staged uploads (presigned POSTs and tus uploads, both named by ingest's
CreateUploadUrl) reserve their size in the same record until SubmitJob
takes them or their reservation lapses, so one org cannot fill the bucket
with uploads it never submits.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError

from planzoom.clock import now_ts
from planzoom.config import Settings
from planzoom.errors import ResourceExhausted
from planzoom.ids import check_id
from planzoom.jobstore import Conflict, JobNotFound, JobStore, compare_and_set
from planzoom.messaging.workqueues import WorkQueues
from planzoom.states import ended
from planzoom.v1 import events_pb2, jobs_pb2

log = logging.getLogger(__name__)


def usage_key(org: str) -> str:
    return f"org.{check_id('org', org)}"


class TooMuchStaged(ResourceExhausted):
    reason = "TOO_MUCH_STAGED"


@dataclass(frozen=True)
class Quota:
    jobs: int  # jobs in flight
    pixels: int  # their planned pixels
    staged_bytes: int = 2**63  # bytes of uploads staged and not submitted
    staged_uploads: int = 2**31  # such uploads

    @classmethod
    def from_settings(cls, s: Settings) -> Quota:
        return cls(jobs=s.org_max_jobs_in_flight, pixels=s.org_max_pixels_in_flight,
                   staged_bytes=s.org_max_staged_bytes, staged_uploads=s.org_max_staged_uploads)

    def fits(self, usage: events_pb2.OrgUsage, pixels: int) -> bool:
        """True if one more job of ``pixels`` fits beside ``usage``."""
        if not usage.in_flight:
            return True
        return (len(usage.in_flight) < self.jobs
                and sum(usage.in_flight.values()) + pixels <= self.pixels)


class Admission:
    """Admits, queues and releases the jobs of each org against ``quota``;
    a released job's page jobs are published into ``queues``."""

    def __init__(self, jobs: JobStore, quota: Quota, queues: WorkQueues):
        self.jobs, self.quota, self.queues = jobs, quota, queues

    async def _change(self, org: str, change) -> events_pb2.OrgUsage:
        """Apply ``change(usage)`` to the org's record with compare-and-set."""
        key = usage_key(org)
        async for attempt in compare_and_set():
            with attempt:
                try:
                    entry = await self.jobs.kv.get(key)
                    usage = events_pb2.OrgUsage.FromString(entry.value or b"")
                    revision = entry.revision
                except (KeyNotFoundError, KeyDeletedError):
                    usage, revision = events_pb2.OrgUsage(), None
                result = change(usage)
                try:
                    if revision is None:
                        await self.jobs.kv.create(key, usage.SerializeToString())
                    else:
                        await self.jobs.kv.update(key, usage.SerializeToString(),
                                                  last=revision)
                except KeyWrongLastSequenceError:
                    raise Conflict(key) from None
                return result
        raise AssertionError("unreachable")

    async def admit(self, org: str, job_id: str, pixels: int) -> bool:
        """Put a new job in flight (True) or at the end of its org's queue
        (False). Idempotent for a job already in either."""

        def change(usage: events_pb2.OrgUsage) -> bool:
            if job_id in usage.in_flight:
                return True
            if job_id in usage.queued:
                return False
            if not usage.queued and self.quota.fits(usage, pixels):
                usage.in_flight[job_id] = pixels
                return True
            usage.queued.append(job_id)
            usage.queued_pixels[job_id] = pixels
            return False

        return await self._change(org, change)

    async def finish(self, job: jobs_pb2.Job) -> list[str]:
        """Take an ended job out of flight (or out of the queue) and move the
        org's queued jobs that now fit into flight, oldest first. Returns
        their ids: the caller releases them (:meth:`release`)."""
        return await self._change(job.plan.org, lambda usage: self._drop(usage, {job.job_id}))

    def _drop(self, usage: events_pb2.OrgUsage, gone: set[str]) -> list[str]:
        for job_id in gone & set(usage.in_flight):
            del usage.in_flight[job_id]
        for job_id in gone & set(usage.queued):
            usage.queued.remove(job_id)
            usage.queued_pixels.pop(job_id, None)
        return self._promote(usage)

    def _promote(self, usage: events_pb2.OrgUsage) -> list[str]:
        released = []
        while usage.queued:
            job_id = usage.queued[0]
            pixels = usage.queued_pixels.get(job_id, 0)
            if not self.quota.fits(usage, pixels):
                break
            usage.queued.pop(0)
            usage.queued_pixels.pop(job_id, None)
            usage.in_flight[job_id] = pixels
            released.append(job_id)
        return released

    async def stage(self, org: str, upload_id: str, size: int, seconds: float) -> None:
        """Reserve ``size`` bytes for the org's upload ``upload_id`` for
        ``seconds``. Raises TooMuchStaged (RESOURCE_EXHAUSTED, retryable)
        if the org's reservations that have not lapsed leave no room."""

        def change(usage: events_pb2.OrgUsage) -> None:
            now = time.time()
            for gone in [k for k, v in usage.staged.items() if v.expires_at < now]:
                del usage.staged[gone]
            held = sum(v.bytes for v in usage.staged.values())
            if (len(usage.staged) >= self.quota.staged_uploads
                    or held + size > self.quota.staged_bytes):
                raise TooMuchStaged(
                    f"org {org!r} has {len(usage.staged)} uploads holding {held:,} bytes staged "
                    f"and not submitted; at most {self.quota.staged_uploads} uploads and "
                    f"{self.quota.staged_bytes:,} bytes may be: submit or finish those first "
                    "(or declare this upload's size), or ask the operator to raise "
                    "PLANZOOM_ORG_MAX_STAGED_BYTES", retryable=True,
                    retry_after=max(1.0, min((v.expires_at for v in usage.staged.values()),
                                             default=now + 1) - now))
            usage.staged[upload_id].bytes = size
            usage.staged[upload_id].expires_at = int(now + seconds)

        await self._change(org, change)

    async def unstage(self, org: str, upload_id: str) -> None:
        """Drop ``upload_id``'s reservation (SubmitJob took it)."""

        def change(usage: events_pb2.OrgUsage) -> None:
            if upload_id in usage.staged:
                del usage.staged[upload_id]

        await self._change(org, change)

    async def release(self, job_id: str) -> None:
        """Mark a job that left the queue as released and publish its page
        jobs (the record change first: a process that stops in between
        leaves pages the sweep publishes)."""

        def change(job: jobs_pb2.Job) -> bool:
            if not job.queued:
                return False
            job.queued = False
            job.released_at.CopyFrom(now_ts())
            job.updated_at.CopyFrom(job.released_at)
            return True

        try:
            job = await self.jobs.change(job_id, change)
        except JobNotFound:
            return
        if not ended(job):
            await self.queues.publish_page_jobs(job, range(1, job.total_pages + 1))
            log.info("queued job released", extra={"job_id": job_id})

    async def tidy(self, org: str) -> list[str]:
        """Drop from the org's record the jobs that ended or vanished without
        :meth:`finish` (a process stopped in between) and promote what then
        fits. Returns the promoted job ids, for :meth:`release`."""
        try:
            entry = await self.jobs.kv.get(usage_key(org))
        except (KeyNotFoundError, KeyDeletedError):
            return []
        usage = events_pb2.OrgUsage.FromString(entry.value or b"")
        gone = set()
        for job_id in [*usage.in_flight, *usage.queued]:
            try:
                if ended(await self.jobs.get(job_id)):
                    gone.add(job_id)
            except JobNotFound:
                gone.add(job_id)
        queued_head = usage.queued[:1]
        if not gone and not (queued_head and self.quota.fits(
                usage, usage.queued_pixels.get(queued_head[0], 0))):
            return []
        return await self._change(org, lambda u: self._drop(u, gone))

    async def orgs(self) -> list[str]:
        """Orgs that have a usage record."""
        return [key.removeprefix("org.") for key in await self.jobs.keys("org.")]
