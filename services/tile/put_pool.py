"""Tile PUTs spread over child processes, each with its own S3 client.

A PUT costs about a millisecond of CPU under the GIL, even with
:meth:`~planzoom.storage.ObjectStore.put_small`; in the tile worker's own
process the PUTs and the pyramid would share one core's worth of GIL and
the endpoint would wait (docs/performance.md has the figures). Here the PUTs
run in ``processes`` spawned children, each with ``threads`` threads; the
tile worker only encodes and hands each tile's bytes over a pipe.

A child that dies fails the PUTs it held (``TilePutFailed``, so the page
is retried by redelivery) and is replaced; the other children go on. So
does a child holding a PUT older than ``put_timeout`` seconds (a store
that accepted the connection and never answered, a stopped process): a
watchdog kills it, so that no page waits on a tile forever.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import count
from multiprocessing.connection import Connection

from planzoom import metrics
from planzoom.config import Settings
from planzoom.errors import Unavailable
from planzoom.storage import ObjectStore

log = logging.getLogger(__name__)


class TilePutFailed(Unavailable):
    """A PUT failed after its retries, or its process died."""

    reason = "TILE_PUT_FAILED"


def threads_per_process(concurrency: int, processes: int) -> int:
    """PUT threads of each of ``processes`` processes that share
    ``concurrency`` requests in flight (rounded up)."""
    return -(-concurrency // processes)


def _child(conn: Connection, settings: Settings, credentials: tuple[str, str] | None,
           threads: int) -> None:
    """Child process: PUT each ``(task, key, data, content_type)`` received on
    ``conn`` with ``threads`` threads; answer ``(task, (error class, text) or
    None, retries)``. Ends, once its PUTs are answered, on receiving None (the pool
    is closing) or when the parent's end of the pipe closes (it died)."""
    store = ObjectStore(settings, credentials)
    send_lock = threading.Lock()

    def put(task: int, key: str, data: bytes, content_type: str) -> None:
        retries, error = 0, None
        try:
            retries = store.put_small(key, data, content_type)
        except Exception as e:  # not every error pickles: send text
            error = (type(e).__name__, f"PUT {key}: {e}")
        with send_lock:
            conn.send((task, error, retries))

    with ThreadPoolExecutor(threads, thread_name_prefix="put") as pool:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message is None:
                break
            pool.submit(put, *message)


class _Child:
    """One child process, its pipe and the PUTs it holds."""

    def __init__(self, ctx, args: tuple):
        self.conn, child_end = ctx.Pipe()
        self.process = ctx.Process(target=_child, args=(child_end, *args),
                                   name="tile-put", daemon=True)
        self.process.start()
        self.started = time.monotonic()
        child_end.close()
        self.pending: dict[int, tuple[Future, float]] = {}  # task → (future, sent at)
        self.send_lock = threading.Lock()
        self.overran = False  # killed by the watchdog


