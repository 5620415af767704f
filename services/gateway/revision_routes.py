"""A revised sheet over its previous version (docs/revisions.md): the
transform, the changes and the overlay's pyramid, which the tile stage
makes as soon as the page is done (provisional) and when the job that
revised the sheet ends."""

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
    "added|removed|changed"}], "method", "dzi", "width", "height", "dpi",
    "provisional"}``.

    ``transform`` is the 2x3 affine mapping the previous version's
    full-resolution pixels onto this page's (x' = a x + b y + c, y' = d x +
    e y + f); ``residual_px`` the median distance, in this page's
    full-resolution pixels, between where it puts the previous version's
    words and where they are (null for a sheet registered by its line work);
    boxes in this page's full-resolution pixels; ``dzi`` the overlay's Deep
    Zoom pyramid (previous version red, this one blue, both grey, changes
    clouded; ``width`` x ``height`` pixels at ``dpi``).

    ``provisional`` is true while the job runs: the overlay was made as
    soon as the page was done, over the version of the plan's current set
    that carries the page's own sheet number. When the job ends the whole
    set's pairing confirms it, or the overlay over the version it names is
    made instead (409 meanwhile).

    404 ``NO_PREVIOUS_VERSION`` when the page revises no earlier sheet of
    its plan (new, unchanged, not yet paired while its job runs); 409
    ``OVERLAY_NOT_READY`` (``Retry-After``) while it is being made; 422
    ``OVERLAY_FAILED`` / ``OVERLAY_SOURCE_MISSING`` when it cannot be.
    Bearer (viewer) or ``?cap=``."""
    if not 1 <= page <= 999_999:
        raise _absent(f"page {page}")
    place = await job_place(request, job_id)
    gw = request.app.state.gateway
    try:
        data, _, _ = await gw.reader.get_if_changed(
            f"{place.tiles_prefix}page-{page}.overlay.json", None)
    except ObjectNotFound:
        raise await _why_none(request, place.tiles_prefix, job_id, page) from None
    doc = json.loads(data)
    rows = await _sheet_rows(request, place.tiles_prefix)
    if rows is not None:  # the job has ended: its pairing is the one served
        row = rows.get(page) or {}
        if row.get("change") != "revised":
            raise _none(job_id, page)
        if doc.get("previous") != {k: (row.get("previous") or {}).get(k)
                                   for k in ("job_id", "page")}:
            raise _not_ready(job_id, page)  # the one made while it ran lies over another
    if "error" in doc:
        raise Problem(422, doc["error"], doc.get("reason") or "OVERLAY_FAILED")
    cap = request.query_params.get("cap")
    name = doc.pop("pyramid", f"page-{page}.overlay").removeprefix(f"page-{page}.")
    doc["dzi"] = f"/v1/jobs/{job_id}/pages/{page}.{name}.dzi" + (f"?cap={cap}" if cap else "")
    doc["provisional"] = rows is None
    return Response(json.dumps(doc), media_type="application/json",
                    headers={"Cache-Control": f"{cache_scope(request)}, no-cache"})


async def _sheet_rows(request: Request, tiles_prefix: str) -> dict[int, dict] | None:
    """The job's ``sheets.json`` rows by page; None until the job has ended."""
    gw = request.app.state.gateway
    try:
        data, _, _ = await gw.reader.get_if_changed(f"{tiles_prefix}sheets.json", None)
        return {int(r["page"]): r for r in json.loads(data).get("sheets", [])}
    except ObjectNotFound:
        return None
    except ValueError:
        return {}


def _not_ready(job_id: str, page: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"the overlay of page {page} of job {job_id} is being made; retry in "
        f"{RETRY_AFTER_SECONDS} s", reason="OVERLAY_NOT_READY", retry_after=RETRY_AFTER_SECONDS)


def _none(job_id: str, page: int) -> NotFound:
    return NotFound(f"page {page} of job {job_id} revises no earlier sheet of its plan "
                    "(it is new, unchanged, not a sheet, or no version was found for it "
                    "while its job runs)", reason="NO_PREVIOUS_VERSION")


async def _why_none(request: Request, tiles_prefix: str, job_id: str, page: int):
    """The error for a page with no overlay.json: being made, or none to make."""
    rows = await _sheet_rows(request, tiles_prefix) or {}
    if rows.get(page, {}).get("change") == "revised":
        return _not_ready(job_id, page)
    return _none(job_id, page)
