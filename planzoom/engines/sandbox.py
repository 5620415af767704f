"""The sandbox: worker processes for native engines that parse untrusted
bytes (PDFium is not thread-safe either, so it never runs in a service's
own process).

A worker is ``python -m planzoom.engines.sandbox_worker`` (its loop) started by
:class:`ProcessPool`
in its own process group, with an environment that holds no credentials
(only :data:`SAFE_ENV` and the import path). Before it takes a task it
confines itself, so that a parser an input has compromised reaches nothing
of the service's (docs/threat-model.md):

- files (Landlock, :mod:`planzoom.engines.confinement`): it reads the
  system's libraries, Python and planzoom's package, lists the import
  path, and reads and writes its pool's ``scratch`` directory only: no
  secret file, no checkout, no other process's ``/proc`` (the service is
  non-dumpable as well); no TCP, no signal to any process outside itself;
- system calls (seccomp): ``socket()`` for anything but AF_UNIX, ptrace and
  ``process_vm_*``, namespaces, mounts, keyrings, BPF, ``setsid`` and
  ``setpgid`` (:data:`planzoom.engines.confinement.DENIED_SYSCALLS`) fail;
- capabilities: none (a worker of a root service keeps the uid only);
- resources: address space (RLIMIT_AS, ``memory_bytes``), CPU time per task
  (RLIMIT_CPU), the largest file (RLIMIT_FSIZE, ``file_bytes``), open
  files, processes, no core dumps. A worker that overruns is killed with
  its whole process group.

Tasks go to it as pickles (the service is trusted); what comes back is JSON
(the worker is not): a registered result dataclass or an error, rebuilt in
the service only from classes it knows.

Each task runs on one worker with its own time limit, counted from when the
worker starts it: waiting for a free worker never counts against a file,
and a task that overruns kills only its own worker. A task that waits more
than ``queue_seconds`` for a worker is refused as UNAVAILABLE ("busy,
retry"). Workers are recycled after ``recycle_after`` tasks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from planzoom.engines.sandbox_worker import HEADER
from planzoom.errors import Internal, PlanzoomError, Timeout, Unavailable, reason_code

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Environment variables a worker keeps (nothing that can hold a secret).
SAFE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "OMP_THREAD_LIMIT")
#: The largest file a worker may write, unless its pool says otherwise.
WORKER_FILE_BYTES = 4 * 1024**3
#: Result dataclasses a worker may return, by "module:qualname".
_RESULTS: dict[str, type] = {}


def sandbox_result(cls: type[T]) -> type[T]:
    """Register a dataclass as something a worker may return (its fields
    must be JSON values: numbers, strings, lists)."""
    _RESULTS[f"{cls.__module__}:{cls.__qualname__}"] = cls
    return cls


class WorkerCrashed(Internal):
    """The worker process died (a crash, an out-of-memory kill, its CPU
    limit) while running a task."""

    reason = "WORKER_CRASHED"


class WorkerTimeout(Timeout):
    """The task ran past its time limit; its worker was killed."""

    reason = "WORKER_TIMEOUT"


class WorkersBusy(Unavailable):
    """No worker became free in time."""

    reason = "WORKERS_BUSY"


# -- the service side ----------------------------------------------------------

def _undumpable() -> None:
    """Make this (the service's) process non-dumpable: its /proc files
    (``environ``, ``mem``) and ptrace are then closed to processes of the
    same uid without CAP_SYS_PTRACE, a worker among them."""
    import ctypes

    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE


def _rebuild_error(spec: dict) -> PlanzoomError:
    """The error a worker reported, as one of planzoom's own classes (an
    unknown class name becomes Internal)."""
    module, _, name = spec.get("type", "").partition(":")
    cls = None
    if module.startswith(("planzoom.", "services.")) and module in sys.modules:
        cls = getattr(sys.modules[module], name, None)
    if not (isinstance(cls, type) and issubclass(cls, PlanzoomError)):
        cls = Internal
    error = cls.__new__(cls)
    Exception.__init__(error, str(spec.get("message", "")))
    error.message = str(spec.get("message", ""))[:2000]
    error.field = spec.get("field") if isinstance(spec.get("field"), str) else None
    error.retry_after = None
    error.headers = {}
    reason = spec.get("reason")
    if isinstance(reason, str):
        try:
            reason_code(reason)
            error.reason = reason
        except ValueError:  # not in the catalogue: not one an engine of ours raised
            error.reason = "WORKER_FAILED"
    if isinstance(spec.get("retryable"), bool):
        error.retryable = spec["retryable"]
    return error


def _rebuild_result(outcome: dict) -> Any:
    if "type" not in outcome:
        return outcome.get("result")
    cls = _RESULTS.get(outcome["type"])
    if cls is None:
        raise Internal(f"a worker returned an unregistered type {outcome['type']!r}")
    return cls(**outcome["result"])


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process):
        self.process, self.tasks = process, 0

    async def call(self, payload: bytes) -> dict | None:
        """Send one task; its outcome, or None if the worker died."""
        self.process.stdin.write(HEADER.pack(len(payload)) + payload)
        await self.process.stdin.drain()
        head = await self.process.stdout.readexactly(HEADER.size)
        (size,) = HEADER.unpack(head)
        return json.loads(await self.process.stdout.readexactly(size))

    def kill(self) -> None:
        """SIGKILL the worker's process group: the worker and anything it
        started, even after the worker itself has died."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class ProcessPool:
    """Up to ``workers`` sandboxed worker processes, started when needed.

    ``memory_bytes``: each worker's address-space limit (0: none);
    ``recycle_after``: tasks before a worker is replaced; ``queue_seconds``:
    how long a task may wait for a free worker before WorkersBusy;
    ``per_owner``: the workers one owner's tasks may hold at once (default:
    all); ``scratch``, ``readable``, ``file_bytes``: what a worker may write,
    read besides the system's files, and its largest file.
    """

    def __init__(self, workers: int, recycle_after: int, memory_bytes: int = 0,
                 queue_seconds: float = 60.0, *, scratch: str | None = None,
                 readable: tuple[str, ...] = (), file_bytes: int = WORKER_FILE_BYTES,
                 per_owner: int | None = None):
        self.workers, self.recycle_after = workers, recycle_after
        self.per_owner = per_owner or workers
        self._held: Counter[str | None] = Counter()
        self.memory_bytes, self.queue_seconds = memory_bytes, queue_seconds
        self.confine = {"scratch": os.path.abspath(scratch or tempfile.gettempdir()),
                        "readable": [os.path.abspath(p) for p in readable],
                        "file_bytes": int(file_bytes)}
        self._idle: list[_Worker] = []
        self._live = 0
        self._freed = asyncio.Event()  # set (and replaced) whenever a worker is freed
        self._closed = False

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in SAFE_ENV}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["TMPDIR"] = env["HOME"] = self.confine["scratch"]  # the one place it may write
        return env

    async def _spawn(self) -> _Worker:
        _undumpable()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "planzoom.engines.sandbox_worker", str(self.memory_bytes),
            json.dumps(self.confine), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=self._env(),
            # Its own process group: a kill takes whatever it started too
            # (and setsid/setpgid are denied it, so nothing leaves the group).
            start_new_session=True)
        return _Worker(process)

    async def _acquire(self, owner: str | None) -> _Worker:
        """An idle worker, a new one if fewer than ``workers`` live, or the
        next one freed (a worker back from a task, or room for a new one
        after one was killed), once ``owner`` holds fewer than ``per_owner``;
        WorkersBusy after ``queue_seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.queue_seconds
        while True:
            if owner is not None and self._held[owner] >= self.per_owner:
                pass  # this owner's share is taken: wait for one of its own
            elif self._idle:
                self._held[owner] += 1
                return self._idle.pop()
            elif self._live < self.workers:
                # Counted before the spawn: another task of the owner that
                # comes meanwhile must see the share taken.
                self._live += 1
                self._held[owner] += 1
                try:
                    return await self._spawn()
                except BaseException:
                    self._live -= 1
                    self._held[owner] -= 1
                    self._wake()
                    raise
            try:
                await asyncio.wait_for(self._freed.wait(), deadline - loop.time())
            except TimeoutError:
                if owner is not None and self._held[owner] >= self.per_owner:
                    raise WorkersBusy(
                        f"{owner} has had its {self.per_owner} of the {self.workers} worker "
                        f"processes busy for {self.queue_seconds:g} s; retry shortly",
                        retry_after=5.0) from None
                raise WorkersBusy(f"all {self.workers} worker processes stayed busy for "
                                  f"{self.queue_seconds:g} s; retry shortly",
                                  retry_after=5.0) from None

    def _wake(self) -> None:
        freed, self._freed = self._freed, asyncio.Event()
        freed.set()

    def _release(self, worker: _Worker, healthy: bool) -> None:
        worker.tasks += 1
        if healthy and not self._closed and worker.tasks < self.recycle_after:
            self._idle.append(worker)
            self._wake()
            return
        self._live -= 1
        self._wake()
        if worker.process.returncode is None:
            try:
                worker.process.stdin.close()  # the worker ends when its stdin does
            except RuntimeError:  # its event loop is gone: end it outright
                worker.kill()

    async def run(self, timeout: float, fn: Callable[..., T], *args: Any,
                  owner: str | None = None) -> T:
        """Run ``fn(*args)`` (a module-level function) in a worker; its result
        is a JSON value or a :func:`sandbox_result` dataclass. With ``owner``
        (an org), the task waits while that owner has ``per_owner`` workers
        busy, however many are idle: one org's slow files never hold every
        worker. Raises what ``fn`` raised (as planzoom's own error class),
        WorkerTimeout after ``timeout`` seconds of the worker's time,
        WorkerCrashed if the worker died, WorkersBusy if no worker was free
        (or the owner's share stayed taken) for ``queue_seconds``."""
        if self._closed:
            raise Unavailable("the worker pool is closed")
        payload = pickle.dumps((fn, args, timeout))
        worker = await self._acquire(owner)
        healthy = False
        try:
            outcome = await asyncio.wait_for(worker.call(payload), timeout)
            healthy = True
        except TimeoutError:
            log.error("worker overran %.0f s; killing it", timeout)
            raise WorkerTimeout(f"processing took longer than {timeout:g} s") from None
        except (asyncio.IncompleteReadError, ConnectionError, json.JSONDecodeError) as e:
            code = await _exit_code(worker)  # -9: killed (OOM, CPU hard limit); -24: SIGXCPU
            log.error("worker process died (exit code %s)", code)
            raise WorkerCrashed(f"the worker process died while handling this input "
                                f"(exit code {code})") from e
        finally:
            if not healthy:
                worker.kill()
                # Reap it here, while the event loop runs: a process left to
                # the garbage collector closes its transport on a dead loop.
                await _exit_code(worker, 5.0)
            self._held[owner] -= 1
            self._release(worker, healthy)
        if "error" in outcome:
            raise _rebuild_error(outcome["error"])
        return _rebuild_result(outcome)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop the idle workers (waiting up to ``timeout`` seconds for them
        to exit); busy ones stop when their task ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for worker in idle:
            self._release(worker, healthy=True)
        for worker in idle:
            if await _exit_code(worker, timeout) is None:
                worker.kill()
                await worker.process.wait()


async def _exit_code(worker: _Worker, timeout: float = 5.0) -> int | None:
    try:
        return await asyncio.wait_for(worker.process.wait(), timeout)
    except TimeoutError:
        return None

