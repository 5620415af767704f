"""The sandbox from inside: code run in a worker, as an exploited parser's
would be, tries to reach what the service holds (docs/threat-model.md),
and each attempt is refused."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from planzoom.engines.confinement import landlock_abi
from planzoom.engines.sandbox import ProcessPool, WorkerTimeout
from tests.engines import escape, outlive

TESTS = str(Path(__file__).resolve().parents[1])

pytestmark = pytest.mark.skipif(
    landlock_abi() < 1, reason="this kernel has no Landlock: workers cannot be confined")


def _pool(scratch: Path, **options) -> ProcessPool:
    return ProcessPool(1, 10, memory_bytes=1024**3, scratch=str(scratch), readable=(TESTS,),
                       **options)


def test_a_compromised_parser_reaches_nothing(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    secret = tmp_path / "tls.key"  # beside the scratch directory, as a mounted secret
    secret.write_text("-----BEGIN PRIVATE KEY-----")
    monkeypatch.setenv("PLANZOOM_S3_SECRET_KEY", "the-bucket-wide-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "must-not-leak")
    monkeypatch.setenv("PLANZOOM_NATS_PASSWORD", "must-not-leak")
    listener = socket.create_server(("127.0.0.1", 0))
    pool = _pool(scratch, file_bytes=8 << 20)

    async def run():
        try:
            return await pool.run(60, escape, os.getpid(), str(secret),
                                  listener.getsockname()[1], str(scratch / "big"), 8 << 20)
        finally:
            await pool.close()

    try:
        outcomes = asyncio.run(run())
    finally:
        listener.close()
    got = {what: outcome for what, outcome in outcomes.items()
           if not outcome.startswith("refused")}
    assert not got, got
    assert (scratch / "big").stat().st_size <= 8 << 20


def test_a_worker_past_its_time_takes_its_children_with_it(tmp_path):
    pid_file = tmp_path / "child.pid"
    pool = _pool(tmp_path)

    async def run():
        try:
            with pytest.raises(WorkerTimeout):
                await pool.run(3, outlive, str(pid_file))
        finally:
            await pool.close()

    asyncio.run(run())
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child), "the worker's child outlived its timeout"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
