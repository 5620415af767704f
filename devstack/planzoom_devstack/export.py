"""An ended job exported from the embedded stack as a folder that opens from
disk (``planzoom demo``): the gateway's offline bundle
(``GET /v1/jobs/{id}/download?viewer=true``), fetched over HTTP and unzipped."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import httpx

from planzoom.v1 import jobs_pb2
from planzoom_devstack.stack import EmbeddedStack

#: Seconds a bundle may take to arrive (a large set at full resolution).
EXPORT_SECONDS = 600.0


def export_job(stack: EmbeddedStack, job: jobs_pb2.Job, out: Path) -> tuple[Path, int]:
    """Fetch ``job``'s offline bundle from the stack's gateway (as a viewer
    of its org) and unzip it into ``out``: ``index.html``, ``static/`` and
    ``<job_id>/`` (manifest.json, page-N.dzi, page-N_files/, the variants).
    Returns the page to open and how many files there are. Raises
    httpx.HTTPStatusError if the gateway refuses."""
    url = f"{stack.gateway_url}/v1/jobs/{job.job_id}/download"
    headers = {"Authorization": f"Bearer {stack.token(job.plan.org, 'viewer')}"}
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as spool:
        with httpx.stream("GET", url, params={"viewer": "true"}, headers=headers,
                          timeout=EXPORT_SECONDS) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes(1 << 20):
                spool.write(chunk)
        with zipfile.ZipFile(spool) as bundle:
            bundle.extractall(out)
            return out / "index.html", len(bundle.namelist())
