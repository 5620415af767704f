"""Job records in the JetStream KV bucket ``planzoom_jobs``.

Keys:

- ``job.<job_id>``: the :class:`planzoom.v1.jobs_pb2.Job` record (protobuf).
- ``plan.<org>.<project>.<plan>``: the plan's job ids, newest first,
  space-separated (at most ``PLAN_INDEX_SIZE``), for ListJobs.
- ``dedup.<hex>``: job id that owns a (plan, source sha256, options) triple.
- ``ended.<job_id>``: ``running`` from the job's creation, its final state's
  name once it has ended (expiring with the record): what a stage asks
  before and during a page's work (:meth:`JobStore.ended`), a few bytes
  where the record of a 2,000-page job is about a megabyte.

Ingest creates records; the progress service is the only writer after that,
using compare-and-set on the KV revision (``update(..., last=revision)``).
"""

from __future__ import annotations

import contextlib
import hashlib
import time

from nats.js import JetStreamContext
from nats.js.errors import (
    APIError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random

from planzoom.errors import InvalidInput, NotFound, Unavailable
from planzoom.ids import check_id
from planzoom.states import ended
from planzoom.v1 import jobs_pb2

PLAN_INDEX_SIZE = 1000
#: JetStream API error code "wrong last sequence" (compare-and-set lost).
WRONG_LAST_SEQUENCE = 10071
#: Tries of one compare-and-set change before it gives up with Conflict, and
#: the random pause between them (so that writers racing on a busy record,
#: such as a cancel against pages finishing, do not collide again at once).
CAS_ATTEMPTS = 30
CAS_JITTER_SECONDS = 0.05


def decode_record(value: bytes, revision: int) -> jobs_pb2.Job:
    """A stored record with ``revision`` set. Stored records hold no output
    keys (:func:`planzoom.keys.derive_keys` adds them where a record leaves
    planzoom)."""
    job = jobs_pb2.Job.FromString(value)
    job.revision = revision
    return job


class JobNotFound(NotFound):
    reason = "JOB_NOT_FOUND"

    def __init__(self, job_id: str):
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class Conflict(Unavailable):
    """The record changed since it was read (compare-and-set lost)."""

    reason = "CONFLICT"

    def __init__(self, key: str):
        super().__init__(f"{key} kept changing while it was being updated; try again")


def compare_and_set():
    """Attempts of a compare-and-set change: ``async for attempt in
    compare_and_set(): with attempt: …`` re-runs the block (read, change,
    write) while it raises Conflict, at most CAS_ATTEMPTS times."""
    return AsyncRetrying(retry=retry_if_exception_type(Conflict),
                         stop=stop_after_attempt(CAS_ATTEMPTS), reraise=True,
                         wait=wait_random(0, CAS_JITTER_SECONDS))


def job_key(job_id: str) -> str:
    return f"job.{check_id('job_id', job_id)}"


def ended_key(job_id: str) -> str:
    return f"ended.{check_id('job_id', job_id)}"


#: The value of ``ended.<job_id>`` while the job runs.
RUNNING = b"running"


def plan_index_key(plan: jobs_pb2.PlanRef) -> str:
    return "plan." + ".".join(
        (check_id("org", plan.org), check_id("project", plan.project), check_id("plan", plan.plan))
    )


def dedup_key(plan: jobs_pb2.PlanRef, sha256_hex: str, options: jobs_pb2.JobOptions) -> str:
    """Deterministic key of (plan, content, resolved options)."""
    h = hashlib.sha256()
    h.update(plan_index_key(plan).encode())
    h.update(sha256_hex.encode())
    h.update(options.SerializeToString(deterministic=True))
    return f"dedup.{h.hexdigest()}"


class JobStore:
    """Job records, plan indexes and dedup claims in one KV bucket."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str):
        self.js, self.kv, self.bucket = js, kv, bucket

    async def get(self, job_id: str) -> jobs_pb2.Job:
        """The record with ``revision`` set. Raises JobNotFound."""
        try:
            entry = await self.kv.get(job_key(job_id))
        except (KeyNotFoundError, KeyDeletedError):
            raise JobNotFound(job_id) from None
        if not entry.value:
            raise JobNotFound(job_id)
        return decode_record(entry.value, entry.revision)

    async def create(self, job: jobs_pb2.Job) -> None:
        """Store a new record, mark it running and add it to its plan's index."""
        job.revision = 0
        job.revision = await self.kv.create(job_key(job.job_id), job.SerializeToString())
        await self.kv.put(ended_key(job.job_id), RUNNING)
        key = plan_index_key(job.plan)
        async for attempt in compare_and_set():
            with attempt:
                try:
                    entry = await self.kv.get(key)
                except (KeyNotFoundError, KeyDeletedError):
                    entry = None
                try:
                    if entry is None:
                        await self.kv.create(key, job.job_id.encode())
                    else:
                        ids = [job.job_id, *entry.value.decode().split()][:PLAN_INDEX_SIZE]
                        await self.kv.update(key, " ".join(ids).encode(), last=entry.revision)
                except KeyWrongLastSequenceError:
                    raise Conflict(key) from None

    async def update(self, job: jobs_pb2.Job, ttl: float | None = None) -> None:
        """Write ``job`` if nobody changed it since ``job.revision``; sets the
        new revision. Raises Conflict otherwise. With ``ttl`` (seconds) the
        record expires that long after this write (a per-message TTL, NATS
        2.11+), which is how ended jobs leave the bucket."""
        if ttl is None:
            try:
                rev = await self.kv.update(
                    job_key(job.job_id), job.SerializeToString(), last=job.revision
                )
            except KeyWrongLastSequenceError:
                raise Conflict(f"job {job.job_id}") from None
        else:
            try:
                ack = await self.js.publish(
                    f"$KV.{self.bucket}.{job_key(job.job_id)}", job.SerializeToString(),
                    headers={"Nats-Expected-Last-Subject-Sequence": str(job.revision)},
                    msg_ttl=ttl,
                )
            except APIError as e:
                if e.err_code == WRONG_LAST_SEQUENCE:
                    raise Conflict(f"job {job.job_id}") from None
                raise
            rev = ack.seq
        job.revision = rev

    async def change(self, job_id: str, change, ttl: float | None = None) -> jobs_pb2.Job:
        """Apply ``change(job)`` (returns True if it changed the record) with
        compare-and-set, again on a fresh read while another writer gets in
        first; ``ttl`` as for :meth:`update`. Returns the record as stored
        (or as read, if unchanged)."""
        async for attempt in compare_and_set():
            with attempt:
                job = await self.get(job_id)
                if change(job):
                    await self.update(job, ttl=ttl)
                return job
        raise AssertionError("unreachable")

    async def keys(self, prefix: str) -> list[str]:
        """Keys of the bucket that start with ``prefix`` (a token boundary,
        e.g. ``job.``), read from the stream's subject counts: no consumer
        is created."""
        subject = f"$KV.{self.bucket}.{prefix}"
        info = await self.js.stream_info(f"KV_{self.bucket}", subjects_filter=subject + ">")
        return [s[len(f"$KV.{self.bucket}."):] for s in (info.state.subjects or {})]

    async def ended(self, job_id: str) -> bool:
        """True if the job has ended (cancelled, complete or failed) or no
        longer exists: its pages need no more work. Reads ``ended.<job_id>``
        (and the record only for a job that has none: it has expired)."""
        try:
            entry = await self.kv.get(ended_key(job_id))
            if entry.value:
                return entry.value != RUNNING
        except (KeyNotFoundError, KeyDeletedError):
            pass
        try:
            return ended(await self.get(job_id))
        except JobNotFound:
            return True

    async def mark_ended(self, job: jobs_pb2.Job, ttl: float) -> None:
        """Set ``ended.<job_id>`` to the ended job's state, expiring after
        ``ttl`` seconds (with its record). Idempotent."""
        await self.js.publish(f"$KV.{self.bucket}.{ended_key(job.job_id)}",
                              jobs_pb2.JobState.Name(job.state).encode(), msg_ttl=ttl)

    async def job_ids(self) -> list[str]:
        """Ids of every job record in the bucket (for periodic sweeps)."""
        return [key.removeprefix("job.") for key in await self.keys("job.")]

    async def list_for_plan(self, plan: jobs_pb2.PlanRef, limit: int, after: str = "",
                            max_bytes: int = 0) -> tuple[list[jobs_pb2.Job], str]:
        """Up to ``limit`` records of one plan, newest first, from the one
        after job ``after`` (empty: the newest), stopping once they reach
        ``max_bytes`` serialized (0: no bound; at least one is returned).
        Returns them and the id to continue after ("" when none are left).
        Raises InvalidInput (``field`` page_token) when ``after`` is no
        longer in the plan's index (it expired): list again from the top."""
        try:
            entry = await self.kv.get(plan_index_key(plan))
        except (KeyNotFoundError, KeyDeletedError):
            ids = []
        else:
            ids = entry.value.decode().split()
        if after:
            if after not in ids:
                raise InvalidInput("the page token is no longer valid (its job expired); "
                                   "list again from the first page", field="page_token")
            ids = ids[ids.index(after) + 1:]
        jobs, size, last = [], 0, ""
        for job_id in ids:
            if len(jobs) >= limit or (max_bytes and jobs and size >= max_bytes):
                return jobs, last
            last = job_id
            try:
                job = await self.get(job_id)
            except JobNotFound:
                continue  # expired
            jobs.append(job)
            size += job.ByteSize()
        return jobs, ""

    async def use_upload(self, upload_id: str, ttl: float) -> bool:
        """Mark a staged upload as submitted; False if it already was. The
        mark expires after ``ttl`` seconds (after the upload's URL has)."""
        try:
            await self.js.publish(f"$KV.{self.bucket}.upload.{check_id('upload_id', upload_id)}",
                                  b"submitted",
                                  headers={"Nats-Expected-Last-Subject-Sequence": "0"},
                                  msg_ttl=ttl)
            return True
        except APIError as e:
            if e.err_code == WRONG_LAST_SEQUENCE:
                return False
            raise

    async def claim_dedup(self, key: str, job_id: str) -> tuple[str, float] | None:
        """Claim ``key`` for ``job_id``; None if claimed, else the job id that
        holds it and when it claimed it (epoch seconds)."""
        try:
            await self.kv.create(key, f"{job_id} {time.time():.3f}".encode())
            return None
        except KeyWrongLastSequenceError:
            entry = await self.kv.get(key)
            holder, _, claimed_at = entry.value.decode().partition(" ")
            return holder, float(claimed_at or 0)

    async def release_dedup(self, key: str, job_id: str) -> None:
        """Drop ``job_id``'s claim on ``key`` (its job was never created), so
        an identical submit need not wait for the claim to go stale. A claim
        someone else holds by now is left alone."""
        try:
            entry = await self.kv.get(key)
        except (KeyNotFoundError, KeyDeletedError):
            return
        if entry.value.decode().partition(" ")[0] == job_id:
            with contextlib.suppress(KeyWrongLastSequenceError):
                await self.kv.delete(key, last=entry.revision)

    async def replace_dedup(self, key: str, old_job_id: str, job_id: str) -> bool:
        """Move a claim from ``old_job_id`` (a job that ended without
        success, or a claim whose job was never created) to ``job_id``;
        False if someone else moved it first."""
        entry = await self.kv.get(key)
        if entry.value.decode().partition(" ")[0] != old_job_id:
            return False
        try:
            await self.kv.update(key, f"{job_id} {time.time():.3f}".encode(),
                                 last=entry.revision)
            return True
        except KeyWrongLastSequenceError:
            return False
