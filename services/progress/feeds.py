"""One KV watcher per watched job per progress process, shared by every
WatchJob stream on that job.

A KV watcher is an ordered push consumer on the server; one per stream made
the server deliver every change N times and the process decode it N times,
which with a few hundred watchers put hundreds of milliseconds between a
page finishing and the last watcher hearing of it. A feed decodes each
change once and wakes every stream waiting on it.

Waking the streams (a fan-out) is the costly part: it occupies this
process's event loop for tens of microseconds per stream, so a page's
completion that comes in during another change's fan-out waits for it. A
page has about three changes (rendering, tiling, done); only the changes
watchers wait for wake the streams at once: a page ending, the job's state,
a stall. A page merely moving on (rendering, tiling) is held up to
``COALESCE_SECONDS`` and goes out with whatever else changed meanwhile
(docs/performance.md has the measurements behind this).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.kv import KV_DEL, KV_PURGE

from planzoom import keys, updates
from planzoom.jobstore import JobNotFound, JobStore, decode_record, job_key
from planzoom.v1 import jobs_pb2, progress_pb2

log = logging.getLogger(__name__)

#: Seconds without news after which a feed reads the record directly, so a
#: watcher that lost its server-side consumer (a NATS restart) cannot leave
#: the streams hanging.
RECHECK_SECONDS = 5.0
#: The server drops the consumer of a watcher that vanished after this long.
WATCHER_IDLE_SECONDS = 5.0
#: Seconds a change that ends nothing may wait before the streams wake: long
#: enough to merge a page's "rendering" and "tiling" with what follows, short
#: enough that a person watching sees a page start at once.
COALESCE_SECONDS = 0.1
#: Changes a feed remembers (which pages each changed) to build deltas; a
#: stream further behind gets a snapshot.
DELTA_LOG = 256


def ends_something(before: jobs_pb2.Job | None, after: jobs_pb2.Job) -> bool:
    """True if ``after`` is news a watcher waits for: a page ended (DONE or
    FAILED), or the job's state or stalled flag changed."""
    return (before is None or after.state != before.state
            or after.finalizing != before.finalizing
            or after.completed_pages != before.completed_pages
            or after.failed_pages != before.failed_pages
            or after.stalled != before.stalled)


