"""An embedded stack for a bench that times requests through the gateway."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from planzoom_cli.client import Client
from planzoom_devstack.stack import EmbeddedStack, Ports


@contextlib.contextmanager
def unthrottled(work: Path) -> Iterator[tuple[EmbeddedStack, Client]]:
    """A stack under ``work`` whose gateway takes any rate from one caller
    (one caller sends everything: the per-caller rate is not what a bench
    measures), and an uploader of org "bench"; stopped at the end."""
    stack = EmbeddedStack(data_dir=work / "stack", ports=Ports.free(),
                          extra_env={"PLANZOOM_GATEWAY_RATE_PER_SECOND": "100000"})
    stack.start()
    try:
        env = stack.env()
        with contextlib.closing(Client(env["PLANZOOM_INGEST_ADDR"], env["PLANZOOM_PROGRESS_ADDR"],
                                       token=stack.token("bench", "uploader"))) as client:
            yield stack, client
    finally:
        stack.stop()
