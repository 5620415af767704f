"""A bounded pool of worker processes for native engines that must not share
a process with the service (PDFium is not thread-safe and parses untrusted
bytes).

Workers are spawned (not forked), recycled after ``recycle_after`` tasks,
and replaced when one dies (segfault, OOM kill) or overruns its time limit.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from planzoom.errors import Internal

log = logging.getLogger(__name__)

T = TypeVar("T")


class WorkerCrashed(Internal):
    """The worker process died or overran its time limit while running a task."""

    reason = "WORKER_CRASHED"


class ProcessPool:
    """``workers`` spawned processes, each replaced after ``recycle_after``
    tasks; see the module docstring."""

    def __init__(self, workers: int, recycle_after: int):
        self.workers, self.recycle_after = workers, recycle_after
        self._executor = self._new()

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            max_tasks_per_child=self.recycle_after,
        )

    def _replace(self) -> None:
        old, self._executor = self._executor, self._new()
        # The executor keeps its processes private; a hung PDFium call can only
        # be ended by killing its process.
        for proc in list(getattr(old, "_processes", {}).values()):
            proc.kill()
        old.shutdown(wait=False, cancel_futures=True)

    async def run(self, timeout: float, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker; raise WorkerCrashed if the worker died
        or ``timeout`` seconds passed. Exceptions raised by ``fn`` propagate."""
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, fn, *args), timeout
            )
        except BrokenProcessPool as e:
            log.error("worker process died; replacing the pool")
            self._replace()
            raise WorkerCrashed("the worker process died while handling this input") from e
        except TimeoutError as e:
            log.error("worker overran %.0f s; replacing the pool", timeout)
            self._replace()
            raise WorkerCrashed(f"processing took longer than {timeout:.0f} s") from e

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
