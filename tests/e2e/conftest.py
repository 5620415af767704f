"""Container tests need a Docker engine and the images ``make images``
builds. Without them they are skipped, unless PLANZOOM_REQUIRE_DOCKER=1 (as
CI sets), which turns that into a failure."""

from __future__ import annotations

import os

import pytest

from tests.e2e.containers import docker_ready


@pytest.fixture(scope="session")
def images() -> None:
    why = docker_ready()
    if why:
        if os.environ.get("PLANZOOM_REQUIRE_DOCKER") == "1":
            pytest.fail(f"container tests required but {why}")
        pytest.skip(why)
