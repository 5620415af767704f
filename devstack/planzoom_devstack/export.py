"""An ended job copied out of the embedded stack's bucket, with a viewer
that opens from disk (``planzoom demo``)."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from planzoom import keys
from planzoom.config import Settings
from planzoom.storage import ObjectStore
from planzoom.v1 import jobs_pb2
from planzoom_devstack.stack import S3_ACCESS_KEY, S3_SECRET_KEY, EmbeddedStack
from services.gateway.viewer import STATIC_DIR, viewer_page


def export_job(stack: EmbeddedStack, job: jobs_pb2.Job, out: Path) -> int:
    """Copy the job's tiles, .dzi files and manifest, and the plan's
    current.json, from the stack's S3 endpoint to ``out``, keeping the
    bucket's layout; returns how many files were copied."""
    store = ObjectStore(Settings(s3_endpoint_url=stack.s3_endpoint, s3_bucket=stack.bucket),
                        credentials=(S3_ACCESS_KEY, S3_SECRET_KEY))
    wanted = [*store.list_keys(job.tiles_prefix), keys.current_key(job.plan)]

    def fetch(key: str) -> None:
        dest = out / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(store.get_bytes(key))

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(fetch, wanted))
    return len(wanted)


def write_offline_viewer(out: Path, job: jobs_pb2.Job) -> Path:
    """The viewer for an exported job, opened from disk: ``out/index.html``
    with the job's manifest inline (no request needs a server) and the
    viewer's scripts, OpenSeadragon included, in ``out/static/``. Returns
    the page's path."""
    manifest = json.loads((out / job.manifest_key).read_text())
    config = {"mode": "static", "job": manifest, "base": job.tiles_prefix, "static": "static"}
    shutil.copytree(STATIC_DIR, out / "static", dirs_exist_ok=True)
    page = out / "index.html"
    page.write_text(viewer_page(config, "static"))
    return page
