"""A plan's register of its sets and its ``current.json`` (docs/revisions.md).

``register.json`` keeps, for every COMPLETE job of the plan, a summary of
its pages (number, title, raster digest, a sketch of its words);
``current.json`` is made from it: where a viewer finds the plan's newest
complete job, and the plan's current set, the newest version of every sheet
with all its versions (planzoom.engines.revisions). Both are written with
conditional writes, so that jobs of one plan ending at once each land in
the register and the ``current.json`` left is the one made from the
register with the most jobs.

Blocking (S3): call from a thread. Idempotent: a finalize run again finds
its job in the register and writes the same.
"""

from __future__ import annotations

import json
import logging

from google.protobuf import json_format

from planzoom import keys
from planzoom.engines import revisions
from planzoom.engines.titleblock import discipline
from planzoom.sheets import VERSION_FIELDS, version_from_json
from planzoom.storage import ObjectNotFound, ObjectStore, WriteConflict
from planzoom.v1 import jobs_pb2

log = logging.getLogger(__name__)

#: Tries of a conditional write while other jobs of the plan write too.
ATTEMPTS = 20
#: The register's schema (docs/revisions.md).
SCHEMA = 1


def newest_job(job: jobs_pb2.Job) -> dict:
    """Where a viewer finds the plan's newest complete job: ``current.json``'s
    top-level fields."""
    return {
        "job_id": job.job_id,
        "manifest_key": job.manifest_key,
        "tiles_prefix": job.tiles_prefix,
        "total_pages": job.total_pages,
        "layout": jobs_pb2.PyramidLayout.Name(job.options.layout),
        "dzi_keys": [p.dzi_key for p in job.pages],
        "archive_keys": [p.archive_key for p in job.pages],
        "finished_at": json_format.MessageToJson(job.finished_at).strip('"'),
    }


def job_summary(job: jobs_pb2.Job, sketches: dict[int, str]) -> dict:
    """What the register keeps of a COMPLETE job: its sheet pages (a PDF's
    DONE pages; none for an image or a video)."""
    pages = []
    if job.source_kind in ("", "pdf"):
        for p in job.pages:
            if p.state == jobs_pb2.PAGE_STATE_DONE:
                pages.append(revisions.page_summary(
                    p.page, p.sheet.number, p.sheet.title, p.content_digest,
                    sketches.get(p.page, ""), p.sheet.revision, p.sheet.issued))
    return {"job_id": job.job_id, "pages": pages}


def _current(register: dict, history: list[dict]) -> bytes:
    """``current.json`` from the register: the newest job's fields,
    ``register_jobs`` (how many jobs it was made from) and ``sheets``."""
    sheets = []
    for s in history:
        last, number = s["versions"][0], revisions.sheet_number(s) or None
        sheets.append({
            "number": number, "title": last["title"] or None,
            "discipline": discipline(number, last["title"] or None),
            "job_id": last["job_id"], "page": last["page"],
            "revision": last["revision"] or None, "issued": last["issued"] or None,
            "duplicate_number": last["duplicate_number"], "digest": last["digest"],
            "versions": [{k: v[k] for k in VERSION_FIELDS} for v in s["versions"]],
        })
    return json.dumps({**register["current"], "register_jobs": len(register["jobs"]),
                       "sheets": sheets}, ensure_ascii=False, indent=1).encode()


def _add_to_register(store: ObjectStore, job: jobs_pb2.Job, summary: dict) -> dict:
    key = keys.register_key(job.plan)
    for _ in range(ATTEMPTS):
        try:
            data, etag = store.get_with_etag(key)
            register = json.loads(data)
        except ObjectNotFound:
            register, etag = {"schema": SCHEMA, "current": {}, "jobs": []}, None
        if any(j["job_id"] == job.job_id for j in register["jobs"]):
            return register  # joined already (a finalize run again)
        register["jobs"].append(summary)
        register["jobs"].sort(key=lambda j: j["job_id"])
        if register["current"].get("job_id", "") < job.job_id:
            register["current"] = newest_job(keys.with_keys(job))
        try:
            store.put_bytes(key, json.dumps(register, ensure_ascii=False,
                                            separators=(",", ":")).encode(),
                            "application/json", if_match=etag, if_absent=etag is None)
            return register
        except WriteConflict:
            continue
    raise WriteConflict(key)


def _write_current(store: ObjectStore, plan: jobs_pb2.PlanRef, register: dict,
                   history: list[dict]) -> None:
    key = keys.current_key(plan)
    body = _current(register, history)
    for _ in range(ATTEMPTS):
        try:
            data, etag = store.get_with_etag(key)
            stored = json.loads(data).get("register_jobs", 0)
        except ObjectNotFound:
            stored, etag = -1, None
        if stored > len(register["jobs"]):
            return  # made from a register with more jobs: it stands
        try:
            store.put_bytes(key, body, "application/json", if_match=etag,
                            if_absent=etag is None)
            return
        except WriteConflict:
            continue
    raise WriteConflict(key)


def join_plan(store: ObjectStore, job: jobs_pb2.Job, sketches: dict[int, str]) -> None:
    """Add a COMPLETE ``job`` to its plan's register, write ``current.json``
    from it, and set each sheet page's ``change``, ``previous`` and
    ``duplicate_number`` (planzoom.engines.revisions). ``sketches``: each page's
    words (:func:`services.progress.sheets.read_set`). Raises WriteConflict
    after :data:`ATTEMPTS` lost races."""
    register = _add_to_register(store, job, job_summary(job, sketches))
    history = revisions.sheet_history(register["jobs"])
    _write_current(store, job.plan, register, history)
    for s in history:
        for i, v in enumerate(s["versions"]):
            if v["job_id"] != job.job_id:
                continue
            sheet = job.pages[v["page"] - 1].sheet
            sheet.change, sheet.duplicate_number = v["change"], v["duplicate_number"]
            sheet.paired_by = v["paired_by"]
            if i + 1 < len(s["versions"]):
                sheet.previous.CopyFrom(version_from_json(s["versions"][i + 1]))
    log.info("plan register updated", extra={"job_id": job.job_id,
                                             "jobs": len(register["jobs"])})
