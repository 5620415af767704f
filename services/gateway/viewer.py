"""The plan viewer: ``GET /view/{job_id}`` serves a page (static/viewer.html,
viewer.js, OpenSeadragon from the pinned npm package, copied to
static/vendor/ by ``make setup``) that reads the job through the API with
the bearer token in its URL fragment (``#token=…``: a fragment never
reaches a server or its logs). :func:`viewer_page` also writes the offline
viewer of an exported job (``planzoom demo``)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from planzoom.ids import check_id

STATIC_DIR = Path(__file__).parent / "static"
OPENSEADRAGON = STATIC_DIR / "vendor" / "openseadragon" / "openseadragon.min.js"

router = APIRouter(tags=["viewer"])


def viewer_page(config: dict, static_url: str) -> str:
    """viewer.html with the viewer's ``config`` (see viewer.js) and where
    its scripts are (``static_url``, no trailing slash)."""
    template = (STATIC_DIR / "viewer.html").read_text()
    return (template.replace("{static}", static_url)
            .replace("{config}", json.dumps(config).replace("</", "<\\/")))


@router.get("/view/{job_id}", response_class=HTMLResponse, summary="The plan viewer")
async def view(request: Request, job_id: str) -> HTMLResponse:
    """An HTML page showing the job live: page strip, deep zoom of the
    selected page, progress. Open it as ``/view/{job_id}#token=<bearer
    token>``; the page itself holds no data, so it needs no token."""
    config = {"mode": "live", "jobId": check_id("job_id", job_id), "api": "/v1",
              "static": "/static"}
    # #source=archive reads archives from the bucket (presigned URLs) itself.
    bucket = urlsplit(request.app.state.gateway.store.client.meta.endpoint_url)
    bucket_origin = f"{bucket.scheme}://{bucket.netloc}"
    return HTMLResponse(viewer_page(config, "/static"), headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        # blob: for media and workers: hls.js feeds the <video> through a
        # MediaSource and transmuxes in a worker.
        "Content-Security-Policy": f"default-src 'self'; connect-src 'self' {bucket_origin}; "
                                   "img-src 'self' data: blob:; "
                                   "media-src 'self' blob:; worker-src 'self' blob:; "
                                   "script-src 'self' 'unsafe-inline'; style-src 'self' "
                                   "'unsafe-inline'; frame-ancestors 'none'"})
