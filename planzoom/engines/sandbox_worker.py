"""A sandbox worker's own side (``python -m planzoom.engines.sandbox_worker
MEMORY_BYTES CONFINE_JSON``, started by
:class:`planzoom.engines.sandbox.ProcessPool`): it confines itself, then
runs one task at a time from stdin, each a length-prefixed pickle of
``(fn, args, cpu_seconds)``, and writes each outcome back as length-prefixed
JSON until stdin closes.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import struct
import sys
import traceback
import uuid
from typing import Any

from planzoom.engines.confinement import restrict
from planzoom.errors import PlanzoomError
from planzoom.heap import keep_freed_blocks

#: A frame's length, before its bytes, both ways.
HEADER = struct.Struct("!I")


def _limit_cpu(seconds: float) -> None:
    """Allow ``seconds`` more CPU time (SIGXCPU beyond). Only the soft limit
    moves: a hard limit can never be raised again. The service's wall-clock
    limit on the task is the guard that cannot be lifted from inside."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = int(used + seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard < 0 else min(soft, hard), hard))


def _read_frame(stream) -> bytes | None:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    return stream.read(size)


def _write_frame(stream, data: bytes) -> None:
    stream.write(HEADER.pack(len(data)) + data)
    stream.flush()


def _outcome(result: Any) -> dict:
    if dataclasses.is_dataclass(result):
        cls = type(result)
        return {"result": dataclasses.asdict(result),
                "type": f"{cls.__module__}:{cls.__qualname__}"}
    return {"result": result}


def _failure(error: BaseException) -> dict:
    if isinstance(error, PlanzoomError):
        cls = type(error)
        return {"error": {"type": f"{cls.__module__}:{cls.__qualname__}",
                          "message": error.message, "reason": error.reason,
                          "field": error.field, "retryable": error.retryable}}
    if isinstance(error, MemoryError):
        return {"error": {"type": "planzoom.errors:ResourceExhausted",
                          "message": "the input needs more memory than a worker may use",
                          "reason": "WORKER_MEMORY", "field": None, "retryable": False}}
    # An engine's own exception: its text may name files, memory or library
    # internals. It stays in the log (the worker's stderr is the service's),
    # under an id the caller gets instead.
    error_id = uuid.uuid4().hex[:16]
    traceback.print_exception(error, file=sys.stderr)
    print(f"worker task failed, error id {error_id}", file=sys.stderr, flush=True)
    return {"error": {"type": "planzoom.errors:Internal",
                      "message": f"the engine failed unexpectedly (error id {error_id} in the "
                                 "service log)",
                      "reason": "WORKER_FAILED", "field": None, "retryable": True}}


def worker_main(memory_bytes: int, confine: dict) -> None:
    """The worker's loop: one task at a time from stdin, its outcome as
    JSON on stdout, until stdin closes."""
    keep_freed_blocks()  # page after page allocates the same big buffers
    restrict(memory_bytes, confine)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything a library prints goes to the log, not the pipe
    while (frame := _read_frame(stdin)) is not None:
        # Unpickling (which imports the task's module) and encoding the
        # result are inside the try too: a failure of ours there is reported
        # as one, never mistaken for an input that killed its worker.
        try:
            fn, args, cpu_seconds = pickle.loads(frame)
            _limit_cpu(cpu_seconds)
            data = json.dumps(_outcome(fn(*args))).encode()
        except BaseException as e:  # noqa: BLE001 (every failure goes back to the service)
            data = json.dumps(_failure(e)).encode()
        _write_frame(stdout, data)


if __name__ == "__main__":
    worker_main(int(sys.argv[1]), json.loads(sys.argv[2]))
