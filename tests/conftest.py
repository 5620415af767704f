"""Fixtures every folder shares (the corpus), and markers by folder:

- ``tests/unit``: nothing is started (no server, no socket); seconds.
- ``tests/integration`` (marker ``integration``): the embedded stack —
  a real nats-server, the S3 endpoint over HTTP, the services as processes
  — or other servers and worker processes on 127.0.0.1.
- ``tests/e2e`` (markers ``integration`` and ``containers``): the images
  ``make images`` builds, run by Docker.

``slow`` marks crash, restart, fault and load scenarios.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("PLANZOOM_CORPUS", ROOT.parent / "shared" / "corpus"))

_FOLDER_MARKERS = {"integration": ("integration",), "e2e": ("integration", "containers")}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        folder = Path(item.fspath).relative_to(ROOT / "tests").parts[0]
        for marker in _FOLDER_MARKERS.get(folder, ()):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "SOURCES.md").exists():
        pytest.fail(f"the PDF corpus is missing at {CORPUS} (expected ../shared/corpus beside "
                    "the project, or set PLANZOOM_CORPUS)")
    return CORPUS