class JobFeed:
    """The latest record of one job that streams may send (``latest``, with
    its KV revision), a way to wait for the next one, and the update that
    brings a stream from an earlier ``latest`` to this one
    (:meth:`update_since`): which pages changed is worked out once per
    change, here, not per stream."""

    def __init__(self, kv, jobs: JobStore, job_id: str):
        self.kv, self.jobs, self.job_id = kv, jobs, job_id
        self.latest: jobs_pb2.Job | None = None
        self.gone = False  # the record was deleted or purged
        self.closed = False
        self.subscribers = 0
        self._changed = asyncio.Event()
        self._held_job: jobs_pb2.Job | None = None  # newer than latest, not out yet
        self._held: asyncio.TimerHandle | None = None  # its release
        self._task: asyncio.Task | None = None
        # (from revision, to revision, pages changed) for each step of latest
        self._log: deque[tuple[int, int, frozenset[int]]] = deque(maxlen=DELTA_LOG)
        self._summary: jobs_pb2.Job | None = None  # latest without its pages
        self._snapshot: progress_pb2.JobUpdate | None = None  # latest, with its keys
        self._deltas: dict[int, progress_pb2.JobUpdate] = {}  # to latest, by from revision

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"feed-{self.job_id}")

    async def stop(self) -> None:
        if self._held is not None:
            self._held.cancel()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def wait(self, after_revision: int) -> None:
        """Return once ``latest`` is newer than ``after_revision``, the
        record is gone, or the feed is closed (the process is stopping).

        No timeout: a timer per stream per change cost about a fifth of a
        200-stream fan-out, and every reason to stop waiting sets the event.
        """
        while not (self.closed or self._has_news(after_revision)):
            await self._changed.wait()

    def close(self) -> None:
        """Wake every stream waiting on this feed for good."""
        self.closed = True
        self._wake()

    def update_since(self, revision: int) -> progress_pb2.JobUpdate:
        """The update that brings a stream whose last update was at
        ``revision`` to ``latest``: a delta (the summary and the pages that
        changed since), or a snapshot if this feed does not know every step
        since ``revision``. Deltas are built once per revision and shared
        by the streams at it."""
        latest = self.latest
        cached = self._deltas.get(revision)
        if cached is not None:
            return cached
        steps = [step for step in self._log if step[1] > revision]
        if not steps or steps[0][0] != revision:
            return self.snapshot()
        if self._summary is None:
            self._summary = updates.summary(latest)
        pages = frozenset().union(*(changed for _, _, changed in steps))
        update = self._deltas[revision] = updates.delta(self._summary, latest, pages)
        return update

    def snapshot(self) -> progress_pb2.JobUpdate:
        """``latest`` whole, with its output keys (built once per change)."""
        if self._snapshot is None:
            self._snapshot = updates.snapshot(keys.with_keys(self.latest))
        return self._snapshot

    def _advance(self, job: jobs_pb2.Job) -> None:
        """Make ``job`` the latest, noting which pages changed."""
        before = self.latest
        if before is not None and len(before.pages) == len(job.pages):
            changed = frozenset(new.page for old, new in zip(before.pages, job.pages,
                                                             strict=True) if old != new)
            self._log.append((before.revision, job.revision, changed))
        else:
            self._log.clear()
        self.latest, self._summary, self._snapshot, self._deltas = job, None, None, {}

    def _has_news(self, after_revision: int) -> bool:
        return self.gone or (self.latest is not None and self.latest.revision > after_revision)

    def _publish(self, job: jobs_pb2.Job | None) -> None:
        if job is None:
            self.gone = True
        else:
            newest = self._held_job or self.latest
            if newest is not None and job.revision <= newest.revision:
                return
            if not ends_something(self.latest, job):
                self._held_job = job  # replaces an older held change
                if self._held is None:
                    self._held = asyncio.get_running_loop().call_later(COALESCE_SECONDS,
                                                                       self._wake)
                return
            self._held_job = None
            self._advance(job)
        self._wake()

    def _wake(self) -> None:
        """Release a held change, if any, and wake every waiting stream."""
        if self._held is not None:
            self._held.cancel()
            self._held = None
        if self._held_job is not None:
            held, self._held_job = self._held_job, None
            self._advance(held)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _run(self) -> None:
        watcher = None
        try:
            while True:
                watcher = await self.kv.watch(job_key(self.job_id),
                                              inactive_threshold=WATCHER_IDLE_SECONDS)
                quiet_since = time.monotonic()
                while True:
                    try:
                        entry = await watcher.updates(timeout=1.0)
                    except NatsTimeoutError:
                        entry = None
                    if entry is not None:
                        quiet_since = time.monotonic()
                        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                            self._publish(None)
                            continue
                        self._publish(decode_record(entry.value, entry.revision))
                    elif time.monotonic() - quiet_since > RECHECK_SECONDS:
                        quiet_since = time.monotonic()
                        try:
                            job = await self.jobs.get(self.job_id)
                        except JobNotFound:
                            self._publish(None)
                            continue
                        if self.latest is None or job.revision > self.latest.revision:
                            self._publish(job)
                            break  # the watcher missed it: start a new one
                with contextlib.suppress(Exception):
                    await watcher.stop()
                watcher = None
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job feed failed", extra={"job_id": self.job_id})
            await asyncio.sleep(1)
            self.start()  # a new task with a new watcher; streams keep waiting
        finally:
            if watcher is not None:
                with contextlib.suppress(Exception):
                    await watcher.stop()


class JobFeeds:
    """The feeds of one process, by job id, started on a job's first watcher
    and stopped after its last leaves."""

    def __init__(self, kv, jobs: JobStore):
        self.kv, self.jobs = kv, jobs
        self._feeds: dict[str, JobFeed] = {}
        self.closed = False

    def close(self) -> None:
        """Wake every waiting stream so it can end, now and on any feed
        opened later (the process is stopping)."""
        self.closed = True
        for feed in self._feeds.values():
            feed.close()

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[JobFeed]:
        feed = self._feeds.get(job_id)
        if feed is None:
            feed = self._feeds[job_id] = JobFeed(self.kv, self.jobs, job_id)
            feed.closed = self.closed
            feed.start()
        feed.subscribers += 1
        try:
            yield feed
        finally:
            feed.subscribers -= 1
            if feed.subscribers == 0 and self._feeds.get(job_id) is feed:
                del self._feeds[job_id]
                await feed.stop()
