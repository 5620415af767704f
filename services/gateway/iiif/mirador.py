"""Mirador 4 (https://projectmirador.org/), an IIIF viewer, served by the
gateway: ``GET /iiif/3/mirador/view?manifest=<url>`` opens a manifest
(static/mirador.html and mirador.js; Mirador's build from the npm package
pinned in services/gateway/web/, copied to static/vendor/mirador/ by
``make setup``; nothing from a CDN)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from services.gateway.viewer import STATIC_DIR

router = APIRouter()

MIRADOR = STATIC_DIR / "vendor" / "mirador" / "mirador.min.js"


@router.get("/mirador/view", response_class=HTMLResponse, summary="Mirador, an IIIF viewer")
async def mirador_page() -> HTMLResponse:
    """An HTML page running Mirador on the manifest named by ``?manifest=``
    (a URL on this gateway: a job's or plan's manifest, in its
    ``/iiif/3/cap/{link}/…`` form when the browser holds no token). The
    page holds no data and needs no token. Its Content-Security-Policy
    lets it load only this gateway's scripts and data."""
    return HTMLResponse((STATIC_DIR / "mirador.html").read_text(), headers={
        "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                   "media-src 'self' blob:; worker-src 'self' blob:; "
                                   "script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                   "font-src 'self' data:; frame-ancestors 'none'"})
