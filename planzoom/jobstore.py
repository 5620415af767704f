"""Job records in the JetStream KV bucket ``planzoom_jobs``.

Keys:

- ``job.<job_id>``: the :class:`planzoom.v1.jobs_pb2.Job` record (protobuf).
- ``plan.<org>.<project>.<plan>.<job_id>``: empty index entry for ListJobs.
- ``dedup.<hex>``: job id that owns a (plan, source sha256, options) triple.

Ingest creates records; the progress service is the only writer after that,
using compare-and-set on the KV revision (``update(..., last=revision)``).
"""

from __future__ import annotations

import hashlib

from nats.js.errors import (
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue

from planzoom.ids import check_id
from planzoom.v1 import jobs_pb2

TERMINAL_JOB_STATES = frozenset(
    {jobs_pb2.JOB_STATE_COMPLETE, jobs_pb2.JOB_STATE_FAILED, jobs_pb2.JOB_STATE_CANCELLED}
)


class JobNotFound(LookupError):
    def __init__(self, job_id: str):
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class Conflict(Exception):
    """The record changed since it was read (compare-and-set lost)."""


def job_key(job_id: str) -> str:
    return f"job.{check_id('job_id', job_id)}"


def plan_index_prefix(plan: jobs_pb2.PlanRef) -> str:
    return "plan." + ".".join(
        (check_id("org", plan.org), check_id("project", plan.project), check_id("plan", plan.plan))
    )


def dedup_key(plan: jobs_pb2.PlanRef, sha256_hex: str, options: jobs_pb2.JobOptions) -> str:
    """Deterministic key of (plan, content, resolved options)."""
    h = hashlib.sha256()
    h.update(plan_index_prefix(plan).encode())
    h.update(sha256_hex.encode())
    h.update(options.SerializeToString(deterministic=True))
    return f"dedup.{h.hexdigest()}"


def is_terminal(job: jobs_pb2.Job) -> bool:
    return job.state in TERMINAL_JOB_STATES


class JobStore:
    def __init__(self, kv: KeyValue):
        self.kv = kv

    async def get(self, job_id: str) -> jobs_pb2.Job:
        """The record with ``revision`` set. Raises JobNotFound."""
        try:
            entry = await self.kv.get(job_key(job_id))
        except (KeyNotFoundError, KeyDeletedError):
            raise JobNotFound(job_id) from None
        if not entry.value:
            raise JobNotFound(job_id)
        job = jobs_pb2.Job.FromString(entry.value)
        job.revision = entry.revision
        return job

    async def create(self, job: jobs_pb2.Job) -> None:
        """Store a new record and its plan index entry."""
        job.revision = 0
        job.revision = await self.kv.create(job_key(job.job_id), job.SerializeToString())
        await self.kv.put(f"{plan_index_prefix(job.plan)}.{job.job_id}", b"")

    async def update(self, job: jobs_pb2.Job) -> None:
        """Write ``job`` if nobody changed it since ``job.revision``; sets the
        new revision. Raises Conflict otherwise."""
        try:
            rev = await self.kv.update(
                job_key(job.job_id), job.SerializeToString(), last=job.revision
            )
        except KeyWrongLastSequenceError:
            raise Conflict(job.job_id) from None
        job.revision = rev

    async def list_for_plan(self, plan: jobs_pb2.PlanRef, limit: int) -> list[jobs_pb2.Job]:
        """Records of one plan, newest first (job ids sort by creation time)."""
        prefix = plan_index_prefix(plan) + "."
        watcher = await self.kv.watch(prefix + "*", meta_only=True, ignore_deletes=True)
        ids: list[str] = []
        try:
            async for entry in watcher:
                if entry is None:
                    break
                ids.append(entry.key[len(prefix):])
        except NoKeysError:
            pass
        finally:
            await watcher.stop()
        jobs = []
        for job_id in sorted(ids, reverse=True)[:limit]:
            try:
                jobs.append(await self.get(job_id))
            except JobNotFound:
                continue
        return jobs

    async def claim_dedup(self, key: str, job_id: str) -> str | None:
        """Claim ``key`` for ``job_id``; return None if claimed, else the job
        id that holds it."""
        try:
            await self.kv.create(key, job_id.encode())
            return None
        except KeyWrongLastSequenceError:
            entry = await self.kv.get(key)
            return entry.value.decode()

    async def replace_dedup(self, key: str, old_job_id: str, job_id: str) -> bool:
        """Move a claim from a job that ended without success to a new one;
        False if someone else moved it first."""
        entry = await self.kv.get(key)
        if entry.value.decode() != old_job_id:
            return False
        try:
            await self.kv.update(key, job_id.encode(), last=entry.revision)
            return True
        except KeyWrongLastSequenceError:
            return False
