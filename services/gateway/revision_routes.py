"""A revised sheet over its previous version (docs/revisions.md): the
transform, the changes and the overlay's pyramid, which the tile stage
makes when the job that revised the sheet ends."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response

from planzoom.errors import FailedPrecondition, NotFound
from planzoom.storage import ObjectNotFound
from services.gateway.problems import Problem
from services.gateway.tiles import _absent, cache_scope, job_place

router = APIRouter(prefix="/v1", tags=["revisions"])

#: Seconds a client is told to wait for an overlay being made.
RETRY_AFTER_SECONDS = 2


@router.get("/jobs/{job_id}/pages/{page}/overlay",
            summary="A revised sheet laid over its previous version")
async def page_overlay(request: Request, job_id: str, page: int) -> Response:
    """``{"previous": {"job_id", "page"}, "transform": [a, b, c, d, e, f],
    "residual_px", "changes": [{"box": [x, y, w, h], "kind":
    "added|removed|changed"}], "method", "dzi", "width", "height", "dpi"}``.

    ``transform`` is the 2x3 affine mapping the previous version's
    full-resolution pixels onto this page's (x' = a x + b y + c, y' = d x +
    e y + f); ``residual_px`` the median distance, in this page's
    full-resolution pixels, between where it puts the previous version's
    words and where they are (null for a sheet registered by its line work);
    boxes in this page's full-resolution pixels; ``dzi`` the overlay's Deep
    Zoom pyramid (previous version red, this one blue, both grey, changes
    clouded; ``width`` x ``height`` pixels at ``dpi``).

    404 ``NO_PREVIOUS_VERSION`` when the page revises no earlier sheet of
    its plan (new, unchanged, or its job has not ended); 409
    ``OVERLAY_NOT_READY`` (``Retry-After``) while it is being made; 422
    ``OVERLAY_FAILED`` / ``OVERLAY_SOURCE_MISSING`` when it cannot be.
    Bearer (viewer) or ``?cap=``."""
    if not 1 <= page <= 999_999:
        raise _absent(f"page {page}")
    place = await job_place(request, job_id)
    gw = request.app.state.gateway
    prefix = f"{place.tiles_prefix}page-{page}.overlay"
    try:
        data, _, _ = await gw.reader.get_if_changed(f"{prefix}.json", None)
    except ObjectNotFound:
        raise await _why_none(request, place.tiles_prefix, job_id, page) from None
    doc = json.loads(data)
    if "error" in doc:
        raise Problem(422, doc["error"], doc.get("reason") or "OVERLAY_FAILED")
    cap = request.query_params.get("cap")
    doc["dzi"] = f"/v1/jobs/{job_id}/pages/{page}.overlay.dzi" + (f"?cap={cap}" if cap else "")
    return Response(json.dumps(doc), media_type="application/json",
                    headers={"Cache-Control": f"{cache_scope(request)}, no-cache"})


async def _why_none(request: Request, tiles_prefix: str, job_id: str, page: int):
    """The error for a page with no overlay.json: being made, or none to make."""
    gw = request.app.state.gateway
    try:
        data, _, _ = await gw.reader.get_if_changed(f"{tiles_prefix}sheets.json", None)
        rows = {int(r["page"]): r for r in json.loads(data).get("sheets", [])}
    except (ObjectNotFound, ValueError):
        rows = {}
    if rows.get(page, {}).get("change") == "revised":
        return FailedPrecondition(
            f"the overlay of page {page} of job {job_id} is being made; retry in "
            f"{RETRY_AFTER_SECONDS} s", reason="OVERLAY_NOT_READY",
            retry_after=RETRY_AFTER_SECONDS)
    return NotFound(f"page {page} of job {job_id} revises no earlier sheet of its plan "
                    "(it is new, unchanged, not a sheet, or its job has not ended)",
                    reason="NO_PREVIOUS_VERSION")
