"""What a set's sheets say: ``GET /v1/jobs/{job_id}/sheets`` (the sheet
index), ``GET /v1/jobs/{job_id}/pages/{n}/words`` (a page's words with
their boxes) and ``GET /v1/search`` (words across a job, a plan's
current set, or the current sets of a project's or an org's plans). Boxes
are ``[x, y, w, h]`` in the pixels of the page's full-resolution level,
origin top-left: the coordinates of its DZI. The formats and how sheets are
read: docs/sheets.md.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import tempfile
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from planzoom import keys, search
from planzoom.errors import InvalidInput, NotFound
from planzoom.ids import check_id
from planzoom.sheets import sheet_json, version_json
from planzoom.storage import ObjectNotFound
from planzoom.v1 import jobs_pb2
from services.gateway.tiles import _absent, cache_control, job_place

router = APIRouter(prefix="/v1", tags=["sheets"])


class BadQuery(InvalidInput):
    reason = "BAD_QUERY"


class SearchIndexes:
    """Jobs' search indexes (``search.sqlite``, written once when a job
    ends) downloaded from the bucket into a private directory, the
    ``limit`` most recently used kept."""

    def __init__(self, store, limit: int = 64):
        self.store, self.limit = store, limit
        self.dir = tempfile.mkdtemp(prefix="planzoom-search-")
        self._paths: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def path(self, key: str) -> str:
        """A local copy of ``key``. Raises ObjectNotFound."""
        if key in self._paths:
            self._paths.move_to_end(key)
            return self._paths[key]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._paths:
                fd, path = tempfile.mkstemp(suffix=".sqlite", dir=self.dir)
                os.close(fd)
                try:
                    await asyncio.to_thread(self.store.download_file, key, path)
                except Exception:
                    os.unlink(path)
                    raise
                self._paths[key] = path
                while len(self._paths) > self.limit:
                    _, old = self._paths.popitem(last=False)
                    os.unlink(old)
        self._locks.pop(key, None)
        return self._paths[key]

    def close(self) -> None:
        """Remove the local copies."""
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


async def _json_object(request: Request, key: str, what: str) -> Response:
    gw = request.app.state.gateway
    try:
        data, etag, _ = await gw.reader.get_if_changed(key, request.headers.get("if-none-match"))
    except ObjectNotFound:
        raise NotFound(f"{what}: not there yet (it is made when the job ends)",
                       reason="SHEETS_NOT_READY") from None
    # A person may correct a sheet: clients revalidate (the ETag makes it cheap).
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if data is None:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type="application/json", headers=headers)


@router.get("/jobs/{job_id}/sheets", summary="The sheet index of a job")
async def job_sheets(request: Request, job_id: str) -> Response:
    """``{"job_id", "sheets": [{"page", "number", "title", "discipline",
    "scale", "confidence", "needs_review", "source", "box", "title_box",
    "references": [{"number", "page", "box", "text"}]}]}``, one entry per
    page in page order. ``number`` is null on a page with no sheet number
    (a cover, a photo, an image page); ``confidence`` is 0..1,
    ``needs_review`` true below the accept level; ``source`` is ``text``
    (the PDF's text layer), ``ocr``, ``index``, ``user`` or ``none``.
    Boxes: ``[x, y, w, h]``, full-resolution pixels. 404 until the job has
    ended. Bearer (viewer) or ``?cap=``."""
    place = await job_place(request, job_id)
    return await _json_object(request, f"{place.tiles_prefix}sheets.json",
                              f"the sheet index of job {job_id}")


@router.get("/jobs/{job_id}/pages/{page}/words", summary="A page's words with their boxes")
async def page_words(request: Request, job_id: str, page: int) -> Response:
    """The page's word sidecar (docs/sheets.md), gzipped JSON: ``{"version",
    "width", "height", "width_pt", "height_pt", "source", "words": [[text,
    x, y, w, h, size_pt, angle], …]}``; boxes in full-resolution pixels.
    Sent with ``Content-Encoding: gzip``. 404 for a page with no text read
    (an image, a page not yet rendered). Bearer (viewer) or ``?cap=``."""
    if not 1 <= page <= 999_999:
        raise _absent(f"page {page}")
    place = await job_place(request, job_id)
    gw = request.app.state.gateway
    key = f"{place.tiles_prefix}page-{page}.words.json.gz"
    try:
        data, etag, _ = await gw.reader.get_if_changed(key, request.headers.get("if-none-match"))
    except ObjectNotFound:
        raise _absent(f"the words of page {page}") from None
    headers = {"ETag": etag, "Content-Encoding": "gzip", "Vary": "Accept-Encoding",
               "Cache-Control": cache_control(request)}
    if data is None:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type="application/json", headers=headers)


class SheetCorrection(BaseModel):
    """A sheet number and title as a person reads them on the sheet."""

    number: str = Field("", max_length=200, description='"" when the page has no number')
    title: str = Field("", max_length=200)


@router.put("/jobs/{job_id}/pages/{page}/sheet", summary="Correct a page's sheet number and title")
async def set_sheet(request: Request, job_id: str, page: int, body: SheetCorrection) -> dict:
    """Record ``{"number", "title"}`` as what page ``page`` (1-based) says;
    returns the page's sheet as ``GET …/sheets`` lists it, ``source``
    "user", confidence 1. Kept when the job's sheets are read again;
    written to ``sheets.json`` and ``manifest.json`` of an ended job.
    Needs the uploader role. 404 for an unknown job or page (or another
    org's), 409 (NOT_A_SHEET) for an image or video page, 400 for a value
    over 200 characters."""
    gw = request.app.state.gateway
    access = gw.gatekeeper.check(request, "uploader")
    if not 1 <= page <= 999_999:
        raise _absent(f"page {page}")
    sheet = await gw.upstream.set_sheet(access, check_id("job_id", job_id), page, body.number,
                                        body.title)
    return sheet_json(page, sheet)


@router.get("/plans/{org}/{project}/{plan}/sheets", summary="A plan's current set of sheets")
async def plan_sheets(request: Request, org: str, project: str, plan: str) -> dict:
    """The plan's current set: ``{"job_id": the newest complete job,
    "sheets": [...]}``, the newest version of every sheet the plan's
    complete jobs issued (an addendum's sheets from the addendum, the rest
    from earlier sets), each as ``GET /v1/jobs/{id}/sheets`` gives it plus
    ``job_id`` (the job of that version) and ``versions`` (newest first:
    ``{"job_id", "page", "number", "title", "revision", "issued",
    "paired_by", "change"}``; docs/revisions.md). Needs the viewer role in
    ``org`` (403 for another org's plans); 404 while the plan has no
    complete job."""
    gw = request.app.state.gateway
    access = gw.gatekeeper.check(request, "viewer")
    ref = jobs_pb2.PlanRef(org=check_id("org", org), project=check_id("project", project),
                           plan=check_id("plan", plan))
    resp = await gw.upstream.list_sheets(access, ref)
    return {"job_id": resp.job_id, "sheets": [
        {**sheet_json(s.page, s.sheet), "job_id": s.job_id,
         "versions": [version_json(v) for v in s.versions]} for s in resp.sheets]}


async def _plan_current(request: Request, plan: str) -> tuple[jobs_pb2.PlanRef, dict]:
    """The plan ``plan`` ("org/project/plan") and its ``current.json``, for
    a caller of that org (404 for another org's, as for none)."""
    gw = request.app.state.gateway
    access = gw.gatekeeper.check(request, "viewer")
    parts = plan.split("/")
    if len(parts) != 3:
        raise BadQuery("plan is org/project/plan")
    ref = jobs_pb2.PlanRef(org=check_id("org", parts[0]), project=check_id("project", parts[1]),
                           plan=check_id("plan", parts[2]))
    if ref.org != access.caller.org:
        raise NotFound(f"plan {plan}: not found", reason="NOT_FOUND")
    current = await _read_current(request, ref)
    if current is None:
        raise NotFound(f"plan {plan}: no complete set yet", reason="NOT_FOUND")
    return ref, current


async def _read_current(request: Request, ref: jobs_pb2.PlanRef) -> dict | None:
    try:
        data, _, _ = await request.app.state.gateway.reader.get_if_changed(
            keys.current_key(ref), None)
    except ObjectNotFound:
        return None
    return json.loads(data)


async def _plan_job(request: Request, plan: str) -> tuple[str, str]:
    """(job id, tiles prefix) of the newest complete job of ``plan``
    ("org/project/plan"), for a caller of that org."""
    _, current = await _plan_current(request, plan)
    return current["job_id"], current["tiles_prefix"]


def _current_sets(ref: jobs_pb2.PlanRef, current: dict
                  ) -> list[tuple[str, str, str, dict[int, int] | None]]:
    """What a search of the plan's current set reads: (plan as
    "org/project/plan", job id, tiles prefix, {page: its place in the
    current set}) per job that issued a current sheet (docs/revisions.md);
    the newest job's every page (None) for a plan with no sheets (photos,
    video)."""
    scope = f"{ref.org}/{ref.project}/{ref.plan}"
    pages: dict[str, dict[int, int]] = collections.defaultdict(dict)
    for place, sheet in enumerate(current.get("sheets") or []):
        pages[sheet["job_id"]][int(sheet["page"])] = place
    if not pages:
        return [(scope, current["job_id"], current["tiles_prefix"], None)]
    return [(scope, job, keys.tiles_prefix(ref, job), on) for job, on in sorted(pages.items())]


async def search_index(request: Request, job_id: str, tiles_prefix: str) -> str:
    """A local copy of the search index of job ``job_id`` (outputs under
    ``tiles_prefix``). Raises NotFound (SHEETS_NOT_READY) for a job with
    none: not a PDF, or not ended."""
    try:
        return await request.app.state.gateway.searches.path(f"{tiles_prefix}search.sqlite")
    except ObjectNotFound:
        raise NotFound(f"job {job_id}: no search index (it is made when a PDF job ends)",
                       reason="SHEETS_NOT_READY") from None


#: Plans one project- or org-wide search reads at most (their current sets'
#: indexes, a download each the first time).
SEARCH_MAX_PLANS = 50
#: Indexes searched at once for one request.
SEARCH_PARALLEL = 4


def _org_plans(store, org: str, project: str | None) -> list[jobs_pb2.PlanRef]:
    """The plans of ``org`` (of its ``project`` only, if given) that have a
    folder in the bucket, in name order, at most SEARCH_MAX_PLANS + 1 (one
    more tells the caller there were more). Blocking."""
    root = keys.org_tiles_prefix(org)
    projects = [f"{root}{project}/"] if project else sorted(store.list_folders(root))
    plans: list[jobs_pb2.PlanRef] = []
    for folder in projects:
        for plan in sorted(store.list_folders(folder)):
            plans.append(jobs_pb2.PlanRef(org=org, project=folder[len(root):-1],
                                          plan=plan[len(folder):-1]))
            if len(plans) > SEARCH_MAX_PLANS:
                return plans
    return plans


async def _scope_sets(request: Request, project: str | None, org: str | None
                      ) -> tuple[list[tuple[str, str, str, dict[int, int] | None]], bool]:
    """The current sets a project- or org-wide search reads (as
    :func:`_current_sets`, plan by plan), and whether plans were left out
    (over SEARCH_MAX_PLANS). 404 for another org's, as for a plan."""
    gw = request.app.state.gateway
    access = gw.gatekeeper.check(request, "viewer")
    parts = (project or "").split("/") if project is not None else [org or ""]
    if len(parts) != (2 if project is not None else 1):
        raise BadQuery("project is org/project")
    scope_org = check_id("org", parts[0])
    scope_project = check_id("project", parts[1]) if project is not None else None
    if scope_org != access.caller.org:
        raise NotFound(f"{project or org}: not found", reason="NOT_FOUND")
    plans = await asyncio.to_thread(_org_plans, gw.store, scope_org, scope_project)
    sets = []
    for ref in plans[:SEARCH_MAX_PLANS]:
        current = await _read_current(request, ref)
        if current is not None:  # else no complete set yet
            sets.extend(_current_sets(ref, current))
    return sets, len(plans) > SEARCH_MAX_PLANS


@router.get("/search", summary="Search inside sheets")
async def search_sheets(request: Request,
                        q: Annotated[str, Query(max_length=search.MAX_QUERY_CHARS)],
                        job_id: Annotated[str | None, Query()] = None,
                        plan: Annotated[str | None, Query()] = None,
                        project: Annotated[str | None, Query()] = None,
                        org: Annotated[str | None, Query()] = None,
                        limit: Annotated[int, Query(ge=1, le=search.MAX_HITS)] = 100) -> dict:
    """``{"hits": [{"job_id", "plan", "page", "sheet", "text", "boxes"}],
    "truncated": bool}``: the lines that hold ``q`` in a job's pages
    (``job_id``), a plan's current set (``plan=org/project/plan``: the
    newest version of each sheet, whichever job issued it), or the
    current sets of every plan of a project (``project=org/project``) or of
    the caller's org (``org=org``; at most SEARCH_MAX_PLANS plans, in name
    order: ``truncated`` says when more were left out), in plan and page
    order (a plan's in its current set's order), at most ``limit``.
    Case- and accent-insensitive; each word of ``q`` is a word prefix and
    several words a phrase ("fire damp" finds "FIRE DAMPER"); construction
    text is matched as typed (``2'-6"``, ``Ø12``, ``W12x26``, ``GL-3``).
    ``sheet`` is the page's sheet number (or null); ``boxes`` the matched
    words' ``[x, y, w, h]`` in full-resolution pixels; ``plan`` is null for
    a job's search. 400 for an empty or over-long query or not exactly one
    scope; 404 for a job, plan, project or org the caller cannot see, or a
    job or plan with no index yet.
    Bearer (viewer); a job's signed link (``?cap=``) searches that job."""
    if sum(x is not None for x in (job_id, plan, project, org)) != 1:
        raise BadQuery("give one of job_id, plan, project or org")
    try:
        search.terms(q)
    except search.BadQuery as e:
        raise BadQuery(str(e)) from None
    truncated = False
    if job_id is not None:
        place = await job_place(request, job_id)
        sets = [(None, check_id("job_id", job_id), place.tiles_prefix, None)]
    elif plan is not None:
        sets = _current_sets(*await _plan_current(request, plan))
    else:
        sets, truncated = await _scope_sets(request, project, org)
    parallel = asyncio.Semaphore(SEARCH_PARALLEL)

    async def one(scope: str | None, job: str, prefix: str, on: dict[int, int] | None
                  ) -> list[dict]:
        async with parallel:
            try:
                path = await search_index(request, job, prefix)
            except NotFound:
                if len(sets) > 1:
                    return []  # a set of photos, or one ended before indexes
                raise
            hits = await asyncio.to_thread(search.query, path, q, limit, on)
        at = on or {}
        return [{"job_id": job, "plan": scope, "page": h.page, "sheet": h.sheet,
                 "text": h.text, "boxes": h.boxes,
                 "_at": (scope or "", at.get(h.page, 0), h.page)} for h in hits]

    found = await asyncio.gather(*(one(*s) for s in sets))
    # Plan by plan, in the order of each plan's current set.
    ordered = sorted((h for batch in found for h in batch), key=lambda h: h.pop("_at"))
    hits = ordered[:limit]
    return {"hits": hits, "truncated": truncated or len(hits) < sum(map(len, found))}