class PutPool:
    """PUTs of tiles in ``processes`` child processes of ``threads`` threads
    each (``processes * threads`` requests in flight at most), to the bucket
    of ``settings``; ``credentials`` as for :class:`~planzoom.storage.ObjectStore`."""

    def __init__(self, settings: Settings, processes: int, threads: int,
                 credentials: tuple[str, str] | None = None, put_timeout: float = 120.0):
        self._child_args = (settings, credentials, threads)
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._tasks = count()
        self._closed = False
        self.put_timeout = put_timeout
        self._children = [self._start() for _ in range(processes)]
        threading.Thread(target=self._watch, name="tile-put-watchdog", daemon=True).start()

    def _watch(self) -> None:
        """Kill a child holding a PUT older than ``put_timeout``; its
        reader then fails what it held and starts another."""
        while not self._closed:
            time.sleep(min(1.0, self.put_timeout / 4))
            now = time.monotonic()
            with self._lock:
                stuck = [c for c in self._children if not c.overran and any(
                    now - sent > self.put_timeout for _, sent in c.pending.values())]
                for child in stuck:
                    child.overran = True
            for child in stuck:
                log.error("PUT process %s held a tile PUT for more than %.0f s; "
                          "replacing it", child.process.pid, self.put_timeout)
                child.process.kill()

    @classmethod
    def from_settings(cls, settings: Settings,
                      credentials: tuple[str, str] | None = None) -> PutPool:
        """The tile worker's pool: ``PLANZOOM_TILE_PUT_CONCURRENCY`` threads split
        over ``PLANZOOM_TILE_PUT_PROCESSES`` processes (rounded up)."""
        processes = settings.tile_put_processes
        return cls(settings, processes,
                   threads_per_process(settings.tile_put_concurrency, processes), credentials,
                   put_timeout=settings.tile_put_timeout_seconds)

    def _start(self) -> _Child:
        child = _Child(self._ctx, self._child_args)
        threading.Thread(target=self._read, args=(child,), name="tile-put-results",
                         daemon=True).start()
        return child

    def _read(self, child: _Child) -> None:
        """Settle the futures of ``child``'s answers; on its death, fail the
        rest and put a new child in its place."""
        while True:
            try:
                task, error, retries = child.conn.recv()
            except (EOFError, OSError):
                break
            if retries:
                metrics.S3_RETRIES.inc(retries)
            with self._lock:
                future, _ = child.pending.pop(task, (None, 0))
            if future is None:
                continue
            if error is None:
                future.set_result(None)
            else:
                # The store's text can name its endpoint and keys: it stays
                # in the log, under an id the page's record carries.
                kind, detail = error
                error_id = uuid.uuid4().hex[:16]
                log.error("tile PUT failed, error id %s: %s: %s", error_id, kind, detail,
                          extra={"error_id": error_id})
                future.set_exception(TilePutFailed(
                    f"storing a tile failed ({kind}; error id {error_id} in the service log)"))
        child.process.join(timeout=5)
        child.conn.close()
        if time.monotonic() - child.started < 5:
            time.sleep(1)  # one that cannot start (bad settings) is not respawned in a spin
        with self._lock:
            lost, child.pending = [f for f, _ in child.pending.values()], {}
            if not self._closed:
                log.error("PUT process %s ended (exit code %s) holding %d PUTs; "
                          "starting another", child.process.pid, child.process.exitcode,
                          len(lost))
                self._children[self._children.index(child)] = self._start()
        why = (f"a tile PUT took longer than {self.put_timeout:g} s" if child.overran
               else f"the PUT process ended (exit code {child.process.exitcode})")
        for future in lost:
            future.set_exception(TilePutFailed(f"{why} before this tile was stored"))

    def pids(self) -> list[int]:
        """Process ids of the current PUT processes."""
        with self._lock:
            return [c.process.pid for c in self._children]

    def put(self, key: str, data: bytes, content_type: str) -> Future:
        """Queue one PUT of ``data`` (bytes) at ``key``; the future's result
        is None once stored, or it raises TilePutFailed. Never blocks on the
        PUT (the caller bounds how many are in flight)."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the PUT pool is closed")
            child = min(self._children, key=lambda c: len(c.pending))  # least loaded
            task = next(self._tasks)
            child.pending[task] = (future, time.monotonic())
        try:
            with child.send_lock:
                child.conn.send((task, key, data, content_type))
        except (OSError, ValueError) as e:  # the child died; its reader fails the future
            log.warning("PUT process unreachable: %s", e)
        return future

    def close(self, timeout: float = 10.0) -> None:
        """Stop the children once their queued PUTs are answered; kill
        those still running after ``timeout`` seconds."""
        with self._lock:
            self._closed = True
            children = list(self._children)
        for child in children:
            try:
                with child.send_lock:
                    child.conn.send(None)
            except (OSError, ValueError):
                pass  # already gone
        deadline = time.monotonic() + timeout
        for child in children:
            child.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
